//! The flight recorder: each communicator's engine keeps its last N calls in a fixed ring,
//! and writes them to a JSON dump when the communicator fails, on `SIGUSR1`, or on request
//! ([`crate::Communicator::dump_flight_record`]). `ferrocoll-probe doctor` reads the dumps of
//! every rank and names the ranks that are behind, stuck, or called a different collective.
//!
//! - [`FlightRecord`] / [`RecordEntry`] (`dump.rs`): the dump's schema (version
//!   [`SCHEMA_VERSION`]), with [`parse_dump`] to read one back.
//! - [`doctor`]: the analysis of a job's dumps.
//! - `signal.rs`: the registry of live recorders and the `SIGUSR1` thread.
//!
//! The ring is a boxed slice of slots allocated when the communicator is made. A call costs
//! three short, uncontended slot locks (queued, started, finished) and one read of the
//! time-stamp counter each (`clock.rs`); nothing is allocated unless the call fails (the
//! error's text). Configuration:
//! `FERROCOLL_FR_ENTRIES` (ring size, 0 turns the recorder off) and `FERROCOLL_FR_DIR` (where
//! failure and signal dumps go; unset, the ring still runs and only requested dumps are
//! written).

mod clock;
pub mod doctor;
mod dump;
mod signal;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::exec::frame::OpHeader;
use crate::exec::Prepared;
use crate::schedule::Collective;
use crate::types::{DataType, ReduceOp};

pub use dump::{
    parse_dump, DumpError, DumpReason, EntryState, FlightRecord, P2p, RecordEntry, MAX_DUMP_WORLD,
    SCHEMA_VERSION,
};

/// Peers kept per entry; a plan that talks to more keeps the first ones and the total.
const PEERS_KEPT: usize = 16;

/// Slot id of an empty slot.
const EMPTY: u64 = u64::MAX;

/// The state of a slot's call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Queued,
    Started,
    Completed,
    Failed,
}

/// One call of the ring, written in place.
struct Slot {
    /// Which call (the recorder's running count) holds the slot; [`EMPTY`] before any.
    id: u64,
    header: OpHeader,
    p2p: Option<(usize, bool)>,
    algo: &'static str,
    peers: [u32; PEERS_KEPT],
    npeers: usize,
    state: State,
    error: Option<String>,
    /// Clock ticks (see `clock.rs`); 0 for "not yet" where the state says so.
    queued: u64,
    started: u64,
    finished: u64,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            id: EMPTY,
            header: OpHeader {
                kind: Collective::Barrier,
                dtype: DataType::U8,
                op: ReduceOp::Sum,
                root: 0,
                count: 0,
                seq: 0,
            },
            p2p: None,
            algo: "",
            peers: [0; PEERS_KEPT],
            npeers: 0,
            state: State::Queued,
            error: None,
            queued: 0,
            started: 0,
            finished: 0,
        }
    }
}

/// The ring of one communicator and what its dumps say about it.
pub(crate) struct Recorder {
    slots: Box<[Mutex<Slot>]>,
    /// `slots.len() - 1` when that is a power of two (the slot of an id is then a mask away).
    mask: Option<u64>,
    /// Calls queued so far: the next call's id (its slot is `id % slots.len()`).
    next: AtomicU64,
    clock: clock::Clock,
    born_unix_us: u64,
    rank: usize,
    world: usize,
    comm: u64,
    dir: Option<PathBuf>,
    /// A failure dump was written (one per communicator).
    failure_dumped: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Communicators made so far by this process, per (rank, world): the `comm` number of the
/// next one. Ranks that make their communicators in the same order agree on the numbers,
/// also when they are threads of one process.
static COMM_COUNTS: Mutex<Option<HashMap<(usize, usize), u64>>> = Mutex::new(None);

fn next_comm_number(rank: usize, world: usize) -> u64 {
    let mut g = lock(&COMM_COUNTS);
    let n = g
        .get_or_insert_with(HashMap::new)
        .entry((rank, world))
        .or_insert(0);
    let id = *n;
    *n += 1;
    id
}

impl Recorder {
    /// A recorder of `entries` slots for `rank` of `world`, communicator number `comm`,
    /// dumping to `dir` on failure and signal.
    pub(crate) fn new(
        entries: usize,
        rank: usize,
        world: usize,
        comm: u64,
        dir: Option<PathBuf>,
    ) -> Recorder {
        let born_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let n = entries.max(1);
        Recorder {
            slots: (0..n).map(|_| Mutex::new(Slot::empty())).collect(),
            mask: n.is_power_of_two().then_some(n as u64 - 1),
            next: AtomicU64::new(0),
            clock: clock::Clock::new(),
            born_unix_us,
            rank,
            world,
            comm,
            dir,
            failure_dumped: AtomicBool::new(false),
        }
    }

