//! `--device cuda|npu`: sweeps on device memory through the composed communicator
//! (`ferrocoll::accel::composed`): the vendor's library within each host (NCCL with the CUDA
//! runtime, HCCL with ACL), ferrocoll between hosts. all_reduce, all_gather and
//! reduce_scatter of f32; each size's result is checked exactly (small integers, whose sums
//! are exact) and compared bit for bit across the ranks. Where the library cannot be loaded
//! or its communicator made, the error (with the vendor's own message) ends the run.

use std::ffi::c_void;
use std::time::Instant;

use ferrocoll::accel::composed::{Backend, DeviceComm};
use ferrocoll::accel::{CopyKind, DeviceBuffer, RawStream, Runtime};
use ferrocoll::{Collective, Communicator, DataType, ReduceOp};

use crate::cli::SweepArgs;
use crate::ranks;
use crate::sweep::busbw_factor;
use crate::Res;

/// Rank `r`'s element `i`.
fn value(r: usize, i: usize) -> f32 {
    ((r * 7 + i * 3) % 11) as f32
}

/// A device buffer of `bytes`, freed on drop.
struct Dev<'a>(&'a dyn Runtime, *mut c_void);

impl Drop for Dev<'_> {
    fn drop(&mut self) {
        // SAFETY: from this runtime's malloc; every call synchronised its stream.
        let _ = unsafe { self.0.free(self.1) };
    }
}

/// Copies `v` to `d` and waits.
fn put(rt: &dyn Runtime, d: &Dev, v: &[f32], s: RawStream) -> Res<()> {
    // SAFETY: `d` holds at least `v`'s bytes; synchronised before `v` goes.
    unsafe {
        rt.copy_async(
            d.1,
            v.as_ptr() as *const c_void,
            4 * v.len(),
            CopyKind::HostToDevice,
            s,
        )?;
        rt.synchronize(s)?;
    }
    Ok(())
}

/// Copies `n` f32 out of `d`.
fn get(rt: &dyn Runtime, d: &Dev, n: usize, s: RawStream) -> Res<Vec<f32>> {
    let mut v = vec![0f32; n];
    // SAFETY: as in `put`.
    unsafe {
        rt.copy_async(
            v.as_mut_ptr() as *mut c_void,
            d.1,
            4 * n,
            CopyKind::DeviceToHost,
            s,
        )?;
        rt.synchronize(s)?;
    }
    Ok(v)
}

/// Runs the device sweep of `kind` on this rank; rank 0 prints. `Ok(false)` on a wrong or
/// differing result.
pub fn run(comm: &Communicator, kind: Collective, a: &SweepArgs) -> Res<bool> {
    let (n, me) = (comm.world_size(), comm.rank());
    let lead = me == 0;
    if !matches!(
        kind,
        Collective::AllReduce | Collective::AllGather | Collective::ReduceScatter
    ) {
        return Err(format!(
            "--device {} runs all_reduce, all_gather and reduce_scatter",
            a.device
        )
        .into());
    }
    if a.datatype.0 != [DataType::F32] || a.op.0 != [ReduceOp::Sum] {
        return Err("--device sweeps f32 sums: use -d float -o sum".into());
    }
    let backend = Backend::load(&a.device)?;
    let rt: &dyn Runtime = match &backend {
        Backend::Nccl(_, r) => r.as_ref(),
        Backend::Hccl(_, r) => r.as_ref(),
        Backend::Cpu => return Err("--device cpu is the plain sweep".into()),
    };
    let local = comm.topology().local_of(me) as u32;
    let mut dc = DeviceComm::new(comm, backend.clone(), local, None)?;
    let s = rt.stream_create()?;
    if lead {
        println!(
            "# ferrocoll-probe {}: {} on {n} ranks, device {} ({}), transports {}",
            env!("CARGO_PKG_VERSION"),
            kind.name(),
            a.device,
            dc.backend(),
            crate::pair_summary(&comm.transport_matrix())
        );
        println!(
            "# {:>10}  {:>12}  {:>9}  {:>6}  {:>6}  {:>6}",
            "size", "count", "time", "algbw", "busbw", "#wrong"
        );
    }
    let mut ok = true;
    for size in a.sizes(kind)? {
        // Elements per rank: the size is the whole buffer, as nccl-tests counts it.
        let count = match kind {
            Collective::AllReduce => size as usize / 4,
            _ => size as usize / 4 / n,
        };
        if count == 0 {
            continue;
        }
        let (ins, outs) = match kind {
            Collective::AllReduce => (count, count),
            Collective::AllGather => (count, n * count),
            _ => (n * count, count),
        };
        let send = Dev(rt, rt.malloc(4 * ins)?);
        let recv = Dev(rt, rt.malloc(4 * outs)?);
        let mine: Vec<f32> = (0..ins).map(|i| value(me, i)).collect();
        put(rt, &send, &mine, s)?;
        let mem = dc.memory();
        let (sb, rb) = (
            DeviceBuffer {
                ptr: send.1,
                memory: mem,
            },
            DeviceBuffer {
                ptr: recv.1,
                memory: mem,
            },
        );
        let mut call = || -> Res<()> {
            // SAFETY: `send` and `recv` hold what `kind` reads and writes for `count`.
            unsafe {
                match kind {
                    Collective::AllReduce => {
                        dc.all_reduce(sb, rb, count, DataType::F32, ReduceOp::Sum, s)?
                    }
                    Collective::AllGather => dc.all_gather(sb, rb, count, DataType::F32, s)?,
                    _ => dc.reduce_scatter(sb, rb, count, DataType::F32, ReduceOp::Sum, s)?,
                }
                rt.synchronize(s)?;
            }
            Ok(())
        };
        for _ in 0..a.warmup {
            call()?;
        }
        ranks::barrier(comm)?;
        let t0 = Instant::now();
        for _ in 0..a.iters {
            call()?;
        }
        let sec = ranks::combine(
            comm,
            t0.elapsed().as_secs_f64() / f64::from(a.iters),
            a.average,
        )?;
        let got = get(rt, &recv, outs, s)?;
        let want: Vec<f32> = match kind {
            Collective::AllReduce => (0..count)
                .map(|i| (0..n).map(|r| value(r, i)).sum())
                .collect(),
            Collective::AllGather => (0..n)
                .flat_map(|r| (0..count).map(move |i| value(r, i)))
                .collect(),
            _ => (0..count)
                .map(|i| (0..n).map(|r| value(r, me * count + i)).sum())
                .collect(),
        };
        let wrong = got.iter().zip(&want).filter(|(g, w)| g != w).count() as u64;
        let mut total = [wrong];
        comm.all_reduce(&mut total, ReduceOp::Sum)?;
        ok &= total[0] == 0;
        let algbw = size as f64 / 1e9 / sec.max(1e-12);
        if lead {
            println!(
                "{:>12}  {:>12}  {:>9.1}  {:>6.2}  {:>6.2}  {:>6}",
                size,
                count,
                sec * 1e6,
                algbw,
                algbw * busbw_factor(kind, n),
                total[0]
            );
        }
    }
    // SAFETY: created above; nothing queued remains (every call synchronised).
    unsafe { rt.stream_destroy(s)? };
    if lead {
        println!(
            "# Out of bounds values : {}",
            if ok { "0 OK" } else { "FAILED" }
        );
    }
    Ok(ok)
}
