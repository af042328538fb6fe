//! The two OCP 8-bit floating-point formats (OCP "8-bit Floating Point Specification", v1.0):
//!
//! | format | sign.exp.mantissa | bias | max finite | inf | NaN codes |
//! |---|---|---|---|---|---|
//! | [`F8E4M3`] (E4M3FN) | 1.4.3 | 7 | 448 | none | `S.1111.111` |
//! | [`F8E5M2`] | 1.5.2 | 15 | 57344 | `S.11111.00` | `S.11111.{01,10,11}` |
//!
//! Conversion from `f32` rounds to nearest, ties to even. Values too large for the format
//! become infinity in E5M2 and NaN in E4M3 (which has no infinity) — the non-saturating
//! behaviour of `torch` and `ml_dtypes` casts; NaN stays NaN. Decoding goes through a
//! 256-entry table built at compile time.
//!
//! Beside the scalar conversions of the two types live their fast paths: `fp8/fast.rs`, the
//! branch-free conversions that vectorise (bit-identical to the scalar ones; the reduction
//! kernels and the fp8 codec use them), and `fp8/block.rs`, the block-scaled encode/decode
//! kernels of the fp8 compression codec.

pub(crate) mod block;
pub(crate) mod fast;

/// An OCP FP8 E4M3 (E4M3FN) value, stored as its bit pattern.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct F8E4M3(pub u8);

/// An OCP FP8 E5M2 value, stored as its bit pattern.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct F8E5M2(pub u8);

/// Layout of one 8-bit format.
struct Format {
    mbits: u32,
    bias: i32,
    /// E4M3FN: the all-ones exponent still holds finite numbers, only `.111` is NaN.
    fn_style: bool,
}

const E4M3: Format = Format {
    mbits: 3,
    bias: 7,
    fn_style: true,
};
const E5M2: Format = Format {
    mbits: 2,
    bias: 15,
    fn_style: false,
};

const fn decode_bits(code: u8, f: &Format) -> u32 {
    let sign = ((code >> 7) as u32) << 31;
    let ebits = 7 - f.mbits;
    let exp = ((code as u32) >> f.mbits) & ((1 << ebits) - 1);
    let mant = (code as u32) & ((1 << f.mbits) - 1);
    let exp_max = (1 << ebits) - 1;
    if f.fn_style {
        if exp == exp_max && mant == (1 << f.mbits) - 1 {
            return sign | 0x7fc0_0000;
        }
    } else if exp == exp_max {
        return sign | if mant == 0 { 0x7f80_0000 } else { 0x7fc0_0000 };
    }
    if exp == 0 {
        if mant == 0 {
            return sign;
        }
        // Subnormal: mant * 2^(1 - bias - mbits); normalise on the highest set bit p.
        let p = 31 - mant.leading_zeros();
        let e32 = (p as i32 + 1 - f.bias - f.mbits as i32 + 127) as u32;
        return sign | (e32 << 23) | ((mant - (1 << p)) << (23 - p));
    }
    let e32 = (exp as i32 - f.bias + 127) as u32;
    sign | (e32 << 23) | (mant << (23 - f.mbits))
}

const fn table(f: &Format) -> [f32; 256] {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = f32::from_bits(decode_bits(i as u8, f));
        i += 1;
    }
    t
}

static E4M3_TABLE: [f32; 256] = table(&E4M3);
static E5M2_TABLE: [f32; 256] = table(&E5M2);

fn encode(x: f32, f: &Format) -> u8 {
    let sign = ((x.to_bits() >> 31) as u8) << 7;
    let nan = if f.fn_style { 0x7f } else { 0x7e };
    if x.is_nan() {
        return sign | nan;
    }
    let overflow = sign | if f.fn_style { 0x7f } else { 0x7c };
    let a = x.abs();
    if a.is_infinite() {
        return overflow;
    }
    let emin = 1 - f.bias;
    let one_m = (1u32 << f.mbits) as f32;
    if a < 2f32.powi(emin) {
        // Subnormal range: a whole number of steps of 2^(emin - mbits); q == 2^mbits is
        // exactly the smallest normal, whose code is also q.
        let q = (a * 2f32.powi(f.mbits as i32 - emin)).round_ties_even() as u32;
        return sign | q as u8;
    }
    let mut e = ((a.to_bits() >> 23) & 0xff) as i32 - 127;
    let m = a * 2f32.powi(-e);
    let mut q = ((m - 1.0) * one_m).round_ties_even() as u32;
    if q == 1 << f.mbits {
        q = 0;
        e += 1;
    }
    let field = e + f.bias;
    let exp_max = (1 << (7 - f.mbits)) - 1;
    let too_big = if f.fn_style {
        field > exp_max || (field == exp_max && q == (1 << f.mbits) - 1)
    } else {
        field >= exp_max
    };
    if too_big {
        return overflow;
    }
    sign | ((field as u32) << f.mbits | q) as u8
}

