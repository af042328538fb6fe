//! Rank claims: processes of one rendezvous that disagree about who is which rank are named
//! within the timeout, instead of each waiting out the store for a rank that never comes.
//!
//! Three disagreements, each an [`Error::RankConflict`] that names the ranks, hosts and pids:
//! - **a rank claimed twice**: before publishing its record, each process adds 1 to the
//!   counter `<prefix>claim/<rank>` and writes its host, pid and world size under
//!   `<prefix>claim/<rank>/<n>`; the process that counts `n > 1` is a second claimant, and
//!   reads the first one's entry to name it;
//! - **different world sizes**: each record carries the world size its rank was given (its
//!   last line); a rank that reads a record with another world size names both;
//! - **a rank out of range** (not below the world size): refused at once by the process
//!   itself ([`out_of_range`]), which also tells the others when it reaches the store in a
//!   moment.
//!
//! One key decides, so that every rank of the job reports the same thing: `<prefix>decision`,
//! set once by compare-and-set, either to `ok` (by the first rank that read every record it
//! needs, all in agreement) or to the first conflict found. A rank waiting for a record
//! looks at it between waits: a conflict ends the wait with that conflict, and `ok` means
//! the job is complete without the process in conflict, which then fails alone. A rank that
//! has every record proceeds only if the decision is (or becomes) `ok`.

use std::time::{Duration, Instant};

use super::{Store, StoreError};
use crate::config::launcher::LaunchEnv;
use crate::config::Config;
use crate::error::{Error, Process, RankConflict, Result};

/// How long a rank waits for a record before it looks at the decision again.
const SLICE: Duration = Duration::from_millis(50);

/// At most this long, a process with a rank out of range tries to tell the others (reach
/// the store, wait for the job to have started) before it returns its error.
const OUT_OF_RANGE_BUDGET: Duration = Duration::from_secs(2);

/// At most this long, rank 0 (which may serve the store) waits for the others to see a
/// conflict before it returns its error.
const LINGER: Duration = Duration::from_secs(5);

/// The decision that lets the ranks proceed.
const OK: &[u8] = b"ok";

/// This process: its host name (`FERROCOLL_HOSTNAME` if set, else the kernel's) and pid.
pub(crate) fn this_process(cfg: &Config) -> Process {
    let host = cfg.hostname.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    });
    Process {
        // One line: host names travel in newline-separated store values.
        host: host.replace(['\n', '\r'], " "),
        pid: std::process::id(),
    }
}

/// This process's claim of `rank` in a world of `world` ranks, made under `prefix`: reads
/// the other ranks' records with [`Claim::record`] and settles the decision with
/// [`Claim::settle`].
pub(super) struct Claim<'a> {
    store: &'a dyn Store,
    prefix: &'a str,
    rank: usize,
    world: usize,
    me: Process,
    timeout: Duration,
}

/// Claims `rank` of `world` under `prefix` in `store` (see the module docs): a rank outside
/// the world, or one another process claimed first, is an [`Error::RankConflict`] (the
/// latter is also published, so that the ranks waiting for the missing one learn it).
pub(super) fn claim<'a>(
    store: &'a dyn Store,
    prefix: &'a str,
    rank: usize,
    world: usize,
    cfg: &Config,
) -> Result<Claim<'a>> {
    let claim = Claim {
        store,
        prefix,
        rank,
        world,
        me: this_process(cfg),
        timeout: cfg.timeout,
    };
    if rank >= world {
        let conflict = RankConflict::OutOfRange {
            rank,
            world,
            process: claim.me.clone(),
        };
        // Told to the others too (best effort: the error is this process's in any case).
        let _ = decide(store, prefix, conflict.clone());
        return Err(claim.fail(conflict));
    }
    let n = store.add(&format!("{prefix}claim/{rank}"), 1)?;
    let entry = format!("{}\n{}\n{world}", claim.me.host, claim.me.pid);
    store.set(&format!("{prefix}claim/{rank}/{n}"), entry.as_bytes())?;
    if n > 1 {
        // The first claimant writes its entry right after counting.
        let first = store.get_timeout(&format!("{prefix}claim/{rank}/1"), cfg.timeout)?;
        let first = decode_entry(&first).map(|(p, _)| p).unwrap_or(Process {
            host: "?".into(),
            pid: 0,
        });
        let conflict = RankConflict::DoubleClaim {
            rank,
            first,
            second: claim.me.clone(),
        };
        // The job may be complete without this process (`ok`): then it alone fails.
        let decided = decide(store, prefix, conflict.clone())?;
        return Err(claim.fail(decided.unwrap_or(conflict)));
    }
    Ok(claim)
}

