//! `ferrocoll-probe`: the nccl-tests-style bandwidth probe, a thin CLI over ferrocoll's public
//! API.
//!
//! ```text
//! ferrocoll-probe all_reduce -b 8 -e 64M -f 2 --np 4        # the bus-bandwidth table
//! ferrocoll-probe all_gather -d all -c 1 --json out.json --plot out.png
//! ferrocoll-probe links --np 4 --link-spec 1gbit --save topo.json
//! ferrocoll-probe simulate --topo examples/topologies/dgx-h100-256x8.json all_reduce
//! ferrocoll-probe doctor /tmp/fr                              # after a hang: who is behind
//! ```
//!
//! Without launcher variables the probe re-runs itself as `--np` local ranks (shared memory
//! between them); under torchrun, mpirun or srun it is one rank of their job. Every
//! subcommand runs the same way on every rank (`run_rank`); rank 0 prints.

mod cli;
mod compare;
mod compressed;
mod device;
mod doctor;
mod links;
mod plot;
mod ranks;
mod report;
mod simulate;
mod sweep;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use ferrocoll::{Communicator, Config, ErrorKind, World};

use cli::{Cli, Cmd, Common};

/// The probe's error type: library errors and the probe's own messages.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The probe's result type.
pub type Res<T> = Result<T, BoxError>;

/// `e` and its causes, `outer: inner: …` (a cause whose text the message before it already
/// carries is not repeated), so that "bootstrap failed" says what failed.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        next = cause.source();
    }
    text
}

fn main() -> ExitCode {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts, so that
    // `ferrocoll-probe ... | head` ends quietly as C tools do instead of panicking in println!.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Cmd::Doctor(a) = &cli.cmd {
        // Reading dumps: no ranks to start.
        return doctor::run(a);
    }
    match launch(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferrocoll-probe: error: {}", chain(&*e));
            ExitCode::FAILURE
        }
    }
}

/// Runs the subcommand on one rank. `Ok(true)` when everything checked out, `Ok(false)` when
/// the measurement ran but found wrong results.
pub fn run_rank(comm: &Communicator, cli: &Cli) -> Res<bool> {
    match &cli.cmd {
        Cmd::Links(a) => links::run(comm, a),
        cmd => match cmd.sweep() {
            Some((kind, a)) => sweep::run(comm, kind, a),
            None => Err("unknown subcommand".into()),
        },
    }
}

/// The transports this rank uses to reach the others (`shm`, `tcp`, `ofi`, `mem`, …),
/// without duplicates.
pub fn transports(comm: &Communicator) -> Vec<String> {
    row_transports(&comm.transport_matrix()[comm.rank()])
}

