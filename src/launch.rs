//! Starting ranks on this host without a launcher: the probe's `--np`, the tests and the
//! examples re-run their own executable as `np` processes that meet through a store on
//! loopback.
//!
//! Each child gets `FERROCOLL_RANK`, `FERROCOLL_WORLD_SIZE`, `FERROCOLL_LOCAL_RANK`,
//! `FERROCOLL_LOCAL_WORLD_SIZE` and `FERROCOLL_STORE=127.0.0.1:<free port>` (rank 0 serves the
//! store), and calls [`crate::Communicator::from_env`].
//!
//! The rendezvous stores are here too, for launchers and tools that run one themselves:
//! [`Store`] and its TCP ([`TcpStoreServer`], [`TcpStore`]) and file ([`FileStore`])
//! implementations, and [`LaunchEnv`], what a rank learns from its launcher.

use std::ffi::OsString;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

pub use crate::bootstrap::{FileStore, Store, StoreError, TcpStore, TcpStoreServer};
pub use crate::config::launcher::LaunchEnv;

/// Whether launcher variables are set (this process is a rank of a launched job).
pub fn launched() -> bool {
    matches!(crate::config::launcher::from_env(), Ok(Some(_)) | Err(_))
}

/// Runs the current executable with `args` as `np` local ranks, each with the launcher
/// variables above plus `extra_env`, waits for all of them and returns their exit statuses in
/// rank order.
pub fn spawn_local(
    np: usize,
    args: &[OsString],
    extra_env: &[(String, String)],
) -> Result<Vec<ExitStatus>> {
    let exe = std::env::current_exe().map_err(StoreError::Io)?;
    spawn_local_command(np, || Command::new(&exe), args, extra_env)
}

/// Like [`spawn_local`] with the command built by `cmd` (e.g. another binary).
pub fn spawn_local_command(
    np: usize,
    cmd: impl Fn() -> Command,
    args: &[OsString],
    extra_env: &[(String, String)],
) -> Result<Vec<ExitStatus>> {
    // The ranks' own timeout (their environment: this process's, then `extra_env`) bounds
    // how long the others may go on once one rank has failed.
    let cfg = crate::config::Config::from_env_with(extra_env)?;
    let children = spawn_children(np, cmd, args, extra_env)?;
    wait_all(children, 2 * cfg.timeout)
}

/// How often [`wait_all`] looks at its children.
const CHILD_POLL: Duration = Duration::from_millis(10);

/// Waits for every child, like a launcher: while all run, as long as they run; once one has
/// exited unsuccessfully, the others get `grace` to end (they fail within their own timeout
/// when they wait on it), then they are killed, as `mpirun` does. Returns the exit statuses in
/// order (a killed child's says so).
fn wait_all(mut children: Vec<Child>, grace: Duration) -> Result<Vec<ExitStatus>> {
    let mut status: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut kill_at: Option<Instant> = None;
    loop {
        for (ch, st) in children.iter_mut().zip(status.iter_mut()) {
            if st.is_none() {
                *st = ch.try_wait().map_err(StoreError::Io)?;
                if st.is_some_and(|s| !s.success()) && kill_at.is_none() {
                    kill_at = Some(Instant::now() + grace);
                }
            }
        }
        if status.iter().all(Option::is_some) {
            return Ok(status.into_iter().flatten().collect());
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            for (ch, st) in children.iter_mut().zip(status.iter_mut()) {
                if st.is_none() {
                    let _ = ch.kill();
                    *st = Some(ch.wait().map_err(StoreError::Io)?);
                }
            }
            return Ok(status.into_iter().flatten().collect());
        }
        std::thread::sleep(CHILD_POLL);
    }
}

/// Starts the `np` ranks like [`spawn_local_command`] and returns the children without
/// waiting (the caller waits, or kills them).
pub fn spawn_children(
    np: usize,
    cmd: impl Fn() -> Command,
    args: &[OsString],
    extra_env: &[(String, String)],
) -> Result<Vec<Child>> {
    if np == 0 {
        return Err(Error::InvalidWorld { rank: 0, world: 0 });
    }
    // A free port for rank 0's store; the tiny race until rank 0 binds it is accepted.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(StoreError::Io)?
        .port();
    let mut children: Vec<Child> = Vec::with_capacity(np);
    for rank in 0..np {
        let mut c = cmd();
        c.args(args)
            .env("FERROCOLL_RANK", rank.to_string())
            .env("FERROCOLL_WORLD_SIZE", np.to_string())
            .env("FERROCOLL_LOCAL_RANK", rank.to_string())
            .env("FERROCOLL_LOCAL_WORLD_SIZE", np.to_string())
            .env("FERROCOLL_STORE", format!("127.0.0.1:{port}"));
        for (k, v) in extra_env {
            c.env(k, v);
        }
        match c.spawn() {
            Ok(ch) => children.push(ch),
            Err(e) => {
                for mut ch in children {
                    let _ = ch.kill();
                    let _ = ch.wait();
                }
                return Err(StoreError::Io(e).into());
            }
        }
    }
    Ok(children)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Child {
        Command::new("sh").args(["-c", script]).spawn().unwrap()
    }

    /// A rank that fails does not leave the launcher waiting on the others forever: after
    /// the grace period they are killed, and every status is reported in rank order.
    #[test]
    fn a_failed_rank_ends_the_wait_for_the_others_after_the_grace() {
        let t0 = Instant::now();
        let st = wait_all(
            vec![sh("exit 3"), sh("sleep 600")],
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
        assert_eq!(st[0].code(), Some(3));
        assert!(
            !st[1].success() && st[1].code().is_none(),
            "killed: {:?}",
            st[1]
        );
    }

    /// Ranks that all succeed are waited for as long as they run.
    #[test]
    fn successful_ranks_are_waited_for() {
        let st = wait_all(vec![sh("sleep 0.3; exit 0"), sh("exit 0")], Duration::ZERO).unwrap();
        assert!(st.iter().all(ExitStatus::success), "{st:?}");
    }
}
