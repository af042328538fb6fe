//! The dump's schema (version [`SCHEMA_VERSION`]), its writing and its parsing.
//!
//! A dump is one JSON object per rank and communicator:
//!
//! ```json
//! {"version": 1, "rank": 0, "world": 4, "comm": 0, "pid": 1234, "host": "node7",
//!  "reason": "timeout", "failure": "collective #41 on rank 0 timed out ...",
//!  "created_unix_us": 1767225600000000, "dumped_us": 5300000,
//!  "entries": [{"id": 41, "seq": 41, "p2p": null, "collective": "all_reduce",
//!               "dtype": "f32", "count": 2, "op": "sum", "root": 0,
//!               "algorithm": "ring", "peers": [1, 3], "peers_total": 2,
//!               "state": "failed", "error": "...",
//!               "queued_us": 5100000, "started_us": 5100004, "finished_us": 5300000}]}
//! ```
//!
//! Times are microseconds since the communicator was made; `created_unix_us` is the wall
//! clock (microseconds since the Unix epoch) at that moment. `entries` are oldest first;
//! `id` counts every call the communicator queued, and `seq` is the call's sequence number
//! on the wire (collectives are numbered per communicator, send/recv per peer and direction,
//! with `p2p` saying which). `algorithm` and `peers` are set once the call started;
//! `peers_total` exceeds `peers.len()` when the list was cut. `error` is present on `failed`
//! entries only.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Slot, State};
use crate::error::{Error, Result};

/// The version of the dump format written here; the doctor refuses other versions.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a dump was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpReason {
    /// The communicator failed (peer failure, mismatch, abort during a call).
    Failure,
    /// The communicator failed with a timeout.
    Timeout,
    /// The process received `SIGUSR1`.
    Signal,
    /// The program asked ([`crate::Communicator::dump_flight_record`]).
    Request,
}

/// The state of a recorded call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Queued, not yet started.
    Queued,
    /// Running (waiting for peers, or moving data).
    Started,
    /// Ended successfully.
    Completed,
    /// Ended with an error (the entry's `error`).
    Failed,
}

/// The peer side of a send or receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct P2p {
    /// The other rank.
    pub peer: usize,
    /// Whether this rank sends (else it receives).
    pub send: bool,
}

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordEntry {
    /// The call's number among all calls the communicator queued (0 for the first).
    pub id: u64,
    /// The call's sequence number on the wire (`OpHeader.seq`).
    pub seq: u64,
    /// For send/recv: the peer and direction (`seq` then counts per peer and direction).
    pub p2p: Option<P2p>,
    /// The collective (`all_reduce`, …, `send_recv`).
    pub collective: String,
    /// The element type.
    pub dtype: String,
    /// The element count as the caller gave it.
    pub count: u64,
    /// The reduction operator (`sum` where the collective does not reduce).
    pub op: String,
    /// The root (the sender for send/recv).
    pub root: u32,
    /// The algorithm that ran it (empty until the call started).
    pub algorithm: String,
    /// The ranks the call's plan talks to (the first of them, see `peers_total`).
    pub peers: Vec<usize>,
    /// How many ranks the plan talks to.
    pub peers_total: usize,
    /// Where the call is.
    pub state: EntryState,
    /// The error of a failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was queued (µs since the communicator was made).
    pub queued_us: u64,
    /// When it started.
    pub started_us: Option<u64>,
    /// When it ended.
    pub finished_us: Option<u64>,
}

/// One rank's dump of one communicator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightRecord {
    /// The format version ([`SCHEMA_VERSION`]).
    pub version: u32,
    /// The rank in the communicator.
    pub rank: usize,
    /// The communicator's world size.
    pub world: usize,
    /// The communicator's number among those this process made for this rank and world size
    /// (0 for the first): ranks that make their communicators in the same order agree on it.
    pub comm: u64,
    /// The process id.
    pub pid: u32,
    /// The host name.
    pub host: String,
    /// Why the dump was written.
    pub reason: DumpReason,
    /// The communicator's failure, if it failed.
    pub failure: Option<String>,
    /// Wall clock when the communicator was made (µs since the Unix epoch).
    pub created_unix_us: u64,
    /// When the dump was taken (µs since the communicator was made).
    pub dumped_us: u64,
    /// The recorded calls, oldest first.
    pub entries: Vec<RecordEntry>,
}

