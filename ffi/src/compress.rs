//! Compressed all-reduce through the C ABI: the gradient-compression collectives of
//! `ferrocoll::compress` with the error-feedback state kept per communicator and per tensor
//! key, so that a framework binding (the Python package's DDP hook) passes a key per
//! gradient bucket and nothing else.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::{Arc, Mutex, MutexGuard};

use fc::compress::CompressionSetting;
use fc::{Codec, CompressedCollectives, ErrorFeedback};

use crate::boundary::{guard, Failure};
use crate::types::*;
use crate::{group, registry};

/// Error-feedback state per communicator handle. Ranks of one process (threads) call at
/// once, so the map's lock is held only to find a communicator's own state, never across a
/// collective.
type States = HashMap<usize, Arc<Mutex<ErrorFeedback>>>;
static FEEDBACK: Mutex<Option<States>> = Mutex::new(None);

fn feedback() -> MutexGuard<'static, Option<States>> {
    FEEDBACK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error-feedback state of `comm` (created on first use).
fn state_of(comm: fcComm_t) -> Arc<Mutex<ErrorFeedback>> {
    feedback()
        .get_or_insert_with(HashMap::new)
        .entry(comm as usize)
        .or_default()
        .clone()
}

/// Drops the error-feedback state of a destroyed communicator.
pub(crate) fn forget(comm: fcComm_t) {
    if let Some(m) = feedback().as_mut() {
        m.remove(&(comm as usize));
    }
}

/// A C string argument as UTF-8 (`None` for NULL).
///
/// # Safety
/// `s` must be NULL or a NUL-terminated string.
unsafe fn text<'a>(s: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str()
        .map(Some)
        .map_err(|_| Failure::arg(format!("{what} is not UTF-8")))
}

/// Compressed all-reduce of `count` float32 values in place: every rank's `buff` becomes the
/// (lossy) sum over all ranks. `codec` is a `FERROCOLL_COMPRESSION` spelling (`fp16`, `bf16`,
/// `fp8`, `fp8e5m2`, `topk:0.01`, `onebit`, `none`, or `auto`, resolved from the
/// communicator's topology; NULL: the environment variable, else none); `key` names the
/// tensor whose compression error is carried to its next call (one key per gradient tensor
/// or bucket; reusing a key with another length or codec is `fcInvalidArgument`). Every rank
/// passes the same key, count and codec.
///
/// PowerSGD (`powersgd:R`, also through `FERROCOLL_COMPRESSION`) is refused with
/// `fcInvalidArgument`: it compresses one 2-D gradient matrix, and this call takes a flat
/// vector with no shape. From C use one of the codecs above; PowerSGD needs the Rust API's
/// `all_reduce_compressed_2d` (or a framework's own PowerSGD, e.g. torch's `powerSGD_hook`).
///
/// Thread safety: as `fcAllReduce`; not inside `fcGroupStart`/`fcGroupEnd`.
///
/// # Safety
/// `buff` must be valid for reads and writes of `count` floats, `key` and `codec` NULL or
/// NUL-terminated strings, until the call returns.
#[no_mangle]
pub unsafe extern "C" fn fcAllReduceCompressed(
    buff: *mut c_void,
    count: usize,
    datatype: fcDataType_t,
    key: *const c_char,
    codec: *const c_char,
    comm: fcComm_t,
    stream: *mut c_void,
) -> fcResult_t {
    guard("fcAllReduceCompressed", || {
        let c = registry::get(comm)?;
        if !stream.is_null() {
            return Err(Failure::arg("stream must be NULL: buffers are host memory"));
        }
        if fc::DataType::from_code(datatype.into()) != Some(fc::DataType::F32) {
            return Err(Failure::arg(format!(
                "compressed all-reduce takes fcFloat32 gradients, not data type {}",
                i64::from(datatype)
            )));
        }
        if group::active() {
            return Err(Failure::usage(
                "fcAllReduceCompressed cannot be queued in a group",
            ));
        }
        if buff.is_null() && count > 0 {
            return Err(fc::Error::NullPointer("buff").into());
        }
        if count > isize::MAX as usize / 4 {
            return Err(fc::Error::CountTooLarge(count).into());
        }
        // SAFETY: the caller's contract.
        let key = unsafe { text(key, "key") }?.ok_or(fc::Error::NullPointer("key"))?;
        // SAFETY: the caller's contract.
        let codec: Codec = match unsafe { text(codec, "codec") }? {
            Some(s) => CompressionSetting::parse(s)?.resolve_for(&c),
            None => CompressionSetting::from_env()?.resolve_for(&c),
        };
        let grads: &mut [f32] = if count == 0 {
            &mut []
        } else {
            // SAFETY: non-null (checked), valid for `count` floats (contract).
            unsafe { std::slice::from_raw_parts_mut(buff.cast::<f32>(), count) }
        };
        let state = state_of(comm);
        let mut ef = state.lock().unwrap_or_else(|e| e.into_inner());
        c.all_reduce_compressed(grads, &mut ef, key, codec)?;
        Ok(())
    })
}

/// Forgets the carried compression error of tensor `key` on `comm` (NULL: of every key), e.g.
/// when a training run restarts from a checkpoint.
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `key` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fcCompressionReset(comm: fcComm_t, key: *const c_char) -> fcResult_t {
    guard("fcCompressionReset", || {
        registry::get(comm)?;
        // SAFETY: the caller's contract.
        let key = unsafe { text(key, "key") }?;
        let state = state_of(comm);
        let mut ef = state.lock().unwrap_or_else(|e| e.into_inner());
        match key {
            Some(k) => {
                ef.reset(k);
            }
            None => ef.reset_all(),
        }
        Ok(())
    })
}
