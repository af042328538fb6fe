//! The panic boundary and error reporting shared by every export.
//!
//! Each exported function runs its body through [`guard`]: a returned [`Failure`] becomes its
//! code plus a message for `fcGetLastError`, and a panic becomes `fcInternalError` (never an
//! unwind across the C frame, never an abort).

use std::cell::RefCell;
use std::ffi::CString;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use fc::{Error, ErrorKind};

use crate::types::fcResult_t::{self, *};

/// Why a call failed: the code it returns and the message `fcGetLastError` gives.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: fcResult_t,
    pub message: String,
}

impl Failure {
    /// A bad argument.
    pub(crate) fn arg(message: impl Into<String>) -> Failure {
        Failure {
            code: fcInvalidArgument,
            message: message.into(),
        }
    }

    /// A wrong use of the library.
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: fcInvalidUsage,
            message: message.into(),
        }
    }
}

/// The result code of an error kind of the core crate.
pub(crate) fn code_of(kind: ErrorKind) -> fcResult_t {
    match kind {
        ErrorKind::Internal => fcInternalError,
        ErrorKind::System => fcSystemError,
        ErrorKind::InvalidArgument => fcInvalidArgument,
        ErrorKind::InvalidUsage => fcInvalidUsage,
        ErrorKind::Remote => fcRemoteError,
        ErrorKind::Timeout => fcTimeout,
    }
}

/// An error with its chain of causes, `a: b: c`.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl From<fc::LayoutError> for Failure {
    fn from(e: fc::LayoutError) -> Failure {
        Error::from(e).into()
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            code: code_of(e.kind()),
            message: describe(&e),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error.
pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // `try_with`: during thread teardown the message is dropped rather than panicking
    // outside the boundary.
    let _ = LAST_ERROR.try_with(|l| {
        if let Ok(mut slot) = l.try_borrow_mut() {
            *slot = c;
        }
    });
}

/// This thread's last error message; valid until the next failing call on this thread.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|l| l.try_borrow().map_or(c"".as_ptr(), |s| s.as_ptr()))
        .unwrap_or(c"".as_ptr())
}

/// Runs the body of the export `name` inside the panic boundary.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Result<(), Failure>) -> fcResult_t {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => fcSuccess,
        Ok(Err(f)) => {
            set_last_error(&format!("{name}: {}", f.message));
            f.code
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("{name}: internal error (panic): {what}"));
            fcInternalError
        }
    }
}

/// Writes `value` through an out-pointer, refusing NULL.
///
/// # Safety
/// `out` must be NULL or valid for a write of a `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, what: &str, value: T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::arg(format!("{what} is NULL")));
    }
    // SAFETY: non-null, and valid for writes by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// A non-negative C `int` as a `usize`.
pub(crate) fn non_negative(v: std::os::raw::c_int, what: &str) -> Result<usize, Failure> {
    usize::try_from(v).map_err(|_| Failure::arg(format!("{what} is negative ({v})")))
}
