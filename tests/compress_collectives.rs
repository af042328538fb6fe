//! Compressed collectives over in-process worlds: bit-identical results on every rank, close to
//! the exact sum, multi-segment pipelines, error feedback over steps, and bad calls.

use ferrocoll::compress::{CompressedCollectives, ErrorFeedback};
use ferrocoll::{Codec, Error, World};

/// Rank `r`'s deterministic input of `n` elements.
fn input(r: usize, n: usize, salt: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32 ^ salt)
                .wrapping_mul(2654435761)
                .wrapping_add(r as u32 * 40503)
                .rotate_left(7);
            (h % 20001) as f32 / 10000.0 - 1.0
        })
        .collect()
}

fn exact(world: usize, n: usize, salt: u32) -> Vec<f32> {
    let mut s = vec![0f32; n];
    for r in 0..world {
        for (a, b) in s.iter_mut().zip(input(r, n, salt)) {
            *a += b;
        }
    }
    s
}

/// Error relative to the sum of the inputs' magnitudes (cancellation in the exact sum does not
/// inflate it).
fn err_vs_inputs(world: usize, got: &[f32], salt: u32) -> f64 {
    let mut mag = vec![0f32; got.len()];
    for r in 0..world {
        for (a, b) in mag.iter_mut().zip(input(r, got.len(), salt)) {
            *a += b.abs();
        }
    }
    let want = exact(world, got.len(), salt);
    rel_err(got, &want) * norm(&want) / norm(&mag).max(1e-30)
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Runs one compressed all-reduce on every rank; returns each rank's result.
fn all_reduce(world: usize, n: usize, codec: Codec, seg: usize) -> Vec<Vec<f32>> {
    World::new(world)
        .run(|c| {
            let mut g = input(c.rank(), n, 1);
            let mut ef = ErrorFeedback::new().segment_elems(seg);
            c.all_reduce_compressed(&mut g, &mut ef, "g", codec)
                .unwrap();
            g
        })
        .unwrap()
}

fn assert_bit_identical(res: &[Vec<f32>]) {
    for (r, v) in res.iter().enumerate().skip(1) {
        let same = v
            .iter()
            .zip(&res[0])
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "rank {r} differs from rank 0");
    }
}

#[test]
fn quantised_all_reduce_is_bit_identical_and_close() {
    let codecs = [
        (Codec::Fp16, 2e-3),
        (Codec::Bf16, 1e-2),
        (Codec::Fp8E4M3 { block: 16 }, 0.08),
        (Codec::Fp8E5M2 { block: 128 }, 0.15),
        (Codec::OneBit { block: 32 }, 1.5),
        (Codec::TopK { fraction: 0.3 }, 1.0),
        (Codec::None, 1e-6),
    ];
    for world in [1, 2, 3, 5] {
        for n in [1, 7, 100, 1031] {
            for (codec, tol) in codecs {
                // One segment, and many small ones (pipeline paths).
                for seg in [1 << 20, 40] {
                    let res = all_reduce(world, n, codec, seg);
                    assert_bit_identical(&res);
                    let e = err_vs_inputs(world, &res[0], 1);
                    assert!(e <= tol, "{codec} world {world} n {n} seg {seg}: err {e}");
                }
            }
        }
    }
}

/// With error feedback, what the codec drops comes back in later steps: the mean of the
/// results over many steps of the same gradients approaches the exact sum; without error
/// feedback it does not.
#[test]
fn error_feedback_makes_lossy_codecs_unbiased_over_steps() {
    let (world, n, steps) = (3, 600, 60);
    for codec in [
        Codec::OneBit { block: 64 },
        Codec::TopK { fraction: 0.2 },
        Codec::Fp8E5M2 { block: 64 },
    ] {
        let run = |ef_on: bool| {
            let res = World::new(world)
                .run(|c| {
                    let mut ef = if ef_on {
                        ErrorFeedback::new()
                    } else {
                        ErrorFeedback::disabled()
                    }
                    .segment_elems(256);
                    let mut mean = vec![0f32; n];
                    for _ in 0..steps {
                        let mut g = input(c.rank(), n, 2);
                        c.all_reduce_compressed(&mut g, &mut ef, "w", codec)
                            .unwrap();
                        for (m, v) in mean.iter_mut().zip(&g) {
                            *m += v / steps as f32;
                        }
                    }
                    mean
                })
                .unwrap();
            assert_bit_identical(&res);
            rel_err(&res[0], &exact(world, n, 2))
        };
        let (with, without) = (run(true), run(false));
        assert!(with < 0.15, "{codec}: mean error with feedback {with}");
        assert!(with * 3.0 < without, "{codec}: {with} vs {without}");
    }
}

