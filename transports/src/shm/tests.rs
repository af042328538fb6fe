//! Tests of the shared-memory transport: ranks are threads, each mapping the segment itself.
//! Ranks in separate processes: `tests/shm_processes.rs`.

use super::*;
use crate::copy::Stores;
use std::io::Write;

const T: Duration = Duration::from_secs(20);

/// A job id no other test (or concurrent test run) uses.
fn job(name: &str) -> String {
    format!("test-{}-{name}", std::process::id())
}

/// Opens `n` endpoints of `job` (ranks 0..n, all local) concurrently.
fn open_all(job: &str, n: usize, ring_bytes: usize) -> Vec<ShmEndpoint> {
    let local: Vec<usize> = (0..n).collect();
    let hs: Vec<_> = (0..n)
        .map(|r| {
            let (job, local) = (job.to_string(), local.clone());
            std::thread::spawn(move || ShmEndpoint::open(&job, r, n, &local, ring_bytes, T))
        })
        .collect();
    hs.into_iter()
        .map(|h| h.join().unwrap().expect("open"))
        .collect()
}

fn pattern(from: usize, to: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add((from * 31 + to) as u32) as u8
        })
        .collect()
}

/// Every rank sends `len` bytes to every other rank and checks what it receives, driving
/// all its links from one thread and sleeping on the endpoint when nothing moves. With
/// `tee`, sends also copy what they write into a kept buffer (checked too) and receives use
/// streaming stores.
fn all_to_all(mut ep: ShmEndpoint, len: usize, tee: bool) {
    let n = ep.world_size();
    let me = ep.rank();
    let out: Vec<Vec<u8>> = (0..n).map(|p| pattern(me, p, len)).collect();
    let expect: Vec<Vec<u8>> = (0..n).map(|p| pattern(p, me, len)).collect();
    let mut sent = vec![0usize; n];
    let mut got: Vec<Vec<u8>> = vec![Vec::with_capacity(len); n];
    let mut kept: Vec<Vec<u8>> = vec![vec![0; len]; n];
    let mut landed: Vec<Vec<u8>> = vec![vec![0; len]; n];
    let done = |sent: &[usize], got: &[Vec<u8>]| {
        (0..n).all(|p| p == me || (sent[p] == len && got[p].len() == len))
    };
    let deadline = Instant::now() + T;
    while !done(&sent, &got) {
        assert!(Instant::now() < deadline, "rank {me} stalled");
        let token = ep.activity_token();
        let mut moved = false;
        for p in (0..n).filter(|&p| p != me) {
            let l = ep.link(p).unwrap();
            if sent[p] < len {
                let k = if tee {
                    let (b, t) = (&out[p][sent[p]..], &mut kept[p][sent[p]..]);
                    l.try_write_tee(b, t, Stores::Streaming).unwrap()
                } else {
                    l.try_write(&out[p][sent[p]..]).unwrap()
                };
                sent[p] += k;
                moved |= k > 0;
            }
            if tee && got[p].len() < len {
                let at = got[p].len();
                let k = l
                    .read_into_with(&mut landed[p][at..], Stores::Streaming)
                    .unwrap();
                got[p].extend_from_slice(&landed[p][at..at + k]);
                moved |= k > 0;
            } else if got[p].len() < len {
                // A peer that is done drops its endpoint: peek only while bytes are due.
                let s = l.peek().unwrap();
                let k = s.len();
                got[p].extend_from_slice(s);
                l.consume(k);
                moved |= k > 0;
            }
        }
        if !moved {
            ep.wait(token, Duration::from_secs(1)).unwrap();
        }
    }
    for p in (0..n).filter(|&p| p != me) {
        assert!(got[p] == expect[p], "rank {me}: bytes from {p} differ");
        assert!(
            !tee || kept[p] == out[p],
            "rank {me}: kept bytes for {p} differ"
        );
    }
}

