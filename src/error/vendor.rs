//! Errors of the vendors' libraries (NCCL and the CUDA runtime, HCCL and the ACL runtime),
//! loaded at run time by [`crate::accel`]: each carries the library, the call and the
//! vendor's own code, name and message.

/// What went wrong with a vendor library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VendorError {
    /// The library could not be loaded: every path tried, and why the last one failed.
    #[error("{library} is not available: cannot load {tried} ({why}); set {var} to its path")]
    Unavailable {
        /// The library ("NCCL", "CUDA runtime", "HCCL", "ACL runtime").
        library: &'static str,
        /// The paths or names tried, comma-separated.
        tried: String,
        /// The loader's message for the last one.
        why: String,
        /// The variable that names the library's path.
        var: &'static str,
    },
    /// The library lacks a symbol every supported version has.
    #[error("{library} at {path} lacks {symbol}: not a usable {library}")]
    MissingSymbol {
        /// The library.
        library: &'static str,
        /// Where it was loaded from.
        path: String,
        /// The missing symbol.
        symbol: &'static str,
    },
    /// The library is older than the oldest version supported.
    #[error("{library} {found} at {path} is too old: {min} or newer is needed")]
    TooOld {
        /// The library.
        library: &'static str,
        /// Where it was loaded from.
        path: String,
        /// The version it reports.
        found: String,
        /// The oldest version supported.
        min: String,
    },
    /// The library cannot do this (a data type, an operator, a call its version lacks).
    #[error("{library} cannot {what}")]
    Unsupported {
        /// The library.
        library: &'static str,
        /// What it cannot do.
        what: String,
    },
    /// A buffer is not in the memory this communicator's device calls take (declared
    /// otherwise, or found elsewhere by the runtime's pointer query).
    #[error("{what} is {found}, but this communicator's device calls take {expected}")]
    WrongMemory {
        /// Which buffer ("sendbuff", "recvbuff").
        what: &'static str,
        /// Where the buffer is, as declared (and as the runtime says, where it can).
        found: String,
        /// Where its buffers must be.
        expected: String,
    },
    /// A call returned an error: the vendor's code, its name and its message.
    #[error("{library} {call} failed: {name} ({code}): {message}")]
    Call {
        /// The library.
        library: &'static str,
        /// The function called.
        call: &'static str,
        /// The vendor's result code.
        code: i64,
        /// The code's name in the vendor's header (`ncclUnhandledCudaError`).
        name: String,
        /// The vendor's own message (its last-error string where it has one).
        message: String,
    },
}
