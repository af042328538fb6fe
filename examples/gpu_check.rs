//! The real-GPU check of the composed path (run by `benches/gpu_check.sh`): two processes
//! share one CUDA device, each the only rank of its own NCCL communicator (each process
//! poses as its own host, `FERROCOLL_HOSTNAME`), and ferrocoll carries the all-reduce between
//! them from host staging buffers. Every result is checked exactly; the median time per call
//! of the composed all-reduce is printed next to raw NCCL's (its 1-rank all-reduce on the
//! same buffers: the device part alone).
//!
//!     cargo run --release --example gpu_check -- [MiB] [iterations]
//!
//! Without launcher variables it starts its two ranks itself. It needs a CUDA device, NCCL
//! and the CUDA runtime (`FERROCOLL_NCCL_LIBRARY`, `FERROCOLL_CUDART_LIBRARY` or the default
//! names); where they fail it says so and exits 1.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Instant;

use ferrocoll::accel::composed::{Backend, DeviceComm};
use ferrocoll::accel::cudart::CudaRuntime;
use ferrocoll::accel::nccl::Nccl;
use ferrocoll::accel::{CopyKind, DeviceBuffer, Runtime};
use ferrocoll::{Communicator, DataType, ReduceOp};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let iters: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    if std::env::var_os("FERROCOLL_RANK").is_none() {
        // The launcher: two ranks, each posing as its own host.
        let me = std::env::current_exe().expect("own path");
        let env = vec![("FC_GPU_CHECK".to_string(), "1".to_string())];
        let st = ferrocoll::launch::spawn_local_command(
            2,
            || {
                let mut c = std::process::Command::new(&me);
                c.args(&args[1..]);
                c
            },
            &[],
            &env,
        )
        .unwrap_or_else(|e| fail(&format!("cannot start the ranks: {e}")));
        std::process::exit(if st.iter().all(|s| s.success()) { 0 } else { 1 });
    }
    if let Err(e) = rank(mib, iters) {
        fail(&e);
    }
}

fn fail(why: &str) -> ! {
    eprintln!("gpu_check: {why}");
    std::process::exit(1);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rank(mib: usize, iters: usize) -> Result<(), String> {
    let s = |e: ferrocoll::Error| e.to_string();
    let v = |e: ferrocoll::error::VendorError| e.to_string();
    // Each rank is its own host, so each gets a 1-rank NCCL communicator on the shared GPU.
    let me: usize = std::env::var("FERROCOLL_RANK")
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    let mut cfg = ferrocoll::Config::from_env().map_err(s)?;
    cfg.hostname = Some(format!("gpu-check-{me}"));
    let env = ferrocoll::config::launcher::from_env()
        .map_err(s)?
        .ok_or("no launcher variables")?;
    let comm = Communicator::from_launch(&env, cfg).map_err(s)?;
    let nccl = Arc::new(Nccl::open(None).map_err(v)?);
    let cuda = Arc::new(CudaRuntime::open(None).map_err(v)?);
    let n = cuda.device_count().map_err(v)?;
    if n == 0 {
        return Err("no CUDA device".into());
    }
    let backend = Backend::Nccl(nccl.clone(), cuda.clone());
    let mut dc = DeviceComm::new(&comm, backend.clone(), 0, None).map_err(s)?;
    let count = mib << 18;
    let bytes = count * 4;
    let st = cuda.stream_create().map_err(v)?;
    let send = cuda.malloc(bytes).map_err(v)?;
    let recv = cuda.malloc(bytes).map_err(v)?;
    let host: Vec<f32> = (0..count).map(|i| ((me * 7 + i * 3) % 11) as f32).collect();
    let want: Vec<f32> = (0..count)
        .map(|i| ((i * 3) % 11) as f32 + ((7 + i * 3) % 11) as f32)
        .collect();
    // SAFETY: `send` holds `bytes`; synchronised before `host` goes.
    unsafe {
        cuda.copy_async(
            send,
            host.as_ptr() as *const c_void,
            bytes,
            CopyKind::HostToDevice,
            st,
        )
        .map_err(v)?;
        cuda.synchronize(st).map_err(v)?;
    }
    let mut composed = Vec::new();
    for i in 0..iters + 2 {
        comm.barrier().map_err(s)?;
        let t0 = Instant::now();
        // SAFETY: both device buffers hold `count` f32; the stream is live.
        unsafe {
            dc.all_reduce(
                DeviceBuffer::cuda(send, 0),
                DeviceBuffer::cuda(recv, 0),
                count,
                DataType::F32,
                ReduceOp::Sum,
                st,
            )
            .map_err(s)?;
            cuda.synchronize(st).map_err(v)?;
        }
        if i >= 2 {
            composed.push(t0.elapsed().as_secs_f64());
        }
    }
    let mut got = vec![0f32; count];
    // SAFETY: `recv` holds `bytes`; synchronised before `got` is read.
    unsafe {
        cuda.copy_async(
            got.as_mut_ptr() as *mut c_void,
            recv,
            bytes,
            CopyKind::DeviceToHost,
            st,
        )
        .map_err(v)?;
        cuda.synchronize(st).map_err(v)?;
    }
    if got != want {
        let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!(
            "wrong result at {i}: {} (want {})",
            got[i], want[i]
        ));
    }
    // Raw NCCL: its 1-rank all-reduce on the same buffers (the device part alone).
    let id = nccl.unique_id().map_err(v)?;
    let raw = ferrocoll::accel::nccl::NcclComm::init_rank(nccl.clone(), 1, &id, 0).map_err(v)?;
    let mut alone = Vec::new();
    for i in 0..iters + 2 {
        let t0 = Instant::now();
        // SAFETY: as above.
        unsafe {
            raw.all_reduce(send, recv, count, DataType::F32, ReduceOp::Sum, st)
                .map_err(v)?;
            cuda.synchronize(st).map_err(v)?;
        }
        if i >= 2 {
            alone.push(t0.elapsed().as_secs_f64());
        }
    }
    if me == 0 {
        println!(
            "{{\"backend\": \"{}\", \"mib\": {mib}, \"iters\": {iters}, \"exact\": true, \
             \"composed_ms\": {:.3}, \"nccl_1rank_ms\": {:.3}}}",
            backend.describe(),
            median(composed) * 1e3,
            median(alone) * 1e3
        );
    }
    // SAFETY: allocated above, not used afterwards.
    unsafe {
        let _ = cuda.free(send);
        let _ = cuda.free(recv);
    }
    Ok(())
}
