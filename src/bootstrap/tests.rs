//! Tests of the TCP and file stores.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::wire::{encode_hello, write_frame, AUTH_LABEL, HELLO_CHALLENGE, HELLO_OK};
use ferrocoll_transports::auth::{self, JobKey, NONCE_BYTES};

/// The client's side of the store hello on a raw stream, with `key`; asserts it is accepted.
fn raw_hello(s: &mut TcpStream, key: &JobKey) {
    let ours = auth::nonce().unwrap();
    s.write_all(&encode_hello(&ours)).unwrap();
    let mut c = [0u8; 1 + 2 * NONCE_BYTES];
    s.read_exact(&mut c).unwrap();
    assert_eq!(c[0], HELLO_CHALLENGE);
    let theirs: [u8; NONCE_BYTES] = c[1..1 + NONCE_BYTES].try_into().unwrap();
    assert!(key.verify(AUTH_LABEL, b"server", &ours, &theirs, &c[1 + NONCE_BYTES..]));
    s.write_all(&key.proof(AUTH_LABEL, b"client", &theirs, &ours))
        .unwrap();
    let mut ok = [0u8; 1];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(ok[0], HELLO_OK);
}
use super::*;

const T: Duration = Duration::from_secs(10);

fn server() -> (TcpStoreServer, std::net::SocketAddr) {
    let s = TcpStoreServer::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr();
    (s, a)
}

/// Every rank sets its key, bumps a counter, then reads every other rank's key.
fn rendezvous(stores: Vec<Arc<dyn Store>>) {
    let n = stores.len();
    let hs: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(r, st)| {
            thread::spawn(move || {
                st.set(&format!("addr/{r}"), format!("rank-{r}").as_bytes())
                    .unwrap();
                let c = st.add("arrived", 1).unwrap();
                assert!((1..=n as i64).contains(&c));
                for p in 0..n {
                    let v = st.get(&format!("addr/{p}")).unwrap();
                    assert_eq!(v, format!("rank-{p}").as_bytes());
                }
                let keys: Vec<String> = (0..n).map(|p| format!("addr/{p}")).collect();
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                st.wait(&keys).unwrap();
                st
            })
        })
        .collect();
    let stores: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(stores[0].add("arrived", 0).unwrap(), n as i64);
    assert_eq!(stores[0].get("arrived").unwrap(), n.to_string().as_bytes());
}

#[test]
fn tcp_store_many_clients() {
    let (_srv, addr) = server();
    let stores: Vec<Arc<dyn Store>> = (0..8)
        .map(|_| Arc::new(TcpStore::connect(addr, T).unwrap()) as Arc<dyn Store>)
        .collect();
    rendezvous(stores);
}

