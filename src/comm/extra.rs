//! Gather, scatter, the uneven collectives (all-gather-v, reduce-scatter-v, all-to-all-v)
//! and premul-sum on [`Communicator`], and [`RawExtra`], the arguments of their raw form
//! that a [`RawCall`](crate::RawCall) cannot carry.
//!
//! Premul-sum is a separate family of calls rather than a [`ReduceOp`] variant: the
//! operator codes are NCCL's numbers and travel in every frame header, while a premul-sum
//! is a sum whose ranks each multiply their input by their own scalar first (NCCL's
//! `ncclRedOpCreatePreMulSum`; ranks may pass different scalars). The plan multiplies the
//! whole input into scratch once (`schedule::finish`), then sums.

use super::{need, Communicator};
use crate::error::{Error, Result};
use crate::schedule::{Collective, Uneven};
use crate::types::{Element, ReduceOp};

/// What a [`RawCall`](crate::RawCall) cannot say: the layout of an uneven collective, and the scalar of a
/// premul-sum. [`Default`] is neither (a plain call).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawExtra {
    /// The layout of an all-gather-v, reduce-scatter-v or all-to-all-v (and of nothing
    /// else), for this communicator's world size.
    pub uneven: Option<Uneven>,
    /// Premul-sum: multiply this rank's input by the scalar, then sum. Only with a reducing
    /// collective and [`ReduceOp::Sum`] ([`Error::PreMulSumMisuse`] otherwise).
    pub premul: Option<f64>,
}

impl RawExtra {
    /// The extra arguments of an uneven collective.
    pub fn uneven(layout: Uneven) -> RawExtra {
        RawExtra {
            uneven: Some(layout),
            premul: None,
        }
    }

    /// The extra argument of a premul-sum by `scalar`.
    pub fn premul(scalar: f64) -> RawExtra {
        RawExtra {
            uneven: None,
            premul: Some(scalar),
        }
    }
}

impl Communicator {
    /// Runs a typed call with extra arguments whose buffers the borrow checker keeps alive.
    #[allow(clippy::too_many_arguments)]
    fn run_with<T: Element>(
        &self,
        kind: Collective,
        input: *const T,
        output: *mut T,
        count: usize,
        op: ReduceOp,
        root: usize,
        extra: &RawExtra,
    ) -> Result<()> {
        let call = self.raw(kind, input, output, count, op, root);
        // SAFETY: every typed entry point of this file checks the slice lengths against the
        // call (count or layout) before calling `run_with`, and holds `&`/`&mut` borrows of
        // the slices for the whole call.
        unsafe { self.collective_raw_with(call, extra) }
    }

    /// Gather: the root's `output` (at least `world × input.len()`) becomes every rank's
    /// `input` in rank order. Other ranks' `output` is not touched and may be empty.
    pub fn gather<T: Element>(&self, input: &[T], output: &mut [T], root: usize) -> Result<()> {
        if self.rank == root {
            need("output", self.world_len(input.len())?, output.len())?;
        }
        self.run(
            Collective::Gather,
            input.as_ptr(),
            output.as_mut_ptr(),
            input.len(),
            ReduceOp::Sum,
            root,
        )
    }

    /// Scatter: every rank's `output` becomes chunk `rank` (of `output.len()` elements) of
    /// the root's `input` (at least `world × output.len()`). Other ranks' `input` is not read
    /// and may be empty.
    pub fn scatter<T: Element>(&self, input: &[T], output: &mut [T], root: usize) -> Result<()> {
        if self.rank == root {
            need("input", self.world_len(output.len())?, input.len())?;
        }
        self.run(
            Collective::Scatter,
            input.as_ptr(),
            output.as_mut_ptr(),
            output.len(),
            ReduceOp::Sum,
            root,
        )
    }

