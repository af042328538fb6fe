//! Entry points of the fuzz targets (`fuzz/`, run by `.ci/fuzz.sh`) for the decoders this
//! crate keeps private. Each takes arbitrary bytes, feeds them to one decoder of bytes that
//! come from outside the process, and panics when an invariant of that decoder breaks (a
//! value that does not survive a round trip, an answer that contradicts the protocol); a
//! decoder that refuses the bytes is fine. Not an API: hidden from the docs, for the fuzz
//! crate only (and for `tests/fuzz_corpus.rs`, which replays the committed corpus).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferrocoll_transports::auth::{JobKey, NONCE_BYTES};

use crate::bootstrap::etcd;
use crate::bootstrap::tcp_server::{self, State};
use crate::bootstrap::wire::{self, Request, Response};
use crate::compress::{chunk_codec, Codec};
use crate::config::{launcher, CompressionSetting, Config, TransportChoice};
use crate::exec::frame::{Frame, FRAME_BYTES};
use crate::ft::agree::Decision;
use crate::ft::wire::Datagram;
use crate::recorder::doctor::diagnose;
use crate::recorder::parse_dump;
use crate::topology::{json, Placement, RingOrder, Topology};

mod seeds;
use seeds::CONFIG_VARS;
pub use seeds::{seeds, Seed};

/// The first `N` bytes of `bytes`, zero-padded.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let n = bytes.len().min(N);
    a[..n].copy_from_slice(&bytes[..n]);
    a
}

/// A peer that sends `input`, then closes its side; what we write to it is kept.
struct Peer<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Peer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// [`crate::UniqueId::from_bytes`] on the first [`crate::UNIQUE_ID_BYTES`] bytes
/// (zero-padded): an accepted id encodes back to exactly those bytes.
pub fn unique_id(bytes: &[u8]) {
    let b = array::<{ crate::UNIQUE_ID_BYTES }>(bytes);
    if let Ok(id) = crate::UniqueId::from_bytes(&b) {
        assert_eq!(id.to_bytes(), b, "{id:?} encodes to other bytes");
    }
}

/// The op frame header's decoder on the first [`FRAME_BYTES`] bytes (zero-padded): an
/// accepted header survives encode and decode, and its encoding keeps every byte the decoder
/// read.
pub fn frame(bytes: &[u8]) {
    let b = array::<FRAME_BYTES>(bytes);
    let Ok(f) = Frame::decode(&b) else { return };
    let again = f.encode();
    assert_eq!(Frame::decode(&again), Ok(f));
    // Byte 7 and bytes 37..40 are padding; 40..48 carry the address of single-copy frames.
    let read = |i: usize| i != 7 && !(37..40).contains(&i) && (i < 40 || f.single_copy.is_some());
    for i in (0..FRAME_BYTES).filter(|&i| read(i)) {
        assert_eq!(again[i], b[i], "byte {i} of {f:?}");
    }
    let _ = f.op.to_string();
}

/// The store's request decoder on a frame body: an accepted request encodes back to exactly
/// the body (the encoding is canonical).
pub fn store_request(bytes: &[u8]) {
    if let Ok(r) = Request::decode(bytes) {
        assert_eq!(r.encode(), bytes, "{r:?}");
    }
}

/// The store's response decoder on a frame body: an accepted response survives encode and
/// decode, byte for byte where its text is UTF-8.
pub fn store_response(bytes: &[u8]) {
    let Ok(r) = Response::decode(bytes) else {
        return;
    };
    let again = r.encode();
    assert_eq!(Response::decode(&again).as_ref(), Ok(&r));
    if matches!(r, Response::Ok(_)) || std::str::from_utf8(&bytes[1..]).is_ok() {
        assert_eq!(again, bytes, "{r:?}");
    }
}

