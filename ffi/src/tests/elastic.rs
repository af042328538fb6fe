//! Revoke, shrink, grow and join through the C ABI: every bad argument has its code, and two
//! jobs of three real processes (this test binary run again as each rank, meeting through a
//! `file:DIR` store) revoke and shrink to all ranks, or shrink excluding one.

use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use super::{all_reduce_f32, last_error, world};
use crate::types::fcResult_t::*;
use crate::*;

fn count(c: fcComm_t) -> c_int {
    let mut n: c_int = -1;
    // SAFETY: valid out-pointer.
    let res = unsafe { fcCommCount(c, &mut n) };
    assert_eq!(res, fcSuccess, "{}", last_error());
    n
}

#[test]
fn revoke_refuses_bad_handles_and_flags() {
    assert_eq!(fcCommRevoke(null_mut(), 0), fcInvalidArgument);
    assert!(last_error().contains("comm is NULL"), "{}", last_error());
    world(1, |_, c| {
        assert_eq!(fcCommRevoke(c, 1), fcInvalidArgument);
        assert!(last_error().contains("revokeFlags 1"), "{}", last_error());
        assert_eq!(fcCommRevoke(c, -1), fcInvalidArgument);
        // A bad call revoked nothing: the communicator still works.
        let mut y = [0.0f32; 2];
        assert_eq!(all_reduce_f32(&[1.0, 2.0], &mut y, fcSum, c), fcSuccess);
        // Revoked: later calls fail with a remote error that says so.
        assert_eq!(fcCommRevoke(c, FC_REVOKE_DEFAULT), fcSuccess);
        assert_eq!(all_reduce_f32(&[1.0, 2.0], &mut y, fcSum, c), fcRemoteError);
        // The Python package tells a revocation apart by these words (_errors.py).
        assert!(
            last_error().contains("communicator revoked"),
            "{}",
            last_error()
        );
        let mut e = fcSuccess;
        // SAFETY: valid out-pointer.
        assert_eq!(unsafe { fcCommGetAsyncError(c, &mut e) }, fcSuccess);
        assert_eq!(e, fcRemoteError);
    });
}

#[test]
fn shrink_refuses_every_bad_argument() {
    world(2, |r, c| {
        let mut n: fcComm_t = 0xdead_usize as fcComm_t;
        let bad = |res: fcResult_t, n: fcComm_t, what: &str| {
            assert_eq!(res, fcInvalidArgument, "{what}: {}", last_error());
            assert!(last_error().contains(what), "{what}: {}", last_error());
            assert!(n.is_null(), "{what}: newcomm not cleared");
        };
        let one = [1 as c_int];
        let two = [0 as c_int, 0];
        // SAFETY: (every call) `n` is a valid out-pointer, the lists hold what they claim.
        unsafe {
            assert_eq!(
                fcCommShrink(c, null(), 0, null_mut(), null_mut(), 0),
                fcInvalidArgument
            );
            bad(
                fcCommShrink(null_mut(), null(), 0, &mut n, null_mut(), 0),
                n,
                "comm is NULL",
            );
            let cfg = &mut 0u64 as *mut u64;
            bad(
                fcCommShrink(c, null(), 0, &mut n, cfg.cast(), 0),
                n,
                "config must be NULL",
            );
            bad(
                fcCommShrink(c, null(), 0, &mut n, null_mut(), 2),
                n,
                "shrinkFlags 2",
            );
            bad(
                fcCommShrink(c, one.as_ptr(), -1, &mut n, null_mut(), 0),
                n,
                "negative",
            );
            bad(
                fcCommShrink(c, null(), 1, &mut n, null_mut(), 0),
                n,
                "excludeRanks is NULL",
            );
            bad(
                fcCommShrink(c, two.as_ptr(), 3, &mut n, null_mut(), 0),
                n,
                "more than the 2",
            );
            bad(
                fcCommShrink(c, [2].as_ptr(), 1, &mut n, null_mut(), 0),
                n,
                "excludeRanks[0] = 2",
            );
            bad(
                fcCommShrink(c, [-1].as_ptr(), 1, &mut n, null_mut(), 0),
                n,
                "excludeRanks[0] = -1",
            );
            bad(
                fcCommShrink(c, two.as_ptr(), 2, &mut n, null_mut(), 0),
                n,
                "twice",
            );
            // A rank that excludes itself is left out: a remote-class error, no communicator.
            let me = [r as c_int];
            assert_eq!(
                fcCommShrink(c, me.as_ptr(), 1, &mut n, null_mut(), 0),
                fcRemoteError
            );
            // The Python package tells an exclusion apart by these words (_errors.py).
            assert!(
                last_error().contains("left out of the survivors"),
                "{}",
                last_error()
            );
            assert!(n.is_null());
            fcGroupStart();
            let res = fcCommShrink(c, [1 - r as c_int].as_ptr(), 1, &mut n, null_mut(), 0);
            fcGroupEnd();
            assert_eq!(res, fcInvalidUsage, "{}", last_error());
        }
        // None of this touched the communicator.
        let mut y = [0.0f32; 1];
        assert_eq!(all_reduce_f32(&[1.0], &mut y, fcSum, c), fcSuccess);
        assert_eq!(y[0], 2.0);
    });
}

