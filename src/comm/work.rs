//! Asynchronous calls: [`Work`], and the `*_async` forms of every collective, which take
//! owned buffers and give them back when the call has finished.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{need, Communicator};
use crate::engine::{Job, Shared};
use crate::error::{Error, Result};
use crate::schedule::Collective;
use crate::types::{Element, ReduceOp};

/// An asynchronous call in flight. It owns the buffers of the call and gives them back from
/// [`Work::wait`]; dropping it lets the call finish in the background.
#[must_use = "a Work does nothing visible unless waited on"]
pub struct Work<B> {
    job: Arc<Job>,
    shared: Arc<Shared>,
    _buffers: PhantomData<fn() -> B>,
}

impl<B: 'static> Work<B> {
    /// Whether the call has finished (successfully or not). Never blocks.
    pub fn test(&self) -> bool {
        self.job.is_done()
    }

    /// Waits up to `limit` for the call to finish, without taking its result: whether it
    /// has finished (then [`Work::wait`] returns at once). The call runs on the
    /// communicator's worker thread meanwhile; where that thread could not be started, only
    /// [`Work::wait`] runs it.
    pub fn wait_for(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.job.is_done() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.job.sleep_until_done(left);
        }
        true
    }

    /// Waits for the call and returns its buffers, or its error.
    pub fn wait(self) -> Result<B> {
        let (r, keep) = self.shared.wait_job(&self.job);
        r?;
        let keep: Box<dyn std::any::Any> =
            keep.ok_or_else(|| Error::Internal("work buffers missing".into()))?;
        keep.downcast::<B>()
            .map(|b| *b)
            .map_err(|_| Error::Internal("work buffers of another type".into()))
    }
}

impl<B> Work<B> {
    pub(super) fn new(job: Arc<Job>, shared: Arc<Shared>) -> Work<B> {
        Work {
            job,
            shared,
            _buffers: PhantomData,
        }
    }
}