#[test]
fn powersgd_recovers_a_low_rank_sum_exactly() {
    // Rank r contributes u_r v_rᵀ; the sum has rank ≤ world ≤ 4 = PowerSGD's rank.
    let (rows, cols) = (30, 17);
    let res = World::new(3)
        .run(|c| {
            let u = input(c.rank(), rows, 3);
            let v = input(c.rank(), cols, 4);
            let m: Vec<f32> = (0..rows * cols)
                .map(|i| u[i / cols] * v[i % cols])
                .collect();
            let mut ef = ErrorFeedback::new();
            let mut g = m.clone();
            let codec = Codec::PowerSgd { rank: 4 };
            c.all_reduce_compressed_2d(&mut g, rows, &mut ef, "w", codec)
                .unwrap();
            // A second step warm-starts from the kept Q.
            let mut g2 = m.clone();
            c.all_reduce_compressed_2d(&mut g2, rows, &mut ef, "w", codec)
                .unwrap();
            (m, g, g2)
        })
        .unwrap();
    let mut want = vec![0f32; rows * cols];
    for (m, _, _) in &res {
        for (w, x) in want.iter_mut().zip(m) {
            *w += x;
        }
    }
    let firsts: Vec<Vec<f32>> = res.iter().map(|r| r.1.clone()).collect();
    assert_bit_identical(&firsts);
    assert!(
        rel_err(&firsts[0], &want) < 1e-4,
        "{}",
        rel_err(&firsts[0], &want)
    );
    assert!(rel_err(&res[0].2, &want) < 1e-4);
}

#[test]
fn reduce_scatter_and_all_gather_compressed() {
    let (world, m) = (3, 50);
    let codec = Codec::Fp8E4M3 { block: 16 };
    let res = World::new(world)
        .run(|c| {
            let x = input(c.rank(), world * m, 5);
            let mut shard = vec![0f32; m];
            let mut ef = ErrorFeedback::new();
            c.reduce_scatter_compressed(&x, &mut shard, &mut ef, "rs", codec)
                .unwrap();
            let mut all = vec![0f32; world * m];
            c.all_gather_compressed(&shard, &mut all, codec).unwrap();
            (shard, all)
        })
        .unwrap();
    let want = exact(world, world * m, 5);
    for (r, (shard, _)) in res.iter().enumerate() {
        let e = rel_err(shard, &want[r * m..(r + 1) * m]);
        assert!(e < 0.05, "rank {r} shard error {e}");
    }
    let alls: Vec<Vec<f32>> = res.iter().map(|r| r.1.clone()).collect();
    assert_bit_identical(&alls);
    assert!(rel_err(&alls[0], &want) < 0.1);
}

