//! Real processes on this host over shared memory and TCP (issue 3): every collective against
//! the reference, a rank killed mid-loop, a rank stopped mid-loop. The test binary re-runs
//! itself as the ranks (`FC_CHILD` tells the child what to do).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_case, Case};
use ferrocoll::launch::{spawn_children, spawn_local_command};
use ferrocoll::schedule::Collective;
use ferrocoll::{Communicator, DataType, Error, ReduceOp};

fn me() -> Command {
    Command::new(std::env::current_exe().expect("test binary path"))
}

fn args() -> Vec<std::ffi::OsString> {
    ["--exact", "child_rank", "--nocapture", "--test-threads=1"]
        .iter()
        .map(Into::into)
        .collect()
}

fn env(scenario: &str, transport: &str, timeout_s: &str) -> Vec<(String, String)> {
    vec![
        ("FC_CHILD".into(), scenario.into()),
        ("FERROCOLL_TRANSPORT".into(), transport.into()),
        ("FERROCOLL_TIMEOUT".into(), timeout_s.into()),
        ("FERROCOLL_SHM_RING_BYTES".into(), (1 << 20).to_string()),
    ]
}

/// The ranks' side. Exit code 0 means the scenario's expectation held on this rank.
#[test]
fn child_rank() {
    let Ok(scenario) = std::env::var("FC_CHILD") else {
        return;
    };
    let c = Communicator::from_env().unwrap_or_else(|e| panic!("from_env: {e}"));
    let code = match scenario.as_str() {
        "matrix" => matrix(&c),
        "big" => big(&c),
        "kill" | "stop" => fault(&c, &scenario),
        _ => 3,
    };
    std::process::exit(code);
}

fn matrix(c: &Communicator) -> i32 {
    let mut bad = 0;
    for kind in Collective::COLLECTIVES {
        for count in [0usize, 1, 7, 40_001, 300_000] {
            for (dtype, op) in [
                (DataType::F32, ReduceOp::Sum),
                (DataType::I32, ReduceOp::Max),
                (DataType::BF16, ReduceOp::Avg),
            ] {
                let root = c.world_size() - 1;
                let case = Case {
                    kind,
                    dtype,
                    op,
                    count,
                    root,
                    in_place: count % 2 == 1,
                };
                match run_case(c, &case, 11) {
                    Ok((_, 0)) => {}
                    Ok((_, w)) => {
                        eprintln!("rank {}: {case:?}: {w} wrong", c.rank());
                        bad += 1;
                    }
                    Err(e) => {
                        eprintln!("rank {}: {case:?}: {e}", c.rank());
                        return 2;
                    }
                }
            }
        }
    }
    // Point-to-point around the ring.
    let (r, p) = (c.rank(), c.world_size());
    if p > 1 {
        let out = vec![r as u64; 1000];
        let mut inp = vec![0u64; 1000];
        let w = c.send_async(out, (r + 1) % p).unwrap();
        c.recv(&mut inp, (r + p - 1) % p).unwrap();
        w.wait().unwrap();
        if inp != vec![((r + p - 1) % p) as u64; 1000] {
            bad += 1;
        }
    }
    i32::from(bad > 0)
}

fn big(c: &Communicator) -> i32 {
    let n = 16 << 20; // 64 MiB of f32
    let mut v = vec![1.0f32 + c.rank() as f32; n];
    if let Err(e) = c.all_reduce(&mut v, ReduceOp::Sum) {
        eprintln!("{e}");
        return 2;
    }
    let p = c.world_size() as f32;
    let want = p * (p + 1.0) / 2.0;
    i32::from(v.iter().any(|&x| x != want))
}

fn fault(c: &Communicator, scenario: &str) -> i32 {
    let mut v = vec![1.0f32; 1 << 18];
    let t_out = c.config().timeout;
    for i in 0.. {
        if c.rank() == 1 && i == 30 {
            let sig = if scenario == "kill" {
                libc::SIGKILL
            } else {
                libc::SIGSTOP
            };
            // SAFETY: raising a signal on ourselves has no memory-safety preconditions.
            unsafe { libc::raise(sig) };
        }
        let t0 = Instant::now();
        match c.all_reduce(&mut v, ReduceOp::Sum) {
            Ok(()) => continue,
            Err(e) => {
                let took = t0.elapsed();
                eprintln!("rank {} after {took:?}: {e}", c.rank());
                let in_time = took <= 2 * t_out + Duration::from_millis(500);
                let not_early = scenario != "stop"
                    || matches!(e, Error::PeerFailed { .. })
                    || took >= t_out / 2;
                return if in_time && not_early { 0 } else { 1 };
            }
        }
    }
    1
}

fn shm_files() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ferrocoll-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_collective_across_processes() {
    for transport in ["shm", "tcp"] {
        for np in [1usize, 2, 3, 4, 5, 8] {
            let st = spawn_local_command(np, me, &args(), &env("matrix", transport, "60")).unwrap();
            assert!(
                st.iter().all(|s| s.success()),
                "{transport} np={np}: {st:?}"
            );
        }
    }
}

#[test]
fn sixty_four_mib_all_reduce() {
    for transport in ["shm", "tcp"] {
        let st = spawn_local_command(2, me, &args(), &env("big", transport, "60")).unwrap();
        assert!(st.iter().all(|s| s.success()), "{transport}: {st:?}");
    }
}

#[test]
fn killed_rank_fails_the_survivors_and_leaves_no_segment() {
    let before = shm_files();
    for transport in ["shm", "tcp"] {
        let st = spawn_local_command(4, me, &args(), &env("kill", transport, "3")).unwrap();
        for (r, s) in st.iter().enumerate() {
            if r == 1 {
                assert!(!s.success(), "the killed rank");
            } else {
                assert!(s.success(), "{transport} survivor {r}: {s:?}");
            }
        }
    }
    let after: Vec<String> = shm_files()
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert!(after.is_empty(), "segments left behind: {after:?}");
}

#[test]
fn stopped_rank_times_out_the_survivors() {
    for transport in ["shm", "tcp"] {
        let mut kids = spawn_children(3, me, &args(), &env("stop", transport, "2")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        for r in [0usize, 2] {
            let st = loop {
                if let Some(st) = kids[r].try_wait().unwrap() {
                    break st;
                }
                assert!(Instant::now() < deadline, "{transport}: survivor {r} hangs");
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(st.success(), "{transport} survivor {r}: {st:?}");
        }
        let _ = kids[1].kill();
        let _ = kids[1].wait();
    }
}
