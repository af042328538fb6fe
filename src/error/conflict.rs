//! [`RankConflict`]: processes of one job that disagree about who is which rank, found at
//! rendezvous (by `crate::bootstrap`'s claims) and named with the host and pid of each side.

/// A process, as the others see it at rendezvous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// Its host name (`FERROCOLL_HOSTNAME` if set, else the kernel's host name).
    pub host: String,
    /// Its process id.
    pub pid: u32,
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {}, pid {}", self.host, self.pid)
    }
}

/// Processes of one job that disagree about the ranks: each names the ranks involved, what
/// each said, and where each process runs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RankConflict {
    /// Two ranks were launched with different world sizes.
    #[error(
        "rank {rank} ({process}) says the world has {world} ranks; rank {other_rank} \
         ({other_process}) says {other_world}"
    )]
    WorldSize {
        /// The rank whose record disagreed with the one who found it.
        rank: usize,
        /// Where it runs.
        process: Process,
        /// The world size it was given.
        world: usize,
        /// The rank that found the disagreement.
        other_rank: usize,
        /// Where that one runs.
        other_process: Process,
        /// The world size that one was given.
        other_world: usize,
    },
    /// Two processes were launched as the same rank.
    #[error(
        "rank {rank} is claimed by two processes: host {} pid {} and host {} pid {}",
        first.host, first.pid, second.host, second.pid
    )]
    DoubleClaim {
        /// The rank claimed twice.
        rank: usize,
        /// The process that claimed it first.
        first: Process,
        /// The process that claimed it second.
        second: Process,
    },
    /// A process was launched with a rank that is not below the world size.
    #[error("rank {rank} ({process}) is out of range: the world has {world} ranks")]
    OutOfRange {
        /// The rank it was given.
        rank: usize,
        /// The world size it was given.
        world: usize,
        /// Where it runs.
        process: Process,
    },
}
