//! Portable, branch-free kernels written so that LLVM vectorises them.
//!
//! - Native types (integers, f32, f64) are combined element by element straight out of the
//!   byte slices: `chunks_exact` + `from_ne_bytes` compiles to unaligned vector loads and
//!   stores, so no alignment is needed and no `unsafe` either.
//! - bf16 and fp8 convert per element with branch-free integer/float operations ([`Lane`]),
//!   so one fused loop decodes both operands, combines in f32 and rounds back — vectorised
//!   whole, with no scratch memory.
//! - f16 is widened a block at a time into f32 scratch arrays through a [`Widen`] codec
//!   (F16C instructions, or `half`'s conversions), combined there, and rounded back once.
//!
//! Every operator here is the exact formula of [`super::scalar`] (`float_combine!`), rewritten
//! with selects instead of branches; the tests check the two bit for bit.

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use super::scalar::Arith;
use crate::types::ReduceOp;

/// Elements per block of the widening kernels (the f32 scratch is two arrays of this many).
const BLOCK: usize = 256;

/// A type with native arithmetic: the four per-step operators, inlined and branch-free.
pub(super) trait Native: Arith {
    /// `a + b` (wrapping for integers).
    fn sum(a: Self, b: Self) -> Self;
    /// `a * b` (wrapping for integers).
    fn prod(a: Self, b: Self) -> Self;
    /// The larger of `a` and `b` (NaN-propagating for floats).
    fn max(a: Self, b: Self) -> Self;
    /// The smaller of `a` and `b` (NaN-propagating for floats).
    fn min(a: Self, b: Self) -> Self;
}

macro_rules! native_int {
    ($($t:ty),*) => {$(
        impl Native for $t {
            #[inline(always)]
            fn sum(a: Self, b: Self) -> Self {
                a.wrapping_add(b)
            }
            #[inline(always)]
            fn prod(a: Self, b: Self) -> Self {
                a.wrapping_mul(b)
            }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self {
                Ord::max(a, b)
            }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self {
                Ord::min(a, b)
            }
        }
    )*};
}
native_int!(i8, u8, i32, u32, i64, u64);

macro_rules! native_float {
    ($($t:ty),*) => {$(
        impl Native for $t {
            #[inline(always)]
            fn sum(a: Self, b: Self) -> Self {
                a + b
            }
            #[inline(always)]
            fn prod(a: Self, b: Self) -> Self {
                a * b
            }
            // scalar.rs: `if a or b is NaN { a + b } else if b > a { b } else { a }`, as selects.
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self {
                let m = if b > a { b } else { a };
                if a.is_nan() | b.is_nan() {
                    a + b
                } else {
                    m
                }
            }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self {
                let m = if b < a { b } else { a };
                if a.is_nan() | b.is_nan() {
                    a + b
                } else {
                    m
                }
            }
        }
    )*};
}
native_float!(f32, f64);

/// Calls `$body` with `$f` bound to the operator function of `$op` for type `$t`, so that the
/// loop inside is monomorphised per operator and carries no branch on it.
macro_rules! with_op {
    ($t:ty, $op:expr, |$f:ident| $body:expr) => {
        match $op {
            ReduceOp::Sum | ReduceOp::Avg => {
                let $f = <$t as Native>::sum;
                $body
            }
            ReduceOp::Prod => {
                let $f = <$t as Native>::prod;
                $body
            }
            ReduceOp::Max => {
                let $f = <$t as Native>::max;
                $body
            }
            ReduceOp::Min => {
                let $f = <$t as Native>::min;
                $body
            }
        }
    };
}

/// `dst ⊕= src` for a native type.
#[inline(always)]
pub(super) fn native2<T: Native>(op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    with_op!(T, op, |f| map2::<T>(dst, src, f))
}

/// `dst = a ⊕ b` for a native type.
#[inline(always)]
pub(super) fn native3<T: Native>(op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8]) {
    with_op!(T, op, |f| map3::<T>(dst, a, b, f))
}

