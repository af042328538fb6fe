//! Reduction kernel throughput: the element-by-element reference (`reduce::scalar`) against
//! the fast kernels (`reduce::reduce`), for `dst ⊕= src` with `Sum`.
//!
//! Throughput is the bytes of **`dst`** processed per second (element count × element size);
//! each call also reads as many bytes of `src`, so memory traffic is 3× that figure.
//!
//! Sizes: 256 KiB per buffer (cache resident: dst + src fit in L2) and 64 MiB (DRAM).
//! The data keeps the same values from call to call: `dst` holds ±[1, 2) and `src` values
//! below 2^-30 in magnitude, which round away in every format (or are zero in fp8/f16), so the
//! inputs never drift into inf/NaN and the scalar path's branches see the same data every time.
//!
//! Run: `cargo bench --bench kernels -- --warm-up-time 1 --measurement-time 3`.

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrocoll::reduce::{self, scalar};
use ferrocoll::{DataType, ReduceOp, F8E4M3};
use half::{bf16, f16};

/// Deterministic pseudo-random f32 in [0, 1).
fn rng(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 40) as f32 / (1u64 << 24) as f32
}

/// `len` bytes of `dtype` elements whose values are `scale * (±[1, 2))`.
fn data(dtype: DataType, len: usize, scale: f32, seed: &mut u64) -> Vec<u8> {
    let n = len / dtype.size();
    let mut out = Vec::with_capacity(len);
    for i in 0..n {
        let sign = if i % 3 == 0 { -1.0 } else { 1.0 };
        let v = sign * scale * (1.0 + rng(seed));
        match dtype {
            DataType::F32 => out.extend_from_slice(&v.to_ne_bytes()),
            DataType::BF16 => out.extend_from_slice(&bf16::from_f32(v).to_ne_bytes()),
            DataType::F16 => out.extend_from_slice(&f16::from_f32(v).to_ne_bytes()),
            DataType::F8E4M3 => out.push(F8E4M3::from_f32(v).0),
            _ => unreachable!("not benchmarked"),
        }
    }
    out
}

fn kernels(c: &mut Criterion) {
    let dtypes = [
        DataType::F32,
        DataType::BF16,
        DataType::F16,
        DataType::F8E4M3,
    ];
    for (label, bytes) in [("256KiB", 256 << 10), ("64MiB", 64 << 20)] {
        let mut g = c.benchmark_group(format!("reduce_sum_{label}"));
        g.throughput(Throughput::Bytes(bytes as u64));
        if bytes > 1 << 20 {
            g.sample_size(10);
        }
        for dtype in dtypes {
            let mut seed = 0x5eed;
            let mut dst = data(dtype, bytes, 1.0, &mut seed);
            let src = data(dtype, bytes, 2f32.powi(-31), &mut seed);
            g.bench_function(BenchmarkId::new("scalar", dtype), |b| {
                b.iter(|| scalar::reduce(dtype, ReduceOp::Sum, black_box(&mut dst), &src))
            });
            g.bench_function(BenchmarkId::new("fast", dtype), |b| {
                b.iter(|| reduce::reduce(dtype, ReduceOp::Sum, black_box(&mut dst), &src))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
