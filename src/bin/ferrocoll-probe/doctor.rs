//! `ferrocoll-probe doctor DIR`: reads the flight recorder's dumps of a job
//! (`fr-rank<R>-pid<PID>-comm<ID>.json`, see `ferrocoll::recorder`) and names the ranks that
//! are behind, stuck, or called a different collective. Starts no ranks.
//!
//! Exit status: 0 when every communicator looks healthy, 1 when a problem was found, 2 when
//! the directory cannot be read or holds no readable dump. A corrupt or truncated dump is
//! reported with its path and skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use ferrocoll::recorder::doctor::{diagnose, CommReport};
use ferrocoll::recorder::{parse_dump, FlightRecord};
use serde::Serialize;

/// Options of `doctor`.
#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// The directory the ranks dumped to (their FERROCOLL_FR_DIR).
    pub dir: PathBuf,
    /// Print the analysis as JSON on stdout instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// A file that looked like a dump and could not be read.
#[derive(Debug, Serialize)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub error: String,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Output<'a> {
    dir: &'a Path,
    healthy: bool,
    dumps: usize,
    skipped: &'a [Skipped],
    communicators: &'a [CommReport],
}

/// Whether `name` is a dump's file name.
fn is_dump(name: &str) -> bool {
    name.starts_with("fr-") && name.ends_with(".json")
}

/// Reads every dump in `dir`, in name order; files that are not dumps by name are ignored,
/// dumps that cannot be read are returned apart.
pub fn read_dumps(dir: &Path) -> std::io::Result<(Vec<FlightRecord>, Vec<Skipped>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(is_dump))
        .map(|e| e.path())
        .collect();
    paths.sort();
    let (mut records, mut skipped) = (Vec::new(), Vec::new());
    for path in paths {
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| parse_dump(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(r) => records.push(r),
            Err(error) => skipped.push(Skipped { path, error }),
        }
    }
    Ok((records, skipped))
}

/// The human report of one communicator.
fn report(c: &CommReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "communicator {} (world {}): {} dump(s)",
        c.comm,
        c.world,
        c.ranks.len()
    )?;
    let seq = |s: Option<u64>| s.map_or("-".to_string(), |s| format!("#{s}"));
    for r in &c.ranks {
        let open = r
            .open
            .as_ref()
            .map_or(String::new(), |(s, call)| format!("  in #{s} {call}"));
        let line = format!(
            "  rank {:>4}  {}:{}  {:<8} completed {:<6} started {:<6}{open}",
            r.rank,
            r.host,
            r.pid,
            r.reason,
            seq(r.last_completed),
            seq(r.last_started)
        );
        writeln!(out, "{}", line.trim_end())?;
        if let Some(f) = &r.failure {
            writeln!(out, "             failure: {f}")?;
        }
    }
    if c.healthy() {
        writeln!(out, "  healthy: every rank is at the same call")?;
    }
    for f in &c.findings {
        writeln!(out, "  PROBLEM: {}", f.describe())?;
    }
    Ok(())
}

/// Runs `doctor` and returns its exit status.
pub fn run(a: &DoctorArgs) -> ExitCode {
    let (records, skipped) = match read_dumps(&a.dir) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ferrocoll-probe doctor: {}: {e}", a.dir.display());
            return ExitCode::from(2);
        }
    };
    for s in &skipped {
        eprintln!(
            "ferrocoll-probe doctor: skipping {}: {}",
            s.path.display(),
            s.error
        );
    }
    if records.is_empty() {
        eprintln!(
            "ferrocoll-probe doctor: no readable flight record (fr-*.json) in {}",
            a.dir.display()
        );
        return ExitCode::from(2);
    }
    let comms = diagnose(&records);
    let healthy = comms.iter().all(CommReport::healthy);
    let mut out = std::io::stdout().lock();
    let written = if a.json {
        let o = Output {
            dir: &a.dir,
            healthy,
            dumps: records.len(),
            skipped: &skipped,
            communicators: &comms,
        };
        serde_json::to_writer_pretty(&mut out, &o)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        comms.iter().try_for_each(|c| report(c, &mut out))
    };
    if let Err(e) = written {
        eprintln!("ferrocoll-probe doctor: writing the report: {e}");
        return ExitCode::from(2);
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_are_found_by_name_and_bad_ones_skipped() {
        let dir = std::env::temp_dir().join(format!("fr-doctor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a dump").unwrap();
        std::fs::write(dir.join("fr-rank0-pid1-comm0.json"), "{\"version\":1,").unwrap();
        std::fs::write(dir.join(".fr-rank1-pid2-comm0.json.tmp"), "{").unwrap();
        let (records, skipped) = read_dumps(&dir).unwrap();
        assert!(records.is_empty());
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].path.ends_with("fr-rank0-pid1-comm0.json"));
        assert!(read_dumps(&dir.join("absent")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
