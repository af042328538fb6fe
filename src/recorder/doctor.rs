//! The analysis behind `ferrocoll-probe doctor`: from every rank's dump of a job, which
//! ranks hold the others up.
//!
//! Dumps are grouped by communicator (`comm` number and world size). Within a group only
//! collectives are compared (their `seq` numbers one order on every rank); for each rank the
//! highest sequence number it started and the highest it completed are taken (collectives end
//! in order, so these hold even when older calls left the ring). The findings, each rank
//! named at most once, in this order:
//!
//! - [`Finding::Mismatch`]: ranks recorded different calls (collective, type, count, op or
//!   root) under one sequence number.
//! - [`Finding::NotStarted`]: some ranks started call `s` (and wait in it) while these ranks
//!   never started it: the usual culprit of a hang.
//! - [`Finding::Stuck`]: the rank started call `s` and did not finish it though other ranks
//!   completed it.
//! - [`Finding::AllStuck`]: every rank started call `s` and none completed it.
//! - [`Finding::Behind`]: the rank's last completed call is older than the others'.
//! - [`Finding::Missing`] / [`Finding::Duplicate`]: ranks of the world without a dump, or with
//!   two.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::dump::{EntryState, FlightRecord, RecordEntry};

/// What one rank's dump says, in short.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RankSummary {
    /// The rank.
    pub rank: usize,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Why it dumped (`failure`, `timeout`, `signal`, `request`).
    pub reason: String,
    /// Its communicator's failure, if any.
    pub failure: Option<String>,
    /// The highest collective sequence number it started.
    pub last_started: Option<u64>,
    /// The highest collective sequence number it completed.
    pub last_completed: Option<u64>,
    /// The oldest collective it started and did not complete, and that call.
    pub open: Option<(u64, String)>,
}

/// A problem the doctor found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// Ranks of the world without a dump.
    Missing {
        /// The ranks.
        ranks: Vec<usize>,
    },
    /// A rank with more than one dump in the group (two communicators took the same number).
    Duplicate {
        /// The rank.
        rank: usize,
    },
    /// Different calls under one sequence number.
    Mismatch {
        /// The sequence number.
        seq: u64,
        /// Each distinct call and the ranks that made it.
        calls: Vec<(String, Vec<usize>)>,
    },
    /// Ranks that never started call `seq`, which `waiting` started.
    NotStarted {
        /// The call's sequence number.
        seq: u64,
        /// The call, as the waiting ranks recorded it.
        call: String,
        /// The ranks that did not start it.
        ranks: Vec<usize>,
        /// The ranks that started it and did not complete it.
        waiting: Vec<usize>,
    },
    /// A rank that started call `seq` and did not complete it, though others did.
    Stuck {
        /// The rank.
        rank: usize,
        /// The call's sequence number.
        seq: u64,
        /// The call.
        call: String,
    },
    /// Every rank started call `seq` and none completed it.
    AllStuck {
        /// The call's sequence number.
        seq: u64,
        /// The call.
        call: String,
    },
    /// A rank whose last completed call is older than the others' latest.
    Behind {
        /// The rank.
        rank: usize,
        /// Its last completed call (`None`: none).
        last_completed: Option<u64>,
        /// The others' latest completed call.
        others: u64,
    },
}

impl Finding {
    /// The finding as one line for people.
    pub fn describe(&self) -> String {
        let list = |r: &[usize]| {
            r.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let seq = |s: Option<u64>| s.map_or("none".to_string(), |s| format!("#{s}"));
        match self {
            Finding::Missing { ranks } => format!("no dump from rank(s) {}", list(ranks)),
            Finding::Duplicate { rank } => {
                format!("rank {rank} has more than one dump for this communicator")
            }
            Finding::Mismatch { seq, calls } => {
                let parts: Vec<String> = calls
                    .iter()
                    .map(|(c, r)| format!("rank(s) {} called {c}", list(r)))
                    .collect();
                format!("mismatch at collective #{seq}: {}", parts.join("; "))
            }
            Finding::NotStarted {
                seq,
                call,
                ranks,
                waiting,
            } => format!(
                "rank(s) {} never started collective #{seq} {call}; rank(s) {} wait in it",
                list(ranks),
                list(waiting)
            ),
            Finding::Stuck { rank, seq, call } => format!(
                "rank {rank} is stuck in collective #{seq} {call}, which other ranks completed"
            ),
            Finding::AllStuck { seq, call } => {
                format!("every rank started collective #{seq} {call} and none completed it")
            }
            Finding::Behind {
                rank,
                last_completed,
                others,
            } => format!(
                "rank {rank} is behind: last completed collective {}, others completed #{others}",
                seq(*last_completed)
            ),
        }
    }
}

/// The doctor's view of one communicator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommReport {
    /// The communicator's number.
    pub comm: u64,
    /// Its world size.
    pub world: usize,
    /// One summary per dump, by rank.
    pub ranks: Vec<RankSummary>,
    /// What is wrong (empty: healthy).
    pub findings: Vec<Finding>,
}

impl CommReport {
    /// Whether nothing was found.
    pub fn healthy(&self) -> bool {
        self.findings.is_empty()
    }
}

