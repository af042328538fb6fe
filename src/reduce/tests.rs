//! The fast kernels against the scalar oracle, bit for bit.

use half::bf16;
use proptest::prelude::*;

use super::kernels::{Bf16, Lane};
use super::{divide, reduce, reduce3, scalar};
use crate::fp8::fast::{
    e4m3_round, e4m3_to_f32, e5m2_round, e5m2_to_f32, f32_to_e4m3, f32_to_e5m2,
};
use crate::fp8::{F8E4M3, F8E5M2};
use crate::types::{DataType, ReduceOp};

/// Whether element bytes `x` of `dtype` encode a NaN.
fn is_nan(dtype: DataType, x: &[u8]) -> bool {
    let v = match x.len() {
        1 => x[0] as u64,
        2 => u16::from_ne_bytes([x[0], x[1]]) as u64,
        4 => u32::from_ne_bytes([x[0], x[1], x[2], x[3]]) as u64,
        _ => u64::from_ne_bytes(x.try_into().unwrap_or_default()),
    };
    match dtype {
        DataType::F32 => v & 0x7fff_ffff > 0x7f80_0000,
        DataType::F64 => v & 0x7fff_ffff_ffff_ffff > 0x7ff0_0000_0000_0000,
        DataType::F16 => v & 0x7fff > 0x7c00,
        DataType::BF16 => v & 0x7fff > 0x7f80,
        DataType::F8E4M3 => v & 0x7f == 0x7f,
        DataType::F8E5M2 => v & 0x7f > 0x7c,
        _ => false,
    }
}

/// Element-wise equality of two results: identical bits, or both NaN (a `NaN ⊕ NaN` may carry
/// either operand's payload and sign, in the oracle as in the kernels).
fn assert_same(dtype: DataType, what: &str, got: &[u8], want: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    let es = dtype.size();
    for (i, (g, w)) in got.chunks(es).zip(want.chunks(es)).enumerate() {
        if g != w && !(is_nan(dtype, g) && is_nan(dtype, w)) {
            return Err(TestCaseError::fail(format!(
                "{dtype} {what}: element {i}: got {g:02x?}, want {w:02x?}"
            )));
        }
    }
    Ok(())
}

/// Bit patterns worth hitting often: zeros, infinities, NaNs (quiet, signalling, negative),
/// extremes, subnormals and one.
fn specials(dtype: DataType) -> &'static [u64] {
    match dtype {
        DataType::F32 => &[
            0,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0xffc0_0001,
            0x7f80_0001,
            0x3f80_0000,
            0x0000_0001,
            0x8000_0001,
            0x7f7f_ffff,
            0x0080_0000,
        ],
        DataType::F64 => &[
            0,
            0x8000_0000_0000_0000,
            0x7ff0_0000_0000_0000,
            0xfff0_0000_0000_0000,
            0x7ff8_0000_0000_0000,
            0xfff8_0000_0000_0001,
            0x7ff0_0000_0000_0001,
            0x3ff0_0000_0000_0000,
            1,
            0x7fef_ffff_ffff_ffff,
        ],
        DataType::F16 => &[
            0, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0xfe01, 0x7c01, 0x3c00, 0x0001, 0x8001, 0x7bff,
            0x0400,
        ],
        DataType::BF16 => &[
            0, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0xffc1, 0x7f81, 0x3f80, 0x0001, 0x8001, 0x7f7f,
            0x0080,
        ],
        DataType::F8E4M3 => &[0, 0x80, 0x7f, 0xff, 0x7e, 0xfe, 0x01, 0x81, 0x38, 0x08],
        DataType::F8E5M2 => &[0, 0x80, 0x7c, 0xfc, 0x7e, 0xfd, 0x7b, 0x01, 0x3c, 0x04],
        _ => &[
            0,
            1,
            u64::MAX,
            0x7f,
            0x80,
            0x7fff_ffff,
            0x8000_0000,
            1 << 63,
            !(1 << 63),
        ],
    }
}

