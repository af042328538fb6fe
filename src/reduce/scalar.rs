//! Element-by-element arithmetic for every data type: the reference the kernels are tested
//! against, and the definition of ferrocoll's numerics (see [`crate::DataType`]).

use half::{bf16, f16};

use crate::fp8::{F8E4M3, F8E5M2};
use crate::types::{DataType, Element, ReduceOp};

/// Arithmetic of one element type.
pub trait Arith: Element {
    /// Bytes per element.
    const SIZE: usize;
    /// Reads an element from (possibly unaligned) native-endian bytes.
    fn load(b: &[u8]) -> Self;
    /// Writes the element as native-endian bytes.
    fn store(self, b: &mut [u8]);
    /// `a ⊕ b` for a per-step operator (`Avg` must already be `Sum`).
    fn combine(op: ReduceOp, a: Self, b: Self) -> Self;
    /// `self / n` (truncating for integers).
    fn div_count(self, n: usize) -> Self;
    /// `self × s`, premul-sum's pre-step: integers multiply (wrapping) by `s` converted to
    /// their type (saturating, truncating toward zero), f32 and f64 by `s` rounded to their
    /// type, the reduced-precision floats in f32 (rounded once when stored).
    fn mul_scalar(self, s: f64) -> Self;
    /// The value as f64 (error bounds in tests, a C caller's premul-sum scalar).
    fn to_f64(self) -> f64;
}