fn stream_test(name: &str, n: usize, tee: bool) {
    let eps = open_all(&job(name), n, 64 << 10);
    let hs: Vec<_> = eps
        .into_iter()
        .map(|ep| std::thread::spawn(move || all_to_all(ep, 3 << 20, tee)))
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn shm_two_ranks_stream() {
    stream_test("two", 2, false);
}

#[test]
fn shm_tee_writes_and_streaming_reads() {
    stream_test("tee", 3, true);
}

#[test]
fn shm_four_ranks_stream() {
    stream_test("four", 4, false);
}

#[test]
fn shm_segment_is_unlinked_after_open() {
    let j = job("unlink");
    let eps = open_all(&j, 3, 4096);
    let path = segment_path(&j, &[0, 1, 2]);
    assert_eq!(eps[0].segment_path(), path.as_path());
    assert!(!path.exists(), "{} still exists", path.display());
    drop(eps);
    assert!(!path.exists());
}

#[test]
fn shm_close_is_seen_after_drain() {
    let mut eps = open_all(&job("close"), 2, 4096);
    assert_eq!(eps[0].link(1).unwrap().try_write(b"ab").unwrap(), 2);
    eps[0].close_all();
    let l = eps[1].link(0).unwrap();
    assert_eq!(l.peek().unwrap(), b"ab");
    l.consume(2);
    assert!(matches!(l.peek(), Err(LinkError::Closed { peer: 0 })));
    assert!(matches!(
        l.try_write(b"x"),
        Err(LinkError::Closed { peer: 0 })
    ));
}

#[test]
fn shm_links_only_to_local_peers() {
    // Global world of 6; this host holds ranks 1, 3, 4.
    let j = job("subset");
    let local = [1usize, 3, 4];
    let hs: Vec<_> = local
        .iter()
        .map(|&r| {
            let j = j.clone();
            std::thread::spawn(move || ShmEndpoint::open(&j, r, 6, &local, 4096, T))
        })
        .collect();
    let mut eps: Vec<ShmEndpoint> = hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    let e3 = &mut eps[1];
    assert_eq!(e3.rank(), 3);
    assert!(e3.link(0).is_none() && e3.link(3).is_none() && e3.link(9).is_none());
    assert_eq!(e3.link(4).unwrap().try_write(b"hi").unwrap(), 2);
    assert_eq!(eps[2].link(3).unwrap().peek().unwrap(), b"hi");
}

#[test]
fn shm_wait_is_woken_by_peer_write() {
    let mut eps = open_all(&job("wake"), 2, 4096);
    let mut e1 = eps.pop().unwrap();
    let mut e0 = eps.pop().unwrap();
    let token = e0.activity_token();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        e1.link(0).unwrap().try_write(b"x").unwrap();
        (t, e1)
    });
    e0.wait(token, Duration::from_secs(10)).unwrap();
    let woke = Instant::now();
    let (sent_at, _e1) = h.join().unwrap();
    let lag = woke.saturating_duration_since(sent_at);
    assert!(
        lag < Duration::from_secs(2),
        "woken {lag:?} after the write"
    );
    assert_eq!(e0.link(1).unwrap().peek().unwrap(), b"x");
}

#[test]
fn shm_interrupter_wakes_wait() {
    let mut eps = open_all(&job("intr"), 2, 4096);
    let token = eps[0].activity_token();
    let wake = eps[0].interrupter();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        wake();
    });
    let t = Instant::now();
    eps[0].wait(token, Duration::MAX).unwrap(); // no overflow on an unbounded wait
    assert!(t.elapsed() < Duration::from_secs(2));
    h.join().unwrap();
}

#[test]
fn shm_dead_peer_is_detected() {
    let mut eps = open_all(&job("dead"), 3, 4096);
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    // Local index 1 now "runs" as the child; index 2 stays alive (this process).
    eps[0].set_pid_for_test(1, child.id() as i32);
    assert_eq!(eps[1].link(0).unwrap().try_write(b"last").unwrap(), 4);
    assert!(eps[0].dead_peers().is_empty());
    // Not reaped yet: the child is a zombie, which must count as gone too.
    child.kill().unwrap();
    let start = Instant::now();
    let e0 = &mut eps[0];
    let mut got = Vec::new();
    let err = loop {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "death not noticed"
        );
        let token = e0.activity_token();
        match e0.link(1).unwrap().peek() {
            Ok(s) => {
                got.extend_from_slice(s);
                let k = s.len();
                e0.link(1).unwrap().consume(k);
            }
            Err(e) => break e,
        }
        e0.wait(token, Duration::from_secs(5)).unwrap();
    };
    assert!(start.elapsed() < Duration::from_millis(1500));
    assert!(matches!(err, LinkError::Closed { peer: 1 }), "{err:?}");
    assert_eq!(
        got, b"last",
        "bytes sent before the death are still delivered"
    );
    assert!(matches!(
        e0.link(1).unwrap().try_write(b"x"),
        Err(LinkError::Closed { peer: 1 })
    ));
    assert_eq!(e0.dead_peers(), vec![1]);
    assert!(e0.link(2).unwrap().try_write(b"x").is_ok());
    let pid = child.id() as i32;
    child.wait().unwrap();
    assert!(segment::process_gone(pid));
    assert!(!segment::process_gone(std::process::id() as i32));
}

