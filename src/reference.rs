//! The sequential reference: what every collective must produce, computed element by element
//! in rank order, and the comparison that allows for float rounding. Tests and the probe's
//! `--check` use it; it is public so users can check their own runs the same way.

use crate::reduce::scalar::{fold, Arith};
use crate::schedule::{CollSpec, Collective, Uneven};
use crate::types::{DataType, ReduceOp};

use half::{bf16, f16};

use crate::fp8::{F8E4M3, F8E5M2};

macro_rules! typed {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match $dtype {
            DataType::I8 => $f::<i8>($($arg),*),
            DataType::U8 => $f::<u8>($($arg),*),
            DataType::I32 => $f::<i32>($($arg),*),
            DataType::U32 => $f::<u32>($($arg),*),
            DataType::I64 => $f::<i64>($($arg),*),
            DataType::U64 => $f::<u64>($($arg),*),
            DataType::F16 => $f::<f16>($($arg),*),
            DataType::F32 => $f::<f32>($($arg),*),
            DataType::F64 => $f::<f64>($($arg),*),
            DataType::BF16 => $f::<bf16>($($arg),*),
            DataType::F8E4M3 => $f::<F8E4M3>($($arg),*),
            DataType::F8E5M2 => $f::<F8E5M2>($($arg),*),
        }
    };
}

/// The output `rank` must hold, given every rank's input bytes. For `reduce` and `gather`,
/// ranks other than the root get an empty vector (their output is unspecified). The uneven
/// collectives have [`expected_uneven`].
pub fn expected(
    spec: &CollSpec,
    dtype: DataType,
    op: ReduceOp,
    inputs: &[Vec<u8>],
    rank: usize,
) -> Vec<u8> {
    let es = dtype.size();
    let (p, n) = (spec.world, spec.count);
    let elems = |r: usize, off: usize, len: usize| inputs[r][off * es..(off + len) * es].to_vec();
    match spec.kind {
        Collective::AllReduce => reduce_bytes(dtype, op, (0..p).map(|r| elems(r, 0, n)).collect()),
        Collective::Reduce if rank == spec.root => {
            reduce_bytes(dtype, op, (0..p).map(|r| elems(r, 0, n)).collect())
        }
        Collective::Reduce => Vec::new(),
        Collective::ReduceScatter => {
            reduce_bytes(dtype, op, (0..p).map(|r| elems(r, rank * n, n)).collect())
        }
        Collective::AllGather => (0..p).flat_map(|r| elems(r, 0, n)).collect(),
        Collective::Broadcast => elems(spec.root, 0, n),
        Collective::AllToAll => (0..p).flat_map(|r| elems(r, rank * n, n)).collect(),
        Collective::Barrier => Vec::new(),
        Collective::SendRecv => elems(spec.root, 0, n),
        Collective::Gather if rank == spec.root => (0..p).flat_map(|r| elems(r, 0, n)).collect(),
        Collective::Gather => Vec::new(),
        Collective::Scatter => elems(spec.root, rank * n, n),
        Collective::AllGatherV | Collective::ReduceScatterV | Collective::AllToAllV => Vec::new(),
    }
}

/// The output `rank` must hold after an uneven collective `kind`, given every rank's layout
/// (`layouts[r]`; the same for all ranks except in all-to-all-v), every rank's input bytes,
/// and what `rank`'s output held before the call (`before`): elements outside the blocks
/// keep their value.
pub fn expected_uneven(
    kind: Collective,
    layouts: &[Uneven],
    dtype: DataType,
    op: ReduceOp,
    inputs: &[Vec<u8>],
    rank: usize,
    before: &[u8],
) -> Vec<u8> {
    let es = dtype.size();
    let p = layouts.len();
    let mut out = before.to_vec();
    // Empty blocks may lie anywhere, even past the buffer: they touch nothing.
    let mut put = |off: usize, data: &[u8]| {
        if !data.is_empty() {
            out[off * es..off * es + data.len()].copy_from_slice(data)
        }
    };
    let bytes = |r: usize, off: usize, len: usize| match len {
        0 => &[][..],
        _ => &inputs[r][off * es..(off + len) * es],
    };
    match kind {
        Collective::AllGatherV => {
            let u = &layouts[rank];
            for r in 0..p {
                put(u.displs()[r], bytes(r, 0, u.counts()[r]));
            }
        }
        Collective::ReduceScatterV => {
            let (c, d) = (layouts[rank].counts()[rank], layouts[rank].displs()[rank]);
            let parts = (0..p).map(|r| bytes(r, d, c).to_vec()).collect();
            put(0, &reduce_bytes(dtype, op, parts));
        }
        Collective::AllToAllV => {
            let me = &layouts[rank];
            for (r, u) in layouts.iter().enumerate() {
                let (c, d) = (u.counts()[rank], u.displs()[rank]);
                put(me.recv_displs()[r], bytes(r, d, c));
            }
        }
        _ => {}
    }
    out
}

