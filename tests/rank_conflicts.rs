//! Processes launched with ranks that disagree (issue 25): different world sizes, two
//! processes with one rank, a rank out of range. Each process gets an
//! [`Error::RankConflict`] that names the ranks, hosts and pids of both sides, well within
//! the timeout (`FERROCOLL_TIMEOUT`), instead of waiting it out for a rank that never comes.
//!
//! Launched as a new user would: real processes (the test binary re-runs itself; `FC_RC_CHILD`
//! makes `main` run [`child`] instead of the tests: `harness = false`) with the launcher
//! variables (`FERROCOLL_RANK`, `FERROCOLL_WORLD_SIZE`, `FERROCOLL_STORE` served by rank 0),
//! each on its own named host (`FERROCOLL_HOSTNAME`), calling `Communicator::from_env`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrocoll::error::RankConflict;
use ferrocoll::{Communicator, Error, ErrorKind};

/// The kind every conflict has.
const KIND: ErrorKind = ErrorKind::InvalidArgument;

/// The ranks' timeout: every conflict must be reported before it.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a child process reports, one line on standard output.
#[derive(Debug)]
struct Outcome {
    /// What it was launched as: `rank:world`.
    launched: String,
    host: String,
    pid: u32,
    /// How long `from_env` took.
    elapsed: Duration,
    /// `WorldSize`, `DoubleClaim`, `OutOfRange`, or what else it got.
    variant: String,
    kind: String,
    message: String,
}

/// A child: builds a communicator from the launcher variables and prints what it got as
/// `pid|elapsed_ms|variant|kind|message`.
fn child() -> ! {
    let t0 = Instant::now();
    let r = Communicator::from_env();
    let ms = t0.elapsed().as_millis();
    let (variant, kind, message) = match &r {
        Ok(_) => ("Ok".to_string(), String::new(), String::new()),
        Err(e) => {
            let variant = match e {
                Error::RankConflict(RankConflict::WorldSize { .. }) => "WorldSize".into(),
                Error::RankConflict(RankConflict::DoubleClaim { .. }) => "DoubleClaim".into(),
                Error::RankConflict(RankConflict::OutOfRange { .. }) => "OutOfRange".into(),
                other => format!("{other:?}"),
            };
            (variant, format!("{:?}", e.kind()), e.to_string())
        }
    };
    println!("{}|{ms}|{variant}|{kind}|{message}", std::process::id());
    drop(r);
    std::process::exit(0);
}

/// Runs one process per `(rank, world, host)` of `procs`, meeting at a fresh store served by
/// rank 0, and returns what each reported, in order.
fn launch(procs: &[(usize, usize, &str)]) -> Vec<Outcome> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let exe = std::env::current_exe().expect("test binary path");
    let children: Vec<_> = procs
        .iter()
        .map(|&(rank, world, host)| {
            Command::new(&exe)
                .env("FC_RC_CHILD", "1")
                .env("FERROCOLL_RANK", rank.to_string())
                .env("FERROCOLL_WORLD_SIZE", world.to_string())
                .env("FERROCOLL_STORE", format!("127.0.0.1:{port}"))
                .env("FERROCOLL_TIMEOUT", TIMEOUT.as_secs().to_string())
                .env("FERROCOLL_HOSTNAME", host)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a process")
        })
        .collect();
    children
        .into_iter()
        .zip(procs)
        .map(|(ch, &(rank, world, host))| {
            let out = ch.wait_with_output().expect("wait for a process");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout.lines().last().unwrap_or_default();
            let f: Vec<&str> = line.splitn(5, '|').collect();
            assert_eq!(
                f.len(),
                5,
                "process {rank}:{world} on {host} printed {stdout:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            );
            Outcome {
                launched: format!("{rank}:{world}"),
                host: host.to_string(),
                pid: f[0].parse().expect("pid"),
                elapsed: Duration::from_millis(f[1].parse().expect("milliseconds")),
                variant: f[2].to_string(),
                kind: f[3].to_string(),
                message: f[4].to_string(),
            }
        })
        .collect()
}

