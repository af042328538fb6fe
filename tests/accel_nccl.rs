//! The real NCCL and CUDA runtime, loaded at run time on a machine without a GPU (issue 24):
//! the libraries come from the torch wheel the test command installs
//! (`site-packages/nvidia/nccl/lib/libnccl.so.2`, `nvidia/cu13/lib/libcudart.so.13`), or from
//! `FERROCOLL_NCCL_LIBRARY` / `FERROCOLL_CUDART_LIBRARY`. NCCL loads, says its version and
//! makes a unique id without a device; creating a communicator then fails, and that failure
//! must be a typed error carrying NCCL's own message, never a crash. Where no library is
//! found the tests say SKIPPED, unless `FERROCOLL_REQUIRE_VENDOR_LIBS=1` (the test command
//! sets it) makes that a failure.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocoll::accel::cudart::CudaRuntime;
use ferrocoll::accel::nccl::{Nccl, NcclComm, MIN_VERSION};
use ferrocoll::error::VendorError;

/// The library `var` names, else the first file under the test venv's site-packages at
/// `rel` (`FERROCOLL_VENV`, default `~/.cache/ferrocoll/venv`).
fn find(var: &str, rel: &str) -> Option<String> {
    if let Ok(p) = std::env::var(var) {
        if !p.is_empty() {
            return Some(p);
        }
    }
    let venv = std::env::var_os("FERROCOLL_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ferrocoll/venv"))
        })?;
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten()
        .map(|e| e.path().join("site-packages").join(rel))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
}

/// The path of `what`, or `None` after saying SKIPPED (a failure when the suite requires it).
fn library(test: &str, var: &str, rel: &str) -> Option<String> {
    let found = find(var, rel);
    if found.is_none() {
        let required = std::env::var("FERROCOLL_REQUIRE_VENDOR_LIBS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{test}: no library: set {var} or install torch in the test venv"
        );
        println!("SKIPPED: {test}: no library found ({var}, or torch's wheel in the test venv)");
    }
    found
}

fn nccl_path(test: &str) -> Option<String> {
    library(
        test,
        "FERROCOLL_NCCL_LIBRARY",
        "nvidia/nccl/lib/libnccl.so.2",
    )
}

#[test]
fn the_real_nccl_loads_says_its_version_and_makes_a_unique_id() {
    let Some(path) = nccl_path("the_real_nccl_loads") else {
        return;
    };
    let nccl = Nccl::open(Some(&path)).unwrap();
    assert!(nccl.version() >= MIN_VERSION, "{}", nccl.version());
    println!(
        "NCCL {} from {}",
        ferrocoll::accel::nccl::version_text(nccl.version()),
        nccl.path()
    );
    let id = nccl.unique_id().unwrap();
    assert!(id.internal.iter().any(|&b| b != 0), "an all-zero unique id");
    // A second id differs (a fresh random magic each time).
    assert_ne!(nccl.unique_id().unwrap().internal, id.internal);
    // Optional entry points are looked up, not required.
    let _ = nccl.has("ncclCommShrink");
    assert!(!nccl.has("ncclNoSuchCall"));
}

#[test]
fn a_communicator_without_a_gpu_is_a_typed_error_with_nccl_s_message() {
    let Some(path) = nccl_path("a_communicator_without_a_gpu") else {
        return;
    };
    let t0 = Instant::now();
    let nccl = Arc::new(Nccl::open(Some(&path)).unwrap());
    let id = nccl.unique_id().unwrap();
    match NcclComm::init_rank(nccl, 1, &id, 0) {
        Err(VendorError::Call {
            library,
            call,
            name,
            message,
            code,
        }) => {
            assert_eq!((library, call), ("NCCL", "ncclCommInitRank"));
            assert!(name.starts_with("nccl"), "{name}");
            assert_ne!(code, 0);
            // NCCL's own words, e.g. "Cuda failure 'CUDA driver version is insufficient
            // for CUDA runtime version'".
            assert!(!message.trim().is_empty(), "no message");
            println!("as expected without a GPU: {name} ({code}): {message}");
        }
        Err(other) => panic!("not NCCL's call error: {other:?}"),
        Ok(comm) => {
            // A machine with a GPU: the communicator is real.
            assert_eq!(comm.rank_and_size().unwrap(), (0, 1));
            println!("a GPU is present: a 1-rank NCCL communicator was made");
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[test]
fn the_real_cuda_runtime_says_why_there_is_no_device() {
    let Some(path) = library(
        "the_real_cuda_runtime",
        "FERROCOLL_CUDART_LIBRARY",
        "nvidia/cu13/lib/libcudart.so.13",
    ) else {
        return;
    };
    let rt = CudaRuntime::open(Some(&path)).unwrap();
    assert!(rt.version() >= 11000, "{}", rt.version());
    match rt.device_count() {
        Err(VendorError::Call {
            call,
            name,
            message,
            ..
        }) => {
            assert_eq!(call, "cudaGetDeviceCount");
            assert!(name.starts_with("cudaError"), "{name}");
            assert!(!message.is_empty());
            println!("as expected without a GPU: {name}: {message}");
        }
        Err(other) => panic!("not CUDA's call error: {other:?}"),
        Ok(n) => println!("{n} CUDA devices present"),
    }
}

#[test]
fn a_missing_library_names_its_variable() {
    let e = Nccl::open(Some("/nonexistent/libnccl.so.2")).err().unwrap();
    assert!(
        matches!(&e, VendorError::Unavailable { var: "FERROCOLL_NCCL_LIBRARY", tried, .. } if tried.contains("/nonexistent")),
        "{e:?}"
    );
    assert!(e.to_string().contains("FERROCOLL_NCCL_LIBRARY"), "{e}");
    let e = CudaRuntime::open(Some("/nonexistent/libcudart.so"))
        .err()
        .unwrap();
    assert!(e.to_string().contains("FERROCOLL_CUDART_LIBRARY"), "{e}");
}

#[test]
fn a_library_that_is_not_the_vendor_s_is_refused() {
    // libc loads, but has none of NCCL's or CUDA's symbols.
    let e = Nccl::open(Some("libc.so.6")).err().unwrap();
    assert!(
        matches!(
            e,
            VendorError::MissingSymbol {
                symbol: "ncclGetVersion",
                ..
            }
        ),
        "{e:?}"
    );
    let e = CudaRuntime::open(Some("libc.so.6")).err().unwrap();
    assert!(matches!(e, VendorError::MissingSymbol { .. }), "{e:?}");
}

#[test]
fn the_probe_on_cuda_without_a_gpu_fails_with_the_vendor_s_message_in_time() {
    let (Some(nccl), Some(cudart)) = (
        nccl_path("the_probe_on_cuda"),
        library(
            "the_probe_on_cuda",
            "FERROCOLL_CUDART_LIBRARY",
            "nvidia/cu13/lib/libcudart.so.13",
        ),
    ) else {
        return;
    };
    let t0 = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrocoll-probe"))
        .args([
            "all_reduce",
            "--device",
            "cuda",
            "--np",
            "2",
            "-b",
            "8",
            "-e",
            "8",
        ])
        .env("FERROCOLL_NCCL_LIBRARY", nccl)
        .env("FERROCOLL_CUDART_LIBRARY", cudart)
        .output()
        .unwrap();
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        println!("a GPU is present: the probe ran on it");
        return;
    }
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The vendor's words, through the typed error (CUDA's runtime is called first).
    assert!(
        err.contains("CUDA runtime") || err.contains("NCCL"),
        "no vendor error: {err}"
    );
    assert!(err.contains("failed: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