/// `dst /= n` for a native type.
#[inline(always)]
pub(super) fn native_div<T: Native>(dst: &mut [u8], n: usize) {
    for d in dst.chunks_exact_mut(T::SIZE) {
        T::load(d).div_count(n).store(d);
    }
}

#[inline(always)]
fn map2<T: Arith>(dst: &mut [u8], src: &[u8], f: impl Fn(T, T) -> T) {
    for (d, s) in dst.chunks_exact_mut(T::SIZE).zip(src.chunks_exact(T::SIZE)) {
        f(T::load(d), T::load(s)).store(d);
    }
}

#[inline(always)]
fn map3<T: Arith>(dst: &mut [u8], a: &[u8], b: &[u8], f: impl Fn(T, T) -> T) {
    for ((d, x), y) in dst
        .chunks_exact_mut(T::SIZE)
        .zip(a.chunks_exact(T::SIZE))
        .zip(b.chunks_exact(T::SIZE))
    {
        f(T::load(x), T::load(y)).store(d);
    }
}

/// Conversion of a reduced-precision type to and from f32, a slice at a time.
pub(super) trait Widen {
    /// Bytes per element.
    const SIZE: usize;
    /// Decodes `out.len()` elements from `bytes` (exactly `out.len() * SIZE` bytes), exactly.
    fn decode(&self, bytes: &[u8], out: &mut [f32]);
    /// Rounds `vals` (to nearest, ties to even) into `bytes` (exactly `vals.len() * SIZE`).
    fn encode(&self, vals: &[f32], bytes: &mut [u8]);
}

/// A reduced-precision type whose conversions are branch-free per element, so that a whole
/// decode–combine–encode loop fuses into one vectorised loop with no scratch memory.
pub(super) trait Lane {
    /// Bytes per element.
    const SIZE: usize;
    /// The exact f32 value of the element in `b[..SIZE]`.
    fn load(b: &[u8]) -> f32;
    /// Rounds `v` (to nearest, ties to even) into `b[..SIZE]`.
    fn store(v: f32, b: &mut [u8]);
}

/// `dst ⊕= src` for a [`Lane`] type: widen, combine in f32, round once — one fused loop.
#[inline(always)]
pub(super) fn lane2<L: Lane>(op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    with_op!(f32, op, |f| {
        for (d, s) in dst.chunks_exact_mut(L::SIZE).zip(src.chunks_exact(L::SIZE)) {
            L::store(f(L::load(d), L::load(s)), d);
        }
    })
}

/// `dst = a ⊕ b` for a [`Lane`] type.
#[inline(always)]
pub(super) fn lane3<L: Lane>(op: ReduceOp, dst: &mut [u8], a: &[u8], b: &[u8]) {
    with_op!(f32, op, |f| {
        for ((d, x), y) in dst
            .chunks_exact_mut(L::SIZE)
            .zip(a.chunks_exact(L::SIZE))
            .zip(b.chunks_exact(L::SIZE))
        {
            L::store(f(L::load(x), L::load(y)), d);
        }
    })
}

/// `dst /= n` for a [`Lane`] type (divide in f32, round once).
#[inline(always)]
pub(super) fn lane_div<L: Lane>(dst: &mut [u8], n: usize) {
    let div = n as f32;
    for d in dst.chunks_exact_mut(L::SIZE) {
        L::store(L::load(d) / div, d);
    }
}

/// `dst ⊕= src` for a widened type: decode both, combine in f32, round once.
#[inline(always)]
pub(super) fn widened2<W: Widen>(w: &W, op: ReduceOp, dst: &mut [u8], src: &[u8]) {
    with_op!(f32, op, |f| {
        let (mut a, mut b) = ([0f32; BLOCK], [0f32; BLOCK]);
        let bytes = BLOCK * W::SIZE;
        for (d, s) in dst.chunks_mut(bytes).zip(src.chunks(bytes)) {
            let n = d.len() / W::SIZE;
            let (a, b) = (&mut a[..n], &mut b[..n]);
            w.decode(d, a);
            w.decode(s, b);
            for (x, y) in a.iter_mut().zip(b.iter()) {
                *x = f(*x, *y);
            }
            w.encode(a, d);
        }
    })
}