/// The distinct transports of one row of the transport matrix (`self` when there is none).
pub fn row_transports(row: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in row {
        if *t != "self" && !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    if out.is_empty() {
        out.push("self".into());
    }
    out
}

/// The transport of every pair of ranks in one line: `shm 0-1 2-3; tcp 0-2 0-3 1-2 1-3`
/// (a transport with more than [`PAIRS_LISTED`] pairs shows their count; the `links`
/// subcommand prints the whole matrix).
pub fn pair_summary(m: &[Vec<&str>]) -> String {
    // TCP links of a job run with FERROCOLL_TLS=1 carry TLS: say so where they are named.
    let tls = ferrocoll::Config::from_env().is_ok_and(|c| c.tls);
    let mut by: Vec<(&str, Vec<String>)> = Vec::new();
    for (a, row) in m.iter().enumerate() {
        for (b, t) in row.iter().enumerate().skip(a + 1) {
            let t = if tls && *t == "tcp" { &"tcp+tls" } else { t };
            match by.iter_mut().find(|(n, _)| n == t) {
                Some((_, pairs)) => pairs.push(format!("{a}-{b}")),
                None => by.push((t, vec![format!("{a}-{b}")])),
            }
        }
    }
    if by.is_empty() {
        return "self".into();
    }
    by.iter()
        .map(|(t, pairs)| {
            if pairs.len() > PAIRS_LISTED {
                format!("{t} {} pairs", pairs.len())
            } else {
                format!("{t} {}", pairs.join(" "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Pairs listed by name in [`pair_summary`] per transport.
pub const PAIRS_LISTED: usize = 16;

/// The variables `--algo` and `--transport` stand for.
fn pass_through(common: &Common) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(a) = &common.algo {
        env.push(("FERROCOLL_ALGO".to_string(), a.clone()));
    }
    if let Some(t) = &common.transport {
        env.push(("FERROCOLL_TRANSPORT".to_string(), t.clone()));
    }
    env
}

/// Whether an error is one every rank meets alike (bad arguments, an algorithm that does not
/// apply), so that rank 0 reporting it is enough.
fn same_everywhere(e: &BoxError) -> bool {
    match e.downcast_ref::<ferrocoll::Error>() {
        Some(fe) => matches!(
            fe.kind(),
            ErrorKind::InvalidArgument | ErrorKind::InvalidUsage
        ),
        None => true,
    }
}

/// Starts or joins the ranks and turns their outcome into the exit status.
///
/// - Under a launcher (torchrun, mpirun, srun, or our own `spawn_local`): this process is one
///   rank; `--algo`/`--transport` are applied to its environment before it joins.
/// - `--in-process`: the ranks are threads of this process over the `mem` transport.
/// - Otherwise: re-runs this executable as `--np` local ranks and exits with the worst status.
fn launch(cli: &Cli) -> Res<ExitCode> {
    if let Cmd::Simulate(a) = &cli.cmd {
        // Pricing on paper: no ranks to start.
        return Ok(if simulate::run(a)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let common = cli.cmd.common();
    let env = pass_through(common);
    // Refuse bad values before starting anything.
    Config::from_vars(|k| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(k).ok())
    })?;
    if let Some((_, sweep)) = cli.cmd.sweep() {
        for entry in &sweep.compare {
            Config::default()
                .with_algo(entry)
                .map_err(|e| format!("--compare {entry}: {e}"))?;
        }
        if !sweep.compare.is_empty() && common.in_process {
            return Err(
                "--compare needs communicators of their own (split off the ranks' \
                 rendezvous store), which --in-process ranks do not have"
                    .into(),
            );
        }
    }
    if ferrocoll::launch::launched() {
        for (k, v) in &env {
            std::env::set_var(k, v);
        }
        let comm = Communicator::from_env()?;
        return Ok(match run_rank(&comm, cli) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                if comm.rank() == 0 || !same_everywhere(&e) {
                    eprintln!(
                        "ferrocoll-probe: error on rank {}: {}",
                        comm.rank(),
                        chain(&*e)
                    );
                }
                ExitCode::FAILURE
            }
        });
    }
    let np = common.np as usize;
    if common.in_process {
        return in_process(cli, np);
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let statuses = ferrocoll::launch::spawn_local(np, &args, &env)?;
    Ok(worst(&statuses))
}

/// The exit code of the worst child: the first failure's code (128 + signal if killed).
fn worst(statuses: &[std::process::ExitStatus]) -> ExitCode {
    let Some(st) = statuses.iter().find(|s| !s.success()) else {
        return ExitCode::SUCCESS;
    };
    if let Some(code) = st.code() {
        return ExitCode::from(code.clamp(1, 255) as u8);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = st.signal() {
            return ExitCode::from((128 + sig).clamp(1, 255) as u8);
        }
    }
    ExitCode::FAILURE
}

/// Runs the ranks as threads of this process; the first error (lowest rank) is printed.
fn in_process(cli: &Cli, np: usize) -> Res<ExitCode> {
    let mut cfg = Config::from_env()?;
    if let Some(a) = &cli.cmd.common().algo {
        cfg = cfg.with_algo(a)?;
    }
    let results = World::new(np).config(cfg).run(|c| run_rank(c, cli))?;
    let mut code = ExitCode::SUCCESS;
    let mut printed = false;
    for (rank, r) in results.into_iter().enumerate() {
        match r {
            Ok(true) => {}
            Ok(false) => code = ExitCode::FAILURE,
            Err(e) => {
                if !printed {
                    eprintln!("ferrocoll-probe: error on rank {rank}: {}", chain(&*e));
                    printed = true;
                }
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}