/// A call as the doctor compares it: the collective with its type, count, op and root.
pub fn call_signature(e: &RecordEntry) -> String {
    let rooted = matches!(e.collective.as_str(), "broadcast" | "reduce");
    let mut s = format!("{}(count={}, {}", e.collective, e.count, e.dtype);
    if e.op != "sum" || e.collective.contains("reduce") {
        s.push_str(&format!(", {}", e.op));
    }
    if rooted {
        s.push_str(&format!(", root={}", e.root));
    }
    s.push(')');
    s
}

/// Analyses the dumps of a job, one report per communicator (by number, then world size).
pub fn diagnose(records: &[FlightRecord]) -> Vec<CommReport> {
    let mut groups: BTreeMap<(u64, usize), Vec<&FlightRecord>> = BTreeMap::new();
    for r in records {
        groups.entry((r.comm, r.world)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((comm, world), mut recs)| {
            recs.sort_by_key(|r| (r.rank, r.pid));
            diagnose_comm(comm, world, &recs)
        })
        .collect()
}

fn collectives(r: &FlightRecord) -> impl Iterator<Item = &RecordEntry> {
    r.entries.iter().filter(|e| e.p2p.is_none())
}

fn summarize(r: &FlightRecord) -> RankSummary {
    let started = |e: &&RecordEntry| e.started_us.is_some();
    let open = collectives(r)
        .filter(started)
        .filter(|e| e.state != EntryState::Completed)
        .min_by_key(|e| e.seq)
        .map(|e| (e.seq, call_signature(e)));
    RankSummary {
        rank: r.rank,
        host: r.host.clone(),
        pid: r.pid,
        reason: format!("{:?}", r.reason).to_lowercase(),
        failure: r.failure.clone(),
        last_started: collectives(r).filter(started).map(|e| e.seq).max(),
        last_completed: collectives(r)
            .filter(|e| e.state == EntryState::Completed)
            .map(|e| e.seq)
            .max(),
        open,
    }
}

/// Distinct calls per sequence number with their ranks, where ranks disagree.
fn mismatches(recs: &[&FlightRecord]) -> Vec<Finding> {
    let mut by_seq: BTreeMap<u64, BTreeMap<String, BTreeSet<usize>>> = BTreeMap::new();
    for r in recs {
        for e in collectives(r) {
            by_seq
                .entry(e.seq)
                .or_default()
                .entry(call_signature(e))
                .or_default()
                .insert(r.rank);
        }
    }
    by_seq
        .into_iter()
        .filter(|(_, calls)| calls.len() > 1)
        .map(|(seq, calls)| Finding::Mismatch {
            seq,
            calls: calls
                .into_iter()
                .map(|(c, r)| (c, r.into_iter().collect()))
                .collect(),
        })
        .collect()
}

fn diagnose_comm(comm: u64, world: usize, recs: &[&FlightRecord]) -> CommReport {
    let ranks: Vec<RankSummary> = recs.iter().map(|r| summarize(r)).collect();
    let mut findings = Vec::new();
    let present: BTreeSet<usize> = ranks.iter().map(|s| s.rank).collect();
    let missing: Vec<usize> = (0..world).filter(|r| !present.contains(r)).collect();
    if !missing.is_empty() {
        findings.push(Finding::Missing { ranks: missing });
    }
    for r in &present {
        if ranks.iter().filter(|s| s.rank == *r).count() > 1 {
            findings.push(Finding::Duplicate { rank: *r });
        }
    }
    findings.extend(mismatches(recs));
    let mut named: BTreeSet<usize> = BTreeSet::new();
    // The oldest call that some rank waits in: who never started it, or who is stuck in it.
    if let Some((seq, call)) = ranks.iter().filter_map(|s| s.open.clone()).min() {
        let not_started: Vec<usize> = ranks
            .iter()
            .filter(|s| s.last_started.is_none_or(|l| l < seq))
            .map(|s| s.rank)
            .collect();
        let done = |s: &RankSummary| s.last_completed.is_some_and(|c| c >= seq);
        let waiting: Vec<usize> = ranks
            .iter()
            .filter(|s| s.last_started.is_some_and(|l| l >= seq) && !done(s))
            .map(|s| s.rank)
            .collect();
        if !not_started.is_empty() {
            named.extend(&not_started);
            findings.push(Finding::NotStarted {
                seq,
                call,
                ranks: not_started,
                waiting,
            });
        } else if ranks.iter().any(done) {
            for &rank in &waiting {
                named.insert(rank);
                findings.push(Finding::Stuck {
                    rank,
                    seq,
                    call: call.clone(),
                });
            }
        } else {
            named.extend(&waiting);
            findings.push(Finding::AllStuck { seq, call });
        }
    }
    if let Some(top) = ranks.iter().filter_map(|s| s.last_completed).max() {
        for s in &ranks {
            if !named.contains(&s.rank) && s.last_completed.is_none_or(|c| c < top) {
                named.insert(s.rank);
                findings.push(Finding::Behind {
                    rank: s.rank,
                    last_completed: s.last_completed,
                    others: top,
                });
            }
        }
    }
    CommReport {
        comm,
        world,
        ranks,
        findings,
    }
}
