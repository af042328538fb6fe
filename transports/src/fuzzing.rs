//! Entry points of the fuzz targets (`fuzz/` of the workspace, run by `.ci/fuzz.sh`) for the
//! decoders this crate keeps private. Each takes arbitrary bytes, feeds them to one decoder
//! of bytes that come from outside the process, and panics when an invariant of that decoder
//! breaks. Not an API: hidden from the docs, for the fuzz crate only. Public decoders (the
//! address blobs) are fuzzed through their public API directly.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use socket2::SockRef;

use crate::rdma_core::wire::{Announce, Hello as RdmaHello, Imm, ANNOUNCE_LEN};
use crate::tcp::setup::{Hello as TcpHello, HANDSHAKE_LEN};
use crate::tcp::TcpEndpoint;

/// The job token of the fuzzed handshakes.
const TOKEN: u64 = 0x5eed_f00d_cafe_d00d;

/// The TCP link handshake as the accepting side runs it: rank 0 of a 2-rank job accepts on
/// loopback, a stranger connects and sends `bytes` (at most 1 KiB) and closes its side.
/// Rank 0 must answer with its own hello exactly when `bytes` start with rank 1's hello, and
/// otherwise drop the stranger and go on: rank 1's real hello, sent next, still forms the
/// mesh. (The decoder, `Hello::check`, is private to `tcp::setup`, so it is reached through
/// the public mesh set-up.)
pub fn tcp_handshake(bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(1024)];
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("listener address");
    let accept = std::thread::spawn(move || {
        TcpEndpoint::connect(0, 2, listener, &[addr, addr], TOKEN, Duration::from_secs(3))
    });
    let hello = |rank| {
        TcpHello {
            job_token: TOKEN,
            rank,
            world: 2,
        }
        .encode()
    };
    let answer = exchange(addr, bytes);
    let valid = bytes.len() >= HANDSHAKE_LEN && bytes[..HANDSHAKE_LEN] == hello(1);
    if valid {
        assert_eq!(answer, hello(0), "rank 0 did not answer a valid hello");
    } else {
        assert!(answer.is_empty(), "rank 0 answered {bytes:02x?}");
        assert_eq!(
            exchange(addr, &hello(1)),
            hello(0),
            "the real peer was refused"
        );
    }
    let ep = accept.join().expect("the accepting thread panicked");
    assert!(ep.is_ok(), "the mesh did not form: {:?}", ep.err());
}

/// Connects to `addr`, sends `bytes`, closes the sending side and reads the answer: up to
/// one hello, or nothing when the other side closes.
fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect to loopback");
    // A reset instead of TIME_WAIT: millions of runs must not exhaust the ports.
    let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
    // The other side may have closed already (it read a whole bad hello).
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut answer = Vec::with_capacity(HANDSHAKE_LEN);
    let mut buf = [0u8; HANDSHAKE_LEN];
    while answer.len() < HANDSHAKE_LEN {
        match s.read(&mut buf[..HANDSHAKE_LEN - answer.len()]) {
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
            if let Ok(h) = RdmaHello::decode(b, TOKEN, world) {
                assert_eq!(h.encode()[..], b[..], "{h:?}");
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
