//! Loading a vendor library at run time (libloading): the path from its variable, else the
//! names the dynamic loader searches; symbols resolved into plain function pointers.

use std::ffi::c_char;

use libloading::Library;

use crate::error::VendorError;

/// A loaded vendor library and where it came from. The library stays loaded as long as
/// this lives; the function pointers taken from it must not outlive it.
pub(crate) struct Loaded {
    pub(crate) lib: Library,
    pub(crate) path: String,
    pub(crate) name: &'static str,
}

/// Loads `library` from `path` when given (only there), else from the path in `var` when set
/// (only there), else from the first of `names` the dynamic loader finds.
pub(crate) fn load(
    library: &'static str,
    var: &'static str,
    names: &[&str],
    path: Option<&str>,
) -> Result<Loaded, VendorError> {
    let given = path
        .map(str::to_string)
        .or_else(|| std::env::var(var).ok())
        .filter(|v| !v.trim().is_empty());
    let tries: Vec<String> = match given {
        Some(p) => vec![p],
        None => names.iter().map(|s| s.to_string()).collect(),
    };
    let mut why = String::from("nothing to try");
    for t in &tries {
        // SAFETY: loading a library runs its initialisers. The vendor libraries named here
        // (or by the user's variable) are the ones this module binds; their initialisers
        // have no preconditions on our side.
        match unsafe { Library::new(t) } {
            Ok(lib) => {
                return Ok(Loaded {
                    lib,
                    path: t.clone(),
                    name: library,
                })
            }
            Err(e) => why = e.to_string(),
        }
    }
    Err(VendorError::Unavailable {
        library,
        tried: tries.join(", "),
        why,
        var,
    })
}

impl Loaded {
    /// The symbol `name` as a function pointer of type `F`.
    ///
    /// # Safety
    /// `F` must be the symbol's true C signature, and the pointer must not be called after
    /// this library is dropped.
    pub(crate) unsafe fn get<F: Copy>(&self, name: &'static str) -> Result<F, VendorError> {
        // SAFETY: the caller vouches for the type; the symbol's lifetime is tied to `self`
        // by the same contract.
        match unsafe { self.lib.get::<F>(name.as_bytes()) } {
            Ok(sym) => Ok(*sym),
            Err(_) => Err(VendorError::MissingSymbol {
                library: self.name,
                path: self.path.clone(),
                symbol: name,
            }),
        }
    }

    /// The symbol `name` when the library has it (optional symbols of newer versions).
    ///
    /// # Safety
    /// As [`Loaded::get`].
    pub(crate) unsafe fn optional<F: Copy>(&self, name: &'static str) -> Option<F> {
        // SAFETY: as `get`.
        unsafe { self.get(name) }.ok()
    }
}

/// A C string from a vendor (an error message), or `fallback` for a null pointer.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn c_text(p: *const c_char, fallback: &str) -> String {
    if p.is_null() {
        return fallback.to_string();
    }
    // SAFETY: non-null and NUL-terminated (the caller's contract).
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}