#[test]
fn bad_calls_are_typed_errors() {
    let res = World::new(2)
        .run(|c| {
            let mut ef = ErrorFeedback::new();
            let fp8 = Codec::Fp8E4M3 { block: 8 };
            let mut errs = vec![
                c.all_reduce_compressed(&mut [], &mut ef, "e", fp8),
                c.all_reduce_compressed(&mut [1.0; 4], &mut ef, "k", Codec::TopK { fraction: 1.5 }),
                c.all_reduce_compressed(&mut [1.0; 4], &mut ef, "p", Codec::PowerSgd { rank: 1 }),
                c.all_reduce_compressed_2d(
                    &mut [1.0; 6],
                    2,
                    &mut ef,
                    "p",
                    Codec::PowerSgd { rank: 3 },
                ),
                c.all_reduce_compressed_2d(&mut [1.0; 7], 2, &mut ef, "q", fp8),
            ];
            // One key, one tensor: another length, shape or codec is refused.
            c.all_reduce_compressed(&mut [1.0; 8], &mut ef, "w", fp8)
                .unwrap();
            errs.push(c.all_reduce_compressed(&mut [1.0; 9], &mut ef, "w", fp8));
            errs.push(c.all_reduce_compressed(&mut [1.0; 8], &mut ef, "w", Codec::Fp16));
            errs.push(c.all_reduce_compressed_2d(&mut [1.0; 8], 2, &mut ef, "w", fp8));
            assert!(ef.residual("w").is_some());
            // After a reset the key may hold another tensor.
            assert!(ef.reset("w"));
            assert!(!ef.reset("w"));
            c.all_reduce_compressed(&mut [1.0; 9], &mut ef, "w", Codec::Fp16)
                .unwrap();
            let mut out = [0f32; 3];
            errs.push(c.reduce_scatter_compressed(&[1.0; 5], &mut out, &mut ef, "rs", fp8));
            errs.push(c.all_gather_compressed(&[1.0; 3], &mut out, fp8));
            errs.push(c.all_gather_compressed(&[1.0; 1], &mut out, Codec::PowerSgd { rank: 1 }));
            errs.push(c.reduce_scatter_compressed(&[], &mut [], &mut ef, "rs", fp8));
            errs.push(c.all_gather_compressed(&[], &mut out, fp8));
            errs.push(c.reduce_scatter_compressed(
                &[1.0; 6],
                &mut out,
                &mut ef,
                "rs",
                Codec::PowerSgd { rank: 1 },
            ));
            errs.push(c.all_reduce_compressed_2d(&mut [1.0; 4], 0, &mut ef, "z", fp8));
            ef.reset_all();
            assert!(ef.residual("w").is_none());
            errs.into_iter().map(|e| e.unwrap_err()).collect::<Vec<_>>()
        })
        .unwrap();
    for errs in res {
        let kinds: Vec<String> = errs
            .iter()
            .map(|e| {
                format!("{e:?}")
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "BufferTooSmall",
                "InvalidCodec",
                "InvalidCodec",
                "InvalidCodec",
                "Indivisible",
                "FeedbackMismatch",
                "FeedbackMismatch",
                "FeedbackMismatch",
                "Indivisible",
                "BufferTooSmall",
                "InvalidCodec",
                "BufferTooSmall",
                "BufferTooSmall",
                "InvalidCodec",
                "Indivisible",
            ]
        );
        assert!(matches!(
            &errs[5],
            Error::FeedbackMismatch { what: "length", .. }
        ));
        assert!(matches!(
            &errs[6],
            Error::FeedbackMismatch { what: "codec", .. }
        ));
        assert!(matches!(
            &errs[7],
            Error::FeedbackMismatch { what: "shape", .. }
        ));
    }
}

/// A NaN or infinity in one rank's gradient shows in the result (on every rank, the same
/// bits) and is not carried by error feedback into the next step.
#[test]
fn non_finite_gradients_show_once_and_do_not_poison_later_steps() {
    let n = 256;
    for codec in [
        Codec::Fp8E4M3 { block: 32 },
        Codec::OneBit { block: 32 },
        Codec::TopK { fraction: 0.1 },
        Codec::Fp16,
    ] {
        let res = World::new(2)
            .run(|c| {
                let mut ef = ErrorFeedback::new();
                let mut g = input(c.rank(), n, 6);
                if c.rank() == 1 {
                    g[5] = f32::NAN;
                    g[200] = f32::INFINITY;
                }
                c.all_reduce_compressed(&mut g, &mut ef, "w", codec)
                    .unwrap();
                let mut next = input(c.rank(), n, 7);
                c.all_reduce_compressed(&mut next, &mut ef, "w", codec)
                    .unwrap();
                (g, next)
            })
            .unwrap();
        let firsts: Vec<Vec<f32>> = res.iter().map(|r| r.0.clone()).collect();
        assert_bit_identical(&firsts);
        assert!(firsts[0][5].is_nan(), "{codec}: {}", firsts[0][5]);
        assert!(!firsts[0][200].is_finite(), "{codec}: {}", firsts[0][200]);
        // Elements far from the bad ones (another scale block) stay finite.
        assert!(firsts[0][100..150].iter().all(|v| v.is_finite()), "{codec}");
        for (r, (_, next)) in res.iter().enumerate() {
            assert!(
                next.iter().all(|v| v.is_finite()),
                "{codec}: rank {r} poisoned"
            );
        }
    }
}

#[test]
fn powersgd_recovers_after_a_non_finite_step() {
    let (rows, cols) = (8, 6);
    let res = World::new(2)
        .run(|c| {
            let mut ef = ErrorFeedback::new();
            let codec = Codec::PowerSgd { rank: 2 };
            let mut g = input(c.rank(), rows * cols, 8);
            g[3] = f32::NAN;
            c.all_reduce_compressed_2d(&mut g, rows, &mut ef, "m", codec)
                .unwrap();
            let mut next = input(c.rank(), rows * cols, 9);
            c.all_reduce_compressed_2d(&mut next, rows, &mut ef, "m", codec)
                .unwrap();
            (g, next)
        })
        .unwrap();
    assert!(res[0].0.iter().all(|v| v.is_nan()));
    assert!(res[0].1.iter().all(|v| v.is_finite()));
}
