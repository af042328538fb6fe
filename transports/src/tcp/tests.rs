//! Loopback tests of the TCP links and the mesh setup.

use std::fmt::Write as _;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{span, Event, Level, Metadata};

use super::setup::{header, label, CLIENT_HELLO_LEN, SERVER_HELLO_LEN};
use super::*;
use crate::auth::{JobKey, PROOF_BYTES};
use std::io::Read;

/// The key every rank of the test job holds.
pub(super) fn key() -> JobKey {
    JobKey::new(b"the test job's key, 32 bytes...")
}

pub(super) fn listeners(n: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    (ls, addrs)
}

/// Collects the WARN and ERROR events of the threads it is the default subscriber of (set per
/// thread, so tests running beside them do not mix in), one line each: the message, then
/// ` name=value` per field.
#[derive(Clone, Default)]
struct WarnLog(Arc<Mutex<Vec<String>>>);

impl WarnLog {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl tracing::Subscriber for WarnLog {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Asked per event: other threads have other (or no) subscribers.
        Interest::sometimes()
    }
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        *m.level() <= Level::WARN
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, e: &Event<'_>) {
        #[derive(Default)]
        struct Line {
            message: String,
            fields: String,
        }
        impl Visit for Line {
            fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    let _ = write!(self.message, "{v:?}");
                } else {
                    let _ = write!(self.fields, " {}={v:?}", f.name());
                }
            }
        }
        let mut line = Line::default();
        e.record(&mut line);
        self.0
            .lock()
            .unwrap()
            .push(format!("{}{}", line.message, line.fields));
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// Forms an `n`-rank mesh over threads; `before` runs after binding, before any rank starts.
fn mesh_with(n: usize, before: impl FnOnce(&[SocketAddr])) -> Vec<TcpEndpoint> {
    mesh_logged(n, before, &WarnLog::default())
}

