//! Element types, reduction operators and the [`Element`] trait that ties Rust types to them.
//!
//! # Numerics (what every reduction guarantees)
//! - **Reduced-precision floats** (f16, bf16, fp8): each reduction step widens both operands
//!   to f32, combines them, and rounds the result once (to nearest, ties to even) when it is
//!   stored. A reduction over `n` ranks therefore rounds `n - 1` times; the float error bound
//!   of a result is `(n - 1) · u · Σ|xᵢ|` where `u` is the unit roundoff of the *stored* type
//!   (2⁻²⁴ f32, 2⁻⁵³ f64, 2⁻¹¹ f16, 2⁻⁸ bf16, 2⁻⁴ e4m3, 2⁻³ e5m2).
//! - **NaN and infinity**: sum and prod follow IEEE 754 (NaN in → NaN out, `inf + -inf` =
//!   NaN). `min` and `max` *propagate* NaN (IEEE 754-2019 `minimum`/`maximum`, like
//!   `torch.amin`), so a NaN gradient is never hidden. Which zero `min(-0.0, +0.0)` returns is
//!   unspecified. Overflow in fp8 gives NaN (E4M3) or infinity (E5M2), see [`crate::fp8`].
//! - **Integers** wrap on overflow (two's complement), like NCCL. `avg` on integers is the
//!   wrapped sum divided by the world size, truncated toward zero (NCCL's `SumPostDiv`).
//! - **Avg** on floats is the sum divided by the world size once, at the end.
//! - Every algorithm makes every rank hold bit-identical results.
//! - **Every data type × operator pair is defined** (all twelve types take all five
//!   operators), so no call is refused for its pair; a raw or C caller's unknown type or
//!   operator code is [`crate::Error::InvalidDataType`] / [`crate::Error::InvalidReduceOp`].

use half::{bf16, f16};

use crate::fp8::{F8E4M3, F8E5M2};

/// The element type of a buffer. Discriminants are NCCL's `ncclDataType_t` numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DataType {
    /// `i8`.
    I8 = 0,
    /// `u8`.
    U8 = 1,
    /// `i32`.
    I32 = 2,
    /// `u32`.
    U32 = 3,
    /// `i64`.
    I64 = 4,
    /// `u64`.
    U64 = 5,
    /// IEEE half precision (`half::f16`).
    F16 = 6,
    /// `f32`.
    F32 = 7,
    /// `f64`.
    F64 = 8,
    /// bfloat16 (`half::bf16`).
    BF16 = 9,
    /// OCP FP8 E4M3 ([`F8E4M3`]).
    F8E4M3 = 10,
    /// OCP FP8 E5M2 ([`F8E5M2`]).
    F8E5M2 = 11,
}

impl DataType {
    /// Every data type, in code order.
    pub const ALL: [DataType; 12] = [
        DataType::I8,
        DataType::U8,
        DataType::I32,
        DataType::U32,
        DataType::I64,
        DataType::U64,
        DataType::F16,
        DataType::F32,
        DataType::F64,
        DataType::BF16,
        DataType::F8E4M3,
        DataType::F8E5M2,
    ];

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DataType::I8 | DataType::U8 | DataType::F8E4M3 | DataType::F8E5M2 => 1,
            DataType::F16 | DataType::BF16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }

    /// Whether this is a floating-point type.
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DataType::F16
                | DataType::F32
                | DataType::F64
                | DataType::BF16
                | DataType::F8E4M3
                | DataType::F8E5M2
        )
    }

    /// The type for an NCCL-numbered code, if there is one.
    pub fn from_code(code: i64) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| *d as i64 == code)
    }

    /// Short lower-case name (`f32`, `bf16`, `f8e4m3`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DataType::I8 => "i8",
            DataType::U8 => "u8",
            DataType::I32 => "i32",
            DataType::U32 => "u32",
            DataType::I64 => "i64",
            DataType::U64 => "u64",
            DataType::F16 => "f16",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::BF16 => "bf16",
            DataType::F8E4M3 => "f8e4m3",
            DataType::F8E5M2 => "f8e5m2",
        }
    }

    /// Unit roundoff of the stored type (0 for integers, which are exact).
    pub fn unit_roundoff(self) -> f64 {
        match self {
            DataType::F32 => 2f64.powi(-24),
            DataType::F64 => 2f64.powi(-53),
            DataType::F16 => 2f64.powi(-11),
            DataType::BF16 => 2f64.powi(-8),
            DataType::F8E4M3 => 2f64.powi(-4),
            DataType::F8E5M2 => 2f64.powi(-3),
            _ => 0.0,
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A reduction operator. Discriminants are NCCL's `ncclRedOp_t` numbers. Premul-sum (each
/// rank multiplies its input by its own scalar, then the ranks sum) is not one of them: it
/// is `Sum` with a scalar, see [`crate::Communicator::all_reduce_premul_sum`] and
/// [`crate::RawExtra::premul`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReduceOp {
    /// Sum.
    Sum = 0,
    /// Product.
    Prod = 1,
    /// Maximum (NaN-propagating for floats).
    Max = 2,
    /// Minimum (NaN-propagating for floats).
    Min = 3,
    /// Sum divided by the number of ranks.
    Avg = 4,
}

impl ReduceOp {
    /// Every operator, in code order.
    pub const ALL: [ReduceOp; 5] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Avg,
    ];

    /// The operator for an NCCL-numbered code, if there is one.
    pub fn from_code(code: i64) -> Option<ReduceOp> {
        ReduceOp::ALL.into_iter().find(|o| *o as i64 == code)
    }

    /// Lower-case name (`sum`, `prod`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Avg => "avg",
        }
    }

    /// The operator applied at each step: `Avg` reduces as `Sum` and divides once at the end.
    pub const fn step_op(self) -> ReduceOp {
        match self {
            ReduceOp::Avg => ReduceOp::Sum,
            op => op,
        }
    }
}

impl std::fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that ferrocoll can move and reduce. Sealed: implemented for the types of
/// [`DataType`] only. Every implementor is plain old data: any bit pattern is a valid value,
/// no padding, no drop glue.
pub trait Element: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The matching data type.
    const DTYPE: DataType;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DataType = DataType::$d;
        }
    )*};
}

element!(
    i8 => I8, u8 => U8, i32 => I32, u32 => U32, i64 => I64, u64 => U64,
    f16 => F16, f32 => F32, f64 => F64, bf16 => BF16, F8E4M3 => F8E4M3, F8E5M2 => F8E5M2,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_nccl() {
        assert_eq!(DataType::from_code(7), Some(DataType::F32));
        assert_eq!(DataType::from_code(9), Some(DataType::BF16));
        assert_eq!(DataType::from_code(12), None);
        assert_eq!(DataType::from_code(-1), None);
        assert_eq!(ReduceOp::from_code(2), Some(ReduceOp::Max));
        assert_eq!(ReduceOp::from_code(5), None);
        assert_eq!(<bf16 as Element>::DTYPE.size(), 2);
    }
}
