//! Premul-sum operators: `fcRedOpCreatePreMulSum` / `fcRedOpDestroy`, NCCL's
//! `ncclRedOpCreatePreMulSum` / `ncclRedOpDestroy`.
//!
//! An operator is a code from `fcNumOps` up, issued per communicator (as NCCL does): it
//! names a scalar and the data type it was made for. A collective called with it on that
//! communicator multiplies this rank's input by the scalar, then sums; any other use of the
//! code (another communicator, another data type, after its destruction) is refused. The
//! scalar is read at creation (`fcScalarHostImmediate`); device-resident scalars
//! (`fcScalarDevice`) are refused, since the collectives that take a premul-sum run on host
//! buffers.

use std::collections::HashMap;
use std::ffi::c_void;
use std::os::raw::c_int;
use std::sync::{Mutex, MutexGuard, OnceLock};

use fc::DataType;

use crate::boundary::{guard, write_out, Failure};
use crate::registry;
use crate::types::*;

/// Per communicator handle: the next code, and the live operators (code → scalar, type).
#[derive(Default)]
struct Ops {
    next: c_int,
    live: HashMap<c_int, (f64, DataType)>,
}

fn ops() -> MutexGuard<'static, HashMap<usize, Ops>> {
    static OPS: OnceLock<Mutex<HashMap<usize, Ops>>> = OnceLock::new();
    OPS.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The scalar of the premul-sum operator `op` of `comm`, checked against the call's type;
/// an unknown code is `fc::Error::InvalidReduceOp`.
pub(crate) fn scalar_of(comm: fcComm_t, op: fcRedOp_t, dtype: DataType) -> Result<f64, Failure> {
    let found = ops()
        .get(&comm.addr())
        .and_then(|o| o.live.get(&op).copied());
    match found {
        Some((s, t)) if t == dtype => Ok(s),
        Some((_, t)) => Err(Failure::arg(format!(
            "premul-sum operator {op} was made for {t}, not {dtype}"
        ))),
        None => Err(fc::Error::InvalidReduceOp(op.into()).into()),
    }
}

/// Forgets the operators of a destroyed communicator.
pub(crate) fn forget(comm: fcComm_t) {
    ops().remove(&comm.addr());
}

/// Reads the scalar at `scalar`, an element of `dtype`, as f64 (refusing 64-bit integers
/// that f64 cannot hold exactly).
///
/// # Safety
/// `scalar` must be NULL or valid for a read of one element of `dtype`.
unsafe fn read_scalar(scalar: *const c_void, dtype: DataType) -> Result<f64, Failure> {
    if scalar.is_null() {
        return Err(Failure::arg("scalar is NULL"));
    }
    let n = dtype.size();
    // SAFETY: non-null and valid for `n` bytes by the caller's contract; u8 has no alignment.
    let bytes = unsafe { std::slice::from_raw_parts(scalar.cast::<u8>(), n) };
    let v = fc::reduce::scalar::load_f64(dtype, bytes);
    let exact = match dtype {
        DataType::I64 => {
            let i = i64::from_ne_bytes(bytes.try_into().unwrap_or_default());
            v as i64 == i && (v as i128) == i as i128
        }
        DataType::U64 => {
            let u = u64::from_ne_bytes(bytes.try_into().unwrap_or_default());
            v as u64 == u && (v as u128) == u as u128
        }
        _ => true,
    };
    if !exact {
        return Err(Failure::arg(format!(
            "scalar {v} of {dtype} is not exactly representable as a double"
        )));
    }
    Ok(v)
}

/// Creates a premul-sum operator of `comm`: a collective called with `*op` multiplies each
/// rank's input by its own `*scalar` (an element of `datatype`), then sums. `residence`
/// must be `fcScalarHostImmediate` (the scalar is read now; `fcScalarDevice` is refused with
/// `fcInvalidUsage`). The operator is used with `datatype` only, on `comm` only, until
/// `fcRedOpDestroy`.
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `op` must be NULL or valid for a write of an `fcRedOp_t`; `scalar` NULL or valid for a
/// read of one element of `datatype`.
#[no_mangle]
pub unsafe extern "C" fn fcRedOpCreatePreMulSum(
    op: *mut fcRedOp_t,
    scalar: *mut c_void,
    datatype: fcDataType_t,
    residence: fcScalarResidence_t,
    comm: fcComm_t,
) -> fcResult_t {
    guard("fcRedOpCreatePreMulSum", || {
        registry::get(comm)?;
        let dtype = DataType::from_code(datatype.into())
            .ok_or_else(|| Failure::from(fc::Error::InvalidDataType(datatype.into())))?;
        if residence == fcScalarDevice {
            return Err(Failure::usage(
                "fcScalarDevice: device-resident scalars are not supported, as premul-sum \
                 runs on host buffers; pass the scalar in host memory with \
                 fcScalarHostImmediate",
            ));
        }
        if residence != fcScalarHostImmediate {
            return Err(Failure::arg(format!(
                "unknown scalar residence {residence}"
            )));
        }
        if op.is_null() {
            return Err(Failure::arg("op is NULL"));
        }
        // SAFETY: the caller's contract.
        let s = unsafe { read_scalar(scalar, dtype) }?;
        let mut all = ops();
        let o = all.entry(comm.addr()).or_default();
        let code = fcNumOps + o.next;
        o.next = o
            .next
            .checked_add(1)
            .ok_or_else(|| Failure::usage("too many premul-sum operators on this communicator"))?;
        o.live.insert(code, (s, dtype));
        drop(all);
        // SAFETY: non-null (checked), valid for a write by the caller's contract.
        unsafe { write_out(op, "op", code) }
    })
}

/// Destroys the premul-sum operator `op` of `comm`. Calls already issued (or queued in a
/// group) with it are not affected. A code that names no live premul-sum operator of `comm`
/// (a built-in operator, one destroyed already, another communicator's) is refused with
/// `fcInvalidArgument`.
///
/// Thread safety: safe from any thread.
// `comm` is a token looked up in the registry, never dereferenced.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
#[no_mangle]
pub extern "C" fn fcRedOpDestroy(op: fcRedOp_t, comm: fcComm_t) -> fcResult_t {
    guard("fcRedOpDestroy", || {
        registry::get(comm)?;
        let removed = ops().get_mut(&comm.addr()).and_then(|o| o.live.remove(&op));
        match removed {
            Some(_) => Ok(()),
            None => Err(Failure::arg(format!(
                "{op} is no premul-sum operator of this communicator (built-in, destroyed, \
                 or another communicator's)"
            ))),
        }
    })
}
