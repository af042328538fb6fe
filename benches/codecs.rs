//! Codec throughput on one core: encode, decode, and encode + decode (the round trip a
//! compressed collective pays per element), for every chunk codec of `ferrocoll::compress`.
//!
//! Throughput is the bytes of **f32 input** per second (element count × 4), so figures compare
//! directly with a link's bandwidth in uncompressed bytes. The target: fp8
//! encode + decode ≥ 2 GB/s.
//!
//! Size: 1 Mi elements (4 MiB of f32, about what one pipeline segment of a large all-reduce
//! encodes). Data: gradient-like values, normal-ish with magnitudes over several octaves.
//!
//! Run: `cargo bench --bench codecs -- --warm-up-time 1 --measurement-time 3`.

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrocoll::compress::chunk_codec;
use ferrocoll::Codec;

const N: usize = 1 << 20;

fn gradients(n: usize) -> Vec<f32> {
    let mut s: u64 = 0x1234_5678;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            let e = ((s >> 20) % 8) as i32 - 12;
            (u - 0.5) * 2f32.powi(e)
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    let x = gradients(N);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(4 * N as u64));
    for codec in [
        Codec::Fp16,
        Codec::Bf16,
        Codec::Fp8E4M3 { block: 128 },
        Codec::Fp8E5M2 { block: 128 },
        Codec::OneBit { block: 128 },
        Codec::TopK { fraction: 0.01 },
    ] {
        let cc = chunk_codec(codec).unwrap();
        let mut enc = vec![0u8; cc.encoded_len(N)];
        let mut dec = vec![0f32; N];
        let name = codec.to_string();
        g.bench_with_input(BenchmarkId::new("encode", &name), &x, |b, x| {
            b.iter(|| cc.encode(black_box(x), &mut enc))
        });
        cc.encode(&x, &mut enc);
        g.bench_with_input(BenchmarkId::new("decode", &name), &enc, |b, e| {
            b.iter(|| cc.decode(black_box(e), &mut dec).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("encode+decode", &name), &x, |b, x| {
            b.iter(|| {
                cc.encode(black_box(x), &mut enc);
                cc.decode(&enc, &mut dec).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
