//! Branch-free OCP FP8 conversions that vectorise, bit-identical to the scalar ones of [`super`]
//! (`F8E4M3::{from_f32, to_f32}`, `F8E5M2::{from_f32, to_f32}`; checked exhaustively over
//! the codes and over a dense sample of all f32 bit patterns in the tests).
//!
//! - Decode: normal codes are re-biased by shifting the code into the f32 exponent/mantissa
//!   fields and adding the bias difference; subnormal codes are built as `2^emin·(1 + m/2^mbits)`
//!   and `2^emin` subtracted (exact, and no f32 subnormal operand, which would cost a microcode
//!   assist); NaN and infinity are selected.
//! - Encode: normal magnitudes round to nearest-even in the integer domain (add
//!   `half - 1 + lowest kept bit`, shift), re-bias, and clamp to the overflow code; subnormal
//!   magnitudes add a power of two whose ulp is the subnormal step, so the FPU rounds to
//!   nearest-even and the low bits are the code.

/// E4M3 code → f32, as `F8E4M3::to_f32`.
#[inline(always)]
pub(crate) fn e4m3_to_f32(c: u8) -> f32 {
    // Sign-extended, the code has the sign in bit 31 and the magnitude in bits 0-6 (one
    // widening instruction per vector, where zero- and sign-extending both would take two).
    let s = c as i8 as i32 as u32;
    let m = s & 0x7f;
    // Exponent field ≥ 1: shift into the f32 fields and re-bias (7 → 127).
    let normal = f32::from_bits((m << 20) + (120 << 23));
    // Exponent field 0: 2^-6·(1 + m/8) - 2^-6 = m·2^-9, exactly — no f32 subnormal is ever an
    // operand (those cost a microcode assist per instruction on x86).
    let sub = f32::from_bits((m << 20) | 0x3c80_0000) - f32::from_bits(0x3c80_0000);
    let v = if m < 8 { sub } else { normal };
    let v = if m == 0x7f { f32::NAN } else { v };
    f32::from_bits(v.to_bits() | (s & 0x8000_0000))
}

/// E5M2 code → f32, as `F8E5M2::to_f32`.
#[inline(always)]
pub(crate) fn e5m2_to_f32(c: u8) -> f32 {
    // As for E4M3: bias 15, 2 mantissa bits, subnormal step 2^-16.
    let s = c as i8 as i32 as u32;
    let m = s & 0x7f;
    let normal = f32::from_bits((m << 21) + (112 << 23));
    let sub = f32::from_bits((m << 21) | 0x3880_0000) - f32::from_bits(0x3880_0000);
    let v = if m < 4 { sub } else { normal };
    let v = if m == 0x7c { f32::INFINITY } else { v };
    let v = if m > 0x7c { f32::NAN } else { v };
    f32::from_bits(v.to_bits() | (s & 0x8000_0000))
}

/// f32 → E4M3 code, as `F8E4M3::from_f32` (RNE; too large, infinite or NaN → `S.1111.111`).
#[inline(always)]
pub(crate) fn f32_to_e4m3(v: f32) -> u8 {
    let x = v.to_bits();
    let sign = (x >> 24) & 0x80;
    let u = x & 0x7fff_ffff;
    // Normal: keep 3 mantissa bits (RNE), re-bias 127 → 7; anything past 0x7e (448) is NaN,
    // including inf and NaN inputs, whose rounded codes are larger still.
    let r = u.wrapping_add(0x7_ffff + ((u >> 20) & 1)) >> 20;
    let normal = r.wrapping_sub(120 << 3).min(0x7f);
    // Below 2^-6: steps of 2^-9, the ulp of 2^14 (bits 0x4680_0000).
    let sub = (f32::from_bits(u) + 16384.0)
        .to_bits()
        .wrapping_sub(0x4680_0000);
    let mag = if u < 0x3c80_0000 { sub } else { normal };
    (mag | sign) as u8
}

/// f32 → E5M2 code, as `F8E5M2::from_f32` (RNE; too large or infinite → ±inf, NaN → NaN).
#[inline(always)]
pub(crate) fn f32_to_e5m2(v: f32) -> u8 {
    let x = v.to_bits();
    let sign = (x >> 24) & 0x80;
    let u = x & 0x7fff_ffff;
    let r = u.wrapping_add(0xf_ffff + ((u >> 21) & 1)) >> 21;
    let normal = r.wrapping_sub(112 << 2).min(0x7c);
    let normal = if u > 0x7f80_0000 { 0x7e } else { normal };
    // Below 2^-14: steps of 2^-16, the ulp of 2^7 (bits 0x4300_0000).
    let sub = (f32::from_bits(u) + 128.0)
        .to_bits()
        .wrapping_sub(0x4300_0000);
    let mag = if u < 0x3880_0000 { sub } else { normal };
    (mag | sign) as u8
}

/// `e4m3_to_f32(f32_to_e4m3(v))` for finite `|v|` up to the largest E4M3 value (448) and a
/// little beyond (whatever rounds to 448), without building the code: the magnitude rounded
/// to 3 mantissa bits in the f32 fields (normal range) or to a multiple of 2^-9 by the same
/// FPU addition as the encoder (subnormal range). Past that domain (values that encode to
/// NaN) the result is a finite or infinite f32, not NaN: callers keep `v` inside it. Used by
/// error feedback, which needs the quantised value next to the code.
#[inline(always)]
pub(crate) fn e4m3_round(v: f32) -> f32 {
    let x = v.to_bits();
    let u = x & 0x7fff_ffff;
    let normal = u.wrapping_add(0x7_ffff + ((u >> 20) & 1)) & 0xfff0_0000;
    let sub = ((f32::from_bits(u) + 16384.0) - 16384.0).to_bits();
    let mag = if u < 0x3c80_0000 { sub } else { normal };
    f32::from_bits(mag | (x & 0x8000_0000))
}

/// `e5m2_to_f32(f32_to_e5m2(v))` for finite `|v|` up to the largest E5M2 value (57344) and
/// whatever rounds to it, as [`e4m3_round`] (2 mantissa bits, subnormal step 2^-16).
#[inline(always)]
pub(crate) fn e5m2_round(v: f32) -> f32 {
    let x = v.to_bits();
    let u = x & 0x7fff_ffff;
    let normal = u.wrapping_add(0xf_ffff + ((u >> 21) & 1)) & 0xffe0_0000;
    let sub = ((f32::from_bits(u) + 128.0) - 128.0).to_bits();
    let mag = if u < 0x3880_0000 { sub } else { normal };
    f32::from_bits(mag | (x & 0x8000_0000))
}
