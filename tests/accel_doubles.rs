//! The vendor paths end to end against TEST DOUBLES of NCCL + the CUDA runtime and of
//! HCCL + the ACL runtime (`tests/doubles/vendor_double.c`, compiled here with `cc`): C
//! libraries with the vendors' public signatures over host memory, where a stream is an
//! in-order queue run at synchronisation. They are not the vendors' libraries and no device
//! is used; they prove argument marshaling, group calls, the dtype and operator tables
//! (HCCL's order differs from NCCL's: a wrong table gives wrong sums here), the error,
//! asynchronous-error and abort paths, and the composition:
//! - 2 ranks on one host with each double;
//! - 3 emulated hosts × 2 ranks (network namespaces, tests/netns/accel_mixed.sh): host A
//!   "NVIDIA" (the NCCL double), host B "Ascend" (the HCCL double), host C CPU only; every
//!   collective exact and bit-identical on all 6 ranks, and again with fp8 between hosts.
//!
//! The binary re-runs itself as the ranks (`FC_ACCEL` names the scenario; `harness = false`).

mod common;

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::logs::RankLogs;
use ferrocoll::accel::composed::{Backend, DeviceComm};
use ferrocoll::accel::nccl::NcclComm;
use ferrocoll::accel::{CopyKind, DeviceBuffer, MemoryKind, RawStream, Runtime};
use ferrocoll::error::VendorError;
use ferrocoll::launch::spawn_local_command;
use ferrocoll::{Codec, Communicator, DataType, Error, ReduceOp};

fn main() {
    if let Ok(what) = std::env::var("FC_ACCEL") {
        std::process::exit(match rank(&what) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("rank failed: {e}");
                1
            }
        });
    }
    common::harness::run_tests(&[
        ("nccl_double_two_ranks_every_case", || two_ranks("cuda")),
        ("hccl_double_two_ranks_every_case", || two_ranks("npu")),
        ("vendor_errors_async_errors_and_abort", vendor_errors),
        ("mixed_nvidia_ascend_cpu_hosts", mixed_hosts),
        ("the_probe_sweeps_device_memory", probe_on_devices),
        (
            "the_gpu_check_program_runs_on_the_double",
            gpu_check_on_the_double,
        ),
    ]);
}

