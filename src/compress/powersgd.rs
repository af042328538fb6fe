//! PowerSGD (Vogels et al., 2019): a rank-r approximation of the summed 2-D gradient from one
//! step of subspace iteration, warm-started from the previous step's Q.
//!
//! For this rank's matrix M (rows × cols, plus its error-feedback residual):
//! 1. P = M·Q (rows × r); all-reduce P (sum over ranks);
//! 2. P̂ = orthonormal columns of P (Gram–Schmidt; a column that vanishes becomes 0);
//! 3. Q = Mᵀ·P̂ (cols × r); all-reduce Q;
//! 4. result = P̂·Qᵀ ≈ Σ M; the residual M − P̂·(Mᵀ·P̂)ᵀ (what the projection dropped from
//!    this rank's matrix) goes to the next step; Q is kept as the next step's start.
//!
//! Wire volume: (rows + cols)·r f32 instead of rows·cols. P and Q are all-reduced with the
//! library's f32 sum, bit-identical on every rank, and the rest is deterministic, so the
//! result is too. The first Q is a fixed pseudo-random matrix, the same on every rank.
//!
//! Non-finite values make the whole result non-finite (they enter every product); a Q that
//! is not finite afterwards is replaced by the initial one, so later steps recover.

use super::codec::residual;
use super::feedback::Entry;
use super::Codec;
use crate::comm::Communicator;
use crate::error::{Error, Result};
use crate::types::ReduceOp;

/// PowerSGD's sizes.
#[derive(Clone, Copy, Debug)]
pub struct PowerSgd;

impl PowerSgd {
    /// Bytes sent per all-reduce round for a `rows × cols` matrix at rank `rank`
    /// (P and Q together): `4 · (rows + cols) · rank`. Errors as [`PowerSgd::check`].
    pub fn encoded_len(rows: usize, cols: usize, rank: usize) -> Result<usize> {
        PowerSgd::check(rows, cols, rank)?;
        Ok(4 * (rows + cols) * rank)
    }

    /// Rejects an empty matrix, rank 0, and a rank above `min(rows, cols)`.
    pub fn check(rows: usize, cols: usize, rank: usize) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::InvalidCodec {
                codec: Codec::PowerSgd { rank }.to_string(),
                reason,
            })
        };
        if rows == 0 || cols == 0 {
            return bad(format!("empty matrix {rows}×{cols}"));
        }
        if rank == 0 || rank > rows.min(cols) {
            return bad(format!(
                "rank must be in 1..={} for a {rows}×{cols} matrix",
                rows.min(cols)
            ));
        }
        Ok(())
    }
}

/// The fixed initial Q (cols × r): a small xorshift generator, values in [-1, 1).
fn initial_q(cols: usize, r: usize) -> Vec<f32> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..cols * r)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// out (a × r) = x (a × b, row-major) · y (b × r).
fn matmul(x: &[f32], y: &[f32], a: usize, b: usize, r: usize, out: &mut [f32]) {
    out.fill(0.0);
    for i in 0..a {
        let o = &mut out[i * r..(i + 1) * r];
        for k in 0..b {
            let v = x[i * b + k];
            for (o, y) in o.iter_mut().zip(&y[k * r..(k + 1) * r]) {
                *o += v * y;
            }
        }
    }
}

/// out (b × r) = xᵀ · y, x (a × b, row-major), y (a × r).
fn matmul_t(x: &[f32], y: &[f32], a: usize, b: usize, r: usize, out: &mut [f32]) {
    out.fill(0.0);
    for i in 0..a {
        let yi = &y[i * r..(i + 1) * r];
        for k in 0..b {
            let v = x[i * b + k];
            for (o, y) in out[k * r..(k + 1) * r].iter_mut().zip(yi) {
                *o += v * y;
            }
        }
    }
}

/// Orthonormalises the `r` columns of `p` (rows × r) by modified Gram–Schmidt, projecting
/// twice ("twice is enough") so that the columns stay orthogonal in f32. A column that loses
/// all but 10⁻⁵ of its norm to the projections lies (numerically) in the span of the earlier
/// ones and becomes 0, so that rounding noise is never blown up into a direction.
fn orthonormalise(p: &mut [f32], rows: usize, r: usize) {
    let norm = |p: &[f32], j: usize| {
        (0..rows)
            .map(|i| p[i * r + j] * p[i * r + j])
            .sum::<f32>()
            .sqrt()
    };
    for j in 0..r {
        let before = norm(p, j);
        for _pass in 0..2 {
            for l in 0..j {
                let dot: f32 = (0..rows).map(|i| p[i * r + l] * p[i * r + j]).sum();
                for i in 0..rows {
                    p[i * r + j] -= dot * p[i * r + l];
                }
            }
        }
        let after = norm(p, j);
        let inv = if after > 1e-30 && after > 1e-5 * before {
            1.0 / after
        } else {
            0.0
        };
        for i in 0..rows {
            p[i * r + j] *= inv;
        }
    }
}

/// One PowerSGD all-reduce of `m` (rows × cols) in place.
pub(super) fn all_reduce(
    comm: &Communicator,
    m: &mut [f32],
    rows: usize,
    cols: usize,
    r: usize,
    entry: &mut Entry,
    ef: bool,
) -> Result<()> {
    PowerSgd::check(rows, cols, r)?;
    if ef {
        for (x, e) in m.iter_mut().zip(&entry.worker) {
            *x += e;
        }
    }
    if entry.q.len() != cols * r {
        entry.q = initial_q(cols, r);
    }
    let mut p = vec![0f32; rows * r];
    matmul(m, &entry.q, rows, cols, r, &mut p);
    comm.all_reduce(&mut p, ReduceOp::Sum)?;
    orthonormalise(&mut p, rows, r);
    let mut q = vec![0f32; cols * r];
    matmul_t(m, &p, rows, cols, r, &mut q);
    let q_local = if ef { Some(q.clone()) } else { None };
    comm.all_reduce(&mut q, ReduceOp::Sum)?;
    if let Some(ql) = q_local {
        // Residual: M − P̂·Q_localᵀ.
        for i in 0..rows {
            for k in 0..cols {
                let approx: f32 = (0..r).map(|j| p[i * r + j] * ql[k * r + j]).sum();
                entry.worker[i * cols + k] = residual(m[i * cols + k], approx);
            }
        }
    }
    for i in 0..rows {
        for k in 0..cols {
            m[i * cols + k] = (0..r).map(|j| p[i * r + j] * q[k * r + j]).sum();
        }
    }
    entry.q = if q.iter().all(|v| v.is_finite()) {
        q
    } else {
        initial_q(cols, r)
    };
    Ok(())
}