/// [`mesh_with`], with the warnings of every rank's setup collected in `log`.
fn mesh_logged(n: usize, before: impl FnOnce(&[SocketAddr]), log: &WarnLog) -> Vec<TcpEndpoint> {
    let (ls, addrs) = listeners(n);
    before(&addrs);
    let hs: Vec<_> = ls
        .into_iter()
        .enumerate()
        .map(|(r, l)| {
            let addrs = addrs.clone();
            let log = log.clone();
            thread::spawn(move || {
                tracing::subscriber::with_default(log, || {
                    TcpEndpoint::connect(r, n, l, &addrs, &key(), Duration::from_secs(20))
                })
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
}

pub(super) fn byte(from: usize, to: usize, i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (from * 7 + to * 13) ^ (i >> 11)) as u8
}

/// Sends `bytes` to every peer and receives as many from each, checking every byte.
pub(super) fn exchange(ep: &mut TcpEndpoint, bytes: usize) {
    let (me, n) = (ep.rank(), ep.world_size());
    let out: Vec<Vec<u8>> = (0..n)
        .map(|p| (0..bytes).map(|i| byte(me, p, i)).collect())
        .collect();
    let mut sent = vec![0usize; n];
    let mut got: Vec<Vec<u8>> = (0..n).map(|_| vec![0u8; bytes]).collect();
    let mut recvd = vec![0usize; n];
    sent[me] = bytes;
    recvd[me] = bytes;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent.iter().chain(&recvd).any(|&x| x < bytes) {
        assert!(Instant::now() < deadline, "rank {me}: exchange stalled");
        let token = ep.activity_token();
        let mut moved = false;
        for p in (0..n).filter(|&p| p != me) {
            let l = ep.link(p).unwrap();
            if sent[p] < bytes {
                // Odd-sized pieces exercise partial writes.
                let end = (sent[p] + 300_007).min(bytes);
                let k = l.try_write(&out[p][sent[p]..end]).unwrap();
                sent[p] += k;
                moved |= k > 0;
            }
            while recvd[p] < bytes {
                // Alternate small (buffered) and large (direct) reads.
                let want = if recvd[p] % 2 == 0 { 1000 } else { 700_001 };
                let end = (recvd[p] + want).min(bytes);
                let k = l.read_into(&mut got[p][recvd[p]..end]).unwrap();
                if k == 0 {
                    break;
                }
                recvd[p] += k;
                moved = true;
            }
        }
        if !moved {
            ep.wait(token, Duration::from_millis(100)).unwrap();
        }
    }
    for p in (0..n).filter(|&p| p != me) {
        for (i, &b) in got[p].iter().enumerate() {
            assert_eq!(b, byte(p, me, i), "rank {me}: byte {i} from {p}");
        }
    }
}

#[test]
fn three_rank_mesh_streams_megabytes() {
    let eps = mesh_with(3, |_| {});
    let hs: Vec<_> = eps
        .into_iter()
        .map(|mut ep| {
            thread::spawn(move || {
                exchange(&mut ep, 3 << 20);
                ep
            })
        })
        .collect();
    for h in hs {
        let ep = h.join().unwrap();
        assert_eq!(ep.world_size(), 3);
    }
}

#[test]
fn stranger_is_dropped_and_mesh_forms() {
    let log = WarnLog::default();
    // (rank, the stranger's address as the rank sees it, why the rank must drop it)
    let mut strangers: Vec<(usize, SocketAddr, &str)> = Vec::new();
    let eps = mesh_logged(
        3,
        |addrs| {
            // Random garbage to rank 0 (which accepts from 1 and 2) and to rank 1.
            for (r, &a) in addrs[..2].iter().enumerate() {
                let mut s = TcpStream::connect(a).unwrap();
                let mut x = 0x9e37_79b9_7f4a_7c15u64;
                let junk: Vec<u8> = (0..4096)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                let _ = s.write_all(&junk);
                strangers.push((r, s.local_addr().unwrap(), "bad magic"));
                // Left open: a silent stranger must not block the job either.
                std::mem::forget(s);
            }
            // A well-formed hello from a process without the key, which then cannot prove
            // it (its proof is sent at once: the rank reads it after answering the hello).
            let mut s = TcpStream::connect(addrs[0]).unwrap();
            s.write_all(&header(2, 3)).unwrap();
            s.write_all(&[7u8; CLIENT_HELLO_LEN - 16]).unwrap();
            s.write_all(&[0u8; PROOF_BYTES]).unwrap();
            strangers.push((0, s.local_addr().unwrap(), "wrong proof of the job's key"));
            std::mem::forget(s);
            // Another world size.
            let mut s = TcpStream::connect(addrs[1]).unwrap();
            s.write_all(&header(2, 4)).unwrap();
            s.write_all(&[7u8; CLIENT_HELLO_LEN - 16]).unwrap();
            strangers.push((1, s.local_addr().unwrap(), "world size 4"));
            std::mem::forget(s);
            // A silent stranger holding a connection open.
            std::mem::forget(TcpStream::connect(addrs[0]).unwrap());
        },
        &log,
    );
    let hs: Vec<_> = eps
        .into_iter()
        .map(|mut ep| thread::spawn(move || exchange(&mut ep, 64 << 10)))
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    // Each stranger that sent bytes was dropped with a warning naming it and saying why (its
    // bytes were there before the rank started, so the rank read them before the mesh formed).
    let lines = log.lines();
    for (r, addr, why) in strangers {
        let remote = format!("remote={addr}");
        assert!(
            lines.iter().any(|l| {
                l.contains("dropping a connection that is not a peer of this job")
                    && l.contains(why)
                    && l.split_whitespace().any(|w| w == remote)
            }),
            "rank {r}: no warning dropping the stranger {addr} ({why}); warnings: {lines:#?}"
        );
    }
}

#[test]
fn closed_peer_gives_closed_after_drain() {
    let mut eps = mesh_with(2, |_| {});
    let mut e1 = eps.pop().unwrap();
    let mut e0 = eps.pop().unwrap();
    assert_eq!(e1.link(0).unwrap().try_write(b"ab").unwrap(), 2);
    e1.close_all();
    drop(e1);
    let l = e0.link(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let err = loop {
        assert!(Instant::now() < deadline, "no Closed seen");
        match l.peek() {
            Ok(b) => {
                let n = b.len();
                got.extend_from_slice(b);
                l.consume(n);
                if n == 0 {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            Err(e) => break e,
        }
    };
    assert_eq!(got, b"ab");
    assert!(matches!(err, LinkError::Closed { peer: 1 }), "{err:?}");
    assert!(matches!(
        l.try_write(b"x"),
        Err(LinkError::Closed { peer: 1 })
    ));
    let mut buf = [0u8; DIRECT_READ_MIN];
    assert!(matches!(
        l.read_into(&mut buf),
        Err(LinkError::Closed { peer: 1 })
    ));
}

#[test]
fn setup_deadline_with_missing_peer() {
    // Rank 1 of 2 connects to a rank 0 that never listens.
    let (mut ls, addrs) = listeners(2);
    drop(ls.remove(0));
    let start = Instant::now();
    let t = Duration::from_millis(500);
    let err = TcpEndpoint::connect(1, 2, ls.remove(0), &addrs, &key(), t).err();
    let took = start.elapsed();
    assert!(took < t + Duration::from_millis(400), "took {took:?}");
    match err {
        Some(LinkError::Io { peer: 0, source }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{source}")
        }
        other => panic!("expected a timeout naming rank 0, got {other:?}"),
    }
    // Rank 0 of 2 waits for a rank 1 that never comes.
    let (mut ls, addrs) = listeners(2);
    let start = Instant::now();
    let err = TcpEndpoint::connect(0, 2, ls.remove(0), &addrs, &key(), t).err();
    assert!(start.elapsed() < t + Duration::from_millis(400));
    assert!(
        matches!(err, Some(LinkError::Io { peer: 1, .. })),
        "{err:?}"
    );
}

/// A loopback port below the kernel's ephemeral range that is free now: while a test keeps
/// it closed, no other test's connection can be given it as its local port.
fn quiet_port() -> u16 {
    let start = 20_000 + (std::process::id() % 8_000) as u16;
    (start..start + 2_000)
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below 30000")
}

#[test]
fn late_peer_is_retried() {
    let (ls, mut addrs) = listeners(2);
    let mut ls = ls.into_iter();
    // Rank 0 is not listening yet: its port refuses connections until it binds it.
    drop(ls.next());
    addrs[0] = SocketAddr::from(([127, 0, 0, 1], quiet_port()));
    let l1 = ls.next().unwrap();
    let a = addrs.clone();
    let h1 =
        thread::spawn(move || TcpEndpoint::connect(1, 2, l1, &a, &key(), Duration::from_secs(10)));
    thread::sleep(Duration::from_millis(300));
    let l0 = TcpListener::bind(addrs[0]).unwrap();
    let e0 = TcpEndpoint::connect(0, 2, l0, &addrs, &key(), Duration::from_secs(10)).unwrap();
    let e1 = h1.join().unwrap().unwrap();
    assert_eq!((e0.rank(), e1.rank()), (0, 1));
}

#[test]
fn single_rank_and_bad_arguments() {
    let (mut ls, addrs) = listeners(1);
    let mut ep =
        TcpEndpoint::connect(0, 1, ls.remove(0), &addrs, &key(), Duration::from_secs(1)).unwrap();
    assert!(ep.link(0).is_none());
    let (mut ls, addrs) = listeners(1);
    assert!(
        TcpEndpoint::connect(3, 2, ls.remove(0), &addrs, &key(), Duration::from_secs(1)).is_err()
    );
}

#[test]
fn interrupter_wakes_wait() {
    let mut eps = mesh_with(2, |_| {});
    let mut e0 = eps.remove(0);
    let wake = e0.interrupter();
    let token = e0.activity_token();
    let h = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        wake();
    });
    let start = Instant::now();
    // Spurious wake-ups (e.g. initial writability) are allowed: wait until the token moves.
    let mut t = token;
    while start.elapsed() < Duration::from_secs(5) {
        e0.wait(t, Duration::from_secs(5)).unwrap();
        if start.elapsed() >= Duration::from_millis(40) {
            break;
        }
        t = e0.activity_token();
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    h.join().unwrap();
    // A token that already moved returns at once.
    let start = Instant::now();
    e0.wait(token, Duration::from_secs(5)).unwrap();
    assert!(start.elapsed() < Duration::from_millis(100));
}

/// A header read leaves a large payload in the socket (at most `SMALL_FILL` of it passes
/// through the receive buffer), and header + payload arrive intact.
#[test]
fn a_replayed_handshake_is_refused_within_a_second() {
    let log = WarnLog::default();
    let (mut ls, addrs) = listeners(2);
    let l1 = ls.pop().unwrap();
    let l0 = ls.pop().unwrap();
    let (a, lg) = (addrs.clone(), log.clone());
    let rank0 = thread::spawn(move || {
        tracing::subscriber::with_default(lg, || {
            TcpEndpoint::connect(0, 2, l0, &a, &key(), Duration::from_secs(20))
        })
    });
    // What an eavesdropper kept of an earlier handshake of rank 1 with rank 0: its nonce and
    // its proof over the server nonce of that connection.
    let (nc, old_ns) = ([3u8; 32], [4u8; 32]);
    let old_proof = key().proof(&label(1, 0, 2), b"client", &old_ns, &nc);
    let mut s = TcpStream::connect(addrs[0]).unwrap();
    let me = s.local_addr().unwrap();
    let start = Instant::now();
    s.write_all(&header(1, 2)).unwrap();
    s.write_all(&nc).unwrap();
    s.write_all(&old_proof).unwrap();
    let mut answer = [0u8; SERVER_HELLO_LEN];
    s.read_exact(&mut answer).unwrap();
    assert_ne!(&answer[16..48], &old_ns, "the server draws a fresh nonce");
    // Refused: the connection closes without the accept byte.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let took = start.elapsed();
    assert!(rest.is_empty(), "no accept byte for a replay: {rest:?}");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    // The job is unaffected: the real rank 1 links.
    let e1 = TcpEndpoint::connect(1, 2, l1, &addrs, &key(), Duration::from_secs(20)).unwrap();
    let e0 = rank0.join().unwrap().unwrap();
    assert_eq!((e0.rank(), e1.rank()), (0, 1));
    let lines = log.lines();
    let remote = format!("remote={me}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("replayed") && l.split_whitespace().any(|w| w == remote))
            .count(),
        1,
        "one warning naming the replay's address: {lines:#?}"
    );
}

#[test]
fn ranks_with_different_keys_never_link() {
    let (mut ls, addrs) = listeners(2);
    let l1 = ls.pop().unwrap();
    let l0 = ls.pop().unwrap();
    let a = addrs.clone();
    let t = Duration::from_millis(800);
    let rank0 = thread::spawn(move || {
        let other = JobKey::new(b"another job's key, 32 bytes.....");
        TcpEndpoint::connect(0, 2, l0, &a, &other, t).err()
    });
    let e1 = TcpEndpoint::connect(1, 2, l1, &addrs, &key(), t).err();
    let e0 = rank0.join().unwrap();
    assert!(matches!(e0, Some(LinkError::Io { peer: 1, .. })), "{e0:?}");
    let why = format!("{:?}", e1.expect("rank 1 must not link"));
    assert!(why.contains("could not prove the job's key"), "{why}");
}

#[test]
fn header_read_leaves_the_payload_in_the_socket() {
    let (l, a) = listeners(1);
    let mut tx = TcpStream::connect(a[0]).unwrap();
    let (rx, _) = l[0].accept().unwrap();
    rx.set_nonblocking(true).unwrap();
    let mut link = TcpLink::new(1, mio::net::TcpStream::from_std(rx));
    let msg: Vec<u8> = (0..32 + (256 << 10)).map(|i| byte(1, 0, i)).collect();
    tx.write_all(&msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while n < 32 {
        assert!(Instant::now() < deadline, "header never arrived");
        n += link.read_into(&mut got[n..32]).unwrap();
    }
    assert!(
        link.end - link.start <= SMALL_FILL,
        "{} bytes buffered behind a header",
        link.end - link.start
    );
    while n < msg.len() {
        assert!(Instant::now() < deadline, "payload never arrived");
        n += link.read_into(&mut got[n..]).unwrap();
    }
    assert!(got == msg, "bytes differ");
}
