//! `ferrocoll-store`: a rendezvous store served outside the ranks of a job, so that the job's
//! store outlives any of them (rank 0 included).
//!
//! ```text
//! ferrocoll-store --listen 0.0.0.0:29400 --secret-file /run/secrets/ferrocoll
//! FERROCOLL_STORE=tcp://store-host:29400 FERROCOLL_SECRET=... <each rank>
//! ```
//!
//! Prints `ferrocoll-store listening on ADDR` once it listens, serves until SIGTERM or SIGINT
//! and then exits with status 0. The secret clients must present comes from `--secret-file`
//! (the file's content without its trailing newline), else from `FERROCOLL_SECRET`; with
//! neither, any client is served. Log level: `FERROCOLL_DEBUG` (as for the ranks).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Command line of `ferrocoll-store`.
#[derive(Parser, Debug)]
#[command(
    name = "ferrocoll-store",
    version,
    about = "Serves a ferrocoll rendezvous store (FERROCOLL_STORE=tcp://HOST:PORT) until \
             SIGTERM or SIGINT"
)]
struct Args {
    /// Address to listen on, host:port (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:29400")]
    listen: String,
    /// File holding the secret clients must present (else FERROCOLL_SECRET; neither: none).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
}

/// The secret from `--secret-file`, else `from_env` (`FERROCOLL_SECRET`).
fn secret(args: &Args, from_env: Option<String>) -> Result<Option<String>, String> {
    let Some(path) = &args.secret_file else {
        return Ok(from_env);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    let s = text.trim_end_matches(['\n', '\r']);
    if s.is_empty() {
        return Err(format!("the secret file {} is empty", path.display()));
    }
    Ok(Some(s.to_string()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match ferrocoll::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrocoll-store: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    ferrocoll::init_logging(cfg.log_level);
    let secret = match secret(&args, cfg.secret) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferrocoll-store: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = ferrocoll::launch::serve_until_signal(
        &args.listen,
        secret.as_deref().map(str::as_bytes),
        |addr| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ferrocoll-store listening on {addr}");
            let _ = out.flush();
        },
    );
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
            eprintln!(
                "ferrocoll-store: error: cannot serve on {}: {e}{cause}",
                args.listen
            );
            ExitCode::FAILURE
        }
    }
}