/// The store server after the hello, fed a client's byte stream: frames are read as the
/// client reads them (`wire::read_frame`), requests decoded and carried out with zero
/// timeouts until one does not decode (where the server drops the client). Every answer
/// must be the one a plain map gives.
pub fn store_server(bytes: &[u8]) {
    let state = State::new(JobKey::none());
    let mut model: HashMap<String, Vec<u8>> = HashMap::new();
    let mut input = bytes;
    while let Ok(body) = wire::read_frame(&mut input) {
        let Ok(req) = Request::decode(&body) else {
            return;
        };
        let req = match req {
            Request::Get { key, .. } => Request::Get {
                key,
                timeout: Duration::ZERO,
            },
            Request::Wait { keys, .. } => Request::Wait {
                keys,
                timeout: Duration::ZERO,
            },
            r => r,
        };
        let expected = model_answer(&mut model, &req);
        let got = state.handle(req.clone());
        match expected {
            Some(e) => assert_eq!(got, e, "{req:?}"),
            None => assert!(matches!(got, Response::Error(_)), "{req:?}: {got:?}"),
        }
    }
}

/// What the store answers `req` given `model`, which it updates (`None`: an error).
fn model_answer(model: &mut HashMap<String, Vec<u8>>, req: &Request) -> Option<Response> {
    Some(match req {
        Request::Set { key, value } => {
            model.insert(key.clone(), value.clone());
            Response::Ok(Vec::new())
        }
        Request::Get { key, .. } => match model.get(key) {
            Some(v) => Response::Ok(v.clone()),
            None => Response::Timeout(key.clone()),
        },
        Request::Wait { keys, .. } => match keys.iter().find(|k| !model.contains_key(*k)) {
            Some(k) => Response::Timeout(k.clone()),
            None => Response::Ok(Vec::new()),
        },
        Request::Add { key, delta } => {
            let old = match model.get(key) {
                None => 0,
                Some(v) => std::str::from_utf8(v).ok()?.trim().parse::<i64>().ok()?,
            };
            let new = old.checked_add(*delta)?;
            model.insert(key.clone(), new.to_string().into_bytes());
            Response::Ok(new.to_le_bytes().to_vec())
        }
        Request::CompareSet { key, expected, new } => {
            if model.get(key).map(Vec::as_slice) == expected.as_deref() {
                model.insert(key.clone(), new.clone());
                Response::Ok(new.clone())
            } else {
                Response::Ok(model.get(key).cloned().unwrap_or_default())
            }
        }
    })
}

/// The etcd store's readers of the gateway's JSON answers (src/bootstrap/etcd.rs) on
/// `bytes` as JSON: a key read from a range answer survives a round trip through the
/// gateway's encoding (base64 value, revision as a string), and reading a transaction's
/// answer ends one way or the other.
pub fn etcd_answer(bytes: &[u8]) {
    use base64::Engine;
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    if let Ok(Some(e)) = etcd::first_kv(&answer) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&e.value);
        let kv = serde_json::json!({ "value": b64, "mod_revision": e.mod_revision.to_string() });
        let again = serde_json::json!({ "kvs": [kv] });
        assert_eq!(etcd::first_kv(&again), Ok(Some(e)));
    }
    if let Ok(etcd::Txn::Lost(Some(e))) = etcd::txn_outcome(&answer) {
        assert_eq!(
            etcd::first_kv(&answer["responses"][0]["response_range"]),
            Ok(Some(e))
        );
    }
}

/// Both sides of the store's hello against a peer that sends `bytes[1..]` (the first byte
/// picks the side). Nobody proves the job's secret without knowing it, so neither side may
/// accept; a server says nothing to a peer without the magic, and a client sends nothing
/// after its hello to a server that did not prove the secret.
pub fn store_hello(bytes: &[u8]) {
    let Some((&side, input)) = bytes.split_first() else {
        return;
    };
    let mut peer = Peer {
        input,
        output: Vec::new(),
    };
    if side % 2 == 0 {
        let state = State::new(JobKey::none());
        let r = tcp_server::hello(&mut peer, &state);
        assert!(
            r.is_err(),
            "the server accepted a client that proved nothing"
        );
        if !input.starts_with(&wire::STORE_MAGIC) {
            assert!(peer.output.is_empty(), "the server answered a stranger");
        }
    } else {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let r = crate::bootstrap::tcp_client::hello(&mut peer, addr, &JobKey::none());
        assert!(
            r.is_err(),
            "the client accepted a server that proved nothing"
        );
        assert_eq!(
            peer.output.len(),
            8 + NONCE_BYTES,
            "the client sent more than its hello"
        );
    }
}