#[test]
fn tcp_store_shared_client_across_threads() {
    let (_srv, addr) = server();
    let st = Arc::new(TcpStore::connect(addr, T).unwrap());
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let st = st.clone();
            thread::spawn(move || {
                (0..50).for_each(|_| {
                    st.add("c", 2).unwrap();
                })
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(st.add("c", -1).unwrap(), 399);
}

#[test]
fn tcp_store_get_and_wait_time_out() {
    let (_srv, addr) = server();
    let st = TcpStore::connect(addr, Duration::from_millis(200)).unwrap();
    let start = Instant::now();
    match st.get("never") {
        Err(StoreError::Timeout { key }) => assert_eq!(key, "never"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert!(start.elapsed() < Duration::from_secs(2));
    st.set("here", b"").unwrap();
    match st.wait(&["here", "missing"]) {
        Err(StoreError::Timeout { key }) => assert_eq!(key, "missing"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The connection is still usable after timeouts.
    assert_eq!(st.get("here").unwrap(), b"");
    st.set("n", b"not a number").unwrap();
    assert!(matches!(st.add("n", 1), Err(StoreError::Protocol(_))));
    assert_eq!(st.add("m", 5).unwrap(), 5);
}

#[test]
fn tcp_store_get_waits_for_a_later_set() {
    let (_srv, addr) = server();
    let a = TcpStore::connect(addr, T).unwrap();
    let h = thread::spawn(move || a.get("late").unwrap());
    thread::sleep(Duration::from_millis(100));
    TcpStore::connect(addr, T)
        .unwrap()
        .set("late", b"v")
        .unwrap();
    assert_eq!(h.join().unwrap(), b"v");
}

/// Everything logged at WARN or worse by any thread of this test binary, once
/// [`capture_warnings`] has run.
static WARNINGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Installs (once) a global subscriber that writes WARN and ERROR events into [`WARNINGS`]:
/// the store server logs from its own threads, which a thread-scoped subscriber of the test
/// would not see. Panics if another global subscriber came first (nothing in this binary
/// installs one: `init_logging` runs in `Communicator::from_env`/`from_unique_id` only).
fn capture_warnings() {
    struct Sink;
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            WARNINGS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    let ok = *INSTALLED.get_or_init(|| {
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(|| Sink)
            .finish();
        tracing::subscriber::set_global_default(sub).is_ok()
    });
    assert!(ok, "another global tracing subscriber was installed first");
}

/// The captured warning lines that name `remote` (as the `remote` field).
fn warnings_about(remote: std::net::SocketAddr) -> Vec<String> {
    let field = format!("remote={remote}");
    let all = WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&all)
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == field))
        .map(str::to_owned)
        .collect()
}

#[test]
fn garbage_clients_do_not_kill_the_server() {
    capture_warnings();
    let (_srv, addr) = server();
    let good = TcpStore::connect(addr, T).unwrap();
    good.set("k", b"v").unwrap();
    // Random bytes.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let junk: Vec<u8> = (0..10_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(&junk);
    // A valid hello, then a frame claiming 4 GiB, then a malformed frame on another.
    let mut s2 = TcpStream::connect(addr).unwrap();
    raw_hello(&mut s2, &JobKey::none());
    s2.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let mut s3 = TcpStream::connect(addr).unwrap();
    raw_hello(&mut s3, &JobKey::none());
    write_frame(&mut s3, &[4, 255, 255, 255, 255, 1]).unwrap();
    // A silent client.
    let _idle = TcpStream::connect(addr).unwrap();
    // The server drops the bad ones...
    for s in [&mut s, &mut s2, &mut s3] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 64];
        let n = loop {
            match s.read(&mut b) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        // EOF or reset, not a timeout.
        match n {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    // ...each with a warning naming it and saying why (logged before the server closed the
    // connection, whose end the reads above saw)...
    for (s, why) in [
        (&s, "bad magic"),
        (&s2, "frame of 4294967295 bytes"),
        (&s3, "malformed request"),
    ] {
        let me = s.local_addr().unwrap();
        let lines = warnings_about(me);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("store: dropping client") && l.contains(why)),
            "no warning dropping {me} ({why}): {lines:?}"
        );
    }
    // ...and keeps serving the others.
    assert_eq!(good.get("k").unwrap(), b"v");
    let fresh = TcpStore::connect(addr, T).unwrap();
    assert_eq!(fresh.get("k").unwrap(), b"v");
}

#[test]
fn secret_is_required_when_set() {
    let srv = TcpStoreServer::bind_with_secret("127.0.0.1:0", Some(b"s3cret")).unwrap();
    let addr = srv.local_addr();
    assert!(matches!(
        TcpStore::connect(addr, T),
        Err(StoreError::Unauthorized)
    ));
    assert!(matches!(
        TcpStore::connect_with_secret(addr, T, Some(b"wrong")),
        Err(StoreError::Unauthorized)
    ));
    let st = TcpStore::connect_with_secret(addr, T, Some(b"s3cret")).unwrap();
    st.set("a", b"1").unwrap();
    assert_eq!(st.get("a").unwrap(), b"1");
    // A client with the secret refuses a store that cannot prove it (another job's store).
    let other = TcpStoreServer::bind_with_secret("127.0.0.1:0", Some(b"other")).unwrap();
    assert!(matches!(
        TcpStore::connect_with_secret(other.local_addr(), T, Some(b"s3cret")),
        Err(StoreError::Unauthorized)
    ));
}

#[test]
fn a_replayed_hello_is_refused_at_once() {
    let key = JobKey::new(b"0123456789abcdef");
    let srv = TcpStoreServer::bind_with_secret("127.0.0.1:0", Some(b"0123456789abcdef")).unwrap();
    let addr = srv.local_addr();
    // A legitimate hello, as an eavesdropper records it.
    let mut s = TcpStream::connect(addr).unwrap();
    let ours = auth::nonce().unwrap();
    s.write_all(&encode_hello(&ours)).unwrap();
    let mut c = [0u8; 1 + 2 * NONCE_BYTES];
    s.read_exact(&mut c).unwrap();
    let theirs: [u8; NONCE_BYTES] = c[1..1 + NONCE_BYTES].try_into().unwrap();
    let proof = key.proof(AUTH_LABEL, b"client", &theirs, &ours);
    s.write_all(&proof).unwrap();
    let mut a = [0u8; 1];
    s.read_exact(&mut a).unwrap();
    assert_eq!(a[0], HELLO_OK);
    // The same bytes again: the server's nonce is new, so the old proof fails.
    let t0 = Instant::now();
    let mut r = TcpStream::connect(addr).unwrap();
    r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    r.write_all(&encode_hello(&ours)).unwrap();
    r.read_exact(&mut c).unwrap();
    assert_ne!(&c[1..1 + NONCE_BYTES], &theirs[..]);
    r.write_all(&proof).unwrap();
    r.read_exact(&mut a).unwrap();
    assert_eq!(a[0], super::wire::HELLO_UNAUTHORIZED);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // The server is unaffected.
    let st = TcpStore::connect_with_secret(addr, T, Some(b"0123456789abcdef")).unwrap();
    st.set("k", b"v").unwrap();
}

#[test]
fn the_secret_never_crosses_the_wire() {
    let secret = b"never-on-the-wire-0123456789";
    let srv = TcpStoreServer::bind_with_secret("127.0.0.1:0", Some(secret)).unwrap();
    // A relay between client and server that keeps every byte of both directions.
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let to = srv.local_addr();
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let seen2 = seen.clone();
    let pump = std::thread::spawn(move || {
        let (c, _) = relay.accept().unwrap();
        let s = TcpStream::connect(to).unwrap();
        let copy = |mut from: TcpStream, mut into: TcpStream, seen: Arc<Mutex<Vec<u8>>>| {
            std::thread::spawn(move || {
                let mut b = [0u8; 4096];
                while let Ok(n) = from.read(&mut b) {
                    if n == 0 || into.write_all(&b[..n]).is_err() {
                        break;
                    }
                    seen.lock().unwrap().extend_from_slice(&b[..n]);
                }
                let _ = into.shutdown(std::net::Shutdown::Write);
            })
        };
        let a = copy(
            c.try_clone().unwrap(),
            s.try_clone().unwrap(),
            seen2.clone(),
        );
        let b = copy(s, c, seen2);
        a.join().unwrap();
        b.join().unwrap();
    });
    let st = TcpStore::connect_with_secret(relay_addr, T, Some(secret)).unwrap();
    st.set("key", b"value").unwrap();
    assert_eq!(st.get("key").unwrap(), b"value");
    drop(st);
    pump.join().unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.windows(5).any(|w| w == b"value"),
        "the relay saw the traffic"
    );
    assert!(!seen.windows(secret.len()).any(|w| w == secret));
}

#[test]
fn client_retries_until_server_is_up_and_sees_it_go() {
    // Find a free port, then start the server there only later.
    let addr = {
        let (srv, addr) = server();
        drop(srv);
        addr
    };
    let h = thread::spawn(move || TcpStore::connect(addr, T));
    thread::sleep(Duration::from_millis(300));
    let srv = TcpStoreServer::bind(addr).unwrap();
    let st = h.join().unwrap().unwrap();
    st.set("x", b"y").unwrap();
    drop(srv);
    // The server thread serving this client stops within its tick.
    let err = st.get_timeout("x", Duration::from_secs(1)).err();
    let err = err.or_else(|| {
        thread::sleep(Duration::from_millis(500));
        st.get("x").err()
    });
    assert!(
        matches!(err, Some(StoreError::Closed) | Some(StoreError::Io(_))),
        "{err:?}"
    );
}

#[test]
fn connect_gives_up_at_the_deadline() {
    let addr = {
        let (srv, addr) = server();
        drop(srv);
        addr
    };
    let start = Instant::now();
    let err = TcpStore::connect(addr, Duration::from_millis(300)).err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(&err, Some(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut),
        "{err:?}"
    );
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("ferrocoll-{tag}-{}-{nanos}", std::process::id()))
}