/// Why a file is not a dump the doctor can read.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Not JSON of the dump's schema (corrupt, truncated, another file).
    #[error("not a flight record: {0}")]
    Parse(#[from] serde_json::Error),
    /// A dump of another format version.
    #[error("flight record version {found}, this build reads version {SCHEMA_VERSION}")]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// A dump whose fields contradict each other.
    #[error("inconsistent flight record: {0}")]
    Inconsistent(String),
}

/// Largest world a dump may claim ([`parse_dump`] refuses more): 2^20 ranks.
pub const MAX_DUMP_WORLD: usize = 1 << 20;

/// Parses one dump, checking its version, that its rank lies in its world, and that the
/// world is at most [`MAX_DUMP_WORLD`].
pub fn parse_dump(bytes: &[u8]) -> std::result::Result<FlightRecord, DumpError> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version = serde_json::from_slice(bytes)?;
    if v.version != SCHEMA_VERSION {
        return Err(DumpError::Version { found: v.version });
    }
    let r: FlightRecord = serde_json::from_slice(bytes)?;
    if r.world == 0 || r.rank >= r.world {
        return Err(DumpError::Inconsistent(format!(
            "rank {} of a world of {}",
            r.rank, r.world
        )));
    }
    // The doctor lists the ranks of a world that sent no dump: a world claimed by a corrupt
    // dump must not make that list (and its text) larger than any job.
    if r.world > MAX_DUMP_WORLD {
        return Err(DumpError::Inconsistent(format!(
            "a world of {} ranks (at most {MAX_DUMP_WORLD})",
            r.world
        )));
    }
    Ok(r)
}

/// The dump entry of a slot.
pub(super) fn entry_of(s: &Slot, us: &impl Fn(u64) -> u64) -> RecordEntry {
    let h = &s.header;
    // A call that ended without starting (a zero count, a failed communicator) has no start.
    let (started, finished) = match s.state {
        State::Queued => (false, false),
        State::Started => (true, false),
        State::Completed | State::Failed => (!s.algo.is_empty(), true),
    };
    RecordEntry {
        id: s.id,
        seq: h.seq,
        p2p: s.p2p.map(|(peer, send)| P2p { peer, send }),
        collective: h.kind.to_string(),
        dtype: h.dtype.to_string(),
        count: h.count,
        op: h.op.to_string(),
        root: h.root,
        algorithm: s.algo.to_string(),
        peers: s.peers[..s.npeers.min(s.peers.len())]
            .iter()
            .map(|&p| p as usize)
            .collect(),
        peers_total: s.npeers,
        state: match s.state {
            State::Queued => EntryState::Queued,
            State::Started => EntryState::Started,
            State::Completed => EntryState::Completed,
            State::Failed => EntryState::Failed,
        },
        error: s.error.clone(),
        queued_us: us(s.queued),
        started_us: started.then(|| us(s.started)),
        finished_us: finished.then(|| us(s.finished)),
    }
}

/// This host's name (`FERROCOLL_HOSTNAME` does not apply: the dump names the machine).
pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Writes `record` as `dir/name` through a temporary file in `dir` and a rename, so that a
/// reader never sees half a dump.
pub(super) fn write(dir: &Path, name: &str, record: &FlightRecord) -> Result<PathBuf> {
    let io = |what: &'static str| move |source| Error::Io { what, source };
    std::fs::create_dir_all(dir).map_err(io("creating the flight recorder directory"))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let text = serde_json::to_vec_pretty(record)
        .map_err(|e| io("encoding the flight record")(std::io::Error::other(e)))?;
    let mut f = std::fs::File::create(&tmp).map_err(io("creating the flight record file"))?;
    f.write_all(&text)
        .map_err(io("writing the flight record file"))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io("renaming the flight record file"))?;
    Ok(path)
}
