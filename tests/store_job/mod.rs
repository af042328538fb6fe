//! Running ranks of a `ferrocoll-probe` job against a given store, for the store tests
//! (`tests/store_server.rs`, `tests/etcd_store.rs`).

#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrocoll::launch::local_rank_env;

/// The probe binary.
pub const PROBE: &str = env!("CARGO_BIN_EXE_ferrocoll-probe");
/// A short all-reduce sweep checked for correctness (`-c 1`).
pub const ALL_REDUCE: &[&str] = &[
    "all_reduce",
    "-b",
    "8",
    "-e",
    "64K",
    "-f",
    "64",
    "-n",
    "2",
    "-w",
    "1",
    "-c",
    "1",
];

/// A started rank and the threads draining its output.
pub struct Rank {
    child: Child,
    out: JoinHandle<String>,
    err: JoinHandle<String>,
}

/// How a rank ended: `None` when it ran past the limit (it was then killed).
pub struct Ended {
    /// Its exit status.
    pub status: Option<ExitStatus>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

fn drain(r: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    })
}

/// A probe command with its output piped, the store's and the ranks' variables cleared.
pub fn probe_command() -> Command {
    let mut c = Command::new(PROBE);
    c.args(ALL_REDUCE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("FERROCOLL_SECRET")
        .env_remove("FERROCOLL_STORE");
    c
}

/// Starts rank `rank` of a `world`-rank probe job meeting at `store`, with `env` on top.
pub fn start_rank(rank: usize, world: usize, store: &str, env: &[(&str, &str)]) -> Rank {
    let mut c = probe_command();
    for (k, v) in local_rank_env(rank, world, store) {
        c.env(k, v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    adopt(c.spawn().expect("cannot start ferrocoll-probe"))
}

/// Tracks an already started child whose output is piped.
pub fn adopt(mut child: Child) -> Rank {
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    Rank { child, out, err }
}

/// Waits for every rank until `deadline`; ranks still running then are killed and reported
/// with no status.
pub fn finish(ranks: Vec<Rank>, deadline: Instant) -> Vec<Ended> {
    ranks
        .into_iter()
        .map(|mut r| {
            let mut status = None;
            while Instant::now() < deadline {
                if let Some(s) = r.child.try_wait().expect("try_wait") {
                    status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if status.is_none() {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
            Ended {
                status,
                stdout: r.out.join().unwrap_or_default(),
                stderr: r.err.join().unwrap_or_default(),
            }
        })
        .collect()
}

/// Asserts that every rank succeeded and rank 0 printed a correct table.
pub fn assert_job_passed(ended: &[Ended], what: &str) {
    for (r, e) in ended.iter().enumerate() {
        assert!(
            e.status.is_some_and(|s| s.success()),
            "{what}: rank {r} ended with {:?}\n{}\n{}",
            e.status,
            e.stdout,
            e.stderr
        );
    }
    assert!(
        ended[0].stdout.contains("# Out of bounds values : 0 OK"),
        "{what}: rank 0 printed\n{}\n{}",
        ended[0].stdout,
        ended[0].stderr
    );
}

/// A free TCP port on loopback (free when this returns; the race after is accepted).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
