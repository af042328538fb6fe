//! Starting ranks on this host without a launcher: the probe's `--np`, the tests and the
//! examples re-run their own executable as `np` processes that meet through a store on
//! loopback.
//!
//! Each child gets `FERROCOLL_RANK`, `FERROCOLL_WORLD_SIZE`, `FERROCOLL_LOCAL_RANK`,
//! `FERROCOLL_LOCAL_WORLD_SIZE` and `FERROCOLL_STORE`, and calls
//! [`crate::Communicator::from_env`]. With [`spawn_local`] and [`spawn_children`] the store is
//! `127.0.0.1:<free port>`, served by rank 0 (the job ends when rank 0 dies); with
//! [`spawn_children_with_store`] it is a [`LocalStore`] served in this (the launcher's)
//! process, `tcp://127.0.0.1:<port>`, which outlives every rank, and [`LocalStore::env`] is
//! what a process started later (a replacement rank) needs to reach it.
//!
//! The rendezvous stores are here too, for launchers and tools that run one themselves:
//! [`Store`] and its TCP ([`TcpStoreServer`], [`TcpStore`]), etcd ([`EtcdStore`]) and file
//! ([`FileStore`]) implementations, [`serve_until_signal`] (the `ferrocoll-store` server),
//! and [`LaunchEnv`], what a rank learns from its launcher.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

pub use crate::bootstrap::{
    serve_until_signal, EtcdStore, FileStore, Store, StoreError, TcpStore, TcpStoreServer,
};
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
    wait_children(children, 2 * cfg.timeout)
}

/// How often [`wait_children`] looks at its children.
const CHILD_POLL: Duration = Duration::from_millis(10);

/// Waits for every child, like a launcher: while all run, as long as they run; once one has
/// exited unsuccessfully, the others get `grace` to end (they fail within their own timeout
/// when they wait on it), then they are killed, as `mpirun` does. Returns the exit statuses in
/// order (a killed child's says so).
pub fn wait_children(mut children: Vec<Child>, grace: Duration) -> Result<Vec<ExitStatus>> {
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
/// waiting (the caller waits, or kills them). Rank 0 serves the store on loopback; unless
/// this process or `extra_env` sets `FERROCOLL_SECRET` or `FERROCOLL_SECRET_FILE`, the
/// children get a fresh secret ([`fresh_secret`]), so that no other process of the host,
/// another user's included, can join.
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
    let mut store = vec![("FERROCOLL_STORE".to_string(), format!("127.0.0.1:{port}"))];
    let given = |k: &str| {
        std::env::var_os(k).is_some_and(|v| !v.is_empty())
            || extra_env.iter().any(|(n, v)| n == k && !v.is_empty())
    };
    if !given("FERROCOLL_SECRET") && !given("FERROCOLL_SECRET_FILE") {
        store.push(("FERROCOLL_SECRET".to_string(), fresh_secret()?));
    }
    spawn_ranks(np, cmd, args, &store, extra_env)
}