#[test]
fn shm_garbage_segment_is_a_clean_error() {
    let j = job("garbage");
    let local = [0usize, 1];
    let path = segment_path(&j, &local);
    let total = Layout::new(2, 4096).unwrap().total;
    // Right size, wrong magic.
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&vec![0xab; total]).unwrap();
    drop(f);
    let t = Instant::now();
    let e = ShmEndpoint::open(&j, 1, 2, &local, 4096, T)
        .err()
        .expect("must fail");
    assert!(e.to_string().contains("I/O"), "{e}");
    let e = ShmEndpoint::open(&j, 0, 2, &local, 4096, T)
        .err()
        .expect("must fail");
    assert!(matches!(e, LinkError::Io { ref source, .. }
        if source.kind() == io::ErrorKind::AlreadyExists));
    // Wrong size.
    std::fs::write(&path, b"not a segment").unwrap();
    assert!(ShmEndpoint::open(&j, 1, 2, &local, 4096, T).is_err());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "no waiting on garbage"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn shm_segment_larger_than_dev_shm_is_a_clean_error() {
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c"/dev/shm".as_ptr(), &mut st) };
    let size = st.f_blocks as u128 * st.f_frsize as u128;
    if rc != 0 || size == 0 || size > 1 << 40 {
        return; // unknown or unlimited size
    }
    // Two rings of at least twice the file system each: tmpfs refuses it up front.
    let ring = ((size * 2) as usize).next_power_of_two();
    let j = job("toobig");
    let e = ShmEndpoint::open(&j, 0, 2, &[0, 1], ring, T)
        .err()
        .expect("must fail");
    assert!(
        matches!(e, LinkError::Io { ref source, .. } if source.kind() == io::ErrorKind::StorageFull),
        "{e:?}"
    );
    assert!(!segment_path(&j, &[0, 1]).exists());
}

#[test]
fn shm_missing_rank_times_out_and_unlinks() {
    let j = job("missing");
    let local = [0usize, 1];
    let t = Instant::now();
    let e = ShmEndpoint::open(&j, 0, 2, &local, 4096, Duration::from_millis(200));
    assert!(e.is_err());
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!segment_path(&j, &local).exists());
    // A non-creator alone also gives up in time.
    let e = ShmEndpoint::open(&j, 1, 2, &local, 4096, Duration::from_millis(200));
    assert!(e.is_err());
}

#[test]
fn shm_bad_arguments_are_errors() {
    let j = job("args");
    assert!(ShmEndpoint::open(&j, 0, 2, &[1, 0], 4096, T).is_err());
    assert!(ShmEndpoint::open(&j, 2, 4, &[0, 1], 4096, T).is_err());
    assert!(ShmEndpoint::open(&j, 0, 2, &[0, 5], 4096, T).is_err());
    assert!(ShmEndpoint::open(&j, 0, 2, &[0, 1], usize::MAX, T).is_err());
}

// Between two processes (rank 1 a child that echoes, then is killed): tests/shm_processes.rs.

