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
    let children = spawn_children(np, cmd, args, extra_env)?;
    children
        .into_iter()
        .map(|mut ch| ch.wait().map_err(|e| StoreError::Io(e).into()))
        .collect()
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
