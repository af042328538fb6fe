//! The C types of the ABI: result codes, element types, operators, the unique id and the
//! communicator handle. Names and numbers mirror NCCL's so that a port changes a prefix.

#![allow(non_camel_case_types, non_upper_case_globals)]

use std::os::raw::{c_char, c_int};

/// Result of every call. `fcSuccess` is 0 like `ncclSuccess`; the error codes live in their
/// own range (7000 + the number of NCCL's code of the same name), so they are never confused
/// with `ncclResult_t` values in a program that uses both libraries. `fcTimeout` has no NCCL
/// counterpart and sits apart at 7100, leaving 7007 for an `fcInProgress` (NCCL's
/// `ncclInProgress` = 7) if non-blocking communicators come.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum fcResult_t {
    /// The call succeeded.
    fcSuccess = 0,
    /// The operating system refused a resource, a link failed, or the communicator was
    /// aborted.
    fcSystemError = 7002,
    /// A bug in ferrocoll (including a panic caught at the boundary).
    fcInternalError = 7003,
    /// An argument is wrong: a NULL pointer, an unknown data type or operator, a negative or
    /// oversized count or rank, a stream without FERROCOLL_DEVICE, a handle that is no communicator.
    fcInvalidArgument = 7004,
    /// The library was used wrongly: a destroyed communicator, mismatched calls across ranks,
    /// a forced algorithm that does not apply, a call that is not allowed inside a group.
    fcInvalidUsage = 7005,
    /// A remote rank failed (crashed, exited, closed its links).
    fcRemoteError = 7006,
    /// An asynchronous work is not complete yet (`fcWorkWait` with a timeout; NCCL's
    /// `ncclInProgress`).
    fcInProgress = 7007,
    /// A call made no progress within `FERROCOLL_TIMEOUT` (no NCCL counterpart).
    fcTimeout = 7100,
}

/// Element type of a buffer: an integer holding one of the `fc*` type codes below (NCCL's
/// numbers). Any other value is refused with `fcInvalidArgument`.
pub type fcDataType_t = c_int;
/// `int8_t`.
pub const fcInt8: fcDataType_t = 0;
/// Alias of `fcInt8`, as in NCCL.
pub const fcChar: fcDataType_t = 0;
/// `uint8_t`.
pub const fcUint8: fcDataType_t = 1;
/// `int32_t`.
pub const fcInt32: fcDataType_t = 2;
/// Alias of `fcInt32`, as in NCCL.
pub const fcInt: fcDataType_t = 2;
/// `uint32_t`.
pub const fcUint32: fcDataType_t = 3;
/// `int64_t`.
pub const fcInt64: fcDataType_t = 4;
/// `uint64_t`.
pub const fcUint64: fcDataType_t = 5;
/// IEEE 754 half precision.
pub const fcFloat16: fcDataType_t = 6;
/// Alias of `fcFloat16`, as in NCCL.
pub const fcHalf: fcDataType_t = 6;
/// `float`.
pub const fcFloat32: fcDataType_t = 7;
/// Alias of `fcFloat32`, as in NCCL.
pub const fcFloat: fcDataType_t = 7;
/// `double`.
pub const fcFloat64: fcDataType_t = 8;
/// Alias of `fcFloat64`, as in NCCL.
pub const fcDouble: fcDataType_t = 8;
/// bfloat16.
pub const fcBfloat16: fcDataType_t = 9;
/// OCP FP8 E4M3 (finite-only, NaN = 0x7F/0xFF).
pub const fcFloat8e4m3: fcDataType_t = 10;
/// OCP FP8 E5M2.
pub const fcFloat8e5m2: fcDataType_t = 11;
/// Number of data types.
pub const fcNumTypes: c_int = 12;

