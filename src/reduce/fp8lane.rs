//! The fp8 element types as [`Lane`]s of the fused reduction kernels, over the branch-free
//! conversions of [`crate::fp8::fast`].

use super::kernels::Lane;
use crate::fp8::fast::{e4m3_to_f32, e5m2_to_f32, f32_to_e4m3, f32_to_e5m2};

/// The E4M3 codec for the fused kernels.
pub(super) struct E4m3;

impl Lane for E4m3 {
    const SIZE: usize = 1;
    #[inline(always)]
    fn load(b: &[u8]) -> f32 {
        e4m3_to_f32(b[0])
    }
    #[inline(always)]
    fn store(v: f32, b: &mut [u8]) {
        b[0] = f32_to_e4m3(v);
    }
}

/// The E5M2 codec for the fused kernels.
pub(super) struct E5m2;

impl Lane for E5m2 {
    const SIZE: usize = 1;
    #[inline(always)]
    fn load(b: &[u8]) -> f32 {
        e5m2_to_f32(b[0])
    }
    #[inline(always)]
    fn store(v: f32, b: &mut [u8]) {
        b[0] = f32_to_e5m2(v);
    }
}