/// [`magnitudes`] for reduce-scatter-v: the bound of each element of `rank`'s block.
pub fn magnitudes_uneven(
    layouts: &[Uneven],
    dtype: DataType,
    op: ReduceOp,
    inputs: &[Vec<u8>],
    rank: usize,
) -> Vec<f64> {
    let u = &layouts[rank];
    let spec = CollSpec {
        kind: Collective::AllReduce,
        world: layouts.len(),
        count: u.counts()[rank],
        root: 0,
    };
    let es = dtype.size();
    let d = u.displs()[rank];
    let blocks: Vec<Vec<u8>> = inputs
        .iter()
        .map(|i| match spec.count {
            0 => Vec::new(),
            n => i[d * es..(d + n) * es].to_vec(),
        })
        .collect();
    magnitudes(&spec, dtype, op, &blocks, rank)
}

/// `input` (bytes of `dtype`) multiplied by `scalar` as a premul-sum's ranks multiply it
/// (see [`crate::reduce::scalar::Arith::mul_scalar`]): the reference of a premul-sum is the
/// sum of every rank's premultiplied input.
pub fn premultiplied(dtype: DataType, input: &[u8], scalar: f64) -> Vec<u8> {
    let mut out = vec![0u8; input.len()];
    crate::reduce::scalar::premultiply(dtype, &mut out, input, scalar);
    out
}

fn reduce_bytes(dtype: DataType, op: ReduceOp, parts: Vec<Vec<u8>>) -> Vec<u8> {
    typed!(dtype, reduce_typed, op, &parts)
}

fn reduce_typed<T: Arith>(op: ReduceOp, parts: &[Vec<u8>]) -> Vec<u8> {
    let len = parts[0].len();
    let mut out = vec![0u8; len];
    let mut vals = Vec::with_capacity(parts.len());
    for i in (0..len).step_by(T::SIZE) {
        vals.clear();
        vals.extend(parts.iter().map(|p| T::load(&p[i..])));
        fold(op, &vals).store(&mut out[i..]);
    }
    out
}

/// Counts the elements of `got` that differ from `want` by more than float rounding allows.
///
/// Integers, `min`, `max`, and data movement must match exactly. Float `sum`/`avg` may differ
/// by `world · u · Σ|xᵢ|` per element (`u` the type's unit roundoff; see [`crate::DataType`]) and
/// `prod` by `world · u · Π|xᵢ|` (plus one step for `avg`'s division), where `sum_abs`/`prod_abs`
/// give those sums/products per element (use [`magnitudes`]). NaN must meet NaN.
pub fn count_wrong(
    dtype: DataType,
    op: ReduceOp,
    world: usize,
    got: &[u8],
    want: &[u8],
    bound: &[f64],
) -> usize {
    if got.len() != want.len() {
        return want.len().max(got.len()) / dtype.size();
    }
    typed!(dtype, count_wrong_typed, op, world, got, want, bound)
}

fn count_wrong_typed<T: Arith>(
    op: ReduceOp,
    world: usize,
    got: &[u8],
    want: &[u8],
    bound: &[f64],
) -> usize {
    let u = T::DTYPE.unit_roundoff();
    let exact = u == 0.0 || matches!(op, ReduceOp::Min | ReduceOp::Max) || bound.is_empty();
    (0..got.len() / T::SIZE)
        .filter(|&i| {
            let (g, w) = (T::load(&got[i * T::SIZE..]), T::load(&want[i * T::SIZE..]));
            let (gf, wf) = (g.to_f64(), w.to_f64());
            if exact || !wf.is_finite() || !gf.is_finite() {
                // Bitwise for exact cases; NaN must meet NaN, infinities must match.
                let same_bits =
                    got[i * T::SIZE..(i + 1) * T::SIZE] == want[i * T::SIZE..(i + 1) * T::SIZE];
                return !(same_bits
                    || (gf.is_nan() && wf.is_nan())
                    || (exact && gf == wf && u == 0.0));
            }
            let tol = (world as f64 + 1.0) * u * bound[i] + (world as f64) * u * wf.abs();
            (gf - wf).abs() > tol
        })
        .count()
}

