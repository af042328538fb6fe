//! The `*_async` forms of gather, scatter, the uneven collectives and premul-sum (see
//! `comm/extra.rs` for the blocking forms and `comm/work.rs` for [`Work`]).

use super::{need, Communicator, RawExtra, Work};
use crate::error::Result;
use crate::schedule::{Collective, Uneven};
use crate::types::{Element, ReduceOp};

/// Asynchronous forms: each takes owned buffers and returns a [`Work`] that gives them back
/// as `(input, output)` (or the one buffer).
impl Communicator {
    /// Asynchronous [`Communicator::gather`].
    pub fn gather_async<T: Element, I, O>(
        &self,
        input: I,
        output: O,
        root: usize,
    ) -> Result<Work<(I, O)>>
    where
        I: AsRef<[T]> + Send + 'static,
        O: AsMut<[T]> + Send + 'static,
    {
        self.start(Box::new((input, output)), |(i, o)| {
            let (i, o) = (i.as_ref(), o.as_mut());
            if self.rank == root {
                need("output", self.world_len(i.len())?, o.len())?;
            }
            Ok(self.raw(
                Collective::Gather,
                i.as_ptr(),
                o.as_mut_ptr(),
                i.len(),
                ReduceOp::Sum,
                root,
            ))
        })
    }

    /// Asynchronous [`Communicator::scatter`].
    pub fn scatter_async<T: Element, I, O>(
        &self,
        input: I,
        output: O,
        root: usize,
    ) -> Result<Work<(I, O)>>
    where
        I: AsRef<[T]> + Send + 'static,
        O: AsMut<[T]> + Send + 'static,
    {
        self.start(Box::new((input, output)), |(i, o)| {
            let (i, o) = (i.as_ref(), o.as_mut());
            if self.rank == root {
                need("input", self.world_len(o.len())?, i.len())?;
            }
            Ok(self.raw(
                Collective::Scatter,
                i.as_ptr(),
                o.as_mut_ptr(),
                o.len(),
                ReduceOp::Sum,
                root,
            ))
        })
    }

    /// Asynchronous [`Communicator::all_gather_v`].
    pub fn all_gather_v_async<T: Element, I, O>(
        &self,
        input: I,
        output: O,
        counts: &[usize],
        displs: Option<&[usize]>,
    ) -> Result<Work<(I, O)>>
    where
        I: AsRef<[T]> + Send + 'static,
        O: AsMut<[T]> + Send + 'static,
    {
        let u = Uneven::blocks(self.world, counts, displs)?;
        self.start_with(Box::new((input, output)), |(i, o)| {
            let (i, o) = (i.as_ref(), o.as_mut());
            let kind = Collective::AllGatherV;
            need("output", u.output_len(kind, self.rank), o.len())?;
            let call = self.raw(kind, i.as_ptr(), o.as_mut_ptr(), i.len(), ReduceOp::Sum, 0);
            Ok((call, RawExtra::uneven(u)))
        })
    }

    /// Asynchronous [`Communicator::reduce_scatter_v`].
    pub fn reduce_scatter_v_async<T: Element, I, O>(
        &self,
        input: I,
        output: O,
        counts: &[usize],
        displs: Option<&[usize]>,
        op: ReduceOp,
    ) -> Result<Work<(I, O)>>
    where
        I: AsRef<[T]> + Send + 'static,
        O: AsMut<[T]> + Send + 'static,
    {
        let u = Uneven::blocks(self.world, counts, displs)?;
        self.start_with(Box::new((input, output)), |(i, o)| {
            let (i, o) = (i.as_ref(), o.as_mut());
            let kind = Collective::ReduceScatterV;
            need("input", u.input_len(kind, self.rank), i.len())?;
            need("output", u.output_len(kind, self.rank), o.len())?;
            let call = self.raw(kind, i.as_ptr(), o.as_mut_ptr(), 0, op, 0);
            Ok((call, RawExtra::uneven(u)))
        })
    }

    /// Asynchronous [`Communicator::all_to_all_v`].
    #[allow(clippy::too_many_arguments)]
    pub fn all_to_all_v_async<T: Element, I, O>(
        &self,
        input: I,
        send_counts: &[usize],
        send_displs: Option<&[usize]>,
        output: O,
        recv_counts: &[usize],
        recv_displs: Option<&[usize]>,
    ) -> Result<Work<(I, O)>>
    where
        I: AsRef<[T]> + Send + 'static,
        O: AsMut<[T]> + Send + 'static,
    {
        let u = Uneven::all_to_all(
            self.world,
            send_counts,
            send_displs,
            recv_counts,
            recv_displs,
        )?;
        self.start_with(Box::new((input, output)), |(i, o)| {
            let (i, o) = (i.as_ref(), o.as_mut());
            let kind = Collective::AllToAllV;
            need("input", u.input_len(kind, self.rank), i.len())?;
            need("output", u.output_len(kind, self.rank), o.len())?;
            let call = self.raw(kind, i.as_ptr(), o.as_mut_ptr(), 0, ReduceOp::Sum, 0);
            Ok((call, RawExtra::uneven(u)))
        })
    }

    /// Asynchronous [`Communicator::all_reduce_premul_sum`].
    pub fn all_reduce_premul_sum_async<T: Element, B: AsMut<[T]> + Send + 'static>(
        &self,
        buf: B,
        scalar: f64,
    ) -> Result<Work<B>> {
        self.start_with(Box::new(buf), |b| {
            let s = b.as_mut();
            let p = s.as_mut_ptr();
            let call = self.raw(Collective::AllReduce, p, p, s.len(), ReduceOp::Sum, 0);
            Ok((call, RawExtra::premul(scalar)))
        })
    }

    /// Asynchronous [`Communicator::reduce_scatter_premul_sum`].
    pub fn reduce_scatter_premul_sum_async<T: Element, I, O>(
        &self,
        input: I,
        output: O,
        scalar: f64,
    ) -> Result<Work<(I, O)>>
    where
        I: AsRef<[T]> + Send + 'static,
        O: AsMut<[T]> + Send + 'static,
    {
        self.start_with(Box::new((input, output)), |(i, o)| {
            let (i, o) = (i.as_ref(), o.as_mut());
            need("input", self.world_len(o.len())?, i.len())?;
            let kind = Collective::ReduceScatter;
            let call = self.raw(kind, i.as_ptr(), o.as_mut_ptr(), o.len(), ReduceOp::Sum, 0);
            Ok((call, RawExtra::premul(scalar)))
        })
    }
}
