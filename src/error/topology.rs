//! [`TopologyError`]: what is wrong with a topology, from a file or built in code (the
//! topology is in `crate::topology`, which re-exports it).

/// What is wrong with a topology (file or built in code).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read or written.
    #[error("cannot {what} topology file {path}: {message}")]
    Io {
        /// `read` or `write`.
        what: &'static str,
        /// The file.
        path: String,
        /// The system's message.
        message: String,
    },
    /// The text is not JSON of the expected shape.
    #[error("malformed topology JSON at line {line} column {column}: {message}")]
    Json {
        /// Line of the problem (1-based).
        line: usize,
        /// Column of the problem (1-based).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A `format` other than `ferrocoll-topology`, or a newer version.
    #[error("not a ferrocoll topology: format {format:?} version {version}")]
    Format {
        /// The format found.
        format: String,
        /// The version found.
        version: u32,
    },
    /// No hosts at all.
    #[error("the topology has no hosts")]
    NoHosts,
    /// A host without ranks.
    #[error("host {0} has no ranks")]
    EmptyHost(String),
    /// Two hosts of the same name.
    #[error("host {0} is listed twice")]
    DuplicateHost(String),
    /// A rank of `0..world` on no host.
    #[error("rank {rank} is missing: no host lists it (world of {world} ranks)")]
    MissingRank {
        /// The rank.
        rank: usize,
        /// The world size.
        world: usize,
    },
    /// A rank on two hosts (or twice on one).
    #[error("rank {rank} is on both host {first} and host {second}")]
    DuplicateRank {
        /// The rank.
        rank: usize,
        /// Where it was first seen.
        first: String,
        /// Where it was seen again.
        second: String,
    },
    /// A rank not below the number of ranks.
    #[error("rank {rank} is out of range for a world of {world} ranks")]
    RankOutOfRange {
        /// The rank.
        rank: usize,
        /// The world size.
        world: usize,
    },
    /// A latency or bandwidth that cannot be used.
    #[error("bad {field} = {value}: {reason}")]
    BadValue {
        /// The field, as a path (`inter_host.bandwidth_gbit_s`).
        field: String,
        /// The value found.
        value: f64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A host link naming an unknown host, or a host and itself.
    #[error("bad host link {a} - {b}: unknown host, or a host and itself")]
    BadHostLink {
        /// One end.
        a: String,
        /// The other end.
        b: String,
    },
    /// The topology does not describe the running job.
    #[error("topology does not match the job: {0}")]
    Mismatch(String),
}
