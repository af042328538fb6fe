//! Codecs of `ferrocoll::compress`: decode(encode(x)) within each codec's stated bound
//! (property tests), non-finite values, bad parameters, and `FERROCOLL_COMPRESSION` parsing.

use ferrocoll::compress::{
    auto_codec, chunk_codec, ChunkCodec, CompressionSetting, PowerSgd, DEFAULT_BLOCK,
};
use ferrocoll::{Codec, Error, World};
use proptest::prelude::*;

fn round_trip(codec: Codec, x: &[f32]) -> (Box<dyn ChunkCodec>, Vec<u8>, Vec<f32>) {
    let cc = chunk_codec(codec).unwrap();
    let mut enc = vec![0u8; cc.encoded_len(x.len())];
    cc.encode(x, &mut enc);
    let mut d = vec![f32::NAN; x.len()];
    cc.decode(&enc, &mut d).unwrap();
    (cc, enc, d)
}

/// Finite values over many magnitudes (including zeros and tiny ones).
fn values(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    let one = prop_oneof![
        4 => (-1.0f32..1.0, -20i32..8).prop_map(|(m, e)| m * 2f32.powi(e)),
        1 => Just(0.0f32),
        1 => (-1.0f32..1.0).prop_map(|m| m * 1e-30),
    ];
    prop::collection::vec(one, 1..max_len)
}

fn block_scale(xs: &[f32], max: f32) -> f32 {
    let amax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
    (amax / max).max(f32::MIN_POSITIVE)
}