impl Claim<'_> {
    /// The line a record ends with: the world size this rank was given.
    pub(super) fn world_line(&self) -> String {
        self.world.to_string()
    }

    /// Rank `r`'s record, waiting up to the timeout for it, in slices between which the
    /// decision is read: a conflict another process found ends the wait with that conflict.
    /// A record whose last line gives another world size is a conflict too (decided, so that
    /// every rank reports the first one found). Gives up with [`Error::Aborted`] as soon as
    /// `cancelled()` says so.
    pub(super) fn record(&self, r: usize, cancelled: &dyn Fn() -> bool) -> Result<String> {
        let key = format!("{}rank/{r}", self.prefix);
        let deadline = Instant::now().checked_add(self.timeout);
        let text = loop {
            if cancelled() {
                return Err(Error::Aborted);
            }
            let left = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()));
            match self.store.get_timeout(&key, left.min(SLICE)) {
                Ok(v) => break String::from_utf8_lossy(&v).into_owned(),
                Err(StoreError::Timeout { .. }) if left > SLICE => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(conflict) = self.decided()? {
                return Err(self.fail(conflict));
            }
        };
        // Records of another format are refused by the caller, which parses them.
        let world = text.rsplit('\n').next().and_then(|w| w.trim().parse().ok());
        if let Some(world) = world.filter(|&w| w != self.world) {
            let process = self.claimant(r).unwrap_or(Process {
                host: text.split('\n').next().unwrap_or("?").to_string(),
                pid: text
                    .split('\n')
                    .nth(2)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
            });
            let conflict = RankConflict::WorldSize {
                rank: r,
                process,
                world,
                other_rank: self.rank,
                other_process: self.me.clone(),
                other_world: self.world,
            };
            let decided = decide(self.store, self.prefix, conflict.clone())?;
            return Err(self.fail(decided.unwrap_or(conflict)));
        }
        Ok(text)
    }

    /// Called once every record has been read and agreed: the job proceeds unless a
    /// conflict was decided first, which is then this rank's error too.
    pub(super) fn settle(&self) -> Result<()> {
        let v = self
            .store
            .compare_set(&self.decision_key(), None, OK)
            .map_err(Error::from)?;
        match decode_decision(&v)? {
            None => Ok(()),
            Some(conflict) => Err(self.fail(conflict)),
        }
    }

    /// This rank's error for `conflict`, once it has said it saw it. Rank 0 may serve the
    /// store: it first waits (briefly) until every rank has seen it too, so that no rank
    /// sees the store vanish instead of the reason.
    fn fail(&self, conflict: RankConflict) -> Error {
        let key = seen_key(self.prefix);
        let _ = self.store.add(&key, 1);
        if self.rank == 0 {
            let deadline = Instant::now() + self.timeout.min(LINGER);
            // `add(key, 0)` reads the count; the processes in conflict count as well.
            while Instant::now() < deadline {
                match self.store.add(&key, 0) {
                    Ok(n) if n < self.world as i64 => std::thread::sleep(SLICE),
                    _ => break,
                }
            }
        }
        conflict.into()
    }

    /// The conflict decided so far, if any (`None` also while undecided).
    fn decided(&self) -> Result<Option<RankConflict>> {
        match self.store.get_timeout(&self.decision_key(), Duration::ZERO) {
            Ok(v) => decode_decision(&v),
            Err(StoreError::Timeout { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The process that first claimed rank `r`, as its entry says.
    fn claimant(&self, r: usize) -> Option<Process> {
        let v = self
            .store
            .get_timeout(&format!("{}claim/{r}/1", self.prefix), SLICE)
            .ok()?;
        decode_entry(&v).map(|(p, _)| p)
    }

    fn decision_key(&self) -> String {
        format!("{}decision", self.prefix)
    }
}

/// The error of a process started with `env.rank` not below `env.world`: returned at once
/// to the caller, and also decided in the job's store when the process can reach it within
/// [`OUT_OF_RANGE_BUDGET`] and the job has started there (rank 0 wrote the job token), so
/// that the ranks waiting for a missing rank learn why.
pub(crate) fn out_of_range(env: &LaunchEnv, cfg: &Config) -> Error {
    let conflict = RankConflict::OutOfRange {
        rank: env.rank,
        world: env.world,
        process: this_process(cfg),
    };
    let mut quick = cfg.clone();
    quick.timeout = cfg.timeout.min(OUT_OF_RANGE_BUDGET);
    let told = super::rendezvous::client_store(&env.store, &quick).and_then(|meeting| {
        let store = meeting.store();
        // Nothing is written to a store before the job has started there (rank 0 refuses a
        // file store that already holds keys).
        store.get_timeout("fc/job_token", quick.timeout)?;
        decide(store, "fc/", conflict.clone())?;
        store.add(&seen_key("fc/"), 1)?;
        Ok(())
    });
    if let Err(e) = told {
        tracing::debug!(
            "could not tell the other ranks that rank {} is out of range: {e}",
            env.rank
        );
    }
    conflict.into()
}

/// The counter of the processes that saw the decided conflict.
fn seen_key(prefix: &str) -> String {
    format!("{prefix}conflict_seen")
}

/// Decides `conflict` unless something was decided before: returns the conflict decided
/// first (this one, or an earlier one), or `None` when the job already proceeds (`ok`).
fn decide(store: &dyn Store, prefix: &str, conflict: RankConflict) -> Result<Option<RankConflict>> {
    let v = store.compare_set(
        &format!("{prefix}decision"),
        None,
        encode_conflict(&conflict).as_bytes(),
    )?;
    decode_decision(&v)
}

/// A claim entry: host, pid, world size.
fn decode_entry(v: &[u8]) -> Option<(Process, usize)> {
    let text = String::from_utf8_lossy(v);
    let mut lines = text.split('\n');
    let host = lines.next()?.to_string();
    let pid = lines.next()?.trim().parse().ok()?;
    let world = lines.next()?.trim().parse().ok()?;
    Some((Process { host, pid }, world))
}

/// A conflict as the decision key holds it: its kind, then its fields, one per line.
fn encode_conflict(c: &RankConflict) -> String {
    match c {
        RankConflict::WorldSize {
            rank,
            process,
            world,
            other_rank,
            other_process,
            other_world,
        } => format!(
            "world\n{rank}\n{}\n{}\n{world}\n{other_rank}\n{}\n{}\n{other_world}",
            process.host, process.pid, other_process.host, other_process.pid
        ),
        RankConflict::DoubleClaim {
            rank,
            first,
            second,
        } => format!(
            "twice\n{rank}\n{}\n{}\n{}\n{}",
            first.host, first.pid, second.host, second.pid
        ),
        RankConflict::OutOfRange {
            rank,
            world,
            process,
        } => format!("range\n{rank}\n{world}\n{}\n{}", process.host, process.pid),
    }
}

/// The decision key's value: `None` for `ok`, else the conflict decided.
fn decode_decision(v: &[u8]) -> Result<Option<RankConflict>> {
    if v == OK {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(v);
    let fields: Vec<&str> = text.split('\n').collect();
    parse_conflict(&fields)
        .map(Some)
        .ok_or_else(|| StoreError::Protocol(format!("bad rendezvous decision {text:?}")).into())
}

/// The conflict of [`encode_conflict`]'s fields.
fn parse_conflict(f: &[&str]) -> Option<RankConflict> {
    let num = |i: usize| f.get(i)?.trim().parse::<usize>().ok();
    let process = |i: usize| {
        Some(Process {
            host: f.get(i)?.to_string(),
            pid: f.get(i + 1)?.trim().parse().ok()?,
        })
    };
    Some(match (f.first().copied()?, f.len()) {
        ("world", 9) => RankConflict::WorldSize {
            rank: num(1)?,
            process: process(2)?,
            world: num(4)?,
            other_rank: num(5)?,
            other_process: process(6)?,
            other_world: num(8)?,
        },
        ("twice", 6) => RankConflict::DoubleClaim {
            rank: num(1)?,
            first: process(2)?,
            second: process(4)?,
        },
        ("range", 5) => RankConflict::OutOfRange {
            rank: num(1)?,
            world: num(2)?,
            process: process(3)?,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(host: &str, pid: u32) -> Process {
        Process {
            host: host.into(),
            pid,
        }
    }

    #[test]
    fn conflicts_round_trip_through_the_decision() {
        let all = [
            RankConflict::WorldSize {
                rank: 2,
                process: p("a", 12),
                world: 4,
                other_rank: 0,
                other_process: p("b", 10),
                other_world: 3,
            },
            RankConflict::DoubleClaim {
                rank: 1,
                first: p("a", 5),
                second: p("c d", 6),
            },
            RankConflict::OutOfRange {
                rank: 7,
                world: 3,
                process: p("e", 9),
            },
        ];
        for c in all {
            let v = encode_conflict(&c);
            assert_eq!(decode_decision(v.as_bytes()).unwrap(), Some(c));
        }
        assert_eq!(decode_decision(OK).unwrap(), None);
        for bad in [
            &b"world\n1"[..],
            b"",
            b"range\nx\n3\nh\n1",
            b"twice\n1\na\nb\nc\n2",
        ] {
            assert!(
                matches!(
                    decode_decision(bad),
                    Err(Error::Bootstrap(StoreError::Protocol(_)))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn messages_name_ranks_hosts_and_pids() {
        let w = RankConflict::WorldSize {
            rank: 2,
            process: p("h", 123),
            world: 4,
            other_rank: 0,
            other_process: p("h", 100),
            other_world: 3,
        };
        assert_eq!(
            w.to_string(),
            "rank 2 (host h, pid 123) says the world has 4 ranks; rank 0 (host h, pid 100) says 3"
        );
        let d = RankConflict::DoubleClaim {
            rank: 1,
            first: p("h", 10),
            second: p("g", 11),
        };
        assert_eq!(
            d.to_string(),
            "rank 1 is claimed by two processes: host h pid 10 and host g pid 11"
        );
        let o = RankConflict::OutOfRange {
            rank: 3,
            world: 3,
            process: p("h", 7),
        };
        assert_eq!(
            o.to_string(),
            "rank 3 (host h, pid 7) is out of range: the world has 3 ranks"
        );
    }
}