macro_rules! int_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn load(b: &[u8]) -> Self {
                <$t>::from_ne_bytes(b[..Self::SIZE].try_into().unwrap_or_default())
            }
            #[inline(always)]
            fn store(self, b: &mut [u8]) {
                b[..Self::SIZE].copy_from_slice(&self.to_ne_bytes());
            }
            #[inline(always)]
            fn combine(op: ReduceOp, a: Self, b: Self) -> Self {
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => a.wrapping_add(b),
                    ReduceOp::Prod => a.wrapping_mul(b),
                    ReduceOp::Max => a.max(b),
                    ReduceOp::Min => a.min(b),
                }
            }
            fn div_count(self, n: usize) -> Self {
                // Truncating division; n fits the type whenever n ≤ its max (world sizes do,
                // except i8/u8 beyond 127/255 ranks, where the quotient is 0 or -0 anyway).
                match <$t>::try_from(n) {
                    Ok(d) if d != 0 => self.wrapping_div(d),
                    _ => 0,
                }
            }
            fn mul_scalar(self, s: f64) -> Self {
                self.wrapping_mul(s as $t)
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
int_arith!(i8, u8, i32, u32, i64, u64);

macro_rules! float_combine {
    ($op:expr, $a:expr, $b:expr) => {{
        let (a, b) = ($a, $b);
        match $op {
            ReduceOp::Sum | ReduceOp::Avg => a + b,
            ReduceOp::Prod => a * b,
            // NaN-propagating: `a + b` is NaN when either is.
            ReduceOp::Max => {
                if a.is_nan() || b.is_nan() {
                    a + b
                } else if b > a {
                    b
                } else {
                    a
                }
            }
            ReduceOp::Min => {
                if a.is_nan() || b.is_nan() {
                    a + b
                } else if b < a {
                    b
                } else {
                    a
                }
            }
        }
    }};
}

macro_rules! native_float {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn load(b: &[u8]) -> Self {
                <$t>::from_ne_bytes(b[..Self::SIZE].try_into().unwrap_or_default())
            }
            #[inline(always)]
            fn store(self, b: &mut [u8]) {
                b[..Self::SIZE].copy_from_slice(&self.to_ne_bytes());
            }
            #[inline(always)]
            fn combine(op: ReduceOp, a: Self, b: Self) -> Self {
                float_combine!(op, a, b)
            }
            fn div_count(self, n: usize) -> Self {
                self / n as $t
            }
            fn mul_scalar(self, s: f64) -> Self {
                self * s as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
native_float!(f32, f64);

/// Types that compute in f32 and round once when stored.
macro_rules! widened_float {
    ($t:ty, $size:expr, $from_bits:expr, $to_bits:expr) => {
        impl Arith for $t {
            const SIZE: usize = $size;
            #[inline(always)]
            fn load(b: &[u8]) -> Self {
                let mut raw = [0u8; $size];
                raw.copy_from_slice(&b[..$size]);
                $from_bits(raw)
            }
            #[inline(always)]
            fn store(self, b: &mut [u8]) {
                b[..$size].copy_from_slice(&$to_bits(self));
            }
            #[inline(always)]
            fn combine(op: ReduceOp, a: Self, b: Self) -> Self {
                <$t>::from_f32(float_combine!(op, a.to_f32(), b.to_f32()))
            }
            fn div_count(self, n: usize) -> Self {
                <$t>::from_f32(self.to_f32() / n as f32)
            }
            fn mul_scalar(self, s: f64) -> Self {
                <$t>::from_f32(self.to_f32() * s as f32)
            }
            fn to_f64(self) -> f64 {
                self.to_f32() as f64
            }
        }
    };
}
widened_float!(f16, 2, |r: [u8; 2]| f16::from_ne_bytes(r), |v: f16| v
    .to_ne_bytes());
widened_float!(bf16, 2, |r: [u8; 2]| bf16::from_ne_bytes(r), |v: bf16| v
    .to_ne_bytes());
widened_float!(F8E4M3, 1, |r: [u8; 1]| F8E4M3(r[0]), |v: F8E4M3| [v.0]);
widened_float!(F8E5M2, 1, |r: [u8; 1]| F8E5M2(r[0]), |v: F8E5M2| [v.0]);

/// Element-by-element `dst[i] = dst[i] ⊕ src[i]` on bytes: the reference for
/// [`super::reduce`] (same contract).
pub fn reduce(dtype: DataType, op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    dispatch!(dtype, reduce_t, op.step_op(), dst, src)
}

/// Element-by-element `dst[i] = a[i] ⊕ b[i]`: the reference for [`super::reduce3`].
pub fn reduce3(dtype: DataType, op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8]) {
    dispatch!(dtype, reduce3_t, op.step_op(), dst, a, b)
}

/// Element-by-element `dst[i] = dst[i] / n`: the reference for [`super::divide`].
pub fn divide(dtype: DataType, dst: &mut [u8], n: usize) {
    dispatch!(dtype, divide_t, dst, n)
}

/// Element-by-element `dst[i] = src[i] × s` (see [`Arith::mul_scalar`]): premul-sum's
/// pre-step. Both slices hold the same whole number of elements.
pub fn premultiply(dtype: DataType, dst: &mut [u8], src: &[u8], s: f64) {
    dispatch!(dtype, premultiply_t, dst, src, s)
}

/// The value of the element of `dtype` at the start of `b` (native-endian bytes, at least
/// one element), as f64: how a C caller's premul-sum scalar is read.
pub fn load_f64(dtype: DataType, b: &[u8]) -> f64 {
    dispatch!(dtype, load_f64_t, b)
}

fn load_f64_t<T: Arith>(b: &[u8]) -> f64 {
    T::load(b).to_f64()
}

fn premultiply_t<T: Arith>(dst: &mut [u8], src: &[u8], s: f64) {
    let n = T::SIZE;
    for (d, x) in dst.chunks_exact_mut(n).zip(src.chunks_exact(n)) {
        T::load(x).mul_scalar(s).store(d);
    }
}

fn reduce_t<T: Arith>(op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    let n = T::SIZE;
    for (d, s) in dst.chunks_exact_mut(n).zip(src.chunks_exact(n)) {
        T::combine(op, T::load(d), T::load(s)).store(d);
    }
}

fn reduce3_t<T: Arith>(op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8]) {
    let n = T::SIZE;
    for ((d, x), y) in dst
        .chunks_exact_mut(n)
        .zip(a.chunks_exact(n))
        .zip(b.chunks_exact(n))
    {
        T::combine(op, T::load(x), T::load(y)).store(d);
    }
}

fn divide_t<T: Arith>(dst: &mut [u8], n: usize) {
    for d in dst.chunks_exact_mut(T::SIZE) {
        T::load(d).div_count(n).store(d);
    }
}

/// Left fold of `values` with `op` in the given order — the sequential reference of a
/// reduction over ranks 0, 1, ..., n-1 — including `Avg`'s final division.
pub fn fold<T: Arith>(op: ReduceOp, values: &[T]) -> T {
    let mut it = values.iter().copied();
    let first = it.next().expect("fold of no values");
    let acc = it.fold(first, |acc, v| T::combine(op.step_op(), acc, v));
    if op == ReduceOp::Avg {
        acc.div_count(values.len())
    } else {
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_wrap() {
        assert_eq!(i8::combine(ReduceOp::Sum, 127, 1), -128);
        assert_eq!(u8::combine(ReduceOp::Prod, 16, 16), 0);
        assert_eq!(fold(ReduceOp::Avg, &[7i32, 8, -3]), 4);
    }

    /// Premul-sum's products: exact values in each kind of type, integers wrapping, the
    /// reduced-precision floats rounded once, NaN and infinity kept.
    #[test]
    fn premultiply_scales_every_type() {
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>();
        let mut out = vec![0u8; 16];
        premultiply(
            DataType::F32,
            &mut out,
            &bytes(&[1.0, 2.0, -3.0, f32::INFINITY]),
            0.5,
        );
        assert_eq!(out, bytes(&[0.5, 1.0, -1.5, f32::INFINITY]));
        assert_eq!(f64::mul_scalar(3.0, -0.25), -0.75);
        assert_eq!(i32::mul_scalar(7, 3.0), 21);
        assert_eq!(i8::mul_scalar(100, 2.0), -56, "wraps");
        assert_eq!(
            u8::mul_scalar(5, 2.9),
            10,
            "the scalar truncates to the type"
        );
        // bf16: 1.0078125 × 3 = 3.0234375 lies halfway between 3.015625 and 3.03125 (7
        // mantissa bits): rounded once, to even.
        let x = bf16::from_f32(1.007_812_5);
        assert_eq!(x.mul_scalar(3.0).to_f32(), 3.031_25);
        assert_eq!(f16::from_f32(1.5).mul_scalar(-2.0).to_f32(), -3.0);
        assert_eq!(F8E4M3::from_f32(2.0).mul_scalar(1.5).to_f32(), 3.0);
        assert!(f32::NAN.mul_scalar(2.0).is_nan());
        assert_eq!(
            load_f64(DataType::BF16, &bf16::from_f32(-2.5).to_ne_bytes()),
            -2.5
        );
        assert_eq!(load_f64(DataType::I64, &(-7i64).to_ne_bytes()), -7.0);
    }

    #[test]
    fn min_max_propagate_nan() {
        assert!(f32::combine(ReduceOp::Max, f32::NAN, 1.0).is_nan());
        assert!(f32::combine(ReduceOp::Min, 1.0, f32::NAN).is_nan());
        assert!(bf16::combine(ReduceOp::Max, bf16::from_f32(1.0), bf16::NAN)
            .to_f32()
            .is_nan());
        assert_eq!(f64::combine(ReduceOp::Max, 1.0, 2.0), 2.0);
    }

    #[test]
    fn reduced_precision_rounds_once() {
        // 1 + 2^-9 + 2^-9 in bf16 per step: each step rounds, so 1 + 2^-9 = 1 twice.
        let x = bf16::from_f32(1.0);
        let e = bf16::from_f32(2f32.powi(-9));
        assert_eq!(fold(ReduceOp::Sum, &[x, e, e]).to_f32(), 1.0);
        assert_eq!(
            F8E4M3::combine(ReduceOp::Sum, F8E4M3::from_f32(1.0), F8E4M3::from_f32(0.5)).to_f32(),
            1.5
        );
    }
}