/// The failure detector's datagram decoder for a world of `1 + u16` ranks (the first two
/// bytes) on the rest, as it comes (the fuzzer cannot forge a tag: it must be refused unless
/// it ends in a valid one) and with a valid tag appended (so the body's parsing is reached):
/// an accepted datagram encodes back to exactly its bytes.
pub fn heartbeat(bytes: &[u8]) {
    let Some((w, body)) = bytes.split_first_chunk::<2>() else {
        return;
    };
    let world = usize::from(u16::from_le_bytes(*w)) + 1;
    let key = ferrocoll_transports::auth::JobKey::new(b"the fuzzed job's key");
    let _ = Datagram::decode(body, world, &key);
    let mut tagged = body.to_vec();
    tagged.extend_from_slice(&key.tag(crate::ft::wire::LABEL, body));
    if let Ok(d) = Datagram::decode(&tagged, world, &key) {
        assert_eq!(d.encode(&key), tagged);
    }
}

/// The agreement's decision decoder for a world of `1 + u16` ranks (the first two bytes) and
/// epoch given by the third byte, on the rest: an accepted decision survives encode and
/// decode, with its members ascending and inside the world.
pub fn decision(bytes: &[u8]) {
    let Some((head, v)) = bytes.split_first_chunk::<3>() else {
        return;
    };
    let world = usize::from(u16::from_le_bytes([head[0], head[1]])) + 1;
    let epoch = u64::from(head[2]);
    if let Ok(d) = Decision::decode(v, world, epoch) {
        assert!(d.members.windows(2).all(|w| w[0] < w[1]));
        assert!(d.members.iter().all(|&m| m < world));
        let again = Decision::decode(&d.encode(), world, epoch).ok();
        assert_eq!(again.as_ref(), Some(&d));
    }
}

/// The decoders of values ranks read from the store (the first byte picks one): a rank's
/// rendezvous record, a counter, a grow decision (for a world of 4), a replacement's
/// admission. Accepted values must be within their bounds, counters survive a round trip.
pub fn store_values(bytes: &[u8]) {
    let Some((&which, v)) = bytes.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(rec) = crate::bootstrap::rendezvous::parse_record(3, v) {
                assert!(rec.cpus.iter().all(|&c| c < 1 << 20), "{rec:?}");
                assert_eq!(rec.transports, rec.transports.trim());
            }
        }
        1 => {
            if let Ok(n) = crate::bootstrap::parse_counter("k", v) {
                let again = crate::bootstrap::parse_counter("k", n.to_string().as_bytes());
                assert_eq!(again.ok(), Some(n));
            }
        }
        2 => {
            if let Ok(g) = crate::comm::elastic::parse_grow(v, 4) {
                assert!(0 <= g.from && g.from <= g.to, "{g:?}");
                assert_eq!(g.world as u128, 4 + (g.to - g.from) as u128, "{g:?}");
                assert!(g.world <= u32::MAX as usize && g.prefix.starts_with("fc/"));
            }
        }
        _ => {
            if let Ok((prefix, rank, world)) = crate::comm::elastic::parse_admission(v) {
                assert!(rank < world && world <= u32::MAX as usize);
                assert!(prefix.starts_with("fc/"));
            }
        }
    }
}

/// Topology files (src/topology/json.rs, `FERROCOLL_TOPO_FILE`): a file that loads is a
/// consistent topology, its dump loads back to the same topology, and the ring placement
/// built on it is a permutation of the ranks.
pub fn topology_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = json::from_json(text) else {
        return;
    };
    let world = t.world();
    assert_eq!(
        world,
        t.hosts().iter().map(|h| h.ranks.len()).sum::<usize>()
    );
    for r in 0..world {
        let h = t.host_of(r);
        assert_eq!(t.hosts()[h].ranks[t.local_of(r)], r);
    }
    let dumped = json::to_json(&t);
    let back = json::from_json(&dumped)
        .unwrap_or_else(|e| panic!("the dump does not load: {e}\n{dumped}"));
    same_topology(&t, &back);
    for order in [RingOrder::Rank, RingOrder::Topology] {
        let p = Placement::new(&t, order);
        permutation(&p.ring, world);
        permutation(&crate::topology::host_order(&t), t.hosts().len());
        for (i, &r) in p.ring.iter().enumerate() {
            assert_eq!(p.pos[r], i);
        }
    }
    let _ = crate::compress::slowest_link(&t);
}