impl F8E4M3 {
    /// Largest finite value (448).
    pub const MAX: f32 = 448.0;
    /// Rounds `x` to the nearest E4M3 value (ties to even); too large or infinite → NaN.
    pub fn from_f32(x: f32) -> Self {
        Self(encode(x, &E4M3))
    }
    /// The exact `f32` value.
    #[inline]
    pub fn to_f32(self) -> f32 {
        E4M3_TABLE[self.0 as usize]
    }
}

impl F8E5M2 {
    /// Largest finite value (57344).
    pub const MAX: f32 = 57344.0;
    /// Rounds `x` to the nearest E5M2 value (ties to even); too large → ±infinity.
    pub fn from_f32(x: f32) -> Self {
        Self(encode(x, &E5M2))
    }
    /// The exact `f32` value.
    #[inline]
    pub fn to_f32(self) -> f32 {
        E5M2_TABLE[self.0 as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(F8E4M3(0x7e).to_f32(), 448.0);
        assert!(F8E4M3(0x7f).to_f32().is_nan());
        assert_eq!(F8E4M3(0x01).to_f32(), 2f32.powi(-9));
        assert_eq!(F8E4M3(0x38).to_f32(), 1.0);
        assert_eq!(F8E5M2(0x7b).to_f32(), 57344.0);
        assert_eq!(F8E5M2(0x7c).to_f32(), f32::INFINITY);
        assert!(F8E5M2(0x7d).to_f32().is_nan());
        assert_eq!(F8E5M2(0x01).to_f32(), 2f32.powi(-16));
        assert_eq!(F8E5M2(0x3c).to_f32(), 1.0);
        assert_eq!(F8E4M3(0x80).to_f32().to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            let v = F8E4M3(c).to_f32();
            if v.is_nan() {
                assert!(F8E4M3::from_f32(v).to_f32().is_nan());
            } else {
                assert_eq!(F8E4M3::from_f32(v).0, c, "e4m3 code {c:#x} = {v}");
            }
            let v = F8E5M2(c).to_f32();
            if v.is_nan() {
                assert!(F8E5M2::from_f32(v).to_f32().is_nan());
            } else {
                assert_eq!(F8E5M2::from_f32(v).0, c, "e5m2 code {c:#x} = {v}");
            }
        }
    }

    #[test]
    fn rounds_to_nearest_even_and_overflows() {
        // 1.0625 lies halfway between 1.0 (even mantissa 000) and 1.125 (001) in E4M3.
        assert_eq!(F8E4M3::from_f32(1.0625).to_f32(), 1.0);
        assert_eq!(F8E4M3::from_f32(1.1875).to_f32(), 1.25);
        assert_eq!(F8E4M3::from_f32(460.0).to_f32(), 448.0);
        assert_eq!(F8E4M3::from_f32(464.0).to_f32(), 448.0); // tie: even mantissa .110
        assert!(F8E4M3::from_f32(465.0).to_f32().is_nan());
        assert!(F8E4M3::from_f32(f32::INFINITY).to_f32().is_nan());
        assert_eq!(F8E5M2::from_f32(1e6).to_f32(), f32::INFINITY);
        assert_eq!(F8E5M2::from_f32(-1e6).to_f32(), f32::NEG_INFINITY);
        assert_eq!(F8E4M3::from_f32(1e-10).to_f32(), 0.0);
    }

    #[test]
    fn nearest_by_exhaustive_search() {
        // Against a brute-force nearest over all finite codes, on a grid of inputs.
        let finite: Vec<f32> = (0..=255u8)
            .map(|c| F8E4M3(c).to_f32())
            .filter(|v| v.is_finite())
            .collect();
        let mut x = -440.0f32;
        while x < 440.0 {
            let got = F8E4M3::from_f32(x).to_f32();
            let best = finite
                .iter()
                .map(|v| (v - x).abs())
                .fold(f32::INFINITY, f32::min);
            assert!((got - x).abs() <= best, "x={x} got={got}");
            x += 0.37;
        }
    }
}