/// Per output element of a reduction, the magnitude that bounds its rounding error:
/// `Σ|xᵢ|` for sum/avg, `Π max(|xᵢ|, 1)` for prod; empty for other collectives and ops.
pub fn magnitudes(
    spec: &CollSpec,
    dtype: DataType,
    op: ReduceOp,
    inputs: &[Vec<u8>],
    rank: usize,
) -> Vec<f64> {
    if !spec.kind.reduces() || !dtype.is_float() || matches!(op, ReduceOp::Min | ReduceOp::Max) {
        return Vec::new();
    }
    let es = dtype.size();
    let base = if spec.kind == Collective::ReduceScatter {
        rank * spec.count
    } else {
        0
    };
    (0..spec.count)
        .map(|i| {
            let vals = inputs
                .iter()
                .map(|inp| typed!(dtype, as_f64, &inp[(base + i) * es..]));
            match op {
                ReduceOp::Prod => vals.map(|v| v.abs().max(1.0)).product(),
                _ => vals.map(f64::abs).sum(),
            }
        })
        .collect()
}

fn as_f64<T: Arith>(b: &[u8]) -> f64 {
    T::load(b).to_f64()
}

/// Deterministic test data: element `i` of `rank`'s buffer, as bytes of `dtype`, chosen so
/// that reductions of up to 64 ranks stay finite in every type (small integers, and ±1/±2 for
/// products).
pub fn test_input(dtype: DataType, op: ReduceOp, rank: usize, len: usize, seed: u64) -> Vec<u8> {
    typed!(dtype, test_input_typed, op, rank, len, seed)
}

fn test_input_typed<T: Arith + FromF64>(
    op: ReduceOp,
    rank: usize,
    len: usize,
    seed: u64,
) -> Vec<u8> {
    let mut out = vec![0u8; len * T::SIZE];
    let mut x = seed ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x2545_F491_4F6C_DD1D;
    for i in 0..len {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33;
        let v: f64 = match op {
            ReduceOp::Prod => {
                let mag = if rank < 2 && r % 3 == 0 { 2.0 } else { 1.0 };
                if r & 4 == 0 {
                    mag
                } else {
                    -mag
                }
            }
            _ => (r % 9) as f64 - 4.0,
        };
        T::from_f64(
            v,
            T::DTYPE.is_float() || matches!(T::DTYPE, DataType::I8 | DataType::I32 | DataType::I64),
        )
        .store(&mut out[i * T::SIZE..]);
    }
    out
}

/// Conversion from test values.
pub trait FromF64 {
    /// `v` in this type (unsigned types take `|v|` unless `signed`).
    fn from_f64(v: f64, signed: bool) -> Self;
}

macro_rules! from_f64_int {
    ($($t:ty),*) => {$(impl FromF64 for $t {
        fn from_f64(v: f64, signed: bool) -> Self { (if signed { v } else { v.abs() }) as $t }
    })*};
}
from_f64_int!(i8, u8, i32, u32, i64, u64);
impl FromF64 for f32 {
    fn from_f64(v: f64, _: bool) -> Self {
        v as f32
    }
}
impl FromF64 for f64 {
    fn from_f64(v: f64, _: bool) -> Self {
        v
    }
}
impl FromF64 for f16 {
    fn from_f64(v: f64, _: bool) -> Self {
        f16::from_f64(v)
    }
}
impl FromF64 for bf16 {
    fn from_f64(v: f64, _: bool) -> Self {
        bf16::from_f64(v)
    }
}
impl FromF64 for F8E4M3 {
    fn from_f64(v: f64, _: bool) -> Self {
        F8E4M3::from_f32(v as f32)
    }
}
impl FromF64 for F8E5M2 {
    fn from_f64(v: f64, _: bool) -> Self {
        F8E5M2::from_f32(v as f32)
    }
}