/// Equal within a relative 1e-9 (the file's units are converted on load and dump).
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn same_topology(a: &Topology, b: &Topology) {
    assert_eq!(a.world(), b.world());
    assert_eq!(a.hosts().len(), b.hosts().len());
    assert_eq!(a.source, b.source);
    for (x, y) in a.hosts().iter().zip(b.hosts()) {
        assert_eq!((&x.name, &x.ranks, x.cores), (&y.name, &y.ranks, y.cores));
        for (p, q) in [(x.nic, y.nic), (x.intra_total, y.intra_total)] {
            assert_eq!(p.is_some(), q.is_some());
            assert!(close(p.unwrap_or(0.0), q.unwrap_or(0.0)), "{p:?} {q:?}");
        }
    }
    assert!(close(a.nic, b.nic));
    for h in 0..a.hosts().len() {
        for g in 0..a.hosts().len() {
            let (l, m) = (a.host_link(h, g), b.host_link(h, g));
            assert!(
                close(l.alpha, m.alpha) && close(l.bandwidth, m.bandwidth),
                "{l:?} {m:?}"
            );
        }
    }
}

fn permutation(v: &[usize], n: usize) {
    let mut seen = vec![false; n];
    assert_eq!(v.len(), n);
    for &x in v {
        assert!(x < n && !std::mem::replace(&mut seen[x], true), "{v:?}");
    }
}

/// Codec payloads (src/compress): every chunk codec's decoder on a payload of the length
/// its encoder produces. It never fails except on top-k indices an encoder cannot write
/// (outside the chunk, repeated or out of order, or after an unused slot), is a pure
/// function of the bytes, `decode_add` adds exactly what `decode` gives, and fp16/bf16
/// payloads re-encode to the same values.
///
/// Input: codec (1 byte), its parameter (1 byte), element count (2 bytes, at most 4096),
/// then the payload (zero-padded or cut to the encoded length).
pub fn codec(data: &[u8]) {
    let Some((head, payload)) = data.split_first_chunk::<4>() else {
        return;
    };
    let p = usize::from(head[1]);
    let codec = match head[0] % 6 {
        0 => Codec::Fp16,
        1 => Codec::Bf16,
        2 => Codec::Fp8E4M3 { block: p + 1 },
        3 => Codec::Fp8E5M2 { block: p + 1 },
        4 => Codec::OneBit { block: p + 1 },
        _ => Codec::TopK {
            fraction: (p + 1) as f64 / 256.0,
        },
    };
    let n = usize::from(u16::from_le_bytes([head[2], head[3]])) % 4097;
    let c = chunk_codec(codec).expect("a valid codec");
    let len = c.encoded_len(n);
    let mut bytes = payload[..payload.len().min(len)].to_vec();
    bytes.resize(len, 0);

    let mut out = vec![0f32; n];
    let r = c.decode(&bytes, &mut out);
    if let Codec::TopK { .. } = codec {
        // Indices first, then values; u32::MAX marks an unused slot. Accepted: the used
        // indices strictly ascending and inside the chunk, every unused slot after them.
        let k = len / 8;
        let idx: Vec<u32> = bytes[..4 * k]
            .chunks(4)
            .map(|i| u32::from_le_bytes([i[0], i[1], i[2], i[3]]))
            .collect();
        let used = idx.iter().take_while(|&&i| i != u32::MAX).count();
        let good = idx[used..].iter().all(|&i| i == u32::MAX)
            && idx[..used].iter().all(|&i| (i as usize) < n)
            && idx[..used].windows(2).all(|w| w[0] < w[1]);
        assert_eq!(r.is_err(), !good, "{codec}: {idx:?} {r:?}");
    } else {
        assert!(r.is_ok(), "{codec}: {r:?}");
    }
    if r.is_err() {
        return;
    }
    let mut again = vec![1f32; n];
    c.decode(&bytes, &mut again).expect("decoded once");
    assert!(
        out.iter().zip(&again).all(|(a, b)| same_f32(*a, *b)),
        "{codec}: not pure"
    );

    let base: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 7.0).collect();
    let mut sum = base.clone();
    c.decode_add(&bytes, &mut sum).expect("decoded once");
    for i in 0..n {
        assert!(same_f32(sum[i], base[i] + out[i]), "{codec}: element {i}");
    }

    if matches!(codec, Codec::Fp16 | Codec::Bf16) {
        let mut re = vec![0u8; len];
        c.encode(&out, &mut re);
        let mut back = vec![0f32; n];
        c.decode(&re, &mut back).expect("an encoder's bytes decode");
        assert!(
            out.iter().zip(&back).all(|(a, b)| same_f32(*a, *b)),
            "{codec}: re-encoding moved a value"
        );
    }
}

