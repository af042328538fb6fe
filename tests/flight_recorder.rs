//! The flight recorder across processes: ranks of a real job dump their last calls into
//! `FERROCOLL_FR_DIR` when a call times out and on `SIGUSR1`, and `ferrocoll-probe doctor`
//! names the rank that held the others up. The test binary re-runs itself as the ranks
//! (`FC_FR_CHILD` says which scenario; `harness = false`, tests/common/harness.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::logs::RankLogs;
use ferrocoll::launch::spawn_local_command;
use ferrocoll::{Communicator, Error, ReduceOp};

fn me() -> Command {
    Command::new(std::env::current_exe().expect("test binary path"))
}

fn main() {
    if let Ok(scenario) = std::env::var("FC_FR_CHILD") {
        child_rank(&scenario);
    }
    common::harness::run_tests(&[
        (
            "a_skipped_call_times_out_and_the_doctor_names_the_rank",
            a_skipped_call_times_out_and_the_doctor_names_the_rank,
        ),
        ("sigusr1_dumps_a_running_job", sigusr1_dumps_a_running_job),
    ]);
}

/// A fresh dump directory for one test.
fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrocoll-fr-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The dump files of `rank` in `dir`.
fn dumps_of(dir: &Path, rank: usize) -> Vec<PathBuf> {
    let prefix = format!("fr-rank{rank}-");
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (at most 20 s) until every rank in `ranks` has a dump in `dir`.
fn wait_for_dumps(dir: &Path, ranks: &[usize]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ranks.iter().all(|&r| !dumps_of(dir, r).is_empty()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The ranks' side. Exit code 0 means the rank saw what its scenario expects.
fn child_rank(scenario: &str) -> ! {
    let c = Communicator::from_env().unwrap_or_else(|e| panic!("from_env: {e}"));
    let dir = PathBuf::from(std::env::var("FERROCOLL_FR_DIR").expect("FERROCOLL_FR_DIR"));
    let ok = match scenario {
        "skip" => skip(&c, &dir),
        "signal" => signal(&c, &dir),
        other => panic!("unknown scenario {other}"),
    };
    std::process::exit(if ok { 0 } else { 1 })
}

/// Three all-reduces everywhere, then rank 1 skips the fourth: the others fail in it and dump
/// (the first to give up with a timeout; the other may instead see it close its links); rank
/// 1 dumps on request and waits for their dumps.
fn skip(c: &Communicator, dir: &Path) -> bool {
    for _ in 0..3 {
        let mut v = [1f32; 2];
        c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
    }
    if c.rank() == 1 {
        c.dump_flight_record(dir).unwrap();
        return wait_for_dumps(dir, &[0, 2]);
    }
    let mut v = [1f32; 2];
    let e = c.all_reduce(&mut v, ReduceOp::Sum).unwrap_err();
    eprintln!("rank {}: {e}", c.rank());
    matches!(
        e,
        Error::Timeout { .. } | Error::PeerFailed { .. } | Error::Revoked { .. }
    )
}

/// Rank 0 enters its second all-reduce and signals itself while it waits there; rank 1
/// signals itself before it joins, once rank 0's dump is there, then completes the call.
fn signal(c: &Communicator, dir: &Path) -> bool {
    let mut v = [1f32; 2];
    c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
    if c.rank() == 0 {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
        });
    } else {
        if !wait_for_dumps(dir, &[0]) {
            return false;
        }
        signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
        if !wait_for_dumps(dir, &[1]) {
            return false;
        }
    }
    c.all_reduce(&mut v, ReduceOp::Sum).is_ok() && v == [4.0, 4.0]
}

/// Runs `scenario` on `np` ranks with `timeout_s`, dumping into `dir`; asserts every rank
/// exited 0.
fn job(scenario: &str, np: usize, timeout_s: &str, dir: &Path) {
    let logs = RankLogs::new(&format!("flight recorder {scenario}"));
    let env = vec![
        ("FC_FR_CHILD".to_string(), scenario.to_string()),
        ("FERROCOLL_TIMEOUT".to_string(), timeout_s.to_string()),
        ("FERROCOLL_FR_DIR".to_string(), dir.display().to_string()),
        (
            "FERROCOLL_SHM_RING_BYTES".to_string(),
            (1 << 20).to_string(),
        ),
    ];
    let st = spawn_local_command(np, logs.command(me), &[], &env).unwrap();
    assert!(st.iter().all(|s| s.success()), "{scenario}: {st:?}");
}

/// `ferrocoll-probe doctor dir` (with `extra` flags): exit code and stdout.
fn doctor(dir: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrocoll-probe"))
        .arg("doctor")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn a_skipped_call_times_out_and_the_doctor_names_the_rank() {
    let dir = fresh_dir("skip");
    job("skip", 3, "1", &dir);
    let reasons: Vec<String> = (0..3)
        .map(|rank| {
            let files = dumps_of(&dir, rank);
            assert_eq!(files.len(), 1, "rank {rank}: {files:?}");
            let r = ferrocoll::recorder::parse_dump(&std::fs::read(&files[0]).unwrap()).unwrap();
            format!("{:?}", r.reason).to_lowercase()
        })
        .collect();
    assert_eq!(reasons[1], "request");
    assert!(reasons.contains(&"timeout".to_string()), "{reasons:?}");
    assert!(
        ["timeout", "failure"].contains(&reasons[0].as_str())
            && ["timeout", "failure"].contains(&reasons[2].as_str()),
        "{reasons:?}"
    );
    let (code, text) = doctor(&dir, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("rank(s) 1 never started collective #3"),
        "{text}"
    );
    let (code, json) = doctor(&dir, &["--json"]);
    assert_eq!(code, 1, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let f = &v["communicators"][0]["findings"][0];
    assert_eq!(f["kind"], "not_started", "{json}");
    assert_eq!(f["ranks"], serde_json::json!([1]), "{json}");
    assert_eq!(f["waiting"], serde_json::json!([0, 2]), "{json}");
    // A corrupt dump beside them is reported and skipped; the diagnosis stands.
    std::fs::write(
        dir.join("fr-rank9-pid1-comm0.json"),
        "{\"version\": 1, \"ra",
    )
    .unwrap();
    let (code, text) = doctor(&dir, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("skipping") && text.contains("fr-rank9-pid1-comm0.json"),
        "{text}"
    );
    assert!(text.contains("rank(s) 1 never started"), "{text}");
    // Nothing readable, or no directory: exit 2.
    assert_eq!(doctor(&dir.join("absent"), &[]).0, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

fn sigusr1_dumps_a_running_job() {
    let dir = fresh_dir("signal");
    job("signal", 2, "30", &dir);
    let r0 =
        ferrocoll::recorder::parse_dump(&std::fs::read(&dumps_of(&dir, 0)[0]).unwrap()).unwrap();
    assert_eq!(format!("{:?}", r0.reason), "Signal");
    let last = r0.entries.last().unwrap();
    assert_eq!(
        (last.seq, format!("{:?}", last.state)),
        (1, "Started".to_string()),
        "{r0:?}"
    );
    assert_eq!(last.peers, [1]);
    let (code, text) = doctor(&dir, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("rank(s) 1 never started collective #1"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
