//! Loopback tests of TLS on the TCP links (feature `tls`): data through a TLS mesh, what a
//! relay in the middle sees on the wire, and what a flipped byte or a session not bound to
//! the job's key does.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::tests::{exchange, key, listeners};
use super::*;
use crate::auth::JobKey;

const T: Duration = Duration::from_secs(20);

/// A relay between a dialling rank and the rank it dials: forwards both ways, records what
/// goes from the dialler to the acceptor, and flips one byte of that direction at offset
/// `flip_at` when given.
struct Relay {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(target: SocketAddr, flip_at: Option<usize>) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        thread::spawn(move || {
            let (from, _) = l.accept().unwrap();
            let to = TcpStream::connect(target).unwrap();
            let (from2, to2) = (from.try_clone().unwrap(), to.try_clone().unwrap());
            thread::spawn(move || pump(to2, from2, None, None));
            pump(from, to, Some(rec), flip_at);
        });
        Relay { addr, seen }
    }
}

/// Copies `a` to `b` until either side closes.
fn pump(mut a: TcpStream, mut b: TcpStream, rec: Option<Arc<Mutex<Vec<u8>>>>, flip: Option<usize>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0usize;
    loop {
        let n = match a.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(f) = flip.filter(|&f| f >= at && f < at + n) {
            buf[f - at] ^= 0x01;
        }
        if let Some(r) = &rec {
            r.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        at += n;
        if b.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = b.shutdown(Shutdown::Write);
}

/// A 2-rank mesh whose rank 1 reaches rank 0 through `relay` (started on rank 0's address),
/// with TLS when `tls`, each rank with its key.
fn pair(
    tls: bool,
    relay: impl FnOnce(SocketAddr) -> Relay,
    keys: [JobKey; 2],
) -> (Relay, Vec<Result<TcpEndpoint, LinkError>>) {
    let (ls, addrs) = listeners(2);
    let relay = relay(addrs[0]);
    let via = vec![relay.addr, addrs[1]];
    let hs: Vec<_> = ls
        .into_iter()
        .zip(keys)
        .enumerate()
        .map(|(r, (l, k))| {
            let a = if r == 1 { via.clone() } else { addrs.clone() };
            thread::spawn(move || {
                // The mesh itself proves the test key; `k` is the one TLS binds to.
                let ep = TcpEndpoint::connect(r, 2, l, &a, &key(), T)?;
                if tls {
                    ep.with_tls(&k, Duration::from_secs(5))
                } else {
                    Ok(ep)
                }
            })
        })
        .collect();
    (relay, hs.into_iter().map(|h| h.join().unwrap()).collect())
}

/// Runs `exchange` of `bytes` on every endpoint, each in its thread.
fn exchange_all(eps: Vec<TcpEndpoint>, bytes: usize) {
    let hs: Vec<_> = eps
        .into_iter()
        .map(|mut ep| thread::spawn(move || exchange(&mut ep, bytes)))
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn a_tls_mesh_streams_megabytes_both_ways() {
    let (ls, addrs) = listeners(3);
    let hs: Vec<_> = ls
        .into_iter()
        .enumerate()
        .map(|(r, l)| {
            let a = addrs.clone();
            thread::spawn(move || {
                let ep = TcpEndpoint::connect(r, 3, l, &a, &key(), T).unwrap();
                ep.with_tls(&key(), T).unwrap()
            })
        })
        .collect();
    let mut eps: Vec<TcpEndpoint> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    for ep in &mut eps {
        let me = ep.rank();
        for p in (0..3).filter(|&p| p != me) {
            assert!(ep.links[p].as_ref().unwrap().is_tls(), "rank {me} to {p}");
        }
    }
    exchange_all(eps, 3 << 20);
}

/// The pattern `exchange` sends from rank 1 to rank 0, as it appears in the plaintext.
fn plaintext_window() -> Vec<u8> {
    (1000..1064).map(|i| super::tests::byte(1, 0, i)).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_wire_carries_no_plaintext_under_tls() {
    let pattern = plaintext_window();
    // Without TLS the relay sees the data: the check below can fail.
    let (relay, eps) = pair(false, |a| Relay::start(a, None), [key(), key()]);
    exchange_all(eps.into_iter().map(Result::unwrap).collect(), 1 << 20);
    assert!(contains(&relay.seen.lock().unwrap(), &pattern));
    // With TLS it never does, and no byte of the key either.
    let (relay, eps) = pair(true, |a| Relay::start(a, None), [key(), key()]);
    exchange_all(eps.into_iter().map(Result::unwrap).collect(), 1 << 20);
    let seen = relay.seen.lock().unwrap();
    assert!(seen.len() > 1 << 20, "only {} bytes relayed", seen.len());
    assert!(!contains(&seen, &pattern), "plaintext on the wire");
    assert!(
        !contains(&seen, b"the test job's key"),
        "the key on the wire"
    );
}

#[test]
fn a_flipped_byte_is_a_protocol_error_not_data() {
    // Well past the handshake (a few kilobytes): inside the application data.
    let (_relay, eps) = pair(true, |a| Relay::start(a, Some(200_000)), [key(), key()]);
    let mut eps: Vec<TcpEndpoint> = eps.into_iter().map(Result::unwrap).collect();
    let mut e1 = eps.pop().unwrap();
    let mut e0 = eps.pop().unwrap();
    let sender = thread::spawn(move || {
        let data = vec![7u8; 1 << 20];
        let mut sent = 0;
        let t0 = Instant::now();
        while sent < data.len() && t0.elapsed() < T {
            let tok = e1.activity_token();
            match e1.link(0).unwrap().try_write(&data[sent..]) {
                Ok(0) => e1.wait(tok, Duration::from_millis(50)).unwrap(),
                Ok(k) => sent += k,
                Err(_) => break,
            }
        }
        e1
    });
    let mut got = vec![0u8; 1 << 20];
    let mut n = 0;
    let t0 = Instant::now();
    let err = loop {
        assert!(t0.elapsed() < T, "no error after {n} bytes");
        let tok = e0.activity_token();
        match e0.link(1).unwrap().read_into(&mut got[n..]) {
            Ok(0) => e0.wait(tok, Duration::from_millis(50)).unwrap(),
            Ok(k) => n += k,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&err, LinkError::Protocol { peer: 1, detail } if detail.contains("TLS")),
        "{err:?}"
    );
    assert!(n < 200_000, "{n} bytes delivered past the flipped one");
    assert!(got[..n].iter().all(|&b| b == 7), "wrong data delivered");
    // Closing ends the sender's loop (its writes fail) instead of its deadline.
    drop(e0);
    drop(sender.join().unwrap());
}

#[test]
fn a_session_not_bound_to_the_job_key_is_refused() {
    // The mesh's proofs pass, but rank 1 binds its TLS session to another key: as seen from
    // rank 0, a party in the middle that terminated TLS without the job's key.
    let other = JobKey::new(b"a different key of 32 bytes.....");
    let (_relay, eps) = pair(true, |a| Relay::start(a, None), [key(), other]);
    for (r, ep) in eps.iter().enumerate() {
        match ep {
            Err(LinkError::Protocol { detail, .. }) if detail.contains("not bound") => {}
            // The side that failed first may close before the other reads its proof.
            Err(LinkError::Closed { .. }) => {}
            other => panic!("rank {r}: {:?}", other.as_ref().map(|_| "linked")),
        }
    }
    assert!(eps.iter().any(
        |e| matches!(e, Err(LinkError::Protocol { detail, .. }) if detail.contains("not bound"))
    ));
}