fn check_fp8(x: &[f32], d: &[f32], block: usize, max: f32, rel: f32, sub: f32) {
    for (xs, ds) in x.chunks(block).zip(d.chunks(block)) {
        let scale = block_scale(xs, max);
        for (a, b) in xs.iter().zip(ds) {
            let bound = rel * a.abs() * (1.0 + 1e-5) + sub * scale + 4.0 * f32::EPSILON * a.abs();
            assert!((a - b).abs() <= bound, "x={a} decoded={b} bound={bound}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fp16_within_bound(x in values(700)) {
        let (_, _, d) = round_trip(Codec::Fp16, &x);
        for (a, b) in x.iter().zip(&d) {
            prop_assert!((a - b).abs() <= 2f32.powi(-11) * a.abs() + 2f32.powi(-25), "{a} {b}");
        }
    }

    #[test]
    fn bf16_within_bound(x in values(700)) {
        let (_, _, d) = round_trip(Codec::Bf16, &x);
        for (a, b) in x.iter().zip(&d) {
            prop_assert!((a - b).abs() <= 2f32.powi(-8) * a.abs() + 1e-38, "{a} {b}");
        }
    }

    #[test]
    fn fp8_within_bound(x in values(700), block in 1usize..300) {
        let (_, _, d) = round_trip(Codec::Fp8E4M3 { block }, &x);
        check_fp8(&x, &d, block, 448.0, 2f32.powi(-4), 2f32.powi(-10));
        let (_, _, d) = round_trip(Codec::Fp8E5M2 { block }, &x);
        check_fp8(&x, &d, block, 57344.0, 2f32.powi(-3), 2f32.powi(-17));
    }

    #[test]
    fn onebit_keeps_signs_and_block_l1(x in values(700), block in 1usize..300) {
        let (_, _, d) = round_trip(Codec::OneBit { block }, &x);
        for (xs, ds) in x.chunks(block).zip(d.chunks(block)) {
            let l1: f32 = xs.iter().map(|v| v.abs()).sum();
            let dl1: f32 = ds.iter().map(|v| v.abs()).sum();
            prop_assert!((l1 - dl1).abs() <= 1e-5 * l1 + 1e-37, "{l1} {dl1}");
            let mean = ds[0].abs();
            for (a, b) in xs.iter().zip(ds) {
                prop_assert_eq!(a.is_sign_negative(), b.is_sign_negative());
                prop_assert_eq!(b.abs(), mean);
            }
        }
    }

    #[test]
    fn topk_is_exact_top_k(x in values(3000), frac in 0.001f64..1.0) {
        let (_, enc, d) = round_trip(Codec::TopK { fraction: frac }, &x);
        let k = ((frac * x.len() as f64).ceil() as usize).clamp(1, x.len());
        prop_assert_eq!(enc.len(), 8 * k);
        let kept: Vec<usize> = enc[..4 * k]
            .chunks(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .collect();
        prop_assert!(kept.windows(2).all(|w| w[0] < w[1]), "indices ascending and distinct");
        prop_assert_eq!(kept.len(), k);
        let min_kept = kept.iter().map(|&i| x[i].abs()).fold(f32::INFINITY, f32::min);
        for i in 0..x.len() {
            if kept.contains(&i) {
                prop_assert_eq!(d[i], x[i]);
            } else {
                prop_assert_eq!(d[i], 0.0);
                prop_assert!(x[i].abs() <= min_kept);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, failure_persistence: None, ..ProptestConfig::default() })]

    /// The one-pass error-feedback encoders leave exactly `x − decode(encode(x))` (0 where
    /// not finite) and the same bytes as `encode`.
    #[test]
    fn encode_feedback_matches_encode_then_decode(x in values(700), block in 1usize..200, nan in 0usize..700) {
        let mut x = x;
        if nan < x.len() {
            x[nan] = f32::NAN;
        }
        for codec in [
            Codec::Fp8E4M3 { block },
            Codec::Fp8E5M2 { block },
            Codec::OneBit { block },
            Codec::TopK { fraction: 0.1 },
            Codec::Bf16,
        ] {
            let (cc, enc, d) = round_trip(codec, &x);
            let mut r = x.clone();
            let mut out = vec![0u8; enc.len()];
            let mut tmp = vec![0f32; x.len()];
            cc.encode_feedback(&mut r, &mut out, &mut tmp).unwrap();
            prop_assert_eq!(&out, &enc, "{}", codec);
            for i in 0..x.len() {
                let e = x[i] - d[i];
                let want = if e.is_finite() { e } else { 0.0 };
                prop_assert_eq!(r[i].to_bits(), want.to_bits(), "{} at {}", codec, i);
            }
        }
    }
}

#[test]
fn encoded_sizes_are_declared_up_front() {
    let n = 1000;
    let cases = [
        (Codec::Fp16, 2000),
        (Codec::Bf16, 2000),
        (Codec::Fp8E4M3 { block: 128 }, 1000 + 4 * 8),
        (Codec::Fp8E5M2 { block: 100 }, 1000 + 4 * 10),
        (Codec::TopK { fraction: 0.01 }, 8 * 10),
        (Codec::OneBit { block: 128 }, 4 * 8 + 125),
        (Codec::None, 4000),
    ];
    for (c, len) in cases {
        assert_eq!(c.encoded_len(n).unwrap(), len, "{c}");
    }
    assert_eq!(PowerSgd::encoded_len(100, 50, 4).unwrap(), 4 * 150 * 4);
    assert!(matches!(
        Codec::PowerSgd { rank: 4 }.encoded_len(n),
        Err(Error::InvalidCodec { .. })
    ));
    assert!(!Codec::Fp16.needs_error_feedback() && !Codec::Bf16.needs_error_feedback());
    for c in [
        Codec::Fp8E4M3 { block: 128 },
        Codec::TopK { fraction: 0.1 },
        Codec::OneBit { block: 128 },
        Codec::PowerSgd { rank: 2 },
    ] {
        assert!(c.needs_error_feedback(), "{c}");
    }
}

#[test]
fn non_finite_values_are_never_silently_finite() {
    let x = [1.0, f32::NAN, f32::INFINITY, -2.0, f32::NEG_INFINITY, 0.5];
    // fp8: the scale ignores non-finite values; the others keep their precision.
    let (_, _, d) = round_trip(Codec::Fp8E4M3 { block: 128 }, &x);
    assert_eq!((d[0], d[3], d[5]), (1.0, -2.0, 0.5));
    assert!(d[1].is_nan() && d[2].is_nan() && d[4].is_nan(), "{d:?}");
    let (_, _, d) = round_trip(Codec::Fp8E5M2 { block: 128 }, &x);
    assert_eq!((d[0], d[3], d[5]), (1.0, -2.0, 0.5));
    assert!(d[1].is_nan());
    assert_eq!((d[2], d[4]), (f32::INFINITY, f32::NEG_INFINITY));
    // Casts: NaN stays NaN, infinities stay, overflow of fp16 becomes infinity.
    let (_, _, d) = round_trip(Codec::Fp16, &[f32::NAN, f32::INFINITY, 1e6, -1e6]);
    assert!(d[0].is_nan());
    assert_eq!(&d[1..], &[f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY]);
    let (_, _, d) = round_trip(Codec::Bf16, &[f32::NAN, f32::NEG_INFINITY, 3.0e38]);
    assert!(d[0].is_nan());
    assert_eq!(d[1], f32::NEG_INFINITY);
    assert!(d[2].is_finite());
    // 1-bit: a non-finite element makes its whole block non-finite; other blocks are fine.
    let y = [1.0, f32::NAN, -1.0, 3.0, 1.0, -1.0];
    let (_, _, d) = round_trip(Codec::OneBit { block: 3 }, &y);
    assert!(d[..3].iter().all(|v| v.is_nan()), "{d:?}");
    assert_eq!(&d[3..], &[5.0 / 3.0, 5.0 / 3.0, -5.0 / 3.0]);
    // top-k: non-finite values rank first, so they are always sent.
    let mut z = vec![1.0f32; 500];
    z[17] = f32::NAN;
    z[400] = f32::NEG_INFINITY;
    let (_, _, d) = round_trip(Codec::TopK { fraction: 0.004 }, &z);
    assert!(d[17].is_nan());
    assert_eq!(d[400], f32::NEG_INFINITY);
    assert_eq!(d.iter().filter(|v| **v != 0.0).count(), 2);
}

#[test]
fn all_zero_and_tiny_blocks_decode_without_nan() {
    for c in [
        Codec::Fp8E4M3 { block: 4 },
        Codec::Fp8E5M2 { block: 4 },
        Codec::OneBit { block: 4 },
    ] {
        let x = [0.0, 0.0, 0.0, 0.0, 1e-45, -1e-45, 0.0, 1e-40];
        let (_, _, d) = round_trip(c, &x);
        assert!(d.iter().all(|v| v.is_finite()), "{c}: {d:?}");
        assert!(
            d.iter().zip(&x).all(|(a, b)| (a - b).abs() <= 1e-38),
            "{c}: {d:?}"
        );
    }
}

#[test]
fn bad_codec_parameters_are_typed_errors() {
    let bad = [
        Codec::TopK { fraction: 0.0 },
        Codec::TopK { fraction: -0.1 },
        Codec::TopK { fraction: 1.5 },
        Codec::TopK { fraction: f64::NAN },
        Codec::Fp8E4M3 { block: 0 },
        Codec::Fp8E5M2 { block: 0 },
        Codec::OneBit { block: 0 },
        Codec::PowerSgd { rank: 0 },
    ];
    for c in bad {
        assert!(
            matches!(c.validate(), Err(Error::InvalidCodec { .. })),
            "{c}"
        );
        assert!(chunk_codec(c).is_err(), "{c}");
    }
    assert!(matches!(
        chunk_codec(Codec::None),
        Err(Error::InvalidCodec { .. })
    ));
    // PowerSGD: rank above the matrix, empty matrix.
    for (r, c, k) in [(3, 5, 4), (5, 3, 4), (0, 5, 1), (5, 0, 1)] {
        assert!(matches!(
            PowerSgd::encoded_len(r, c, k),
            Err(Error::InvalidCodec { .. })
        ));
    }
    assert!(PowerSgd::check(3, 5, 3).is_ok());
}

#[test]
fn topk_decoder_rejects_indices_out_of_range() {
    let cc = chunk_codec(Codec::TopK { fraction: 0.5 }).unwrap();
    let mut enc = vec![0u8; cc.encoded_len(4)];
    enc[..4].copy_from_slice(&9u32.to_le_bytes());
    let mut d = [0f32; 4];
    assert!(matches!(
        cc.decode(&enc, &mut d),
        Err(Error::CorruptPayload { peer: None, .. })
    ));
}

#[test]
fn compression_setting_parses_every_spelling() {
    let ok = [
        ("none", Codec::None),
        ("fp16", Codec::Fp16),
        ("BF16", Codec::Bf16),
        (
            "fp8",
            Codec::Fp8E4M3 {
                block: DEFAULT_BLOCK,
            },
        ),
        ("fp8e4m3:64", Codec::Fp8E4M3 { block: 64 }),
        (
            "fp8e5m2",
            Codec::Fp8E5M2 {
                block: DEFAULT_BLOCK,
            },
        ),
        ("topk:0.01", Codec::TopK { fraction: 0.01 }),
        (
            "onebit",
            Codec::OneBit {
                block: DEFAULT_BLOCK,
            },
        ),
        ("onebit:32", Codec::OneBit { block: 32 }),
        ("powersgd:4", Codec::PowerSgd { rank: 4 }),
    ];
    for (s, c) in ok {
        assert_eq!(
            CompressionSetting::parse(s).unwrap(),
            CompressionSetting::Fixed(c)
        );
        // Display gives back a spelling that parses to the same codec.
        assert_eq!(c.to_string().parse::<Codec>().unwrap(), c);
    }
    assert_eq!(
        CompressionSetting::parse(" auto ").unwrap(),
        CompressionSetting::Auto
    );
    for s in [
        "zstd",
        "topk",
        "topk:2",
        "topk:0",
        "topk:x",
        "powersgd",
        "powersgd:0",
        "fp8:0",
        "fp8:x",
        "fp16:3",
        "",
    ] {
        match CompressionSetting::parse(s) {
            Err(Error::Config { var, .. }) => assert_eq!(var, "FERROCOLL_COMPRESSION"),
            other => panic!("{s:?}: {other:?}"),
        }
    }
}

#[test]
fn auto_picks_stronger_codecs_on_slower_links() {
    assert_eq!(auto_codec(50e9), Codec::None);
    assert_eq!(auto_codec(f64::NAN), Codec::None);
    assert_eq!(auto_codec(5e9), Codec::Bf16);
    assert_eq!(auto_codec(1.25e9), Codec::Fp8E4M3 { block: 128 });
    assert_eq!(auto_codec(0.125e9), Codec::OneBit { block: 128 });
    assert_eq!(auto_codec(0.01e9), Codec::TopK { fraction: 0.01 });
    assert_eq!(CompressionSetting::Auto.resolve(None), Codec::None);
    assert_eq!(
        CompressionSetting::Auto.resolve(Some(1.25e9)),
        Codec::Fp8E4M3 { block: 128 }
    );
    assert_eq!(
        CompressionSetting::Fixed(Codec::Fp16).resolve(Some(1.0)),
        Codec::Fp16
    );
}

/// The only test in this binary that touches `FERROCOLL_COMPRESSION`.
#[test]
fn compression_setting_reads_the_environment() {
    std::env::set_var("FERROCOLL_COMPRESSION", "fp8e5m2:64");
    assert_eq!(
        CompressionSetting::from_env().unwrap(),
        CompressionSetting::Fixed(Codec::Fp8E5M2 { block: 64 })
    );
    std::env::set_var("FERROCOLL_COMPRESSION", "bogus");
    assert!(matches!(
        CompressionSetting::from_env(),
        Err(Error::Config { .. })
    ));
    std::env::remove_var("FERROCOLL_COMPRESSION");
    assert_eq!(
        CompressionSetting::from_env().unwrap(),
        CompressionSetting::Fixed(Codec::None)
    );
}

#[test]
fn auto_follows_the_slowest_link_of_the_topology() {
    use ferrocoll::compress::{slowest_link, CompressionSetting};
    use ferrocoll::topology::{LinkSpec, Topology};
    // One host: its own link (shared memory class) decides; several: the network.
    let one = Topology::uniform(1, 4, false).with_intra(LinkSpec::from_us_gbit(1.0, 400.0));
    assert_eq!(slowest_link(&one), Some(400e9 / 8.0));
    let two = Topology::uniform(2, 2, false)
        .with_intra(LinkSpec::from_us_gbit(1.0, 400.0))
        .with_inter(LinkSpec::from_us_gbit(20.0, 1.0), 100e9 / 8.0);
    assert_eq!(slowest_link(&two), Some(1e9 / 8.0));
    assert_eq!(slowest_link(&Topology::single_host(1)), None);
    let auto = CompressionSetting::Auto;
    assert_eq!(auto.resolve(slowest_link(&one)), Codec::None);
    assert_ne!(auto.resolve(slowest_link(&two)), Codec::None);
    // Fixed settings ignore the topology.
    let fixed = CompressionSetting::Fixed(Codec::Fp16);
    assert_eq!(fixed.resolve(slowest_link(&two)), Codec::Fp16);
}

/// `auto` on a communicator: one host (shared memory) stays uncompressed, whatever its link
/// figure says; several hosts follow the slowest link between them.
#[test]
fn auto_compresses_only_between_hosts() {
    use ferrocoll::compress::auto_link;
    use ferrocoll::topology::{LinkSpec, Topology};
    let slow_shm = Topology::uniform(1, 2, false).with_intra(LinkSpec::from_us_gbit(2.0, 8.0));
    assert_eq!(auto_link(&slow_shm), None);
    let got = World::new(2)
        .topology(slow_shm)
        .run(|c| CompressionSetting::Auto.resolve_for(c))
        .unwrap();
    assert_eq!(got, vec![Codec::None; 2]);
    let slow_net =
        Topology::uniform(2, 1, false).with_inter(LinkSpec::from_us_gbit(50.0, 1.0), 1e9 / 8.0);
    assert_eq!(auto_link(&slow_net), Some(1e9 / 8.0));
    let got = World::new(2)
        .topology(slow_net)
        .run(|c| CompressionSetting::Auto.resolve_for(c))
        .unwrap();
    assert_eq!(got, vec![auto_codec(1e9 / 8.0); 2]);
    assert_ne!(got[0], Codec::None);
}