/// `len` elements of `dtype`, at byte offset `off` of a buffer with 8 bytes of slack, from
/// random `(selector, bits)` pairs: a quarter of the elements are special values.
fn make(dtype: DataType, raw: &[(u8, u64)], len: usize, off: usize) -> Vec<u8> {
    let es = dtype.size();
    let sp = specials(dtype);
    let mut out = vec![0xa5u8; off];
    for &(sel, bits) in raw.iter().cycle().take(len) {
        let v = if sel < 64 {
            sp[sel as usize % sp.len()]
        } else {
            bits
        };
        match es {
            1 => out.extend_from_slice(&(v as u8).to_ne_bytes()),
            2 => out.extend_from_slice(&(v as u16).to_ne_bytes()),
            4 => out.extend_from_slice(&(v as u32).to_ne_bytes()),
            _ => out.extend_from_slice(&v.to_ne_bytes()),
        }
    }
    out.resize(off + len * es + 8, 0x5a);
    out
}

fn dtype_op() -> impl Strategy<Value = (DataType, ReduceOp)> {
    (0..DataType::ALL.len(), 0..ReduceOp::ALL.len())
        .prop_map(|(d, o)| (DataType::ALL[d], ReduceOp::ALL[o]))
}

fn raw() -> impl Strategy<Value = Vec<(u8, u64)>> {
    prop::collection::vec(any::<(u8, u64)>(), 1..64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn reduce_matches_scalar(
        (dtype, op) in dtype_op(), len in 0usize..300, offs in (0usize..8, 0usize..8),
        ra in raw(), rb in raw(),
    ) {
        let es = dtype.size();
        let bytes = len * es;
        let (od, os) = offs;
        let mut fast = make(dtype, &ra, len, od);
        let mut slow = fast.clone();
        let src = make(dtype, &rb, len, os);
        reduce(dtype, op, &mut fast[od..od + bytes], &src[os..os + bytes]);
        scalar::reduce(dtype, op, &mut slow[od..od + bytes], &src[os..os + bytes]);
        assert_same(dtype, "reduce", &fast[od..od + bytes], &slow[od..od + bytes])?;
        // Bytes around the range are untouched.
        prop_assert_eq!(&fast[..od], &slow[..od]);
        prop_assert_eq!(&fast[od + bytes..], &slow[od + bytes..]);
    }

    #[test]
    fn reduce3_matches_scalar(
        (dtype, op) in dtype_op(), len in 0usize..300, offs in (0usize..8, 0usize..8, 0usize..8),
        ra in raw(), rb in raw(),
    ) {
        let bytes = len * dtype.size();
        let (od, oa, ob) = offs;
        let a = make(dtype, &ra, len, oa);
        let b = make(dtype, &rb, len, ob);
        let mut fast = vec![0x11u8; od + bytes + 8];
        let mut slow = fast.clone();
        let (x, y) = (&a[oa..oa + bytes], &b[ob..ob + bytes]);
        reduce3(dtype, op, &mut fast[od..od + bytes], x, y);
        scalar::reduce3(dtype, op, &mut slow[od..od + bytes], x, y);
        assert_same(dtype, "reduce3", &fast[od..od + bytes], &slow[od..od + bytes])?;
        prop_assert_eq!(&fast[od + bytes..], &slow[od + bytes..]);
    }

    #[test]
    fn divide_matches_scalar(
        (dtype, _op) in dtype_op(), len in 0usize..300, off in 0usize..8, n in 1usize..300,
        ra in raw(),
    ) {
        let bytes = len * dtype.size();
        let mut fast = make(dtype, &ra, len, off);
        let mut slow = fast.clone();
        divide(dtype, &mut fast[off..off + bytes], n);
        scalar::divide(dtype, &mut slow[off..off + bytes], n);
        assert_same(dtype, "divide", &fast[off..off + bytes], &slow[off..off + bytes])?;
    }

    #[test]
    fn fp8_and_bf16_encoders_match(bits in any::<u32>()) {
        let x = f32::from_bits(bits);
        prop_assert_eq!(f32_to_e4m3(x), F8E4M3::from_f32(x).0);
        prop_assert_eq!(f32_to_e5m2(x), F8E5M2::from_f32(x).0);
        check_round(x);
        let mut b = [0u8; 2];
        Bf16::store(x, &mut b);
        prop_assert_eq!(u16::from_ne_bytes(b), bf16::from_f32(x).to_bits());
    }
}

#[test]
fn fp8_decoders_match_tables() {
    for c in 0..=255u8 {
        assert_eq!(
            e4m3_to_f32(c).to_bits(),
            F8E4M3(c).to_f32().to_bits(),
            "e4m3 {c:#x}"
        );
        assert_eq!(
            e5m2_to_f32(c).to_bits(),
            F8E5M2(c).to_f32().to_bits(),
            "e5m2 {c:#x}"
        );
    }
}

#[test]
fn bf16_decoder_matches_half() {
    for h in 0..=u16::MAX {
        let out = Bf16::load(&h.to_ne_bytes());
        assert_eq!(
            out.to_bits(),
            bf16::from_bits(h).to_f32().to_bits(),
            "{h:#x}"
        );
    }
}

/// Every pair of fp8 codes, every operator, in one call (also a block-sized length).
#[test]
fn fp8_all_pairs() {
    for dtype in [DataType::F8E4M3, DataType::F8E5M2] {
        let a: Vec<u8> = (0..=255u8).flat_map(|x| [x; 256]).collect();
        let b: Vec<u8> = (0..=255u8).cycle().take(65536).collect();
        for op in ReduceOp::ALL {
            let (mut fast, mut slow) = (a.clone(), a.clone());
            reduce(dtype, op, &mut fast, &b);
            scalar::reduce(dtype, op, &mut slow, &b);
            for (i, (g, w)) in fast.iter().zip(&slow).enumerate() {
                let nan = is_nan(dtype, &[*g]) && is_nan(dtype, &[*w]);
                assert!(
                    g == w || nan,
                    "{dtype} {op} {:#x} {:#x}: {g:#x} vs {w:#x}",
                    a[i],
                    b[i]
                );
            }
        }
    }
}

/// Encoders against `crate::fp8` and `half` on a dense sample of all f32 bit patterns (every
/// pattern with `cargo test --release -- --ignored encoders_exhaustive`).
#[test]
fn encoders_sampled() {
    check_encoders(4093);
}

#[test]
#[ignore = "all 2^32 f32 patterns: minutes in release, run by .ci/long.sh"]
fn encoders_exhaustive() {
    check_encoders(1);
}

fn check_encoders(step: usize) {
    for bits in (0..=u32::MAX).step_by(step) {
        let x = f32::from_bits(bits);
        assert_eq!(f32_to_e4m3(x), F8E4M3::from_f32(x).0, "e4m3 {bits:#x}");
        assert_eq!(f32_to_e5m2(x), F8E5M2::from_f32(x).0, "e5m2 {bits:#x}");
        check_round(x);
        let mut b = [0u8; 2];
        Bf16::store(x, &mut b);
        assert_eq!(
            u16::from_ne_bytes(b),
            bf16::from_f32(x).to_bits(),
            "bf16 {bits:#x}"
        );
    }
}

/// The rounding shortcuts equal decode(encode(x)) wherever the encoder gives a finite code
/// (all of E4M3's domain up to what rounds to 448; E5M2's up to what rounds to 57344).
fn check_round(x: f32) {
    let bits = x.to_bits();
    let (c4, c5) = (f32_to_e4m3(x), f32_to_e5m2(x));
    if c4 & 0x7f != 0x7f {
        let want = e4m3_to_f32(c4).to_bits();
        assert_eq!(e4m3_round(x).to_bits(), want, "e4m3 round {bits:#x}");
    }
    if c5 & 0x7f < 0x7c {
        let want = e5m2_to_f32(c5).to_bits();
        assert_eq!(e5m2_round(x).to_bits(), want, "e5m2 round {bits:#x}");
    }
}