/// The doubles, compiled once per test process: (NCCL + CUDA, HCCL + ACL), or why not.
fn doubles() -> Result<&'static (PathBuf, PathBuf), String> {
    static BUILT: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/doubles/vendor_double.c");
            let dir =
                std::env::temp_dir().join(format!("ferrocoll-doubles-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for v in ["NCCL", "HCCL"] {
                let lib = dir.join(format!("lib{}-double.so", v.to_lowercase()));
                let st = Command::new("cc")
                    .args(["-O1", "-shared", "-fPIC", &format!("-DDOUBLE_{v}"), "-o"])
                    .arg(&lib)
                    .arg(src)
                    .status()
                    .map_err(|e| format!("cc: {e}"))?;
                if !st.success() {
                    return Err(format!("cc failed on the {v} double: {st}"));
                }
                out.push(lib);
            }
            Ok((out[0].clone(), out[1].clone()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The variables that point a rank at the double for `device`.
fn double_env(device: &str) -> Vec<(String, String)> {
    let (nccl, hccl) = doubles().expect("doubles built");
    let mut env = vec![("FC_ACCEL_DEVICE".to_string(), device.to_string())];
    match device {
        "cuda" => {
            env.push(("FERROCOLL_NCCL_LIBRARY".into(), nccl.display().to_string()));
            env.push((
                "FERROCOLL_CUDART_LIBRARY".into(),
                nccl.display().to_string(),
            ));
        }
        "npu" => {
            env.push(("FERROCOLL_HCCL_LIBRARY".into(), hccl.display().to_string()));
            env.push(("FERROCOLL_ACL_LIBRARY".into(), hccl.display().to_string()));
        }
        _ => {}
    }
    env
}

fn skip_without_cc(test: &str) -> bool {
    if let Err(why) = doubles() {
        println!("SKIPPED: {test}: the doubles cannot be built ({why})");
        return true;
    }
    false
}

fn me() -> Command {
    Command::new(std::env::current_exe().expect("test binary path"))
}

fn run_local(what: &str, np: usize, env: Vec<(String, String)>) {
    let logs = RankLogs::new(&format!("accel {what}"));
    let mut vars = env;
    vars.push(("FC_ACCEL".into(), what.into()));
    vars.push(("FERROCOLL_TIMEOUT".into(), "30".into()));
    let st = spawn_local_command(np, logs.command(me), &[], &vars).unwrap();
    for (r, s) in st.iter().enumerate() {
        assert!(s.success(), "rank {r}: {s:?}\n{}", logs.dump());
    }
}

fn two_ranks(device: &str) {
    if skip_without_cc("two_ranks") {
        return;
    }
    run_local("cases", 2, double_env(device));
}

fn vendor_errors() {
    if skip_without_cc("vendor_errors") {
        return;
    }
    let mut env = double_env("cuda");
    // A peer that never comes is noticed after half a second, not the double's 10 s.
    env.push(("FC_DOUBLE_TIMEOUT_MS".into(), "500".into()));
    run_local("errors", 2, env.clone());
    env.push(("FC_DOUBLE_FAIL".into(), "ncclAllReduce".into()));
    run_local("inject", 1, env);
}

fn mixed_hosts() {
    if skip_without_cc("mixed_hosts") {
        return;
    }
    let (nccl, hccl) = doubles().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/accel_mixed.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(std::env::current_exe().unwrap())
        .arg(nccl)
        .arg(hccl)
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => assert!(text.contains("ok   identical"), "{text}"),
        Some(77) => println!("SKIPPED: mixed_nvidia_ascend_cpu_hosts: {}", text.trim()),
        c => panic!(
            "mixed hosts failed ({c:?}):\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `ferrocoll-probe --device cuda|npu` against the doubles: the header names the library
/// and its version, and every size is exact.
fn probe_on_devices() {
    if skip_without_cc("probe_on_devices") {
        return;
    }
    for (device, names) in [("cuda", "NCCL 2.23.4"), ("npu", "HCCL")] {
        for kind in ["all_reduce", "all_gather", "reduce_scatter"] {
            let out = Command::new(env!("CARGO_BIN_EXE_ferrocoll-probe"))
                .args([
                    kind, "--device", device, "--np", "2", "-b", "1K", "-e", "256K",
                ])
                .args(["-f", "16", "-n", "2", "-w", "1"])
                .envs(double_env(device))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{device} {kind}: {text}{err}");
            let head = text.lines().next().unwrap_or("");
            assert!(
                head.contains(&format!("device {device} ({names}")),
                "{head}"
            );
            assert!(text.contains("Out of bounds values : 0 OK"), "{text}");
        }
    }
}

/// `examples/gpu_check.rs`, the program `benches/gpu_check.sh` runs on a real GPU, end to
/// end against the NCCL double: its two processes, exact results, the JSON line. (The
/// timings mean nothing here.) The example is built by `cargo test --examples` and by
/// `.ci/test.sh`.
fn gpu_check_on_the_double() {
    if skip_without_cc("gpu_check") {
        return;
    }
    // target/<profile>/deps/accel_doubles-… → target/<profile>/examples/gpu_check
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .with_file_name("examples")
        .join("gpu_check");
    if !bin.exists() {
        let why = format!(
            "{} is not built (cargo build --example gpu_check)",
            bin.display()
        );
        assert!(
            std::env::var_os("FERROCOLL_REQUIRE_VENDOR_LIBS").is_none(),
            "{why}"
        );
        println!("SKIPPED: the_gpu_check_program_runs_on_the_double: {why}");
        return;
    }
    let out = Command::new(&bin)
        .args(["1", "2"])
        .envs(double_env("cuda"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text.lines().last().unwrap_or("");
    assert!(line.contains("\"backend\": \"NCCL 2.23.4\""), "{text}");
    assert!(line.contains("\"exact\": true"), "{text}");
}

// ------------------------------------------------------------------------------------------
// The ranks' side.

/// A device buffer of the backend (host memory on CPU hosts), freed on drop.
struct DevBuf<'a> {
    rt: Option<&'a dyn Runtime>,
    p: *mut c_void,
    host: Vec<u8>,
}

impl<'a> DevBuf<'a> {
    fn new(rt: Option<&'a dyn Runtime>, bytes: usize) -> DevBuf<'a> {
        let mut host = vec![0u8; bytes.max(1)];
        let p = match rt {
            Some(r) => r.malloc(bytes).unwrap(),
            None => host.as_mut_ptr() as *mut c_void,
        };
        DevBuf { rt, p, host }
    }

    /// The buffer as `dc`'s device calls take it.
    fn on(&self, dc: &DeviceComm) -> DeviceBuffer {
        DeviceBuffer {
            ptr: self.p,
            memory: dc.memory(),
        }
    }

    fn put(&mut self, b: &[u8], s: RawStream) {
        match self.rt {
            // SAFETY: `p` holds at least `b.len()` bytes; synchronised before `b` goes.
            Some(r) => unsafe {
                r.copy_async(self.p, b.as_ptr() as _, b.len(), CopyKind::HostToDevice, s)
                    .unwrap();
                r.synchronize(s).unwrap();
            },
            None => self.host[..b.len()].copy_from_slice(b),
        }
    }

    fn get(&mut self, n: usize, s: RawStream) -> Vec<u8> {
        match self.rt {
            Some(r) => {
                let mut out = vec![0u8; n];
                // SAFETY: as in `put`.
                unsafe {
                    r.copy_async(out.as_mut_ptr() as _, self.p, n, CopyKind::DeviceToHost, s)
                        .unwrap();
                    r.synchronize(s).unwrap();
                }
                out
            }
            None => self.host[..n].to_vec(),
        }
    }
}

impl Drop for DevBuf<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.rt {
            // SAFETY: from this runtime's malloc, not used afterwards.
            let _ = unsafe { r.free(self.p) };
        }
    }
}

fn runtime_of(b: &Backend) -> Option<&dyn Runtime> {
    match b {
        Backend::Nccl(_, r) => Some(r.as_ref()),
        Backend::Hccl(_, r) => Some(r.as_ref()),
        Backend::Cpu => None,
    }
}

/// Rank `r`'s element `i`: a small integer, so every sum is exact in every type.
fn value(r: usize, i: usize, op: ReduceOp) -> f64 {
    match op {
        ReduceOp::Prod => ((r + i) % 3 + 1) as f64,
        _ => ((r * 7 + i * 3) % 11) as f64 + 1.0,
    }
}

fn encode(dt: DataType, v: &[f64]) -> Vec<u8> {
    use half::{bf16, f16};
    let mut out = Vec::new();
    for &x in v {
        match dt {
            DataType::F32 => out.extend((x as f32).to_le_bytes()),
            DataType::F64 => out.extend(x.to_le_bytes()),
            DataType::F16 => out.extend(f16::from_f64(x).to_le_bytes()),
            DataType::BF16 => out.extend(bf16::from_f64(x).to_le_bytes()),
            DataType::I32 => out.extend((x as i32).to_le_bytes()),
            DataType::I64 => out.extend((x as i64).to_le_bytes()),
            DataType::U8 => out.push(x as u8),
            DataType::U32 => out.extend((x as u32).to_le_bytes()),
            other => panic!("no test encoding for {other:?}"),
        }
    }
    out
}

fn reduce(op: ReduceOp, world: usize, xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    match op {
        ReduceOp::Sum => v.iter().sum(),
        ReduceOp::Avg => v.iter().sum::<f64>() / world as f64,
        ReduceOp::Prod => v.iter().product(),
        ReduceOp::Max => v.iter().cloned().fold(f64::MIN, f64::max),
        ReduceOp::Min => v.iter().cloned().fold(f64::MAX, f64::min),
    }
}

/// FNV-1a of the result bytes: the digest every rank reports for comparison.
fn digest(acc: &mut u64, b: &[u8]) {
    for &x in b {
        *acc = (*acc ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
    }
}

fn rank(what: &str) -> Result<(), String> {
    let s = |e: Error| e.to_string();
    let comm = Communicator::from_env().map_err(s)?;
    let device = std::env::var("FC_ACCEL_DEVICE").unwrap_or_else(|_| "cpu".into());
    let backend = Backend::load(&device).map_err(s)?;
    match what {
        "errors" => return errors_rank(&comm, &backend),
        "inject" => return inject_rank(&backend),
        _ => {}
    }
    let rt = runtime_of(&backend);
    let stream: RawStream = match rt {
        Some(r) => r.stream_create().map_err(|e| e.to_string())?,
        None => std::ptr::null_mut(),
    };
    let (me, n) = (comm.rank(), comm.world_size());
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let codecs: &[Option<Codec>] = if what == "mixed" {
        &[None, Some(Codec::Fp8E4M3 { block: 256 })]
    } else {
        &[None]
    };
    for &codec in codecs {
        let mut dc = DeviceComm::new(&comm, backend.clone(), 0, codec).map_err(s)?;
        let cases: &[(DataType, ReduceOp, usize)] = &[
            (DataType::F32, ReduceOp::Sum, 1000),
            (DataType::F32, ReduceOp::Sum, 1001),
            (DataType::F32, ReduceOp::Avg, 600),
            (DataType::F32, ReduceOp::Max, 600),
            (DataType::F64, ReduceOp::Min, 600),
            (DataType::I32, ReduceOp::Sum, 1001),
            (DataType::I64, ReduceOp::Sum, 600),
            (DataType::U8, ReduceOp::Max, 600),
            (DataType::U32, ReduceOp::Sum, 600),
            (DataType::F16, ReduceOp::Prod, 600),
            (DataType::BF16, ReduceOp::Sum, 600),
        ];
        for &(dt, op, count) in cases {
            let es = dt.size();
            let mine: Vec<f64> = (0..count).map(|i| value(me, i, op)).collect();
            let want: Vec<f64> = (0..count)
                .map(|i| reduce(op, n, (0..n).map(|r| value(r, i, op))))
                .collect();
            let mut send = DevBuf::new(rt, count * es);
            let mut recv = DevBuf::new(rt, count * es);
            send.put(&encode(dt, &mine), stream);
            // SAFETY: both buffers hold `count` elements of `dt` on this backend.
            unsafe { dc.all_reduce(send.on(&dc), recv.on(&dc), count, dt, op, stream) }
                .map_err(|e| format!("all-reduce {dt:?} {op:?} {count}: {e}"))?;
            let got = recv.get(count * es, stream);
            digest(&mut hash, &got);
            let compressed = codec.is_some()
                && dt == DataType::F32
                && matches!(op, ReduceOp::Sum | ReduceOp::Avg);
            if compressed {
                let g: Vec<f32> = got
                    .chunks(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                let err = g
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| ((*a as f64 - b) / b).abs())
                    .fold(0.0, f64::max);
                if err > 0.07 {
                    return Err(format!("fp8 all-reduce {op:?}: relative error {err}"));
                }
            } else if got != encode(dt, &want) {
                let w = encode(dt, &want);
                let i = got.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(0) / es;
                return Err(format!(
                    "all-reduce {dt:?} {op:?} {count}: wrong result from element {i}: got {:?}, want {:?}",
                    &got[i * es..(i + 1) * es],
                    &w[i * es..(i + 1) * es]
                ));
            }
        }
        // All-gather and reduce-scatter.
        for &(dt, count) in &[(DataType::F32, 257usize), (DataType::I32, 100)] {
            let es = dt.size();
            let mine: Vec<f64> = (0..count).map(|i| value(me, i, ReduceOp::Sum)).collect();
            let want: Vec<f64> = (0..n)
                .flat_map(|r| (0..count).map(move |i| value(r, i, ReduceOp::Sum)))
                .collect();
            let mut send = DevBuf::new(rt, count * es);
            let mut recv = DevBuf::new(rt, n * count * es);
            send.put(&encode(dt, &mine), stream);
            // SAFETY: `send` holds count, `recv` world × count elements.
            unsafe { dc.all_gather(send.on(&dc), recv.on(&dc), count, dt, stream) }.map_err(s)?;
            let got = recv.get(n * count * es, stream);
            digest(&mut hash, &got);
            if got != encode(dt, &want) {
                return Err(format!("all-gather {dt:?}: wrong result"));
            }
        }
        for &(dt, op, count) in &[
            (DataType::F32, ReduceOp::Sum, 300usize),
            (DataType::I32, ReduceOp::Max, 64),
            (DataType::F32, ReduceOp::Avg, 128),
        ] {
            let es = dt.size();
            let mine: Vec<f64> = (0..n * count).map(|i| value(me, i, op)).collect();
            let want: Vec<f64> = (0..count)
                .map(|i| reduce(op, n, (0..n).map(|r| value(r, me * count + i, op))))
                .collect();
            let mut send = DevBuf::new(rt, n * count * es);
            let mut recv = DevBuf::new(rt, count * es);
            send.put(&encode(dt, &mine), stream);
            // SAFETY: `send` holds world × count, `recv` count elements.
            unsafe { dc.reduce_scatter(send.on(&dc), recv.on(&dc), count, dt, op, stream) }
                .map_err(s)?;
            let got = recv.get(count * es, stream);
            if got != encode(dt, &want) {
                return Err(format!("reduce-scatter {dt:?} {op:?}: wrong result"));
            }
            // Each rank holds its own chunk: gather the digests through the check below.
            let mut all = vec![0u8; n * count * es];
            comm.all_gather(&got, &mut all).map_err(s)?;
            digest(&mut hash, &all);
        }
        rooted_and_staged(&comm, &mut dc, rt, stream, &mut hash)?;
        wrong_memory(&mut dc, rt, stream)?;
        dc.async_error().map_err(s)?;
    }
    if let Some(dir) = std::env::var_os("FC_ACCEL_OUT") {
        let line = format!("{device} {} {hash:016x}\n", backend.describe());
        std::fs::write(Path::new(&dir).join(format!("rank-{me}")), line)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Broadcast, reduce, all-to-all and send/recv on device buffers, each checked exactly.
fn rooted_and_staged(
    comm: &Communicator,
    dc: &mut DeviceComm,
    rt: Option<&dyn Runtime>,
    stream: RawStream,
    hash: &mut u64,
) -> Result<(), String> {
    let s = |e: Error| e.to_string();
    let (me, n) = (comm.rank(), comm.world_size());
    let dt = DataType::I32;
    // Broadcast: sharded (256 divides among 2 local ranks) and not (257), in place and not.
    for &(count, root, in_place) in &[(256usize, 0usize, true), (257, n - 1, false)] {
        let mine: Vec<f64> = (0..count).map(|i| value(me, i, ReduceOp::Sum)).collect();
        let want: Vec<f64> = (0..count).map(|i| value(root, i, ReduceOp::Sum)).collect();
        let mut send = DevBuf::new(rt, count * 4);
        let mut recv = DevBuf::new(rt, count * 4);
        send.put(&encode(dt, &mine), stream);
        recv.put(&encode(dt, &vec![-1.0; count]), stream);
        let from = if in_place { recv.on(dc) } else { send.on(dc) };
        if in_place && me == root {
            recv.put(&encode(dt, &mine), stream);
        }
        // SAFETY: both hold `count` elements.
        unsafe { dc.broadcast(from, recv.on(dc), count, dt, root, stream) }.map_err(s)?;
        let got = recv.get(count * 4, stream);
        if got != encode(dt, &want) {
            return Err(format!("broadcast of {count} from {root}: wrong result"));
        }
        digest(hash, &got);
    }
    // Reduce to the last rank; the others pass no receive buffer, as NCCL allows.
    for &(op, count) in &[(ReduceOp::Sum, 300usize), (ReduceOp::Max, 61)] {
        let root = n - 1;
        let mine: Vec<f64> = (0..count).map(|i| value(me, i, op)).collect();
        let want: Vec<f64> = (0..count)
            .map(|i| reduce(op, n, (0..n).map(|r| value(r, i, op))))
            .collect();
        let mut send = DevBuf::new(rt, count * 4);
        let mut recv = DevBuf::new(rt, count * 4);
        send.put(&encode(dt, &mine), stream);
        let out = if me == root {
            recv.on(dc)
        } else {
            DeviceBuffer {
                ptr: std::ptr::null_mut(),
                memory: dc.memory(),
            }
        };
        // SAFETY: `send` holds `count` elements, and `recv` on the root.
        unsafe { dc.reduce(send.on(dc), out, count, dt, op, root, stream) }.map_err(s)?;
        if me == root && recv.get(count * 4, stream) != encode(dt, &want) {
            return Err(format!("reduce {op:?} of {count}: wrong result"));
        }
    }
    // All-to-all: block j of rank r holds value(r, j * count + i).
    let count = 33;
    let mine: Vec<f64> = (0..n * count)
        .map(|i| value(me, i, ReduceOp::Sum))
        .collect();
    let want: Vec<f64> = (0..n)
        .flat_map(|r| (0..count).map(move |i| value(r, me * count + i, ReduceOp::Sum)))
        .collect();
    let mut send = DevBuf::new(rt, n * count * 4);
    let mut recv = DevBuf::new(rt, n * count * 4);
    send.put(&encode(dt, &mine), stream);
    // SAFETY: both hold world × count elements.
    unsafe { dc.all_to_all(send.on(dc), recv.on(dc), count, dt, stream) }.map_err(s)?;
    if recv.get(n * count * 4, stream) != encode(dt, &want) {
        return Err("all-to-all: wrong result".into());
    }
    // Send/recv around the ring (even ranks send first, odd ranks receive first).
    let (next, prev) = ((me + 1) % n, (me + n - 1) % n);
    let count = 100;
    let mine: Vec<f64> = (0..count).map(|i| value(me, i, ReduceOp::Sum)).collect();
    let want: Vec<f64> = (0..count).map(|i| value(prev, i, ReduceOp::Sum)).collect();
    let mut send = DevBuf::new(rt, count * 4);
    let mut recv = DevBuf::new(rt, count * 4);
    send.put(&encode(dt, &mine), stream);
    for step in 0..2 {
        // SAFETY: both hold `count` elements.
        unsafe {
            if (step == 0) == (me % 2 == 0) {
                dc.send(send.on(dc), count, dt, next, stream)
            } else {
                dc.recv(recv.on(dc), count, dt, prev, stream)
            }
        }
        .map_err(s)?;
    }
    if recv.get(count * 4, stream) != encode(dt, &want) {
        return Err("send/recv: wrong result".into());
    }
    Ok(())
}

/// Buffers declared in the wrong memory, or found elsewhere by the runtime, are refused
/// before any work is queued, naming the buffer.
fn wrong_memory(
    dc: &mut DeviceComm,
    rt: Option<&dyn Runtime>,
    stream: RawStream,
) -> Result<(), String> {
    let buf = DevBuf::new(rt, 64);
    let other = match dc.memory() {
        MemoryKind::Host => MemoryKind::Cuda(0),
        _ => MemoryKind::Host,
    };
    let declared = DeviceBuffer {
        ptr: buf.p,
        memory: other,
    };
    let mut cases = vec![("declared", declared)];
    // The CUDA runtime can tell: host memory declared as the device's is found out.
    if let (MemoryKind::Cuda(_), Some(_)) = (dc.memory(), rt) {
        let mut host = vec![0u8; 64];
        cases.push((
            "found",
            DeviceBuffer {
                ptr: host.as_mut_ptr() as *mut c_void,
                memory: dc.memory(),
            },
        ));
        // SAFETY: refused before anything is read or written (checked below).
        let r = unsafe {
            dc.all_reduce(
                cases[1].1,
                buf.on(dc),
                16,
                DataType::F32,
                ReduceOp::Sum,
                stream,
            )
        };
        check_wrong(r, "found", "sendbuff")?;
        cases.pop();
    }
    for (what, b) in cases {
        // SAFETY: refused before anything is read or written (checked below).
        let r = unsafe { dc.all_reduce(buf.on(dc), b, 16, DataType::F32, ReduceOp::Sum, stream) };
        check_wrong(r, what, "recvbuff")?;
    }
    Ok(())
}

fn check_wrong(r: ferrocoll::Result<()>, case: &str, buffer: &str) -> Result<(), String> {
    match r {
        Err(Error::Vendor(VendorError::WrongMemory { what, .. })) if what == buffer => Ok(()),
        other => Err(format!(
            "{case} wrong memory: want WrongMemory for {buffer}, got {other:?}"
        )),
    }
}

/// The error paths through the NCCL double: an injected failure, group calls, an
/// asynchronous error from a peer that never comes, and abort.
fn errors_rank(comm: &Communicator, backend: &Backend) -> Result<(), String> {
    let Backend::Nccl(nccl, cuda) = backend else {
        return Err("the errors scenario runs on the NCCL double".into());
    };
    let s = |e: VendorError| e.to_string();
    let me = comm.rank();
    let mut id = [0u8; 128];
    if me == 0 {
        id = nccl.unique_id().map_err(s)?.internal;
    }
    comm.broadcast(&mut id, 0).map_err(|e| e.to_string())?;
    let id = ferrocoll::accel::nccl::NcclUniqueId { internal: id };
    let vc = NcclComm::init_rank(nccl.clone(), 2, &id, me).map_err(s)?;
    if vc.rank_and_size().map_err(s)? != (me, 2) {
        return Err("rank and size".into());
    }
    let st = cuda.stream_create().map_err(s)?;
    let a = cuda.malloc(16).map_err(s)?;
    let b = cuda.malloc(16).map_err(s)?;
    // Group calls: two all-reduces issued at the group's end, then run in order.
    let ones = [1.0f32; 4];
    // SAFETY: 16-byte device buffers, synchronised before `ones` goes.
    unsafe {
        cuda.copy_async(a, ones.as_ptr() as _, 16, CopyKind::HostToDevice, st)
            .map_err(s)?;
        nccl.group_start().map_err(s)?;
        vc.all_reduce(a, b, 4, DataType::F32, ReduceOp::Sum, st)
            .map_err(s)?;
        vc.all_reduce(b, a, 4, DataType::F32, ReduceOp::Sum, st)
            .map_err(s)?;
        nccl.group_end().map_err(s)?;
        let mut out = [0f32; 4];
        cuda.copy_async(out.as_mut_ptr() as _, a, 16, CopyKind::DeviceToHost, st)
            .map_err(s)?;
        cuda.synchronize(st).map_err(s)?;
        if out != [4.0; 4] {
            return Err(format!("grouped all-reduces gave {out:?}"));
        }
    }
    // An unknown data type code never reaches the double: fp8 below NCCL 2.24 is refused.
    // SAFETY: as above (the call is refused before anything is queued).
    match unsafe { vc.all_reduce(a, b, 4, DataType::F8E4M3, ReduceOp::Sum, st) } {
        Err(VendorError::Unsupported {
            library: "NCCL", ..
        }) => {}
        other => return Err(format!("fp8 on NCCL 2.23: {other:?}")),
    }
    comm.barrier().map_err(|e| e.to_string())?;
    if me == 1 {
        // Rank 1 leaves: rank 0's next collective finds no peer.
        return Ok(());
    }
    // SAFETY: as above.
    unsafe {
        vc.all_reduce(a, b, 4, DataType::F32, ReduceOp::Sum, st)
            .map_err(s)?;
        match cuda.synchronize(st) {
            Err(VendorError::Call {
                call: "cudaStreamSynchronize",
                ..
            }) => {}
            other => return Err(format!("a collective without its peer: {other:?}")),
        }
    }
    match vc.async_error() {
        Err(VendorError::Call { name, .. }) if name == "ncclRemoteError" => {}
        other => return Err(format!("async error: {other:?}")),
    }
    vc.abort().map_err(s)
}

/// A failure of the vendor's call (injected into the double with `FC_DOUBLE_FAIL`) is a
/// typed error carrying the vendor's own message.
fn inject_rank(backend: &Backend) -> Result<(), String> {
    let Backend::Nccl(nccl, cuda) = backend else {
        return Err("the inject scenario runs on the NCCL double".into());
    };
    let s = |e: VendorError| e.to_string();
    let vc = NcclComm::init_rank(nccl.clone(), 1, &nccl.unique_id().map_err(s)?, 0).map_err(s)?;
    let st = cuda.stream_create().map_err(s)?;
    let a = cuda.malloc(16).map_err(s)?;
    // SAFETY: a 16-byte device buffer, in place.
    match unsafe { vc.all_reduce(a, a, 4, DataType::F32, ReduceOp::Sum, st) } {
        Err(VendorError::Call {
            call: "ncclAllReduce",
            message,
            ..
        }) if message.contains("FC_DOUBLE_FAIL") => Ok(()),
        other => Err(format!("injected failure: {other:?}")),
    }
}
