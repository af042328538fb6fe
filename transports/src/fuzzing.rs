//! Entry points of the fuzz targets (`fuzz/` of the workspace, run by `.ci/fuzz.sh`) for the
//! decoders this crate keeps private. Each takes arbitrary bytes, feeds them to one decoder
//! of bytes that come from outside the process, and panics when an invariant of that decoder
//! breaks. Not an API: hidden from the docs, for the fuzz crate only (and for the corpus
//! replay test of the `ferrocoll` crate).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use socket2::SockRef;

use crate::auth::JobKey;
use crate::plugin::AddressBlob;
use crate::rdma_core::wire::{Announce, Hello as RdmaHello, Imm, ANNOUNCE_LEN};
use crate::tcp::factory::decode_address;
use crate::tcp::setup::{header, CLIENT_HELLO_LEN, SERVER_HELLO_LEN};
use crate::tcp::TcpEndpoint;

/// The job token of the fuzzed handshakes.
const TOKEN: u64 = 0x5eed_f00d_cafe_d00d;

/// The key of the fuzzed jobs.
fn key() -> JobKey {
    JobKey::new(b"the fuzzed job's key, 32 bytes..")
}

/// The TCP link handshake as the accepting side runs it: rank 0 of a 2-rank job accepts on
/// loopback, a stranger (who lacks the job key) connects, sends `bytes` (at most 1 KiB) and
/// closes its side. The stranger is never accepted (it never gets the accept byte after the
/// answer), and the real rank 1, which connects next, still forms the mesh. (The decoders
/// are private to `tcp::setup`, so they are reached through the public mesh set-up.)
pub fn tcp_handshake(bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(1024)];
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("listener address");
    let accept = std::thread::spawn(move || {
        TcpEndpoint::connect(
            0,
            2,
            listener,
            &[addr, addr],
            &key(),
            Duration::from_secs(3),
        )
    });
    let answer = exchange(addr, bytes);
    assert!(
        answer.len() <= SERVER_HELLO_LEN,
        "a stranger was accepted after {bytes:02x?}"
    );
    let l1 = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let a1 = l1.local_addr().expect("listener address");
    let ep1 = TcpEndpoint::connect(1, 2, l1, &[addr, a1], &key(), Duration::from_secs(3));
    assert!(ep1.is_ok(), "the real peer was refused: {:?}", ep1.err());
    let ep = accept.join().expect("the accepting thread panicked");
    assert!(ep.is_ok(), "the mesh did not form: {:?}", ep.err());
}

/// Connects to `addr`, sends `bytes`, closes the sending side and reads the answer: up to
/// one answer and an accept byte, or nothing when the other side closes.
fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    const MOST: usize = SERVER_HELLO_LEN + 1;
    let mut s = TcpStream::connect(addr).expect("connect to loopback");
    // A reset instead of TIME_WAIT: millions of runs must not exhaust the ports.
    let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
    // The other side may have closed already (it read a whole bad hello).
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut answer = Vec::with_capacity(MOST);
    let mut buf = [0u8; MOST];
    while answer.len() < MOST {
        match s.read(&mut buf[..MOST - answer.len()]) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    answer
}

/// The RDMA core's wire decoders (the first byte picks one) on the rest: the setup hello
/// (for a world of 1 + the second byte; an accepted hello encodes back to exactly its bytes),
/// the 32-bit immediate data (a decoded value survives encode and decode) and the
/// single-copy announcement (encodes back to its bytes; its range check never overflows).
pub fn rdma_wire(bytes: &[u8]) {
    let Some((&which, rest)) = bytes.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let Some((&w, b)) = rest.split_first() else {
                return;
            };
            let world = usize::from(w) + 1;
            if let Ok(h) = RdmaHello::decode(b, TOKEN, world, &key(), 0) {
                assert_eq!(h.encode(&key(), 0)[..], b[..], "{h:?}");
            }
        }
        1 => {
            let v = u32::from_le_bytes(*rest.first_chunk::<4>().unwrap_or(&[0; 4]));
            if let Some(imm) = Imm::decode(v) {
                assert_eq!(Imm::decode(imm.encode()), Some(imm), "{v:#010x}");
            }
        }
        _ => {
            let Some((b, probe)) = rest.split_first_chunk::<ANNOUNCE_LEN>() else {
                return;
            };
            let a = Announce::decode(b);
            assert_eq!(&a.encode(), b);
            let q = probe.first_chunk::<16>().copied().unwrap_or([0; 16]);
            let addr = u64::from_le_bytes(q[..8].try_into().unwrap_or_default());
            let len = u64::from_le_bytes(q[8..].try_into().unwrap_or_default()) as usize;
            if a.covers(addr, len) {
                let end = u128::from(addr - a.addr) + len as u128;
                assert!(
                    end <= u128::from(a.len),
                    "{a:?} covers {len} bytes at {addr:#x}"
                );
            }
        }
    }
}

