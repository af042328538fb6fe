//! `FERROCOLL_STORE=etcd://…`: the store contract on a real etcd (started here when the
//! `etcd` binary is on PATH; the tests print SKIP and pass without it), a 3-rank probe job
//! meeting through it, and the errors: etcd unreachable, etcd stopped mid-way, a server that
//! is not etcd.

mod common;
mod store_job;

use common::etcd::Etcd;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ferrocoll::launch::{spawn_children, EtcdStore, Store, StoreError};
use store_job::{adopt, assert_job_passed, finish, free_port, probe_command};

#[test]
fn set_get_wait_and_timeouts() {
    let Some(etcd) = Etcd::start("basic") else {
        return;
    };
    let st = etcd.store("/basic");
    st.set("a", b"1").unwrap();
    st.set("empty", b"").unwrap();
    st.set("a", b"2").unwrap();
    assert_eq!(st.get("a").unwrap(), b"2");
    assert_eq!(st.get("empty").unwrap(), b"");
    // Another prefix is another store.
    let other = etcd.store("/other");
    assert!(matches!(
        other.get_timeout("a", Duration::ZERO),
        Err(StoreError::Timeout { key }) if key == "a"
    ));
    // A get waits for a later set.
    let writer = etcd.store("/basic");
    let h = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        writer.set("late", b"x").unwrap();
    });
    assert_eq!(st.get("late").unwrap(), b"x");
    h.join().unwrap();
    st.wait(&["a", "late"]).unwrap();
    let t0 = Instant::now();
    let e = st
        .wait_timeout(&["a", "missing", "late"], Duration::from_millis(300))
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Timeout { ref key } if key == "missing"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let e = st
        .get_timeout("missing", Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(e, StoreError::Timeout { .. }), "{e}");
    // A counter is text; `add` on a value that is not an integer is a protocol error.
    assert!(matches!(st.add("a", 1), Ok(3)));
    st.set("word", b"abc").unwrap();
    assert!(matches!(st.add("word", 1), Err(StoreError::Protocol(_))));
}

#[test]
fn adds_from_racing_threads_are_atomic() {
    let Some(etcd) = Etcd::start("add") else {
        return;
    };
    let (threads, each) = (6, 25);
    let go = Arc::new(Barrier::new(threads));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let st = etcd.store("/add");
            let go = go.clone();
            thread::spawn(move || {
                go.wait();
                (0..each)
                    .map(|_| st.add("n", 1).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen: Vec<i64> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    seen.sort_unstable();
    let want: Vec<i64> = (1..=(threads * each) as i64).collect();
    assert_eq!(seen, want, "every add returns a distinct new value");
    let st = etcd.store("/add");
    assert_eq!(
        st.get("n").unwrap(),
        (threads * each).to_string().as_bytes()
    );
    assert_eq!(st.add("n", -5).unwrap(), (threads * each) as i64 - 5);
}

#[test]
fn compare_set_decides_once() {
    let Some(etcd) = Etcd::start("cas") else {
        return;
    };
    let threads = 6;
    let go = Arc::new(Barrier::new(threads));
    let hs: Vec<_> = (0..threads)
        .map(|i| {
            let st = etcd.store("/cas");
            let go = go.clone();
            thread::spawn(move || {
                go.wait();
                let mine = format!("t{i}").into_bytes();
                (st.compare_set("leader", None, &mine).unwrap(), mine)
            })
        })
        .collect();
    let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let winners = results.iter().filter(|(got, mine)| got == mine).count();
    assert_eq!(winners, 1, "{results:?}");
    let decided = results[0].0.clone();
    assert!(
        results.iter().all(|(got, _)| *got == decided),
        "{results:?}"
    );
    let st = etcd.store("/cas");
    // A wrong expectation leaves the value and returns it; the right one replaces it.
    assert_eq!(
        st.compare_set("leader", Some(b"nope"), b"x").unwrap(),
        decided
    );
    assert_eq!(
        st.compare_set("leader", Some(&decided), b"next").unwrap(),
        b"next"
    );
    assert_eq!(st.get("leader").unwrap(), b"next");
    // Expecting a value of a key that is not set fails, even an empty one.
    assert_eq!(st.compare_set("unset", Some(b""), b"x").unwrap(), b"");
    assert!(st.get_timeout("unset", Duration::ZERO).is_err());
}

#[test]
fn three_ranks_meet_through_etcd() {
    let Some(etcd) = Etcd::start("job") else {
        return;
    };
    let extra = [
        (
            "FERROCOLL_STORE".to_string(),
            format!("etcd://{}/job1", etcd.authority),
        ),
        ("FERROCOLL_TIMEOUT".to_string(), "60".to_string()),
    ];
    let children = spawn_children(3, probe_command, &[], &extra).expect("spawn");
    let ended = finish(
        children.into_iter().map(adopt).collect(),
        Instant::now() + Duration::from_secs(120),
    );
    assert_job_passed(&ended, "3 ranks over etcd://");
    // The ranks met under the prefix.
    let st = etcd.store("/job1");
    // The job token (8 bytes) and the key material of the communicator's key (32).
    assert_eq!(st.get("fc/job_token").unwrap().len(), 8 + 32);
    assert!(st.get("fc/rank/2").is_ok());
}

#[test]
fn etcd_stopped_midway_fails_the_next_call_within_the_timeout() {
    let Some(mut etcd) = Etcd::start("stop") else {
        return;
    };
    let st = etcd.store("/stop");
    st.set("k", b"v").unwrap();
    etcd.stop();
    let t0 = Instant::now();
    let e = st
        .get_timeout("missing", Duration::from_secs(5))
        .unwrap_err();
    assert!(matches!(e, StoreError::Io(_)), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(7), "{:?}", t0.elapsed());
    for e in [
        st.set("k", b"w").unwrap_err(),
        st.add("n", 1).unwrap_err(),
        st.compare_set("k", None, b"x").unwrap_err(),
    ] {
        assert!(matches!(e, StoreError::Io(_)), "{e}");
    }
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[test]
fn unreachable_etcd_fails_within_the_timeout() {
    let port = free_port();
    let t0 = Instant::now();
    let e = EtcdStore::connect(&format!("127.0.0.1:{port}"), "/x", Duration::from_secs(1))
        .err()
        .expect("nothing listens there");
    assert!(matches!(e, StoreError::Io(_)), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let e = EtcdStore::connect("no-such-host.invalid:2379", "/x", Duration::from_secs(1))
        .err()
        .expect("no such host");
    assert!(matches!(e, StoreError::Io(_)), "{e}");
}

/// Serves each connection one canned HTTP answer.
fn fake_server(answer: &'static str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            let _ = std::io::Read::read_exact(&mut r, &mut body);
            let _ = s.write_all(answer.as_bytes());
        }
    });
    addr
}

#[test]
fn a_server_that_is_not_etcd_gives_protocol_errors() {
    let cases = [
        (
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            "HTTP 404",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            "not JSON",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 27\r\nConnection: close\r\n\r\n{\"kvs\":[{\"value\":\"!!!\"}]}  ",
            "not base64",
        ),
    ];
    for (answer, why) in cases {
        let addr = fake_server(answer);
        let e = EtcdStore::connect(&addr, "/x", Duration::from_secs(2))
            .err()
            .expect("not etcd");
        match e {
            StoreError::Protocol(m) => {
                assert!(m.contains(why) && m.contains("etcd at http://"), "{m}")
            }
            e => panic!("{why}: {e}"),
        }
    }
}