    /// The slot that call `id` uses.
    #[inline]
    fn slot_of(&self, id: u64) -> &Mutex<Slot> {
        let i = match self.mask {
            Some(m) => id & m,
            None => id % self.slots.len() as u64,
        };
        &self.slots[i as usize]
    }

    /// The slot of call `id`, if the ring still holds it.
    #[inline]
    fn slot(&self, id: u64) -> Option<MutexGuard<'_, Slot>> {
        let g = lock(self.slot_of(id));
        (g.id == id).then_some(g)
    }

    /// Records a queued call; returns its id for the later hooks.
    pub(crate) fn queued(&self, header: &OpHeader, p2p: Option<(usize, bool)>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.ticks();
        let mut s = lock(self.slot_of(id));
        s.id = id;
        s.header = *header;
        s.p2p = p2p;
        s.algo = "";
        s.npeers = 0;
        s.state = State::Queued;
        if s.error.is_some() {
            s.error = None;
        }
        s.queued = now;
        id
    }

    /// Records that call `id` started with algorithm `algo` and plan `plan`.
    pub(crate) fn started(&self, id: u64, algo: &'static str, plan: &Prepared) {
        let now = self.clock.ticks();
        if let Some(mut s) = self.slot(id) {
            let peers = plan.peers();
            for (d, &p) in s.peers.iter_mut().zip(peers) {
                *d = p as u32;
            }
            s.npeers = peers.len();
            s.algo = algo;
            s.state = State::Started;
            s.started = now;
        }
    }

    /// Records the end of call `id` (a failure already recorded is kept).
    pub(crate) fn finished(&self, id: u64, r: &Result<()>) {
        let now = self.clock.ticks();
        if let Some(mut s) = self.slot(id) {
            if s.state == State::Failed {
                return;
            }
            s.finished = now;
            match r {
                Ok(()) => s.state = State::Completed,
                Err(e) => {
                    s.state = State::Failed;
                    s.error = Some(e.to_string());
                }
            }
        }
    }

    /// Records that call `id` failed the communicator with `e`, then writes the failure dump
    /// (once) if a directory is configured.
    pub(crate) fn comm_failed(&self, id: u64, e: &Error) {
        self.finished(id, &Err(e.duplicate()));
        self.failure_dump(e);
    }

    /// Writes the failure dump (once) if a directory is configured: also for a failure that
    /// came while no call ran (a revocation by the failure detector).
    pub(crate) fn failure_dump(&self, e: &Error) {
        let Some(dir) = &self.dir else { return };
        if self.failure_dumped.swap(true, Ordering::AcqRel) {
            return;
        }
        let reason = match e {
            Error::Timeout { .. } => DumpReason::Timeout,
            _ => DumpReason::Failure,
        };
        if let Err(err) = self.dump(dir, reason, Some(e.to_string())) {
            tracing::warn!(rank = self.rank, "flight recorder dump failed: {err}");
        }
    }

