//! Convergence proof in CI size: the `train_dp` example on 4 in-process ranks for
//! `train_dp::STEPS` steps. Final loss within 1% of uncompressed with fp16/bf16/fp8, within
//! 3% with 1-bit and top-k 1% with error feedback, measurably worse (> 3%) without it; the
//! parameters bit-identical on every rank after training.

#[allow(dead_code)]
#[path = "../examples/train_dp.rs"]
mod train_dp;

use ferrocoll::{Codec, World};
use train_dp::{fingerprint, train, Opts, STEPS};

/// Final loss of a 4-rank run (checking that every rank ends with the same parameters).
fn final_loss(codec: Codec, error_feedback: bool) -> f32 {
    let opts = Opts {
        steps: STEPS,
        codec,
        error_feedback,
        lr: 0.05,
        eval_every: STEPS,
    };
    let outs = World::new(4).run(|c| train(c, &opts).unwrap()).unwrap();
    let print = fingerprint(&outs[0].params);
    for (r, o) in outs.iter().enumerate() {
        assert_eq!(fingerprint(&o.params), print, "{codec}: rank {r} differs");
        assert_eq!(o.final_loss.to_bits(), outs[0].final_loss.to_bits());
    }
    outs[0].final_loss
}

#[test]
fn compressed_training_converges_like_uncompressed() {
    let base = final_loss(Codec::None, true);
    println!("none: {base}");
    let rel = |l: f32| (l - base) / base;
    for (codec, bound) in [
        (Codec::Fp16, 0.01),
        (Codec::Bf16, 0.01),
        (Codec::Fp8E4M3 { block: 128 }, 0.01),
        (Codec::OneBit { block: 128 }, 0.03),
        (Codec::TopK { fraction: 0.01 }, 0.03),
    ] {
        let with = final_loss(codec, true);
        println!("{codec}: {with} ({:+.2}%)", 100.0 * rel(with));
        assert!(rel(with).abs() <= bound, "{codec}: {with} vs {base}");
        if codec.needs_error_feedback() && codec != (Codec::Fp8E4M3 { block: 128 }) {
            let without = final_loss(codec, false);
            println!(
                "{codec} without error feedback: {without} ({:+.2}%)",
                100.0 * rel(without)
            );
            assert!(rel(without) > 0.03, "{codec}: no-EF {without} vs {base}");
        }
    }
}
