//! Memory (issue 5): a rank running 64 MiB all-reduces keeps its resident set within the
//! buffer plus 64 MiB, and the resident set does not grow from the 10th call to the last —
//! scratch and per-call state are reused, not reallocated. Two real processes, over shared
//! memory and over TCP; the test binary re-runs itself as the ranks (`FC_MEM_CHILD` makes
//! `main` run [`child_rank`] instead of the tests: `harness = false`, tests/common/harness.rs).
//! Each rank's output is kept in its own file and printed only when the test fails.
//!
//! The suite runs 25 calls per transport (a debug build on a 2-core CI machine); `.ci/long.sh`
//! runs the full 1,000 in release (`FC_MEM_CALLS=1000`).

mod common;

use std::process::Command;

use common::logs::RankLogs;
use ferrocoll::launch::spawn_local_command;
use ferrocoll::{Communicator, ReduceOp};

const BYTES: usize = 64 << 20;

/// Calls per rank: `FC_MEM_CALLS`, default 25.
fn calls() -> usize {
    std::env::var("FC_MEM_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25)
}

/// `VmRSS` and `VmHWM` (peak) of this process, in bytes.
fn rss() -> (usize, usize) {
    let s = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .expect("status field")
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    if std::env::var_os("FC_MEM_CHILD").is_some() {
        child_rank();
    }
    common::harness::run_tests(&[(
        "rss_bounded_and_flat_over_many_all_reduces",
        rss_bounded_and_flat_over_many_all_reduces,
    )]);
}

/// The ranks' side (run by `main` under `FC_MEM_CHILD`): exits 0 when this rank's results,
/// peak and growth are within bounds, 1 otherwise (the reason on standard error).
fn child_rank() -> ! {
    let c = Communicator::from_env().unwrap_or_else(|e| panic!("from_env: {e}"));
    let mut buf = vec![c.rank() as f32 + 1.0; BYTES / 4];
    let mut steady = 0;
    let calls = calls();
    for i in 0..calls {
        c.all_reduce(&mut buf, ReduceOp::Avg)
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        if i == 9 {
            steady = rss().0;
        }
    }
    let (end, peak) = rss();
    let expect = (1..=c.world_size()).sum::<usize>() as f32 / c.world_size() as f32;
    let wrong = buf.iter().filter(|&&v| v != expect).count();
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    eprintln!(
        "rank {}: RSS after 10 calls {:.1} MiB, after {calls} {:.1} MiB, peak {:.1} MiB (buffer {} MiB)",
        c.rank(),
        mib(steady),
        mib(end),
        mib(peak),
        BYTES >> 20
    );
    let mut code = 0;
    if wrong != 0 {
        eprintln!("rank {}: {wrong} wrong elements", c.rank());
        code = 1;
    }
    if peak > BYTES + (64 << 20) {
        eprintln!("rank {}: peak RSS above buffer + 64 MiB", c.rank());
        code = 1;
    }
    // Growth: page-granular noise only (allocator bookkeeping), not a buffer per call.
    if end > steady + (2 << 20) {
        eprintln!(
            "rank {}: RSS grew by {:.1} MiB",
            c.rank(),
            mib(end - steady)
        );
        code = 1;
    }
    std::process::exit(code);
}

fn rss_bounded_and_flat_over_many_all_reduces() {
    for transport in ["shm", "tcp"] {
        let logs = RankLogs::new(&format!("memory {transport}"));
        let st = spawn_local_command(
            2,
            logs.command(|| Command::new(std::env::current_exe().expect("test binary path"))),
            &[],
            &[
                ("FC_MEM_CHILD".into(), "1".into()),
                ("FERROCOLL_TRANSPORT".into(), transport.into()),
                ("FERROCOLL_TIMEOUT".into(), "120".into()),
            ],
        )
        .expect("spawn ranks");
        assert!(st.iter().all(|s| s.success()), "{transport}: {st:?}");
    }
}