/// Measures one-way streaming bandwidth and 8-byte ping-pong latency between two threads.
/// Run with `cargo test --release -p ferrocoll-transports shm_bench -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check (prints GB/s and µs); run by .ci/long.sh"]
fn shm_bench() {
    const TOTAL: usize = 1 << 30;
    let chunk = vec![7u8; 1 << 20];
    let mut dst = vec![0u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..TOTAL >> 20 {
        std::hint::black_box(&mut dst).copy_from_slice(std::hint::black_box(&chunk));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "reference memcpy 1 MiB, one thread: {:.2} GB/s",
        TOTAL as f64 / secs / 1e9
    );
    for (ring, piece) in [
        (256 << 10, 64 << 10),
        (1 << 20, 256 << 10),
        (4 << 20, 1 << 20),
    ] {
        let mut eps = open_all(&job(&format!("bench{ring}")), 2, ring);
        let (mut e1, mut e0) = (eps.pop().unwrap(), eps.pop().unwrap());
        let (mut m, _f) = crate::mem::mem_world(2, ring);
        let (mut m1, mut m0) = (m.pop().unwrap(), m.pop().unwrap());
        for copy_out in [true, false] {
            let what = if copy_out {
                "copy in + copy out"
            } else {
                "copy in + sum in place"
            };
            let (a, b);
            (e1, a) = stream(&mut e0, e1, copy_out, piece, TOTAL);
            (m1, b) = stream(&mut m0, m1, copy_out, piece, TOTAL);
            println!(
                "stream {what}, ring {} KiB, pieces {} KiB: shm {a:.2} GB/s (heap ring {b:.2})",
                ring >> 10,
                piece >> 10
            );
        }
    }

    let mut eps = open_all(&job("benchpp"), 2, DEFAULT_RING_BYTES);
    let (mut e1, mut e0) = (eps.pop().unwrap(), eps.pop().unwrap());
    for (label, park) in [("spinning", false), ("wait(): spin then futex", true)] {
        let iters = 20_000;
        let ponger = std::thread::spawn(move || {
            let mut b = [0u8; 8];
            for _ in 0..iters {
                recv8(&mut e1, 0, &mut b, park);
                send8(&mut e1, 0, &b);
            }
            e1
        });
        let t = Instant::now();
        let mut b = [1u8; 8];
        for _ in 0..iters {
            send8(&mut e0, 1, &b);
            recv8(&mut e0, 1, &mut b, park);
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
        e1 = ponger.join().unwrap();
        println!(
            "8-byte ping-pong ({label}): round trip {us:.2} us, one-way {:.2} us",
            us / 2.0
        );
    }
}

/// Streams `total` bytes from `e0` to `e1` in writes of `piece` bytes, the reader on its own
/// thread copying out (or summing in place) up to `piece` bytes at a time; both sides wait
/// on their endpoint (spin, then park) when stuck, as the executor does. Returns GB/s.
fn stream<E: Endpoint + 'static>(
    e0: &mut E,
    mut e1: E,
    copy_out: bool,
    piece: usize,
    total: usize,
) -> (E, f64) {
    let chunk = vec![7u8; piece];
    let reader = std::thread::spawn(move || {
        let mut dst = vec![0u8; piece];
        let (mut n, mut sum) = (0, 0u64);
        while n < total {
            let token = e1.activity_token();
            let l = e1.link(0).unwrap();
            let before = n;
            if copy_out {
                n += l.read_into(&mut dst).unwrap();
            } else {
                let s = l.peek().unwrap();
                let k = s.len().min(piece);
                let mut words = s[..k].chunks_exact(8);
                sum = words.by_ref().fold(sum, |a, w| {
                    a.wrapping_add(u64::from_ne_bytes(w.try_into().unwrap()))
                });
                sum += words.remainder().len() as u64;
                l.consume(k);
                n += k;
            }
            if n == before {
                e1.wait(token, T).unwrap();
            }
        }
        std::hint::black_box(sum);
        e1
    });
    let t = Instant::now();
    let mut sent = 0;
    while sent < total {
        let token = e0.activity_token();
        let k = e0.link(1).unwrap();
        let k = k.try_write(&chunk[..(total - sent).min(piece)]).unwrap();
        sent += k;
        if k == 0 {
            e0.wait(token, T).unwrap();
        }
    }
    let e1 = reader.join().unwrap();
    (e1, total as f64 / t.elapsed().as_secs_f64() / 1e9)
}

fn send8(ep: &mut ShmEndpoint, peer: usize, b: &[u8; 8]) {
    let l = ep.link(peer).unwrap();
    let mut off = 0;
    while off < 8 {
        off += l.try_write(&b[off..]).unwrap();
    }
}

fn recv8(ep: &mut ShmEndpoint, peer: usize, b: &mut [u8; 8], park: bool) {
    let mut off = 0;
    while off < 8 {
        let token = ep.activity_token();
        let k = ep.link(peer).unwrap().read_into(&mut b[off..]).unwrap();
        off += k;
        if k == 0 && park {
            ep.wait(token, T).unwrap();
        }
    }
}