#[test]
fn grow_join_and_joiners_waiting_refuse_bad_arguments() {
    // SAFETY: (every call) NULL out-pointers and handles are what is tested.
    unsafe {
        assert_eq!(fcCommGrow(null_mut(), &mut null_mut()), fcInvalidArgument);
        assert_eq!(fcCommJoinersWaiting(null_mut(), &mut 0), fcInvalidArgument);
        assert_eq!(fcCommJoin(null_mut()), fcInvalidArgument);
    }
    if std::env::var_os("FERROCOLL_STORE").is_none() {
        let mut c: fcComm_t = 0xdead_usize as fcComm_t;
        // SAFETY: valid out-pointer.
        let res = unsafe { fcCommJoin(&mut c) };
        assert_eq!(res, fcInvalidArgument, "{}", last_error());
        assert!(last_error().contains("FERROCOLL_STORE"), "{}", last_error());
        assert!(c.is_null());
    }
    world(1, |_, c| {
        let mut k: c_int = -1;
        let mut n: fcComm_t = 0xdead_usize as fcComm_t;
        // SAFETY: valid out-pointers, or NULL ones (refused).
        unsafe {
            assert_eq!(fcCommGrow(c, null_mut()), fcInvalidArgument);
            assert_eq!(fcCommJoinersWaiting(c, null_mut()), fcInvalidArgument);
            assert_eq!(
                fcCommJoinersWaiting(c, &mut k),
                fcSuccess,
                "{}",
                last_error()
            );
            assert_eq!(k, 0);
            // Nobody waits: success and no communicator.
            assert_eq!(fcCommGrow(c, &mut n), fcSuccess, "{}", last_error());
            assert!(n.is_null());
        }
    });
}

#[test]
fn a_lone_rank_shrinks_to_itself() {
    world(1, |_, c| {
        let mut n: fcComm_t = null_mut();
        // SAFETY: valid out-pointer.
        let res = unsafe { fcCommShrink(c, null(), 0, &mut n, null_mut(), FC_SHRINK_DEFAULT) };
        assert_eq!(res, fcSuccess, "{}", last_error());
        assert_eq!(count(n), 1);
        let mut y = [0.0f32; 3];
        assert_eq!(
            all_reduce_f32(&[1.0, 2.0, 3.0], &mut y, fcSum, n),
            fcSuccess
        );
        assert_eq!(y, [1.0, 2.0, 3.0]);
        assert_eq!(fcCommDestroy(n), fcSuccess);
    });
}

// ------------------------------------------------------------------------------------------
// Three real processes.

/// Names the scenario a child process runs (unset in the parent).
const SCENARIO: &str = "FC_FFI_ELASTIC";
/// Where a child writes its one-line report, `rank-<r>`.
const REPORT: &str = "FC_FFI_REPORT";

/// The body of each rank process: a no-op unless `FC_FFI_ELASTIC` names a scenario, which
/// it runs, reports, and exits with.
#[test]
fn elastic_rank_process() {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return;
    };
    let mut c: fcComm_t = null_mut();
    // SAFETY: valid out-pointer.
    let res = unsafe { fcCommInitFromEnv(&mut c) };
    let out = if res == fcSuccess {
        rank_scenario(&scenario, c)
    } else {
        Err(format!("init: {res:?} {}", last_error()))
    };
    let rank = std::env::var("FERROCOLL_RANK").unwrap_or_default();
    let dir = std::env::var_os(REPORT).expect("FC_FFI_REPORT");
    let line = out.clone().unwrap_or_else(|e| format!("fail {e}"));
    std::fs::write(Path::new(&dir).join(format!("rank-{rank}")), line).expect("report");
    std::process::exit(i32::from(out.is_err()));
}

fn check(res: fcResult_t, what: &str) -> Result<(), String> {
    if res == fcSuccess {
        Ok(())
    } else {
        Err(format!("{what}: {res:?} {}", last_error()))
    }
}