/// `dst = x ⊕ y` for a widened type.
#[inline(always)]
pub(super) fn widened3<W: Widen>(w: &W, op: ReduceOp, dst: &mut [u8], x: &[u8], y: &[u8]) {
    with_op!(f32, op, |f| {
        let (mut a, mut b) = ([0f32; BLOCK], [0f32; BLOCK]);
        let bytes = BLOCK * W::SIZE;
        for ((d, xs), ys) in dst
            .chunks_mut(bytes)
            .zip(x.chunks(bytes))
            .zip(y.chunks(bytes))
        {
            let n = d.len() / W::SIZE;
            let (a, b) = (&mut a[..n], &mut b[..n]);
            w.decode(xs, a);
            w.decode(ys, b);
            for (p, q) in a.iter_mut().zip(b.iter()) {
                *p = f(*p, *q);
            }
            w.encode(a, d);
        }
    })
}

/// `dst /= n` for a widened type (divide in f32, round once).
#[inline(always)]
pub(super) fn widened_div<W: Widen>(w: &W, dst: &mut [u8], n: usize) {
    let mut a = [0f32; BLOCK];
    let div = n as f32;
    for d in dst.chunks_mut(BLOCK * W::SIZE) {
        let a = &mut a[..d.len() / W::SIZE];
        w.decode(d, a);
        for x in a.iter_mut() {
            *x /= div;
        }
        w.encode(a, d);
    }
}

/// bfloat16, converted with integer operations that vectorise (`half` converts bf16 one
/// element at a time). Bit-identical to `half::bf16::{to_f32, from_f32}`.
pub(super) struct Bf16;

impl Lane for Bf16 {
    const SIZE: usize = 2;
    #[inline(always)]
    fn load(b: &[u8]) -> f32 {
        // (A 2-byte `try_into` rather than two byte loads: same access width as the store, so
        // LLVM can prove the fused loop free of cross-iteration dependences and vectorise it.)
        let h = u16::from_ne_bytes(b[..2].try_into().unwrap_or_default()) as u32;
        // A signalling NaN is quietened, as `half` does.
        let q = if h & 0x7fff > 0x7f80 { h | 0x40 } else { h };
        f32::from_bits(q << 16)
    }
    #[inline(always)]
    fn store(v: f32, b: &mut [u8]) {
        let x = v.to_bits();
        // Round to nearest, ties to even: add 0x7fff plus the lowest kept bit, truncate.
        let rounded = x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16;
        let r = if x & 0x7fff_ffff > 0x7f80_0000 {
            (x >> 16) | 0x40
        } else {
            rounded
        };
        b[..2].copy_from_slice(&(r as u16).to_ne_bytes());
    }
}

/// IEEE half through `half`'s slice conversions (F16C when the CPU has it, detected at run
/// time by `half`; its portable code otherwise) — the same conversions as the scalar path.
pub(super) struct HalfF16;

impl Widen for HalfF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    fn decode(&self, bytes: &[u8], out: &mut [f32]) {
        let mut bits = [0u16; BLOCK];
        for (out, bytes) in out.chunks_mut(BLOCK).zip(bytes.chunks(BLOCK * 2)) {
            let bits = &mut bits[..out.len()];
            for (c, b) in bytes.chunks_exact(2).zip(bits.iter_mut()) {
                *b = u16::from_ne_bytes([c[0], c[1]]);
            }
            bits.reinterpret_cast::<f16>().convert_to_f32_slice(out);
        }
    }
    #[inline(always)]
    fn encode(&self, vals: &[f32], bytes: &mut [u8]) {
        let mut bits = [0u16; BLOCK];
        for (vals, bytes) in vals.chunks(BLOCK).zip(bytes.chunks_mut(BLOCK * 2)) {
            let bits = &mut bits[..vals.len()];
            bits.reinterpret_cast_mut::<f16>()
                .convert_from_f32_slice(vals);
            for (c, b) in bytes.chunks_exact_mut(2).zip(bits.iter()) {
                c.copy_from_slice(&b.to_ne_bytes());
            }
        }
    }
}
