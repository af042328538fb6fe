//! The shared-memory transport between two processes (the unit tests in `src/shm/tests.rs`
//! run their ranks as threads of one process): rank 1 runs in a child process that echoes
//! whatever rank 0 sends, then is killed, and rank 0 must notice the death.
//!
//! The test binary re-runs itself as rank 1: `main` runs [`child_rank`] when
//! `FC_SHM_CHILD_JOB` names the job, and the tests otherwise (`harness = false`
//! in Cargo.toml, through `libtest-mimic`). The child's output goes to a file, printed only
//! when the test fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrocoll_transports::shm::{segment_path, ShmEndpoint};
use ferrocoll_transports::{Endpoint, LinkError};
use libtest_mimic::{Arguments, Trial};

const T: Duration = Duration::from_secs(20);

const CHILD_JOB: &str = "FC_SHM_CHILD_JOB";

fn main() {
    if let Ok(j) = std::env::var(CHILD_JOB) {
        child_rank(&j);
    }
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|v| v.parse().ok());
    }
    let tests = vec![Trial::test("shm_cross_process_echo_then_kill", || {
        shm_cross_process_echo_then_kill();
        Ok(())
    })];
    libtest_mimic::run(&args, tests).exit()
}

/// A job id no other test (or concurrent test run) uses.
fn job(name: &str) -> String {
    format!("test-{}-{name}", std::process::id())
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

/// Rank 1 of [`shm_cross_process_echo_then_kill`], run in the child process: echoes every
/// byte back to rank 0 until the link closes, then exits 0 (a failure panics: exit 101).
fn child_rank(j: &str) -> ! {
    let mut ep = ShmEndpoint::open(j, 1, 2, &[0, 1], 64 << 10, T).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let token = ep.activity_token();
        let n = match ep.link(0).unwrap().read_into(&mut buf) {
            Ok(n) => n,
            Err(_) => std::process::exit(0),
        };
        let mut off = 0;
        while off < n {
            let token = ep.activity_token();
            let k = ep.link(0).unwrap().try_write(&buf[off..n]).unwrap();
            off += k;
            if k == 0 {
                ep.wait(token, T).unwrap();
            }
        }
        if n == 0 {
            ep.wait(token, T).unwrap();
        }
    }
}

/// The child's output file, removed on drop; printed first when the test fails.
struct ChildLog(PathBuf);

impl Drop for ChildLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprint!("---- rank 1 (child), stdout and stderr ----\n{text}");
        }
        let _ = std::fs::remove_file(&self.0);
    }
}

fn shm_cross_process_echo_then_kill() {
    let j = job("xproc");
    let log = ChildLog(std::env::temp_dir().join(format!("ferrocoll-{j}-rank1.log")));
    let out_file = std::fs::File::create(&log.0).unwrap();
    let err_file = out_file.try_clone().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_JOB, &j)
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(err_file)
        .spawn()
        .unwrap();
    let mut ep = ShmEndpoint::open(&j, 0, 2, &[0, 1], 64 << 10, T).unwrap();
    assert!(!segment_path(&j, &[0, 1]).exists());
    let out = pattern(0, 1, 8 << 20);
    let mut back = Vec::with_capacity(out.len());
    let mut sent = 0;
    let deadline = Instant::now() + T;
    while back.len() < out.len() {
        assert!(Instant::now() < deadline, "echo stalled");
        let token = ep.activity_token();
        let l = ep.link(1).unwrap();
        let k = l.try_write(&out[sent..]).unwrap();
        sent += k;
        let s = l.peek().unwrap();
        let r = s.len();
        back.extend_from_slice(s);
        l.consume(r);
        if k == 0 && r == 0 {
            ep.wait(token, Duration::from_secs(1)).unwrap();
        }
    }
    assert!(back == out, "echo differs");
    // SIGKILL: the child never closes its rings; its pid must give it away.
    child.kill().unwrap();
    let start = Instant::now();
    let err = loop {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "death not noticed"
        );
        let token = ep.activity_token();
        if let Err(e) = ep.link(1).unwrap().peek() {
            break e;
        }
        ep.wait(token, Duration::from_secs(5)).unwrap();
    };
    assert!(matches!(err, LinkError::Closed { peer: 1 }), "{err:?}");
    assert!(start.elapsed() < Duration::from_millis(1500));
    child.wait().unwrap();
}
