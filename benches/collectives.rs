//! In-process collectives: every rank a thread of this process over the `mem` transport
//! (`ferrocoll::World`), so regressions in the engine, schedules and kernels show without
//! processes or sockets. All-reduce, all-gather and reduce-scatter of f32 (sum), out-of-place,
//! 2 and 4 ranks, 4 KiB / 1 MiB / 16 MiB; throughput is the collective's size per call
//! (nccl-tests' algbw; busbw = algbw × 2(n−1)/n for all-reduce, (n−1)/n for the others).
//!
//! Run: `cargo bench --bench collectives -- --warm-up-time 1 --measurement-time 3`.

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrocoll::{Communicator, ReduceOp, World};

#[derive(Clone, Copy, Debug)]
enum Coll {
    AllReduce,
    AllGather,
    ReduceScatter,
}

/// One call of `coll` moving `bytes` (the nccl-tests size) on `c`.
fn call(c: &Communicator, coll: Coll, input: &[f32], output: &mut [f32]) {
    let r = match coll {
        Coll::AllReduce => c.all_reduce_into(input, output, ReduceOp::Sum),
        Coll::AllGather => c.all_gather(input, output),
        Coll::ReduceScatter => c.reduce_scatter(input, output, ReduceOp::Sum),
    };
    r.expect("collective failed");
}

/// Runs `iters` calls on every rank at once; the time is rank 0's.
fn timed(comms: &[Communicator], coll: Coll, bytes: usize, iters: u64) -> Duration {
    let n = comms.len();
    let elems = bytes / 4;
    let (inp, out) = match coll {
        Coll::AllReduce => (elems, elems),
        Coll::AllGather => (elems / n, elems),
        Coll::ReduceScatter => (elems, elems / n),
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .iter()
            .map(|c| {
                s.spawn(move || {
                    let input = vec![1.0f32; inp];
                    let mut output = vec![0.0f32; out];
                    call(c, coll, &input, &mut output); // warm: plan cached, pages touched
                    c.barrier().expect("barrier");
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        call(c, coll, &input, &mut output);
                    }
                    t0.elapsed()
                })
            })
            .collect();
        let times: Vec<Duration> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        times[0]
    })
}

fn bench(c: &mut Criterion) {
    for n in [2usize, 4] {
        let world = World::new(n);
        let (comms, _faults) = world.communicators().expect("world");
        for (coll, name) in [
            (Coll::AllReduce, "all_reduce"),
            (Coll::AllGather, "all_gather"),
            (Coll::ReduceScatter, "reduce_scatter"),
        ] {
            let mut g = c.benchmark_group(format!("{name}/{n}ranks"));
            for bytes in [4usize << 10, 1 << 20, 16 << 20] {
                g.throughput(Throughput::Bytes(bytes as u64));
                if bytes >= 16 << 20 {
                    g.sample_size(10);
                }
                g.bench_with_input(BenchmarkId::from_parameter(bytes), &bytes, |b, &bytes| {
                    b.iter_custom(|iters| timed(&comms, coll, bytes, iters))
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