    /// All-gather-v: rank `r` contributes `counts[r]` elements (its `input`, whose length
    /// must be `counts[rank]`), and every rank's `output` holds them at `displs[r]` (packed in
    /// rank order when `displs` is `None`). Elements of `output` outside the blocks are not
    /// touched.
    ///
    /// Errors: [`Error::CountsLength`], [`Error::BlockOutOfRange`], [`Error::BlocksOverlap`]
    /// for a bad layout (see [`Uneven::blocks`]), [`Error::SendCountMismatch`] when
    /// `input.len() != counts[rank]`, [`Error::BufferTooSmall`] when `output` ends before a
    /// block does.
    pub fn all_gather_v<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        counts: &[usize],
        displs: Option<&[usize]>,
    ) -> Result<()> {
        let u = Uneven::blocks(self.world, counts, displs)?;
        need(
            "output",
            u.output_len(Collective::AllGatherV, self.rank),
            output.len(),
        )?;
        self.run_with(
            Collective::AllGatherV,
            input.as_ptr(),
            output.as_mut_ptr(),
            input.len(),
            ReduceOp::Sum,
            0,
            &RawExtra::uneven(u),
        )
    }

    /// Reduce-scatter-v: rank `r`'s `output[..counts[r]]` becomes the reduction (`op`) of
    /// every rank's `input` block `r`, which lies at `displs[r]` (packed in rank order when
    /// `displs` is `None`).
    ///
    /// Errors: as [`Communicator::all_gather_v`] for the layout, [`Error::BufferTooSmall`]
    /// when `input` ends before a block does or `output` holds fewer than `counts[rank]`.
    pub fn reduce_scatter_v<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        counts: &[usize],
        displs: Option<&[usize]>,
        op: ReduceOp,
    ) -> Result<()> {
        let u = Uneven::blocks(self.world, counts, displs)?;
        let kind = Collective::ReduceScatterV;
        need("input", u.input_len(kind, self.rank), input.len())?;
        need("output", u.output_len(kind, self.rank), output.len())?;
        self.run_with(
            kind,
            input.as_ptr(),
            output.as_mut_ptr(),
            0,
            op,
            0,
            &RawExtra::uneven(u),
        )
    }

    /// All-to-all-v (`MPI_Alltoallv`): this rank sends `send_counts[j]` elements from
    /// `send_displs[j]` of `input` to rank `j`, and receives `recv_counts[j]` elements from
    /// rank `j` into `recv_displs[j]` of `output` (displacements packed in rank order when
    /// `None`). Rank `j`'s `recv_counts[rank]` must equal this rank's `send_counts[j]`: every
    /// pair of ranks exchanges a message, empty blocks included, so a disagreement (one side
    /// zero included) is [`Error::Mismatch`] in this call on the receiving rank.
    ///
    /// Errors: as [`Communicator::all_gather_v`] for each layout,
    /// [`Error::SendCountMismatch`] when `send_counts[rank] != recv_counts[rank]`,
    /// [`Error::BufferTooSmall`] when a buffer ends before one of its blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn all_to_all_v<T: Element>(
        &self,
        input: &[T],
        send_counts: &[usize],
        send_displs: Option<&[usize]>,
        output: &mut [T],
        recv_counts: &[usize],
        recv_displs: Option<&[usize]>,
    ) -> Result<()> {
        let u = Uneven::all_to_all(
            self.world,
            send_counts,
            send_displs,
            recv_counts,
            recv_displs,
        )?;
        let kind = Collective::AllToAllV;
        need("input", u.input_len(kind, self.rank), input.len())?;
        need("output", u.output_len(kind, self.rank), output.len())?;
        self.run_with(
            kind,
            input.as_ptr(),
            output.as_mut_ptr(),
            0,
            ReduceOp::Sum,
            0,
            &RawExtra::uneven(u),
        )
    }

    /// Premul-sum all-reduce in place: every rank's `buf` becomes `Σ_r scalar_r × buf_r`,
    /// where each rank passes its own `scalar` (see [`Arith`](crate::reduce::scalar::Arith)'s
    /// `mul_scalar` for how the product rounds in each type).
    pub fn all_reduce_premul_sum<T: Element>(&self, buf: &mut [T], scalar: f64) -> Result<()> {
        let p = buf.as_mut_ptr();
        let extra = RawExtra::premul(scalar);
        self.run_with(
            Collective::AllReduce,
            p,
            p,
            buf.len(),
            ReduceOp::Sum,
            0,
            &extra,
        )
    }

    /// Premul-sum all-reduce out of place: `output[..input.len()]` becomes
    /// `Σ_r scalar_r × input_r`.
    pub fn all_reduce_premul_sum_into<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        scalar: f64,
    ) -> Result<()> {
        need("output", input.len(), output.len())?;
        self.run_with(
            Collective::AllReduce,
            input.as_ptr(),
            output.as_mut_ptr(),
            input.len(),
            ReduceOp::Sum,
            0,
            &RawExtra::premul(scalar),
        )
    }

    /// Premul-sum reduce-scatter: `output` becomes chunk `rank` of `Σ_r scalar_r × input_r`
    /// (inputs of at least `world × output.len()` elements).
    pub fn reduce_scatter_premul_sum<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        scalar: f64,
    ) -> Result<()> {
        need("input", self.world_len(output.len())?, input.len())?;
        self.run_with(
            Collective::ReduceScatter,
            input.as_ptr(),
            output.as_mut_ptr(),
            output.len(),
            ReduceOp::Sum,
            0,
            &RawExtra::premul(scalar),
        )
    }

    /// Premul-sum reduce: the root's `output` becomes `Σ_r scalar_r × input_r` (other
    /// ranks' `output` is not touched and may be empty).
    pub fn reduce_premul_sum_into<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        scalar: f64,
        root: usize,
    ) -> Result<()> {
        if self.rank == root {
            need("output", input.len(), output.len())?;
        }
        self.run_with(
            Collective::Reduce,
            input.as_ptr(),
            output.as_mut_ptr(),
            input.len(),
            ReduceOp::Sum,
            root,
            &RawExtra::premul(scalar),
        )
    }

    /// `n × world`, or [`Error::CountTooLarge`] when it overflows.
    pub(super) fn world_len(&self, n: usize) -> Result<usize> {
        n.checked_mul(self.world).ok_or(Error::CountTooLarge(n))
    }
}