/// Asynchronous forms: each takes owned buffers (anything that derefs to a slice and stays
/// put when moved, such as `Vec<T>` or `Box<[T]>`) and returns a [`Work`] that gives them back.
impl Communicator {
    /// Asynchronous [`Communicator::all_reduce`].
    pub fn all_reduce_async<T: Element, B: AsMut<[T]> + Send + 'static>(
        &self,
        buf: B,
        op: ReduceOp,
    ) -> Result<Work<B>> {
        self.start(Box::new(buf), |b| {
            let s = b.as_mut();
            Ok(self.raw(
                Collective::AllReduce,
                s.as_ptr(),
                s.as_mut_ptr(),
                s.len(),
                op,
                0,
            ))
        })
    }

    /// Asynchronous [`Communicator::all_reduce_into`]; gives back `(input, output)`.
    pub fn all_reduce_into_async<T: Element, I, O>(
        &self,
        input: I,
        output: O,
        op: ReduceOp,
    ) -> Result<Work<(I, O)>>
    where
        I: AsRef<[T]> + Send + 'static,
        O: AsMut<[T]> + Send + 'static,
    {
        self.start(Box::new((input, output)), |(i, o)| {
            let (i, o) = (i.as_ref(), o.as_mut());
            need("output", i.len(), o.len())?;
            Ok(self.raw(
                Collective::AllReduce,
                i.as_ptr(),
                o.as_mut_ptr(),
                i.len(),
                op,
                0,
            ))
        })
    }

    /// Asynchronous [`Communicator::all_gather`]; gives back `(input, output)`.
    pub fn all_gather_async<T: Element, I, O>(&self, input: I, output: O) -> Result<Work<(I, O)>>
    where
        I: AsRef<[T]> + Send + 'static,
        O: AsMut<[T]> + Send + 'static,
    {
        self.start(Box::new((input, output)), |(i, o)| {
            let (i, o) = (i.as_ref(), o.as_mut());
            need("output", i.len() * self.world, o.len())?;
            Ok(self.raw(
                Collective::AllGather,
                i.as_ptr(),
                o.as_mut_ptr(),
                i.len(),
                ReduceOp::Sum,
                0,
            ))
        })
    }

    /// Asynchronous [`Communicator::reduce_scatter`]; gives back `(input, output)`.
    pub fn reduce_scatter_async<T: Element, I, O>(
        &self,
        input: I,
        output: O,
        op: ReduceOp,
    ) -> Result<Work<(I, O)>>
    where
        I: AsRef<[T]> + Send + 'static,
        O: AsMut<[T]> + Send + 'static,
    {
        self.start(Box::new((input, output)), |(i, o)| {
            let (i, o) = (i.as_ref(), o.as_mut());
            need("input", o.len() * self.world, i.len())?;
            Ok(self.raw(
                Collective::ReduceScatter,
                i.as_ptr(),
                o.as_mut_ptr(),
                o.len(),
                op,
                0,
            ))
        })
    }

    /// Asynchronous [`Communicator::broadcast`].
    pub fn broadcast_async<T: Element, B: AsMut<[T]> + Send + 'static>(
        &self,
        buf: B,
        root: usize,
    ) -> Result<Work<B>> {
        self.start(Box::new(buf), |b| {
            let s = b.as_mut();
            Ok(self.raw(
                Collective::Broadcast,
                s.as_ptr(),
                s.as_mut_ptr(),
                s.len(),
                ReduceOp::Sum,
                root,
            ))
        })
    }

    /// Asynchronous [`Communicator::reduce`].
    pub fn reduce_async<T: Element, B: AsMut<[T]> + Send + 'static>(
        &self,
        buf: B,
        op: ReduceOp,
        root: usize,
    ) -> Result<Work<B>> {
        self.start(Box::new(buf), |b| {
            let s = b.as_mut();
            Ok(self.raw(
                Collective::Reduce,
                s.as_ptr(),
                s.as_mut_ptr(),
                s.len(),
                op,
                root,
            ))
        })
    }

    /// Asynchronous [`Communicator::all_to_all`]; gives back `(input, output)`.
    pub fn all_to_all_async<T: Element, I, O>(&self, input: I, output: O) -> Result<Work<(I, O)>>
    where
        I: AsRef<[T]> + Send + 'static,
        O: AsMut<[T]> + Send + 'static,
    {
        self.start(Box::new((input, output)), |(i, o)| {
            let (i, o) = (i.as_ref(), o.as_mut());
            let n = self.split(i.len())?;
            need("output", i.len(), o.len())?;
            Ok(self.raw(
                Collective::AllToAll,
                i.as_ptr(),
                o.as_mut_ptr(),
                n,
                ReduceOp::Sum,
                0,
            ))
        })
    }

    /// Asynchronous [`Communicator::all_gather_in_place`].
    pub fn all_gather_in_place_async<T: Element, B: AsMut<[T]> + Send + 'static>(
        &self,
        buf: B,
    ) -> Result<Work<B>> {
        self.start(Box::new(buf), |b| {
            let s = b.as_mut();
            let n = self.split(s.len())?;
            let p = s.as_mut_ptr();
            Ok(self.raw(
                Collective::AllGather,
                p.wrapping_add(self.rank * n),
                p,
                n,
                ReduceOp::Sum,
                0,
            ))
        })
    }

    /// Asynchronous [`Communicator::reduce_scatter_in_place`].
    pub fn reduce_scatter_in_place_async<T: Element, B: AsMut<[T]> + Send + 'static>(
        &self,
        buf: B,
        op: ReduceOp,
    ) -> Result<Work<B>> {
        self.start(Box::new(buf), |b| {
            let s = b.as_mut();
            let n = self.split(s.len())?;
            let p = s.as_mut_ptr();
            Ok(self.raw(
                Collective::ReduceScatter,
                p,
                p.wrapping_add(self.rank * n),
                n,
                op,
                0,
            ))
        })
    }

    /// Asynchronous [`Communicator::broadcast_into`]; gives back `(input, output)`.
    pub fn broadcast_into_async<T: Element, I, O>(
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
                need("input", o.len(), i.len())?;
            }
            Ok(self.raw(
                Collective::Broadcast,
                i.as_ptr(),
                o.as_mut_ptr(),
                o.len(),
                ReduceOp::Sum,
                root,
            ))
        })
    }

    /// Asynchronous [`Communicator::reduce_into`]; gives back `(input, output)`.
    pub fn reduce_into_async<T: Element, I, O>(
        &self,
        input: I,
        output: O,
        op: ReduceOp,
        root: usize,
    ) -> Result<Work<(I, O)>>
    where
        I: AsRef<[T]> + Send + 'static,
        O: AsMut<[T]> + Send + 'static,
    {
        self.start(Box::new((input, output)), |(i, o)| {
            let (i, o) = (i.as_ref(), o.as_mut());
            if self.rank == root {
                need("output", i.len(), o.len())?;
            }
            Ok(self.raw(
                Collective::Reduce,
                i.as_ptr(),
                o.as_mut_ptr(),
                i.len(),
                op,
                root,
            ))
        })
    }

    /// Asynchronous [`Communicator::all_to_all_in_place`].
    pub fn all_to_all_in_place_async<T: Element, B: AsMut<[T]> + Send + 'static>(
        &self,
        buf: B,
    ) -> Result<Work<B>> {
        self.start(Box::new(buf), |b| {
            let s = b.as_mut();
            let n = self.split(s.len())?;
            let p = s.as_mut_ptr();
            Ok(self.raw(Collective::AllToAll, p, p, n, ReduceOp::Sum, 0))
        })
    }

    /// Asynchronous [`Communicator::barrier`].
    pub fn barrier_async(&self) -> Result<Work<()>> {
        self.start(Box::new(()), |_| {
            Ok(self.raw::<u8>(
                Collective::Barrier,
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
                ReduceOp::Sum,
                0,
            ))
        })
    }

    /// Asynchronous [`Communicator::send`].
    pub fn send_async<T: Element, B: AsRef<[T]> + Send + 'static>(
        &self,
        buf: B,
        peer: usize,
    ) -> Result<Work<B>> {
        self.start(Box::new(buf), |b| {
            let s = b.as_ref();
            Ok(self.raw(
                Collective::SendRecv,
                s.as_ptr(),
                std::ptr::null_mut(),
                s.len(),
                ReduceOp::Sum,
                peer,
            ))
        })
    }

    /// Asynchronous [`Communicator::recv`].
    pub fn recv_async<T: Element, B: AsMut<[T]> + Send + 'static>(
        &self,
        buf: B,
        peer: usize,
    ) -> Result<Work<B>> {
        self.start(Box::new(buf), |b| {
            let s = b.as_mut();
            Ok(self.raw(
                Collective::SendRecv,
                std::ptr::null(),
                s.as_mut_ptr(),
                s.len(),
                ReduceOp::Sum,
                peer,
            ))
        })
    }
}