/// Transport address blobs (transports/src/plugin.rs, tcp/factory.rs), as published in the
/// store: `AddressBlob::open` only accepts the transport and version asked for and returns
/// the rest, and a TCP address that decodes survives a round trip.
pub fn address_blob(data: &[u8]) {
    let blob = AddressBlob(data.to_vec());
    let claimed = blob.transport();
    for (name, version) in [("tcp", 1), ("shm", 1), ("ofi", 1), ("rdma", 1)] {
        if let Ok(payload) = blob.open(name, version, 3) {
            assert_eq!(claimed, Some(name));
            assert_eq!(AddressBlob::new(name, version, payload), blob);
        }
    }
    if let Ok(addr) = decode_address(&blob, 3) {
        let again = AddressBlob::new("tcp", 1, addr.to_string().as_bytes());
        assert_eq!(decode_address(&again, 3).ok(), Some(addr));
    }
}

/// `(target, name, bytes)` for every seed of this crate's targets, made by the real
/// encoders (`tests/fuzz_corpus.rs` of the `ferrocoll` crate writes and replays them).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut s = Vec::new();
    let mut add = |t: &'static str, name: &str, b: Vec<u8>| s.push((t, name.to_string(), b));
    let hello = |rank, world| {
        let mut b = header(rank, world).to_vec();
        b.resize(CLIENT_HELLO_LEN, 7);
        b
    };
    add("tcp_handshake", "hello", hello(1, 2));
    let mut with_proof = hello(1, 2);
    with_proof.extend([0u8; 32]);
    add("tcp_handshake", "wrong_proof", with_proof);
    add("tcp_handshake", "other_world", hello(1, 3));
    add("tcp_handshake", "self", hello(0, 2));
    add("tcp_handshake", "short", hello(1, 2)[..10].to_vec());

    let h = RdmaHello {
        token: TOKEN,
        rank: 1,
        world: 2,
        slots: 16,
        slot_bytes: 1 << 16,
        ring_addr: 0x7f00_0000_1000,
        ring_key: 0x1234,
        ctrl_addr: 0x7f00_0000_9000,
        ctrl_key: 0x5678,
    };
    let mut b = vec![0, 1];
    b.extend(h.encode(&key(), 0));
    add("rdma_wire", "hello", b);
    for (name, imm) in [
        ("data", Imm::Data { slot: 3, len: 4096 }),
        ("announce", Imm::Announce { slot: 255 }),
        ("credit", Imm::Credit { n: 4 }),
        ("close", Imm::Close),
    ] {
        let mut b = vec![1];
        b.extend(imm.encode().to_le_bytes());
        add("rdma_wire", name, b);
    }
    let a = Announce {
        addr: 0x7f00_0000_0000,
        len: 1 << 20,
        remote_addr: 0x7f00_0000_0000,
        rkey: 9,
    };
    let mut b = vec![2];
    b.extend(a.encode());
    b.extend((a.addr + 4096).to_le_bytes());
    b.extend(4096u64.to_le_bytes());
    add("rdma_wire", "announce_record", b);

    add(
        "address_blob",
        "tcp",
        AddressBlob::new("tcp", 1, b"10.0.0.1:41000").0,
    );
    add(
        "address_blob",
        "tcp_v6",
        AddressBlob::new("tcp", 1, b"[::1]:9").0,
    );
    add("address_blob", "shm", AddressBlob::new("shm", 1, &[]).0);
    add(
        "address_blob",
        "ofi",
        AddressBlob::new("ofi", 1, &[3, b't', b'c', b'p', 4, 0, 1, 2, 3, 4]).0,
    );
    s
}
