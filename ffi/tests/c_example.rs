//! `examples/c/allreduce.c` compiled with the system C compiler against the library cargo
//! just built (shared, and once static), run as 3 ranks that check their own results, and
//! run once under valgrind when it is installed. Without a C compiler the tests say so and
//! pass; `.ci/test.sh` installs one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where cargo put libferrocoll.so/.a: the profile directory above this test's `deps/`.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    assert!(
        dir.join("libferrocoll.so").exists(),
        "{} has no libferrocoll.so: `cargo test` does not build a cdylib-only crate for its \
         integration tests; run `cargo build -p ferrocoll-ffi` first (.ci/test.sh does)",
        dir.display()
    );
    dir.to_path_buf()
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrocoll-c-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles the example into `dir`; `None` (with a message) when there is no C compiler.
fn compile(dir: &Path, static_link: bool) -> Option<PathBuf> {
    compile_example(dir, "allreduce", static_link, &[])
}

/// Compiles `examples/c/<name>.c` into `dir`, with `extra` arguments at the end of the
/// command line; `None` (with a message) when there is no C compiler.
fn compile_example(dir: &Path, name: &str, static_link: bool, extra: &[String]) -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if !have(&cc) {
        eprintln!("SKIPPED: no C compiler ({cc}); apt-get install gcc to run the C example");
        return None;
    }
    let lib = lib_dir();
    let out = dir.join(if static_link {
        format!("{name}_static")
    } else {
        name.to_string()
    });
    let mut c = Command::new(&cc);
    c.args(["-O1", "-g", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root().join("ffi/include"))
        .arg(root().join(format!("examples/c/{name}.c")))
        .arg("-o")
        .arg(&out);
    if static_link {
        c.arg(lib.join("libferrocoll.a")).args([
            "-lpthread",
            "-ldl",
            "-lm",
            "-lrt",
            "-lutil",
            "-lgcc_s",
        ]);
        // A static library carries no dependencies: with the RDMA transports built in, the
        // program links their system libraries itself.
        if cfg!(feature = "ofi") {
            c.arg("-lfabric");
        }
        if cfg!(feature = "rdma") {
            c.args(["-libverbs", "-lrdmacm"]);
        }
    } else {
        c.arg("-L")
            .arg(&lib)
            .arg("-lferrocoll")
            .arg(format!("-Wl,-rpath,{}", lib.display()));
    }
    c.args(extra);
    let o = c.output().expect("run the C compiler");
    assert!(
        o.status.success(),
        "compiling the C example failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(out)
}

/// Runs `np` ranks of `cmd prefix… exe rank np idfile`, waits (killing them after `limit`)
/// and returns each rank's (success, stdout, stderr).
fn run_ranks(
    exe: &Path,
    wrapper: &[&str],
    np: usize,
    dir: &Path,
    limit: Duration,
) -> Vec<(bool, String, String)> {
    run_ranks_with(exe, wrapper, np, dir, limit, &[])
}

/// [`run_ranks`] with `env` added to every rank's environment.
fn run_ranks_with(
    exe: &Path,
    wrapper: &[&str],
    np: usize,
    dir: &Path,
    limit: Duration,
    env: &[(String, String)],
) -> Vec<(bool, String, String)> {
    let idfile = dir.join("unique.id");
    let mut children: Vec<Child> = (0..np)
        .map(|r| {
            let mut c = match wrapper.split_first() {
                Some((w, rest)) => {
                    let mut c = Command::new(w);
                    c.args(rest).arg(exe);
                    c
                }
                None => Command::new(exe),
            };
            c.arg(r.to_string())
                .arg(np.to_string())
                .arg(&idfile)
                .env("FERROCOLL_SOCKET_IFNAME", "lo")
                .env("FERROCOLL_TIMEOUT", "60")
                .env("FERROCOLL_SPIN_US", "0")
                .envs(env.iter().cloned())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a rank")
        })
        .collect();
    let t0 = Instant::now();
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        if t0.elapsed() > limit {
            for c in &mut children {
                let _ = c.kill();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .collect()
}

fn assert_all_ok(res: &[(bool, String, String)]) {
    let np = res.len();
    for (r, (ok, out, err)) in res.iter().enumerate() {
        assert!(
            *ok && out.contains(&format!("rank {r}/{np}: ok")),
            "rank {r} failed\nstdout: {out}\nstderr: {err}"
        );
    }
}

#[test]
fn c_example_runs_three_ranks() {
    let dir = scratch("shared");
    let Some(exe) = compile(&dir, false) else {
        return;
    };
    assert_all_ok(&run_ranks(&exe, &[], 3, &dir, Duration::from_secs(60)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn c_example_links_statically() {
    let dir = scratch("static");
    let Some(exe) = compile(&dir, true) else {
        return;
    };
    assert_all_ok(&run_ranks(&exe, &[], 2, &dir, Duration::from_secs(60)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn c_example_is_clean_under_valgrind() {
    if !have("valgrind") {
        eprintln!("SKIPPED: valgrind is not installed (apt-get install valgrind)");
        return;
    }
    let dir = scratch("valgrind");
    let Some(exe) = compile(&dir, false) else {
        return;
    };
    let vg = [
        "valgrind",
        "--quiet",
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--show-leak-kinds=definite",
    ];
    let res = run_ranks(&exe, &vg, 3, &dir, Duration::from_secs(240));
    for (r, (_, _, err)) in res.iter().enumerate() {
        assert!(
            !err.contains("Invalid read") && !err.contains("Invalid write"),
            "rank {r}: valgrind found invalid accesses:\n{err}"
        );
        assert!(!err.contains("definitely lost"), "rank {r} leaks:\n{err}");
    }
    assert_all_ok(&res);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `examples/c/device_allreduce.c`: device buffers from `cudaMalloc` and a `cudaStream_t`
/// passed to the collectives, as NCCL is called, with `FERROCOLL_DEVICE=cuda`. The CUDA
/// runtime and NCCL here are the TEST DOUBLE of `tests/doubles/vendor_double.c` (host memory,
/// streams run at synchronisation), which the program links and ferrocoll loads.
#[test]
fn c_device_example_runs_against_the_cuda_double() {
    let dir = scratch("device");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if !have(&cc) {
        eprintln!("SKIPPED: no C compiler ({cc})");
        return;
    }
    let double = dir.join("libnccl-double.so");
    let st = Command::new(&cc)
        .args(["-O1", "-shared", "-fPIC", "-DDOUBLE_NCCL", "-o"])
        .arg(&double)
        .arg(root().join("tests/doubles/vendor_double.c"))
        .status()
        .unwrap();
    assert!(st.success(), "building the double");
    let extra = vec![
        "-L".to_string(),
        dir.display().to_string(),
        "-l:libnccl-double.so".to_string(),
        format!("-Wl,-rpath,{}", dir.display()),
    ];
    let Some(exe) = compile_example(&dir, "device_allreduce", false, &extra) else {
        return;
    };
    let lib = double.display().to_string();
    let env = [
        ("FERROCOLL_DEVICE".to_string(), "cuda".to_string()),
        ("FERROCOLL_NCCL_LIBRARY".to_string(), lib.clone()),
        ("FERROCOLL_CUDART_LIBRARY".to_string(), lib),
    ];
    // Three ranks: the group's sends and receives then pair each rank with two peers.
    let res = run_ranks_with(&exe, &[], 3, &dir, Duration::from_secs(60), &env);
    assert_all_ok(&res);
    let _ = std::fs::remove_dir_all(&dir);
}