#[test]
fn file_store_basics() {
    let dir = temp_dir("filestore");
    let st = FileStore::new(&dir, Duration::from_millis(200)).unwrap();
    st.set("a/b c", b"v1").unwrap();
    st.set("a/b c", b"v2").unwrap();
    assert_eq!(st.get("a/b c").unwrap(), b"v2");
    assert!(matches!(st.get("a_2fb c"), Err(StoreError::Timeout { .. })));
    let start = Instant::now();
    assert!(matches!(
        st.wait(&["a/b c", "nope"]),
        Err(StoreError::Timeout { key }) if key == "nope"
    ));
    assert!(start.elapsed() < Duration::from_secs(2));
    st.set("txt", b"x").unwrap();
    assert!(matches!(st.add("txt", 1), Err(StoreError::Protocol(_))));
    drop(st);

    // Several "processes" (separate store handles) on one directory.
    let stores: Vec<Arc<dyn Store>> = (0..6)
        .map(|_| Arc::new(FileStore::new(&dir, T).unwrap()) as Arc<dyn Store>)
        .collect();
    rendezvous(stores);
    let st = FileStore::new(&dir, T).unwrap();
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let st = st.clone();
            thread::spawn(move || {
                (0..25).for_each(|_| {
                    st.add("ctr", 1).unwrap();
                })
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(st.add("ctr", 0).unwrap(), 100);
    // No temporary or lock file is left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with("v-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_store_get_waits_for_a_later_set() {
    let dir = temp_dir("filestore-late");
    let st = FileStore::new(&dir, T).unwrap();
    let st2 = st.clone();
    let h = thread::spawn(move || st2.get("late").unwrap());
    thread::sleep(Duration::from_millis(50));
    st.set("late", b"ok").unwrap();
    assert_eq!(h.join().unwrap(), b"ok");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Compare-and-set decides once among racing threads, on both stores: exactly one thread's
/// value wins, and every thread reads that value back.
fn compare_set_decides_once(stores: Vec<Arc<dyn Store>>) {
    let hs: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(r, st)| {
            thread::spawn(move || {
                let mine = format!("proposal-{r}");
                let got = st.compare_set("decision", None, mine.as_bytes()).unwrap();
                (got == mine.as_bytes(), got)
            })
        })
        .collect();
    let res: Vec<(bool, Vec<u8>)> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(res.iter().filter(|(won, _)| *won).count(), 1, "{res:?}");
    assert!(res.iter().all(|(_, v)| *v == res[0].1), "{res:?}");
}

#[test]
fn compare_set_on_both_stores() {
    let (_srv, addr) = server();
    let tcp: Vec<Arc<dyn Store>> = (0..6)
        .map(|_| Arc::new(TcpStore::connect(addr, T).unwrap()) as Arc<dyn Store>)
        .collect();
    compare_set_decides_once(tcp.clone());
    let st = &tcp[0];
    // A wrong expectation leaves the value; the right one replaces it.
    let now = st.get("decision").unwrap();
    assert_eq!(
        st.compare_set("decision", Some(b"nope"), b"x").unwrap(),
        now
    );
    assert_eq!(st.compare_set("decision", Some(&now), b"x").unwrap(), b"x");
    assert_eq!(st.compare_set("unset", Some(b"a"), b"b").unwrap(), b"");
    let dir = temp_dir("cas");
    let file: Vec<Arc<dyn Store>> = (0..4)
        .map(|_| Arc::new(FileStore::new(&dir, T).unwrap()) as Arc<dyn Store>)
        .collect();
    compare_set_decides_once(file.clone());
    assert_eq!(
        file[0].compare_set("decision", Some(b"q"), b"z").unwrap(),
        file[0].get("decision").unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