    /// The ring's calls, oldest first, as dump entries (each slot locked briefly, one at a
    /// time).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<RecordEntry> {
        self.entries_and_now().0
    }

    /// [`Recorder::entries`], and the time they were read (µs since creation).
    fn entries_and_now(&self) -> (Vec<RecordEntry>, u64) {
        let n = self.slots.len() as u64;
        let end = self.next.load(Ordering::Relaxed);
        let start = end.saturating_sub(n);
        let (us, now) = self.clock.micros();
        let entries = (start..end)
            .filter_map(|id| self.slot(id).map(|s| dump::entry_of(&s, &us)))
            .collect();
        (entries, now)
    }

    /// The whole record as a dump would hold it.
    pub(crate) fn snapshot(&self, reason: DumpReason, failure: Option<String>) -> FlightRecord {
        let (entries, now) = self.entries_and_now();
        FlightRecord {
            version: SCHEMA_VERSION,
            rank: self.rank,
            world: self.world,
            comm: self.comm,
            pid: std::process::id(),
            host: dump::host_name(),
            reason,
            failure,
            created_unix_us: self.born_unix_us,
            dumped_us: now,
            entries,
        }
    }

    /// The dump's file name in a directory: `fr-rank<R>-pid<PID>-comm<ID>.json`.
    pub(crate) fn file_name(&self) -> String {
        format!(
            "fr-rank{}-pid{}-comm{}.json",
            self.rank,
            std::process::id(),
            self.comm
        )
    }

    /// Writes the record to `dir` (made if missing) through a temporary name, and returns the
    /// file's path. The ring's locks are released before anything is written.
    pub(crate) fn dump(
        &self,
        dir: &Path,
        reason: DumpReason,
        failure: Option<String>,
    ) -> Result<PathBuf> {
        let record = self.snapshot(reason, failure);
        dump::write(dir, &self.file_name(), &record)
    }
}

/// The engine's hold on its recorder: nothing when `FERROCOLL_FR_ENTRIES=0`, and every hook
/// then does nothing.
pub(crate) struct Handle(Option<Arc<Recorder>>);

impl Handle {
    /// The recorder of `rank` of `world` with `cfg`'s settings; registered for `SIGUSR1`
    /// dumps (and the signal thread started) when `cfg.fr_dir` is set.
    pub(crate) fn new(cfg: &Config, rank: usize, world: usize) -> Handle {
        let comm = next_comm_number(rank, world);
        if cfg.fr_entries == 0 {
            return Handle(None);
        }
        let r = Arc::new(Recorder::new(
            cfg.fr_entries,
            rank,
            world,
            comm,
            cfg.fr_dir.clone(),
        ));
        if r.dir.is_some() {
            signal::register(&r);
        }
        Handle(Some(r))
    }

    /// See [`Recorder::queued`]; 0 when the recorder is off.
    #[inline]
    pub(crate) fn queued(&self, header: &OpHeader, p2p: Option<(usize, bool)>) -> u64 {
        self.0.as_ref().map_or(0, |r| r.queued(header, p2p))
    }

    /// See [`Recorder::started`].
    #[inline]
    pub(crate) fn started(&self, id: u64, algo: &'static str, plan: &Prepared) {
        if let Some(r) = &self.0 {
            r.started(id, algo, plan);
        }
    }

    /// See [`Recorder::finished`].
    #[inline]
    pub(crate) fn finished(&self, id: u64, result: &Result<()>) {
        if let Some(r) = &self.0 {
            r.finished(id, result);
        }
    }

    /// See [`Recorder::comm_failed`].
    pub(crate) fn comm_failed(&self, id: u64, e: &Error) {
        if let Some(r) = &self.0 {
            r.comm_failed(id, e);
        }
    }

    /// See [`Recorder::failure_dump`].
    pub(crate) fn failure_dump(&self, e: &Error) {
        if let Some(r) = &self.0 {
            r.failure_dump(e);
        }
    }

    /// Writes a requested dump to `dir`; an error when the recorder is off.
    pub(crate) fn dump_to(&self, dir: &Path) -> Result<PathBuf> {
        match &self.0 {
            Some(r) => r.dump(dir, DumpReason::Request, None),
            None => Err(Error::Config {
                var: "FERROCOLL_FR_ENTRIES".into(),
                value: "0".into(),
                reason: "the flight recorder is off, there is nothing to dump".into(),
            }),
        }
    }
}
