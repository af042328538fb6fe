//! The one error type of ferrocoll, with stable numeric codes for the C ABI, and the leaf
//! error types it wraps ([`StoreError`] of the rendezvous store, [`TopologyError`] of a
//! topology), defined here so that this module imports nothing above the types it names
//! (`types`, `schedule`); `bootstrap` and `topology` re-export theirs.

use std::sync::Arc;
use std::time::Duration;

use ferrocoll_transports::plugin::SetupError;
use ferrocoll_transports::LinkError;

use crate::schedule::{Collective, LayoutError};
use crate::types::DataType;

mod conflict;
mod store;
mod topology;
mod vendor;

pub use conflict::{Process, RankConflict};
pub use store::StoreError;
pub use topology::TopologyError;
pub use vendor::VendorError;

/// Everything that can go wrong in a ferrocoll call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer holds fewer elements than the call needs.
    #[error("{buffer} buffer too small: {needed} elements needed, {got} given")]
    BufferTooSmall {
        /// Which buffer (`input`, `output`).
        buffer: &'static str,
        /// Elements the call needs.
        needed: usize,
        /// Elements the buffer holds.
        got: usize,
    },
    /// A root rank outside `0..world`.
    #[error("root {root} out of range for a world of {world} ranks")]
    RootOutOfRange {
        /// The root given.
        root: usize,
        /// The world size.
        world: usize,
    },
    /// A peer rank outside `0..world`.
    #[error("peer {peer} out of range for a world of {world} ranks")]
    PeerOutOfRange {
        /// The peer given.
        peer: usize,
        /// The world size.
        world: usize,
    },
    /// Point-to-point with oneself.
    #[error("rank {rank} cannot send to or receive from itself")]
    SelfPeer {
        /// The rank.
        rank: usize,
    },
    /// A world of zero ranks, or a rank outside the world.
    #[error("invalid world: rank {rank} of {world} ranks")]
    InvalidWorld {
        /// The rank asked for.
        rank: usize,
        /// The world size asked for.
        world: usize,
    },
    /// Input and output buffers of different element types.
    #[error("input is {input} but output is {output}")]
    TypeMismatch {
        /// Input element type.
        input: DataType,
        /// Output element type.
        output: DataType,
    },
    /// A data-type code that names no [`DataType`] (raw/C callers).
    #[error("invalid data type code {0}")]
    InvalidDataType(i64),
    /// An operator code that names no [`ReduceOp`](crate::ReduceOp) (raw/C callers).
    #[error("invalid reduction operator code {0}")]
    InvalidReduceOp(i64),
    /// A buffer whose length must be a multiple of the world size but is not.
    #[error("buffer of {len} elements does not split evenly over {world} ranks")]
    Indivisible {
        /// Elements in the buffer.
        len: usize,
        /// The world size.
        world: usize,
    },
    /// A null pointer where a buffer of non-zero size is needed (raw/C callers).
    #[error("null {0} pointer with a non-zero count")]
    NullPointer(&'static str),
    /// An element count too large to address in bytes.
    #[error("count {0} is too large")]
    CountTooLarge(usize),
    /// A per-rank array of an uneven collective without one entry per rank.
    #[error("{array} has {got} entries for a world of {world} ranks")]
    CountsLength {
        /// The array (`counts`, `displs`, `send_counts`, ...).
        array: &'static str,
        /// Entries given.
        got: usize,
        /// The world size.
        world: usize,
    },
    /// A block of an uneven collective (displacement + count) that ends past what a buffer
    /// can address, or past the buffer given.
    #[error("block {index} of {array} ends out of range")]
    BlockOutOfRange {
        /// The array whose entry is out of range.
        array: &'static str,
        /// The rank whose block it is.
        index: usize,
    },
    /// Two non-empty blocks of one buffer of an uneven collective overlap.
    #[error("the blocks of ranks {a} and {b} overlap ({array})")]
    BlocksOverlap {
        /// The displacements array.
        array: &'static str,
        /// The lower rank.
        a: usize,
        /// The higher rank.
        b: usize,
    },
    /// All-gather-v's send count differs from this rank's entry of the counts, or
    /// all-to-all-v's send count to this rank itself from its receive count from itself.
    #[error(
        "send count {sendcount} of rank {rank} differs from the count received from it \
         ({expected})"
    )]
    SendCountMismatch {
        /// The send count given.
        sendcount: usize,
        /// This rank.
        rank: usize,
        /// Its entry of the counts.
        expected: usize,
    },
    /// An uneven collective called without its layout, or a layout given to another
    /// collective or for another world size.
    #[error("{collective} needs an uneven layout for {world} ranks (and only uneven collectives take one)")]
    LayoutMismatch {
        /// The collective called.
        collective: Collective,
        /// The world size.
        world: usize,
    },
    /// An in-place all-to-all-v whose send layout differs from its receive layout (in place,
    /// each block is sent from and received into the same place, as with `MPI_IN_PLACE`).
    #[error("in-place all-to-all-v needs equal send and receive counts and displacements")]
    InPlaceLayout,
    /// A premul-sum scalar on a collective that does not reduce, or with an operator other
    /// than sum (premul-sum multiplies each input by the scalar, then sums).
    #[error(
        "premul-sum applies to the reducing collectives with op sum, not {collective} with {op}"
    )]
    PreMulSumMisuse {
        /// The collective called.
        collective: Collective,
        /// The operator given.
        op: crate::types::ReduceOp,
    },
    /// A forced algorithm that does not implement the collective.
    #[error("algorithm {algo} is not supported for {collective}")]
    AlgoNotSupported {
        /// The algorithm forced.
        algo: &'static str,
        /// The collective called.
        collective: Collective,
    },
    /// A configuration value (environment variable or builder) that cannot be used.
    #[error("bad configuration {var}={value:?}: {reason}")]
    Config {
        /// The variable or setting.
        var: String,
        /// The value found.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A compression codec with parameters it cannot use (see `crate::compress`), or used on
    /// a tensor it cannot compress.
    #[error("codec {codec}: {reason}")]
    InvalidCodec {
        /// The codec as configured (e.g. `topk:1.5`).
        codec: String,
        /// Why it is refused.
        reason: String,
    },
    /// An error-feedback key reused for a different tensor (another length, shape, codec or
    /// world): state is never shared between tensors; reset the key to reuse it.
    #[error(
        "error-feedback key {key:?} holds state for {what} {expected}, but the call has {got}"
    )]
    FeedbackMismatch {
        /// The caller's key.
        key: String,
        /// What differs (`length`, `shape`, `codec`, `world size`).
        what: &'static str,
        /// What the key's state was made for.
        expected: String,
        /// What this call has.
        got: String,
    },
    /// Ranks called different collectives (or the same with different arguments).
    #[error(
        "mismatched collective #{seq}: rank {rank} expected {expected} but rank {peer} sent {got}"
    )]
    Mismatch {
        /// The rank that noticed.
        rank: usize,
        /// The rank whose message disagreed.
        peer: usize,
        /// Sequence number of the collective on `rank`.
        seq: u64,
        /// What `rank` called.
        expected: String,
        /// What `peer` called.
        got: String,
    },
    /// A peer's compressed payload that no encoder writes (a corrupt or hostile peer): what
    /// is wrong with it, and the peer when the call knows it. Nothing of it was applied.
    #[error("corrupt payload{}: {detail}", from_rank(*.peer))]
    CorruptPayload {
        /// The rank that sent it, when known.
        peer: Option<usize>,
        /// What is wrong.
        detail: String,
    },
    /// No progress within the deadline.
    #[error(
        "collective #{seq} on rank {rank} timed out after {waited:?} waiting for ranks {peers:?}"
    )]
    Timeout {
        /// The rank that gave up.
        rank: usize,
        /// Sequence number of the collective.
        seq: u64,
        /// Ranks it was still waiting for.
        peers: Vec<usize>,
        /// How long it waited without progress.
        waited: Duration,
    },
    /// A peer's link failed (crash, exit, cut link).
    #[error("collective #{seq} on rank {rank}: rank {peer} failed")]
    PeerFailed {
        /// The rank that noticed.
        rank: usize,
        /// The failed peer.
        peer: usize,
        /// Sequence number of the collective.
        seq: u64,
        /// What the link reported.
        #[source]
        source: LinkError,
    },
    /// The communicator was revoked (see `crate::ft`): a peer was found failed (or a rank
    /// called [`crate::Communicator::revoke`]), and every pending and later call on every
    /// survivor reports this. [`crate::Communicator::shrink`] makes a communicator over the
    /// survivors.
    #[error("communicator revoked on rank {rank} (by rank {by}): failed ranks {failed:?}")]
    Revoked {
        /// The rank that reports it.
        rank: usize,
        /// The rank that revoked first, as far as this rank knows.
        by: usize,
        /// The ranks found failed when it was revoked (empty when a rank revoked by request);
        /// the agreed set is what [`crate::Communicator::shrink`] settles on.
        failed: Vec<usize>,
    },
    /// The survivors agreed on a membership that leaves this rank out (it answered the
    /// agreement too late, or was declared failed): it must leave the job, or join again as
    /// a replacement.
    #[error("rank {rank} was left out of the survivors {survivors:?} of epoch {epoch}")]
    Excluded {
        /// This rank.
        rank: usize,
        /// The agreement round.
        epoch: u64,
        /// The ranks (of the old communicator) that go on.
        survivors: Vec<usize>,
    },
    /// Ranks called [`crate::Communicator::shrink_excluding`] with different sets.
    #[error(
        "mismatched shrink: rank {rank} excludes {mine:?} but rank {peer} excludes {theirs:?}"
    )]
    ShrinkMismatch {
        /// This rank.
        rank: usize,
        /// The rank that disagreed.
        peer: usize,
        /// This rank's set.
        mine: Vec<usize>,
        /// The other rank's set.
        theirs: Vec<usize>,
    },
    /// The communicator was aborted (by `abort()`, or this rank was shut down).
    #[error("communicator aborted")]
    Aborted,
    /// An earlier failure left the communicator unusable; every later call reports it.
    #[error("communicator failed earlier")]
    CommFailed(#[source] Arc<Error>),
    /// The operating system refused a resource (a thread, a socket, a file).
    #[error("{what} failed")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The processes of a job disagree about the ranks (world sizes, a rank claimed twice, a
    /// rank out of range), found at rendezvous: names each side's rank, host and pid.
    #[error(transparent)]
    RankConflict(#[from] RankConflict),
    /// Rendezvous through the store failed.
    #[error("bootstrap failed")]
    Bootstrap(#[from] StoreError),
    /// Setting up a transport failed.
    #[error("transport setup failed")]
    Transport(#[from] LinkError),
    /// A transport could not be set up: unavailable here (and why), a peer's address it
    /// cannot use, no transport that reaches a peer, or a failed connection. Names the
    /// transport.
    #[error("transport setup failed: {0}")]
    TransportSetup(SetupError),
    /// Bytes that are not a unique id made by [`crate::UniqueId`] (what is wrong with them).
    #[error("invalid unique id: {0}")]
    InvalidUniqueId(&'static str),
    /// A split of a communicator that has no rendezvous store (e.g. one of an in-process
    /// [`crate::World`]): the children meet through the parent's store.
    #[error("this communicator has no rendezvous store to split through")]
    NoStore,
    /// A topology (file or description) that is malformed or does not fit the job.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A schedule broke an invariant (a bug in ferrocoll, reported instead of hanging).
    #[error("internal error: {0}")]
    Internal(String),
    /// A vendor library (NCCL, HCCL, their runtimes) could not be used, or a call into it
    /// failed: names the library, the call and the vendor's own code and message.
    #[error(transparent)]
    Vendor(#[from] VendorError),
}

/// Broad classes of [`Error`], numbered like NCCL's `ncclResult_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorKind {
    /// A bug in ferrocoll.
    Internal = 3,
    /// The operating system or a link failed.
    System = 2,
    /// The caller passed a bad argument.
    InvalidArgument = 4,
    /// The caller used the library wrongly (mismatched calls, unsupported combination).
    InvalidUsage = 5,
    /// A remote peer failed.
    Remote = 6,
    /// A deadline passed.
    Timeout = 7,
}

impl Error {
    /// The broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BufferTooSmall { .. }
            | Error::RootOutOfRange { .. }
            | Error::PeerOutOfRange { .. }
            | Error::SelfPeer { .. }
            | Error::InvalidWorld { .. }
            | Error::TypeMismatch { .. }
            | Error::InvalidDataType(_)
            | Error::InvalidReduceOp(_)
            | Error::NullPointer(_)
            | Error::Indivisible { .. }
            | Error::CountTooLarge(_)
            | Error::CountsLength { .. }
            | Error::BlockOutOfRange { .. }
            | Error::BlocksOverlap { .. }
            | Error::SendCountMismatch { .. }
            | Error::LayoutMismatch { .. }
            | Error::PreMulSumMisuse { .. }
            | Error::InPlaceLayout
            | Error::InvalidUniqueId(_)
            | Error::Config { .. }
            | Error::InvalidCodec { .. }
            | Error::FeedbackMismatch { .. }
            | Error::RankConflict(_)
            | Error::Topology(_) => ErrorKind::InvalidArgument,
            Error::AlgoNotSupported { .. } | Error::Mismatch { .. } | Error::NoStore => {
                ErrorKind::InvalidUsage
            }
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::PeerFailed { .. }
            | Error::Revoked { .. }
            | Error::Excluded { .. }
            | Error::CorruptPayload { .. } => ErrorKind::Remote,
            Error::ShrinkMismatch { .. } => ErrorKind::InvalidUsage,
            Error::Aborted
            | Error::Io { .. }
            | Error::Bootstrap(_)
            | Error::Transport(_)
            | Error::TransportSetup(_) => ErrorKind::System,
            Error::CommFailed(cause) => cause.kind(),
            Error::Internal(_) => ErrorKind::Internal,
            Error::Vendor(VendorError::Unsupported { .. }) => ErrorKind::InvalidUsage,
            Error::Vendor(VendorError::WrongMemory { .. }) => ErrorKind::InvalidArgument,
            Error::Vendor(_) => ErrorKind::System,
        }
    }
}

/// `" from rank P"`, or nothing when the peer is not known.
fn from_rank(peer: Option<usize>) -> String {
    peer.map(|p| format!(" from rank {p}")).unwrap_or_default()
}

impl Error {
    /// This error with `peer` as the sender of a [`Error::CorruptPayload`] that did not
    /// name one (a decoder does not know whose bytes it reads; its caller does). Any other
    /// error is returned as it is.
    pub(crate) fn sent_by(self, peer: usize) -> Error {
        match self {
            Error::CorruptPayload { peer: None, detail } => Error::CorruptPayload {
                peer: Some(peer),
                detail,
            },
            e => e,
        }
    }

    /// A copy of this error, for reporting one failure to many calls (I/O causes are
    /// re-created from their kind and message).
    pub fn duplicate(&self) -> Error {
        // Long on purpose (~170 lines): one arm per variant, a field-by-field copy the
        // compiler checks for exhaustiveness; nothing to factor out.
        use Error::*;
        match self {
            BufferTooSmall {
                buffer,
                needed,
                got,
            } => BufferTooSmall {
                buffer,
                needed: *needed,
                got: *got,
            },
            RootOutOfRange { root, world } => RootOutOfRange {
                root: *root,
                world: *world,
            },
            PeerOutOfRange { peer, world } => PeerOutOfRange {
                peer: *peer,
                world: *world,
            },
            SelfPeer { rank } => SelfPeer { rank: *rank },
            InvalidWorld { rank, world } => InvalidWorld {
                rank: *rank,
                world: *world,
            },
            TypeMismatch { input, output } => TypeMismatch {
                input: *input,
                output: *output,
            },
            InvalidDataType(c) => InvalidDataType(*c),
            InvalidReduceOp(c) => InvalidReduceOp(*c),
            Indivisible { len, world } => Indivisible {
                len: *len,
                world: *world,
            },
            NullPointer(w) => NullPointer(w),
            CountTooLarge(c) => CountTooLarge(*c),
            CountsLength { array, got, world } => CountsLength {
                array,
                got: *got,
                world: *world,
            },
            BlockOutOfRange { array, index } => BlockOutOfRange {
                array,
                index: *index,
            },
            BlocksOverlap { array, a, b } => BlocksOverlap {
                array,
                a: *a,
                b: *b,
            },
            SendCountMismatch {
                sendcount,
                rank,
                expected,
            } => SendCountMismatch {
                sendcount: *sendcount,
                rank: *rank,
                expected: *expected,
            },
            LayoutMismatch { collective, world } => LayoutMismatch {
                collective: *collective,
                world: *world,
            },
            InPlaceLayout => InPlaceLayout,
            PreMulSumMisuse { collective, op } => PreMulSumMisuse {
                collective: *collective,
                op: *op,
            },
            InvalidUniqueId(w) => InvalidUniqueId(w),
            NoStore => NoStore,
            AlgoNotSupported { algo, collective } => AlgoNotSupported {
                algo,
                collective: *collective,
            },
            Config { var, value, reason } => Config {
                var: var.clone(),
                value: value.clone(),
                reason: reason.clone(),
            },
            InvalidCodec { codec, reason } => InvalidCodec {
                codec: codec.clone(),
                reason: reason.clone(),
            },
            FeedbackMismatch {
                key,
                what,
                expected,
                got,
            } => FeedbackMismatch {
                key: key.clone(),
                what,
                expected: expected.clone(),
                got: got.clone(),
            },
            Mismatch {
                rank,
                peer,
                seq,
                expected,
                got,
            } => Mismatch {
                rank: *rank,
                peer: *peer,
                seq: *seq,
                expected: expected.clone(),
                got: got.clone(),
            },
            Timeout {
                rank,
                seq,
                peers,
                waited,
            } => Timeout {
                rank: *rank,
                seq: *seq,
                peers: peers.clone(),
                waited: *waited,
            },
            PeerFailed {
                rank,
                peer,
                seq,
                source,
            } => PeerFailed {
                rank: *rank,
                peer: *peer,
                seq: *seq,
                source: source.duplicate(),
            },
            Revoked { rank, by, failed } => Revoked {
                rank: *rank,
                by: *by,
                failed: failed.clone(),
            },
            Excluded {
                rank,
                epoch,
                survivors,
            } => Excluded {
                rank: *rank,
                epoch: *epoch,
                survivors: survivors.clone(),
            },
            ShrinkMismatch {
                rank,
                peer,
                mine,
                theirs,
            } => ShrinkMismatch {
                rank: *rank,
                peer: *peer,
                mine: mine.clone(),
                theirs: theirs.clone(),
            },
            Aborted => Aborted,
            Io { what, source } => Io {
                what,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            RankConflict(c) => RankConflict(c.clone()),
            Bootstrap(e) => Bootstrap(e.duplicate()),
            Transport(e) => Transport(e.duplicate()),
            TransportSetup(e) => TransportSetup(e.duplicate()),
            CommFailed(c) => CommFailed(c.clone()),
            Internal(m) => Internal(m.clone()),
            CorruptPayload { peer, detail } => CorruptPayload {
                peer: *peer,
                detail: detail.clone(),
            },
            Vendor(v) => Vendor(v.clone()),
            Topology(e) => Topology(e.clone()),
        }
    }
}

impl From<SetupError> for Error {
    /// A link's own error stays [`Error::Transport`]; the rest is [`Error::TransportSetup`].
    fn from(e: SetupError) -> Error {
        match e {
            SetupError::Link(l) => Error::Transport(l),
            other => Error::TransportSetup(other),
        }
    }
}

/// ferrocoll's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<LayoutError> for Error {
    fn from(e: LayoutError) -> Error {
        match e {
            LayoutError::CountsLength { array, got, world } => {
                Error::CountsLength { array, got, world }
            }
            LayoutError::BlockOutOfRange { array, index } => {
                Error::BlockOutOfRange { array, index }
            }
            LayoutError::BlocksOverlap { array, a, b } => Error::BlocksOverlap { array, a, b },
        }
    }
}
