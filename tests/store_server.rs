//! `ferrocoll-store` and `FERROCOLL_STORE=tcp://…`: a store served outside the ranks. A probe
//! job meets through it, the store outlives the job, a second job on it is refused, killing
//! it ends every waiting rank with an error (no hang), a wrong secret is refused, and
//! `launch::LocalStore` serves one in the launcher.

mod store_job;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrocoll::launch::{
    spawn_children, spawn_children_with_store, LocalStore, Store, StoreError, TcpStore,
};
use store_job::{adopt, assert_job_passed, finish, probe_command, start_rank};

const STORE: &str = env!("CARGO_BIN_EXE_ferrocoll-store");
const T: Duration = Duration::from_secs(10);

/// A running `ferrocoll-store`, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut c = Command::new(STORE);
        c.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("FERROCOLL_SECRET")
            .stdout(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("cannot start ferrocoll-store");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("ferrocoll-store listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, addr }
    }

    fn spec(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to a child this test started and has not reaped yet.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

#[test]
fn sigterm_and_sigint_stop_the_server_with_status_0() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut s = Server::start(&[], &[]);
        let st = TcpStore::connect(s.addr.as_str(), T).unwrap();
        st.set("k", b"v").unwrap();
        signal(&s.child, sig);
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = s.child.try_wait().unwrap() {
                break st;
            }
            assert!(t0.elapsed() < T, "the server ignores signal {sig}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "signal {sig}");
        assert!(st.get("k").is_err(), "the server still answers");
    }
}

#[test]
fn bad_command_lines_fail_with_a_message() {
    let run = |args: &[&str]| Command::new(STORE).args(args).output().unwrap();
    let o = run(&["--listen", "not-an-address"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot serve on not-an-address"));
    let o = run(&["--secret-file", "/nonexistent/ferrocoll-secret"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read the secret file"));
    let empty = std::env::temp_dir().join(format!("ferrocoll-empty-{}", std::process::id()));
    std::fs::write(&empty, "\n").unwrap();
    let o = run(&["--secret-file", empty.to_str().unwrap()]);
    std::fs::remove_file(&empty).unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is empty"));
    let o = Command::new(STORE)
        .env("FERROCOLL_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("FERROCOLL_TIMEOUT"));
}

#[test]
fn a_probe_job_meets_through_the_external_store_which_outlives_it() {
    let server = Server::start(&[], &[]);
    let spec = server.spec();
    let env = [("FERROCOLL_TIMEOUT", "60")];
    let ranks = (0..3).map(|r| start_rank(r, 3, &spec, &env)).collect();
    let ended = finish(ranks, Instant::now() + Duration::from_secs(120));
    assert_job_passed(&ended, "3 ranks over tcp://");
    // The ranks met in the external server (no rank served a store of its own), which is
    // still up with the job's keys after every rank ended.
    let st = TcpStore::connect(server.addr.as_str(), T).unwrap();
    // The job token (8 bytes) and the key material of the communicator's key (32).
    assert_eq!(st.get("fc/job_token").unwrap().len(), 8 + 32);
    assert!(st.get("fc/rank/2").is_ok());
    // A second job on the same store would read the first one's addresses: refused.
    let ended = finish(
        vec![start_rank(0, 1, &spec, &env)],
        Instant::now() + Duration::from_secs(60),
    );
    assert!(
        ended[0].status.is_some_and(|s| !s.success()),
        "{:?}",
        ended[0].status
    );
    assert!(
        ended[0].stderr.contains("already holds a job's keys")
            && ended[0].stderr.contains("FERROCOLL_STORE"),
        "{}",
        ended[0].stderr
    );
}

#[test]
fn killing_the_store_ends_every_waiting_rank_with_an_error() {
    let mut server = Server::start(&[], &[]);
    let spec = server.spec();
    // Two ranks of three: they publish their addresses and wait for rank 2's, which never
    // comes. Their timeout is long, so only the store's death can end them soon.
    let env = [("FERROCOLL_TIMEOUT", "60")];
    let ranks: Vec<_> = (0..2).map(|r| start_rank(r, 3, &spec, &env)).collect();
    let st = TcpStore::connect(server.addr.as_str(), T).unwrap();
    st.wait(&["fc/rank/0", "fc/rank/1"]).unwrap();
    drop(st);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let killed = Instant::now();
    let ended = finish(ranks, killed + Duration::from_secs(20));
    for (r, e) in ended.iter().enumerate() {
        let Some(status) = e.status else {
            panic!(
                "rank {r} still waits 20 s after the store died\n{}",
                e.stderr
            )
        };
        assert!(!status.success(), "rank {r}: {status:?}");
        assert!(
            e.stderr.contains("the connection to the store is closed"),
            "rank {r}: {}",
            e.stderr
        );
    }
    assert!(killed.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_client_with_a_wrong_secret_is_refused() {
    let dir = std::env::temp_dir().join(format!("ferrocoll-store-secret-{}", std::process::id()));
    std::fs::write(&dir, "s3cret\n").unwrap();
    let from_file = Server::start(&["--secret-file", dir.to_str().unwrap()], &[]);
    let from_env = Server::start(&[], &[("FERROCOLL_SECRET", "envsecret")]);
    std::fs::remove_file(&dir).unwrap();
    for (server, good) in [(&from_file, "s3cret"), (&from_env, "envsecret")] {
        let addr = server.addr.as_str();
        for bad in [None, Some(&b"wrong"[..])] {
            assert!(matches!(
                TcpStore::connect_with_secret(addr, T, bad),
                Err(StoreError::Unauthorized)
            ));
        }
        let st = TcpStore::connect_with_secret(addr, T, Some(good.as_bytes())).unwrap();
        st.set("k", b"v").unwrap();
        assert_eq!(st.get("k").unwrap(), b"v");
    }
    // A rank with the wrong secret ends with the typed error.
    let env = [("FERROCOLL_TIMEOUT", "10"), ("FERROCOLL_SECRET", "wrong")];
    let ended = finish(
        vec![start_rank(0, 1, &from_file.spec(), &env)],
        Instant::now() + Duration::from_secs(30),
    );
    assert!(ended[0].status.is_some_and(|s| !s.success()));
    assert!(
        ended[0].stderr.contains("do not share the job's secret"),
        "{}",
        ended[0].stderr
    );
}

#[test]
fn local_store_serves_a_spawned_job_in_the_launcher() {
    let store = LocalStore::with_secret(Some("launcher-secret")).unwrap();
    assert_eq!(store.spec(), format!("tcp://{}", store.addr()));
    let env = store.env();
    assert_eq!(env[0], ("FERROCOLL_STORE".to_string(), store.spec()));
    assert_eq!(
        env[1],
        (
            "FERROCOLL_SECRET".to_string(),
            "launcher-secret".to_string()
        )
    );
    let extra = [("FERROCOLL_TIMEOUT".to_string(), "60".to_string())];
    let children = spawn_children_with_store(3, probe_command, &[], &extra, &store).expect("spawn");
    let ended = finish(
        children.into_iter().map(adopt).collect(),
        Instant::now() + Duration::from_secs(120),
    );
    assert_job_passed(&ended, "3 ranks over launch::LocalStore");
    let st = TcpStore::connect_with_secret(store.addr(), T, Some(b"launcher-secret")).unwrap();
    // The job token (8 bytes) and the key material of the communicator's key (32).
    assert_eq!(st.get("fc/job_token").unwrap().len(), 8 + 32);
    // No ranks: the typed error of spawn_children.
    assert!(spawn_children_with_store(0, probe_command, &[], &extra, &store).is_err());
    assert!(spawn_children(0, probe_command, &[], &extra).is_err());
}