/// An all-reduce of ones on `c` sums to its size.
fn works(c: fcComm_t) -> Result<(), String> {
    let x = vec![1.0f32; 1000];
    let mut y = vec![0.0f32; 1000];
    check(all_reduce_f32(&x, &mut y, fcSum, c), "all-reduce")?;
    let want = count(c) as f32;
    if y.iter().any(|&v| v != want) {
        return Err(format!("all-reduce gave {} (want {want})", y[0]));
    }
    Ok(())
}

/// `revoke`: rank 2 revokes, every rank shrinks with no list and gets all three back.
/// `exclude`: ranks 0 and 1 shrink excluding rank 2 (rank 1 with `FC_SHRINK_ABORT`); rank 2
/// tries to shrink excluding itself and is refused.
fn rank_scenario(scenario: &str, c: fcComm_t) -> Result<String, String> {
    let mut me: c_int = -1;
    // SAFETY: valid out-pointer.
    check(unsafe { fcCommUserRank(c, &mut me) }, "rank")?;
    works(c)?;
    let mut n: fcComm_t = null_mut();
    match scenario {
        "revoke" => {
            if me == 2 {
                check(fcCommRevoke(c, FC_REVOKE_DEFAULT), "revoke")?;
            }
            // SAFETY: valid out-pointer.
            let res = unsafe { fcCommShrink(c, null(), 0, &mut n, null_mut(), 0) };
            check(res, "shrink")?;
        }
        "exclude" => {
            let ex = [2 as c_int];
            let flags = if me == 1 {
                FC_SHRINK_ABORT
            } else {
                FC_SHRINK_DEFAULT
            };
            // SAFETY: valid out-pointer and a list of one rank.
            let res = unsafe { fcCommShrink(c, ex.as_ptr(), 1, &mut n, null_mut(), flags) };
            if me == 2 {
                if res != fcRemoteError || !n.is_null() {
                    return Err(format!("excluded rank got {res:?} {}", last_error()));
                }
                check(fcCommDestroy(c), "destroy")?;
                return Ok("ok excluded".into());
            }
            check(res, "shrink")?;
        }
        s => return Err(format!("unknown scenario {s}")),
    }
    let mut r: c_int = -1;
    // SAFETY: valid out-pointer.
    check(unsafe { fcCommUserRank(n, &mut r) }, "new rank")?;
    works(n)?;
    let size = count(n);
    check(fcCommDestroy(n), "destroy new")?;
    check(fcCommDestroy(c), "destroy old")?;
    Ok(format!("ok {size} {r}"))
}

/// A job of `np` ranks running `scenario`; dropping it kills what still runs and removes its
/// files.
struct Job {
    kids: Vec<Child>,
    dir: PathBuf,
}

impl Job {
    fn start(np: usize, scenario: &str) -> Job {
        let dir = std::env::temp_dir().join(format!(
            "ferrocoll-ffi-elastic-{scenario}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let exe = std::env::current_exe().unwrap();
        let kids = (0..np)
            .map(|r| {
                Command::new(&exe)
                    .args([
                        "--exact",
                        "tests::elastic::elastic_rank_process",
                        "--nocapture",
                    ])
                    .env(SCENARIO, scenario)
                    .env(REPORT, &dir)
                    .env("FERROCOLL_RANK", r.to_string())
                    .env("FERROCOLL_WORLD_SIZE", np.to_string())
                    .env(
                        "FERROCOLL_STORE",
                        format!("file:{}", dir.join("store").display()),
                    )
                    .env("FERROCOLL_SOCKET_IFNAME", "lo")
                    .env("FERROCOLL_TIMEOUT", "20")
                    .env("FERROCOLL_HEARTBEAT_TIMEOUT", "1")
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log.try_clone().unwrap())
                    .spawn()
                    .unwrap()
            })
            .collect();
        Job { kids, dir }
    }

    /// Every rank's report once all have exited (panics, with the log, after 60 s).
    fn reports(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for k in &mut self.kids {
            while k.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "job hangs:\n{}", self.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        (0..self.kids.len())
            .map(|r| {
                std::fs::read_to_string(self.dir.join(format!("rank-{r}")))
                    .unwrap_or_else(|_| "none".into())
            })
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        for k in &mut self.kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn three_processes_revoke_then_shrink_to_all_three() {
    let mut job = Job::start(3, "revoke");
    let got = job.reports();
    let want: Vec<String> = (0..3).map(|r| format!("ok 3 {r}")).collect();
    assert_eq!(got, want, "\n{}", job.log());
}

#[test]
fn three_processes_shrink_excluding_rank_2() {
    let mut job = Job::start(3, "exclude");
    let got = job.reports();
    assert_eq!(got, ["ok 2 0", "ok 2 1", "ok excluded"], "\n{}", job.log());
}