/// A fresh random job secret: 32 bytes from the operating system, as 64 hex digits (so it
/// can travel in an environment variable).
pub fn fresh_secret() -> Result<String> {
    let b = ferrocoll_transports::auth::random_bytes(32).map_err(StoreError::Io)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Starts the `np` ranks like [`spawn_children`], meeting through `store`, served in this
/// process (so the job's store outlives every rank): each child gets [`LocalStore::env`],
/// then `extra_env`.
pub fn spawn_children_with_store(
    np: usize,
    cmd: impl Fn() -> Command,
    args: &[OsString],
    extra_env: &[(String, String)],
    store: &LocalStore,
) -> Result<Vec<Child>> {
    if np == 0 {
        return Err(Error::InvalidWorld { rank: 0, world: 0 });
    }
    spawn_ranks(np, cmd, args, &store.env(), extra_env)
}

/// The launcher variables of rank `rank` of `world` local ranks meeting at `store_spec` (a
/// `FERROCOLL_STORE` value).
pub fn local_rank_env(rank: usize, world: usize, store_spec: &str) -> Vec<(String, String)> {
    [
        ("FERROCOLL_RANK", rank.to_string()),
        ("FERROCOLL_WORLD_SIZE", world.to_string()),
        ("FERROCOLL_LOCAL_RANK", rank.to_string()),
        ("FERROCOLL_LOCAL_WORLD_SIZE", world.to_string()),
        ("FERROCOLL_STORE", store_spec.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Starts `np` children with the launcher variables, `store_env` and then `extra_env`;
/// kills the ones started if one cannot be.
fn spawn_ranks(
    np: usize,
    cmd: impl Fn() -> Command,
    args: &[OsString],
    store_env: &[(String, String)],
    extra_env: &[(String, String)],
) -> Result<Vec<Child>> {
    let mut children: Vec<Child> = Vec::with_capacity(np);
    for rank in 0..np {
        let mut c = cmd();
        c.args(args);
        // The store's variables come after the rank's, so they override its FERROCOLL_STORE.
        for (k, v) in local_rank_env(rank, np, "")
            .iter()
            .chain(store_env)
            .chain(extra_env)
        {
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

/// A TCP store served in this process on loopback, for local jobs whose store must outlive
/// every rank; it stops when dropped. The ranks reach it with [`LocalStore::env`].
pub struct LocalStore {
    server: TcpStoreServer,
    secret: Option<String>,
}

impl LocalStore {
    /// Serves a store on `127.0.0.1:<free port>`, demanding this process's job secret
    /// (`FERROCOLL_SECRET` or `FERROCOLL_SECRET_FILE`) of clients, or a fresh one
    /// ([`fresh_secret`]) when neither is set; [`LocalStore::env`] hands it to the ranks. A
    /// malformed `FERROCOLL_*` variable is an error, as for the ranks.
    pub fn start() -> Result<LocalStore> {
        let secret = match crate::config::Config::from_env()?.secret {
            Some(s) => s,
            None => fresh_secret()?,
        };
        Self::with_secret(Some(&secret))
    }

    /// Serves a store on `127.0.0.1:<free port>`, demanding `secret` of clients when given.
    pub fn with_secret(secret: Option<&str>) -> Result<LocalStore> {
        let server = TcpStoreServer::bind_with_secret("127.0.0.1:0", secret.map(str::as_bytes))?;
        Ok(LocalStore {
            server,
            secret: secret.map(str::to_string),
        })
    }

    /// The address the store listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The `FERROCOLL_STORE` value that reaches it: `tcp://127.0.0.1:<port>`.
    pub fn spec(&self) -> String {
        format!("tcp://{}", self.addr())
    }

    /// The variables a process needs to reach the store: `FERROCOLL_STORE`, and
    /// `FERROCOLL_SECRET` when the store demands one.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("FERROCOLL_STORE".to_string(), self.spec())];
        if let Some(s) = &self.secret {
            env.push(("FERROCOLL_SECRET".to_string(), s.clone()));
        }
        env
    }
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
        let st = wait_children(
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

    /// A local store without a secret gives only `FERROCOLL_STORE`, which reaches it; the
    /// rank variables name the store given.
    #[test]
    fn local_store_env_reaches_it() {
        let store = LocalStore::with_secret(None).unwrap();
        let env = store.env();
        assert_eq!(env, vec![("FERROCOLL_STORE".to_string(), store.spec())]);
        let addr = store.spec().strip_prefix("tcp://").unwrap().to_string();
        let client = TcpStore::connect(addr, Duration::from_secs(10)).unwrap();
        client.set("k", b"v").unwrap();
        assert_eq!(client.get("k").unwrap(), b"v");
        let vars = local_rank_env(2, 4, &store.spec());
        assert!(vars.contains(&("FERROCOLL_RANK".into(), "2".into())));
        assert!(vars.contains(&("FERROCOLL_WORLD_SIZE".into(), "4".into())));
        assert!(vars.contains(&("FERROCOLL_STORE".into(), store.spec())));
        drop(store);
        assert!(client.get("k").is_err(), "the store stops with its value");
    }

    /// Ranks that all succeed are waited for as long as they run.
    #[test]
    fn successful_ranks_are_waited_for() {
        let st =
            wait_children(vec![sh("sleep 0.3; exit 0"), sh("exit 0")], Duration::ZERO).unwrap();
        assert!(st.iter().all(ExitStatus::success), "{st:?}");
    }
}