/// Reduction operator: an integer holding one of the `fc*` operator codes below (NCCL's
/// numbers), or a premul-sum operator from `fcRedOpCreatePreMulSum` (`fcNumOps` and up, per
/// communicator). Any other value is refused with `fcInvalidArgument`.
pub type fcRedOp_t = c_int;
/// Sum.
pub const fcSum: fcRedOp_t = 0;
/// Product.
pub const fcProd: fcRedOp_t = 1;
/// Maximum (NaN-propagating for floats).
pub const fcMax: fcRedOp_t = 2;
/// Minimum (NaN-propagating for floats).
pub const fcMin: fcRedOp_t = 3;
/// Sum divided by the number of ranks (truncating for integers).
pub const fcAvg: fcRedOp_t = 4;
/// Number of operators.
pub const fcNumOps: c_int = 5;

/// Where the scalar of `fcRedOpCreatePreMulSum` lives (NCCL's `ncclScalarResidence_t`).
pub type fcScalarResidence_t = c_int;
/// In device memory, read when the collective runs: refused (premul-sum runs on host
/// buffers).
pub const fcScalarDevice: fcScalarResidence_t = 0;
/// In host memory, read when the operator is created.
pub const fcScalarHostImmediate: fcScalarResidence_t = 1;

/// Bytes of an `fcUniqueId` (as `NCCL_UNIQUE_ID_BYTES`).
pub const FC_UNIQUE_ID_BYTES: usize = 128;

/// The `color` of `fcCommSplit` for a rank that joins no new communicator.
pub const FC_SPLIT_NOCOLOR: c_int = -1;

/// `shrinkFlags` of `fcCommShrink`: shrink without touching the parent's calls in progress
/// (NCCL's `NCCL_SHRINK_DEFAULT`).
pub const FC_SHRINK_DEFAULT: c_int = 0;
/// `shrinkFlags` of `fcCommShrink`: revoke the parent first, so that a call in progress on
/// it (in another thread, on this rank and on every other) fails at once (NCCL's
/// `NCCL_SHRINK_ABORT`).
pub const FC_SHRINK_ABORT: c_int = 1;
/// `revokeFlags` of `fcCommRevoke`, the only value accepted (NCCL's `NCCL_REVOKE_DEFAULT`).
pub const FC_REVOKE_DEFAULT: c_int = 0;

/// Major version of the library (also `fcGetVersion`).
pub const FC_MAJOR: c_int = 0;
/// Minor version.
pub const FC_MINOR: c_int = 1;
/// Patch version.
pub const FC_PATCH: c_int = 0;
/// `FC_MAJOR * 10000 + FC_MINOR * 100 + FC_PATCH`, what `fcGetVersion` reports.
pub const FC_VERSION_CODE: c_int = FC_MAJOR * 10000 + FC_MINOR * 100 + FC_PATCH;

/// Where the ranks of a job meet: made by `fcGetUniqueId` in one process and passed, as
/// plain bytes, to every rank's `fcCommInitRank`. It holds the address of a rendezvous store
/// served by the process that made it and a random 32-byte job secret: the store and its
/// clients prove to each other that they hold it. Treat it as opaque, and as a password:
/// whoever holds it may join the job.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct fcUniqueId {
    /// The encoded id.
    pub internal: [c_char; FC_UNIQUE_ID_BYTES],
}

/// Opaque communicator type; only pointers to it (`fcComm_t`) exist.
pub struct fcComm {
    _private: [u8; 0],
}

/// A communicator handle. It is an opaque token, never dereferenced: the library looks it up
/// among the live communicators, so a destroyed or made-up handle is reported
/// (`fcInvalidUsage` / `fcInvalidArgument`) instead of being used.
pub type fcComm_t = *mut fcComm;

/// Opaque work type; only pointers to it (`fcWork_t`) exist.
pub struct fcWork {
    _private: [u8; 0],
}

/// An asynchronous group's handle (`fcGroupEndAsync`): an opaque token, never dereferenced,
/// looked up among the live works.
pub type fcWork_t = *mut fcWork;

const _: () = assert!(FC_UNIQUE_ID_BYTES == fc::UNIQUE_ID_BYTES);
const _: () = assert!(fcNumTypes as usize == fc::DataType::ALL.len());
const _: () = assert!(fcNumOps as usize == fc::ReduceOp::ALL.len());