/// Equal bits, or both NaN.
fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Configuration values (src/config): `Config::from_vars` and the launcher variables'
/// `launcher::detect` over arbitrary values of every variable they read (except
/// `FERROCOLL_SECRET_FILE`, a path the fuzzer must not make them read). Accepted values are
/// within their documented bounds, and the values with a spelling (codec, transport list)
/// survive a round trip through it.
///
/// Input: records of (variable index, value length, value bytes).
pub fn config(data: &[u8]) {
    let mut vars: Vec<(&str, String)> = Vec::new();
    let mut rest = data;
    while let Some((&[var, len], tail)) = rest.split_first_chunk::<2>() {
        let (value, tail) = tail.split_at(usize::from(len).min(tail.len()));
        vars.push((
            CONFIG_VARS[usize::from(var) % CONFIG_VARS.len()],
            String::from_utf8_lossy(value).into(),
        ));
        rest = tail;
    }
    // The last value of a variable wins, as in an environment built by assignments.
    let get = |k: &str| {
        vars.iter()
            .rev()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
    };

    if let Ok(c) = Config::from_vars(get) {
        assert!(c.segment_bytes >= 1 && c.shm_ring_bytes >= 4096);
        assert!(!c.timeout.is_zero());
        assert!(c.fr_entries <= crate::config::FR_ENTRIES_MAX);
        if let CompressionSetting::Fixed(codec) = c.compression {
            codec.validate().expect("an accepted codec is valid");
            let again: Codec = codec
                .to_string()
                .parse()
                .expect("a codec's spelling parses");
            assert_eq!(again, codec);
        }
        let spec = c.transport.spec();
        assert_eq!(
            TransportChoice::parse(&spec),
            Ok(c.transport.clone()),
            "{spec}"
        );
        if let Some(v) = get("FERROCOLL_ALGO") {
            let again = Config::default().with_algo(&v).expect("accepted once");
            assert_eq!(again.algo, c.algo);
        }
    }
    if let Ok(Some(env)) = launcher::detect(get) {
        assert!(env.rank < env.world, "{env:?}");
        if let (Some(l), Some(w)) = (env.local_rank, env.local_world) {
            assert!(l < w && w <= env.world, "{env:?}");
        }
        assert!(env.store.contains(':'), "{env:?}");
    }
}

/// Flight-recorder dumps as `ferrocoll-probe doctor` reads them (src/recorder/dump.rs): a
/// dump that parses has its rank inside its world and survives a round trip through JSON,
/// and the doctor's analysis of it ends, naming only ranks of the world.
pub fn flight_record(data: &[u8]) {
    let Ok(r) = parse_dump(data) else {
        return;
    };
    assert!(r.rank < r.world);
    let text = serde_json::to_vec(&r).expect("a record serialises");
    assert_eq!(parse_dump(&text).ok().as_ref(), Some(&r));
    for report in diagnose(std::slice::from_ref(&r)) {
        assert_eq!(report.world, r.world);
        for f in &report.findings {
            let _ = f.describe();
        }
    }
}
