//! Entry points of the fuzz targets (`fuzz/`, run by `.ci/fuzz.sh`) for the decoders this
//! crate keeps private. Each takes arbitrary bytes, feeds them to one decoder of bytes that
//! come from outside the process, and panics when an invariant of that decoder breaks (a
//! value that does not survive a round trip, an answer that contradicts the protocol); a
//! decoder that refuses the bytes is fine. Not an API: hidden from the docs, for the fuzz
//! crate only. Decoders that are public are fuzzed through their public API directly.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ferrocoll_transports::auth::{JobKey, NONCE_BYTES};

use crate::bootstrap::tcp_server::{self, State};
use crate::bootstrap::wire::{self, Request, Response};
use crate::exec::frame::{Frame, FRAME_BYTES};
use crate::ft::agree::Decision;
use crate::ft::wire::Datagram;

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
/// bytes) on the rest: an accepted datagram survives encode and decode.
pub fn heartbeat(bytes: &[u8]) {
    let Some((w, datagram)) = bytes.split_first_chunk::<2>() else {
        return;
    };
    let world = usize::from(u16::from_le_bytes(*w)) + 1;
    if let Ok(d) = Datagram::decode(datagram, world) {
        assert_eq!(Datagram::decode(&d.encode(), world), Ok(d));
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