/// Every process got `variant` with the same message, of kind `InvalidArgument`, before the
/// timeout; the message names `must` (each a rank's `rank N` with its host and pid).
fn assert_all(outs: &[Outcome], variant: &str, must: &[String]) {
    let report: Vec<String> = outs
        .iter()
        .map(|o| {
            format!(
                "{} on {} (pid {}): {} ({}) after {:?}: {}",
                o.launched, o.host, o.pid, o.variant, o.kind, o.elapsed, o.message
            )
        })
        .collect();
    let report = report.join("\n");
    for o in outs {
        assert_eq!(o.variant, variant, "{report}");
        assert_eq!(o.kind, format!("{KIND:?}"), "{report}");
        assert!(o.elapsed < TIMEOUT, "not before the timeout:\n{report}");
        assert_eq!(
            o.message, outs[0].message,
            "every process reports the same:\n{report}"
        );
        for m in must {
            assert!(o.message.contains(m.as_str()), "{m:?} not named:\n{report}");
        }
    }
    // Shown with FC_SHOW_RANKS=1 (the messages, for people).
    if std::env::var_os("FC_SHOW_RANKS").is_some_and(|v| v == "1") {
        eprintln!("{report}");
    }
}

/// `rank N (host H, pid P)`, as the world-size and out-of-range messages name a process.
fn named(rank: &str, o: &Outcome) -> String {
    format!("rank {rank} (host {}, pid {})", o.host, o.pid)
}

fn world_sizes_that_differ_are_named() {
    let outs = launch(&[(0, 3, "hostA"), (1, 3, "hostB"), (2, 4, "hostC")]);
    // Rank 2 is one side (it says 4); ranks 0 or 1 the other (they say 3): whoever found
    // the disagreement first decided what every process reports.
    let m = &outs[0].message;
    let other = if m.contains(&named("0", &outs[0])) {
        0
    } else {
        1
    };
    assert_all(
        &outs,
        "WorldSize",
        &[
            named("2", &outs[2]),
            named(&other.to_string(), &outs[other]),
        ],
    );
    assert!(
        m.contains("says the world has 4 ranks") && m.ends_with("says 3")
            || m.contains("says the world has 3 ranks") && m.ends_with("says 4"),
        "{m}"
    );
}

fn a_rank_claimed_twice_is_named() {
    // Rank 2 is missing: someone launched rank 1 twice.
    let outs = launch(&[(0, 3, "hostA"), (1, 3, "hostB"), (1, 3, "hostC")]);
    let m = &outs[0].message;
    assert!(m.starts_with("rank 1 is claimed by two processes: "), "{m}");
    let claimant = |o: &Outcome| format!("host {} pid {}", o.host, o.pid);
    assert_all(
        &outs,
        "DoubleClaim",
        &[claimant(&outs[1]), claimant(&outs[2])],
    );
}

fn a_rank_out_of_range_is_named() {
    // Rank 2 is missing: someone launched it as rank 3 of 3.
    let outs = launch(&[(0, 3, "hostA"), (1, 3, "hostB"), (3, 3, "hostC")]);
    let want = format!(
        "{} is out of range: the world has 3 ranks",
        named("3", &outs[2])
    );
    assert_all(&outs, "OutOfRange", &[want]);
    // The process itself knows at once (it only tells the others first).
    assert!(outs[2].elapsed < Duration::from_secs(3), "{:?}", outs[2]);
}

fn main() {
    if std::env::var_os("FC_RC_CHILD").is_some() {
        child();
    }
    common::harness::run_tests(&[
        (
            "world_sizes_that_differ_are_named",
            world_sizes_that_differ_are_named,
        ),
        (
            "a_rank_claimed_twice_is_named",
            a_rank_claimed_twice_is_named,
        ),
        ("a_rank_out_of_range_is_named", a_rank_out_of_range_is_named),
    ]);
}
