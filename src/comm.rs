//! [`Communicator`]: the public API. It checks each call, numbers it, and hands it to the
//! engine; it never touches links itself. Its constructors (from an endpoint, the launcher
//! variables or a unique id) are in `comm/init.rs`, unique ids and splits in
//! `comm/split.rs`, asynchronous handles in `comm/work.rs`.

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::engine::{Call, Engine, Job};
use crate::error::{Error, Result};
use crate::exec::frame::OpHeader;
use crate::schedule::{input_len, output_len, CollSpec, Collective, Uneven};
use crate::types::{DataType, Element, ReduceOp};

pub(crate) mod elastic;
mod extra;
mod init;
mod split;
mod work;
mod work_extra;
pub use extra::RawExtra;
pub use split::{UniqueId, UNIQUE_ID_BYTES};
pub use work::Work;

/// A group of ranks that run collectives together. One per rank; calls on the ranks of a
/// communicator must be made in the same order everywhere (a disagreement is detected and
/// reported as [`Error::Mismatch`]).
///
/// Forms of each collective: in-place on one buffer (`all_reduce`), out-of-place
/// (`all_reduce_into`), asynchronous on owned buffers (`all_reduce_async`, returning a
/// [`Work`] that gives the buffer back), and raw ([`Communicator::collective_raw`], pointer +
/// count + [`DataType`], what the C ABI uses).
pub struct Communicator {
    // Dropped first (field order): the failure detector says goodbye and stops.
    ft: Option<crate::ft::Guard>,
    engine: Engine,
    rank: usize,
    world: usize,
    seq: AtomicU64,
    send_seq: Vec<AtomicU64>,
    recv_seq: Vec<AtomicU64>,
    peers: Option<crate::bootstrap::rendezvous::Peers>,
    // Dropped after `engine` (field order): the store client and rank 0's store server.
    boot: Option<split::Bootstrap>,
}

/// A call in raw form: untyped pointers, an element count and a [`DataType`].
///
/// `count` follows NCCL (see [`CollSpec`]). For `Broadcast`, `Reduce`, `Gather` and
/// `Scatter`, `root` is the root; for `SendRecv`, `root` is the peer and `output.is_null()`
/// means "send `input`", otherwise "receive into `output`". In-place calls pass NCCL's
/// pointers: the same buffer for both, or for all-gather and gather
/// `input == output + rank * count`, for reduce-scatter and scatter
/// `output == input + rank * count` (elements).
///
/// The uneven collectives and premul-sum need a [`RawExtra`] as well
/// ([`Communicator::collective_raw_with`]): for them `count` is all-gather-v's send count
/// (checked against the layout) and is ignored by reduce-scatter-v and all-to-all-v, whose
/// sizes the layout gives; in-place all-gather-v has `input == output + displs[rank]`,
/// reduce-scatter-v `output == input + displs[rank]`, all-to-all-v `input == output`.
#[derive(Clone, Copy, Debug)]
pub struct RawCall {
    /// The collective.
    pub kind: Collective,
    /// Send buffer.
    pub input: *const c_void,
    /// Receive buffer.
    pub output: *mut c_void,
    /// Element count.
    pub count: usize,
    /// Element type.
    pub dtype: DataType,
    /// Operator (ignored where the collective does not reduce).
    pub op: ReduceOp,
    /// Root, or the peer of send/recv.
    pub root: usize,
}

/// `BufferTooSmall` unless `got ≥ needed`.
fn need(buffer: &'static str, needed: usize, got: usize) -> Result<()> {
    if got < needed {
        return Err(Error::BufferTooSmall {
            buffer,
            needed,
            got,
        });
    }
    Ok(())
}

impl Communicator {
    /// The topology this communicator plans on (discovered, loaded or given).
    pub fn topology(&self) -> crate::topology::Topology {
        self.engine.topology()
    }

    /// The algorithm, segment size and predicted time a call of shape `spec` with elements
    /// of `esize` bytes runs with (the tuner's choice, or the forced algorithm).
    pub fn algorithm_for(
        &self,
        spec: &crate::schedule::CollSpec,
        esize: usize,
    ) -> Result<crate::tune::Choice> {
        self.engine.choice(spec, esize)
    }

    /// The transport that reaches each rank (`"shm"`, `"tcp"`, `"ofi"`, `"rdma"`, `"self"`;
    /// `"mem"` in an in-process world).
    pub fn transports(&self) -> Vec<&'static str> {
        match &self.peers {
            Some(p) => p.transports.clone(),
            None => (0..self.world)
                .map(|r| if r == self.rank { "self" } else { "mem" })
                .collect(),
        }
    }

    /// What this rank's transports have counted so far: registrations made by the RDMA
    /// transports' registration caches, and lookups they served without registering. Zero
    /// for shared memory and TCP, which register nothing. Waits for a call in progress.
    pub fn transport_counters(&self) -> ferrocoll_transports::EndpointCounters {
        self.engine.transport_counters()
    }

    /// The transport of every pair of ranks, `m[a][b]` (`"self"` on the diagonal): the same
    /// matrix on every rank, since every rank derives it from the same rendezvous records.
    pub fn transport_matrix(&self) -> Vec<Vec<&'static str>> {
        match &self.peers {
            Some(p) => p.links.clone(),
            None => (0..self.world)
                .map(|a| {
                    (0..self.world)
                        .map(|b| if a == b { "self" } else { "mem" })
                        .collect()
                })
                .collect(),
        }
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.engine.shared().cfg
    }

    /// Aborts: the call in progress (on any thread) and every later call fail with
    /// [`Error::Aborted`], and the links close so peers learn of it. Never blocks.
    pub fn abort(&self) {
        self.engine.abort();
    }

    /// The failure that stopped this communicator, if any.
    pub fn failure(&self) -> Option<Arc<Error>> {
        self.engine.failure()
    }

    /// Writes this rank's flight record (its last `FERROCOLL_FR_ENTRIES` calls, see
    /// [`crate::recorder`]) to `dir` as `fr-rank<R>-pid<PID>-comm<ID>.json` and returns the
    /// file's path. Errors: [`Error::Config`] when the recorder is off
    /// (`FERROCOLL_FR_ENTRIES=0`), [`Error::Io`] when the file cannot be written.
    pub fn dump_flight_record(&self, dir: impl AsRef<std::path::Path>) -> Result<PathBuf> {
        self.engine.shared().fr.dump_to(dir.as_ref())
    }

    /// Builds the engine call for a raw call after checking everything that can be checked
    /// locally.
    fn make_call(&self, c: &RawCall, extra: &RawExtra) -> Result<Call> {
        // Long on purpose (~150 lines): one arm per collective of the buffer-size checks,
        // kept in one match so that a new collective cannot be added without its checks.
        let (p, r) = (self.world, self.rank);
        let es = c.dtype.size();
        let uneven = self.check_uneven(c, extra)?;
        if extra.premul.is_some() && (!c.kind.reduces() || c.op != ReduceOp::Sum) {
            return Err(Error::PreMulSumMisuse {
                collective: c.kind,
                op: c.op,
            });
        }
        let count = match (&uneven, c.kind) {
            (Some(u), Collective::AllGatherV | Collective::ReduceScatterV) => u.total(),
            (Some(_), _) => 0,
            (None, _) => c.count,
        };
        let spec = CollSpec {
            kind: c.kind,
            world: p,
            count,
            root: 0,
        };
        // The largest buffer of the gather-like collectives is count × world elements: check
        // that product before `input_len`/`output_len` compute it.
        let largest = match c.kind {
            Collective::AllGather
            | Collective::ReduceScatter
            | Collective::AllToAll
            | Collective::Gather
            | Collective::Scatter => c.count.checked_mul(p),
            _ => match &uneven {
                Some(u) => Some(u.input_len(c.kind, r).max(u.output_len(c.kind, r))),
                None => Some(c.count),
            },
        };
        if largest
            .and_then(|n| n.checked_mul(es))
            .is_none_or(|b| b > isize::MAX as usize)
        {
            return Err(Error::CountTooLarge(largest.unwrap_or(c.count)));
        }
        let mut spec = spec;
        let mut p2p = None;
        let mut header_root = 0u32;
        match c.kind {
            Collective::Broadcast
            | Collective::Reduce
            | Collective::Gather
            | Collective::Scatter => {
                if c.root >= p {
                    return Err(Error::RootOutOfRange {
                        root: c.root,
                        world: p,
                    });
                }
                spec.root = c.root;
                header_root = c.root as u32;
            }
            Collective::SendRecv => {
                if c.root >= p {
                    return Err(Error::PeerOutOfRange {
                        peer: c.root,
                        world: p,
                    });
                }
                if c.root == r {
                    return Err(Error::SelfPeer { rank: r });
                }
                let sending = c.output.is_null();
                p2p = Some((c.root, sending));
                header_root = if sending { r as u32 } else { c.root as u32 };
            }
            _ => {}
        }
        // Which pointers this rank will touch.
        let uses_input = match c.kind {
            Collective::Broadcast | Collective::Scatter => r == spec.root,
            Collective::SendRecv => p2p.is_some_and(|(_, s)| s),
            Collective::Barrier => false,
            _ => true,
        };
        let uses_output = match c.kind {
            Collective::Reduce | Collective::Gather => r == spec.root,
            Collective::SendRecv => p2p.is_some_and(|(_, s)| !s),
            Collective::Barrier => false,
            _ => true,
        };
        let (n_in, n_out) = (
            input_len(&spec, uneven.as_deref(), r),
            output_len(&spec, uneven.as_deref(), r),
        );
        if n_in > 0 && uses_input && c.input.is_null() {
            return Err(Error::NullPointer("input"));
        }
        if n_out > 0 && uses_output && c.output.is_null() {
            return Err(Error::NullPointer("output"));
        }
        let (inp, out) = (c.input.cast::<u8>(), c.output.cast::<u8>().cast_const());
        // This rank's block offset (bytes) in the in-place layouts that place one buffer
        // inside the other. Wrapping: it is only compared for the kinds whose sizes were
        // checked above, and other kinds' products may overflow.
        let own = match &uneven {
            Some(u) => u.displs().get(r).copied().unwrap_or(0),
            None => r.wrapping_mul(c.count),
        }
        .wrapping_mul(es);
        let in_place = match c.kind {
            Collective::AllGather | Collective::Gather | Collective::AllGatherV => {
                inp == out.wrapping_add(own)
            }
            Collective::ReduceScatter | Collective::Scatter | Collective::ReduceScatterV => {
                out == inp.wrapping_add(own)
            }
            Collective::SendRecv | Collective::Barrier => false,
            _ => inp == out,
        } && (n_in > 0 || n_out > 0);
        if let Some(u) = uneven.as_deref().filter(|_| in_place) {
            let same = u.counts() == u.recv_counts() && u.displs() == u.recv_displs();
            if c.kind == Collective::AllToAllV && !same {
                return Err(Error::InPlaceLayout);
            }
        }
        let seq = match p2p {
            Some((peer, true)) => self.send_seq[peer].fetch_add(1, Ordering::Relaxed),
            Some((peer, false)) => self.recv_seq[peer].fetch_add(1, Ordering::Relaxed),
            None => self.seq.fetch_add(1, Ordering::Relaxed),
        };
        let op = if c.kind.reduces() {
            c.op
        } else {
            ReduceOp::Sum
        };
        Ok(Call {
            spec,
            dtype: c.dtype,
            op,
            input: c.input.cast(),
            output: c.output.cast(),
            in_place,
            header: OpHeader {
                kind: c.kind,
                dtype: c.dtype,
                op,
                root: header_root,
                count: spec.count as u64,
                seq,
            },
            p2p,
            uneven,
            premul: extra.premul,
        })
    }

    /// The layout of an uneven call, checked against the world and the call: present exactly
    /// for the uneven collectives, all-gather-v's count equal to this rank's block, and
    /// all-to-all-v's block to itself the same size both ways.
    fn check_uneven(&self, c: &RawCall, extra: &RawExtra) -> Result<Option<Arc<Uneven>>> {
        let r = self.rank;
        let u = match (&extra.uneven, c.kind.is_uneven()) {
            (None, false) => return Ok(None),
            (Some(u), true) if u.world() == self.world => u,
            _ => {
                return Err(Error::LayoutMismatch {
                    collective: c.kind,
                    world: self.world,
                })
            }
        };
        let mine = u.counts()[r];
        match c.kind {
            Collective::AllGatherV if c.count != mine => Err(Error::SendCountMismatch {
                sendcount: c.count,
                rank: r,
                expected: mine,
            }),
            Collective::AllToAllV if u.recv_counts().get(r) != Some(&mine) => {
                Err(Error::SendCountMismatch {
                    sendcount: mine,
                    rank: r,
                    expected: u.recv_counts().get(r).copied().unwrap_or(0),
                })
            }
            _ => Ok(Some(Arc::new(u.clone()))),
        }
    }

    fn check_failed(&self) -> Result<()> {
        match self.engine.failure() {
            Some(f) => Err(crate::engine::Shared::later_error(&f)),
            None => Ok(()),
        }
    }

    /// Runs a raw call to completion.
    ///
    /// # Safety
    /// The pointers must be valid for the reads (input) and writes (output) the collective
    /// makes on this rank — `count` elements of `dtype`, scaled by the world size where the
    /// collective says so (see [`CollSpec::input_len`] / [`CollSpec::output_len`]) — and no
    /// other code may write them (or read the output) until the call returns.
    pub unsafe fn collective_raw(&self, call: RawCall) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.collective_raw_with(call, &RawExtra::default()) }
    }

    /// Runs a raw call with the extra arguments of the uneven collectives and premul-sum
    /// ([`RawExtra`]) to completion.
    ///
    /// # Safety
    /// As for [`Communicator::collective_raw`], with the buffer lengths of an uneven
    /// collective given by its layout ([`Uneven::input_len`] / [`Uneven::output_len`]).
    pub unsafe fn collective_raw_with(&self, call: RawCall, extra: &RawExtra) -> Result<()> {
        self.check_failed()?;
        let job = Job::new(self.make_call(&call, extra)?, None);
        self.engine.submit(job.clone(), false);
        self.engine.shared().wait_job(&job).0
    }

    /// Starts a raw call in the background.
    ///
    /// # Safety
    /// As for [`Communicator::collective_raw`], until the returned [`Work`] reports completion
    /// (`test()` true or `wait()` returned) — dropping the `Work` does not end the call.
    pub unsafe fn collective_raw_async(&self, call: RawCall) -> Result<Work<()>> {
        // SAFETY: forwarded contract.
        unsafe { self.collective_raw_with_async(call, &RawExtra::default()) }
    }

    /// Starts a raw call with [`RawExtra`] arguments in the background.
    ///
    /// # Safety
    /// As for [`Communicator::collective_raw_with`], until the returned [`Work`] reports
    /// completion (`test()` true or `wait()` returned).
    pub unsafe fn collective_raw_with_async(
        &self,
        call: RawCall,
        extra: &RawExtra,
    ) -> Result<Work<()>> {
        self.check_failed()?;
        let job = Job::new(self.make_call(&call, extra)?, Some(Box::new(())));
        Ok(self.submit_async(job))
    }

    fn submit_async<B>(&self, job: Arc<Job>) -> Work<B> {
        self.engine.submit(job.clone(), true);
        Work::new(job, self.engine.shared_arc())
    }

    fn raw<T: Element>(
        &self,
        kind: Collective,
        input: *const T,
        output: *mut T,
        count: usize,
        op: ReduceOp,
        root: usize,
    ) -> RawCall {
        RawCall {
            kind,
            input: input.cast(),
            output: output.cast(),
            count,
            dtype: T::DTYPE,
            op,
            root,
        }
    }

    /// Runs a typed call whose buffers the borrow checker keeps alive.
    fn run<T: Element>(
        &self,
        kind: Collective,
        input: *const T,
        output: *mut T,
        count: usize,
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        let call = self.raw(kind, input, output, count, op, root);
        // SAFETY: every typed entry point checks the slice lengths against `count` before
        // calling `run`, and holds `&`/`&mut` borrows of the slices for the whole call.
        unsafe { self.collective_raw(call) }
    }

    /// Starts a typed call on owned buffers: `make` turns the boxed buffers into the raw
    /// call (after boxing, so the pointers stay put) or refuses them.
    fn start<B: Send + 'static>(
        &self,
        bufs: Box<B>,
        make: impl FnOnce(&mut B) -> Result<RawCall>,
    ) -> Result<Work<B>> {
        self.start_with(bufs, |b| Ok((make(b)?, RawExtra::default())))
    }

    /// [`Communicator::start`] for calls with [`RawExtra`] arguments.
    fn start_with<B: Send + 'static>(
        &self,
        mut bufs: Box<B>,
        make: impl FnOnce(&mut B) -> Result<(RawCall, RawExtra)>,
    ) -> Result<Work<B>> {
        self.check_failed()?;
        let (raw, extra) = make(&mut bufs)?;
        let job = Job::new(self.make_call(&raw, &extra)?, Some(bufs));
        Ok(self.submit_async(job))
    }

    /// All-reduce in place: every rank's `buf` becomes the reduction of all ranks' `buf`.
    pub fn all_reduce<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        let p = buf.as_mut_ptr();
        self.run(Collective::AllReduce, p, p, buf.len(), op, 0)
    }

    /// All-reduce out of place: `output[..input.len()]` becomes the reduction of all inputs.
    pub fn all_reduce_into<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        need("output", input.len(), output.len())?;
        self.run(
            Collective::AllReduce,
            input.as_ptr(),
            output.as_mut_ptr(),
            input.len(),
            op,
            0,
        )
    }

    /// All-gather: `output` (at least `world × input.len()`) becomes every rank's input in
    /// rank order.
    pub fn all_gather<T: Element>(&self, input: &[T], output: &mut [T]) -> Result<()> {
        need("output", input.len() * self.world, output.len())?;
        self.run(
            Collective::AllGather,
            input.as_ptr(),
            output.as_mut_ptr(),
            input.len(),
            ReduceOp::Sum,
            0,
        )
    }

    /// All-gather in place: `buf` holds `world` chunks and this rank's input is chunk `rank`.
    pub fn all_gather_in_place<T: Element>(&self, buf: &mut [T]) -> Result<()> {
        let n = self.split(buf.len())?;
        let p = buf.as_mut_ptr();
        self.run(
            Collective::AllGather,
            p.wrapping_add(self.rank * n),
            p,
            n,
            ReduceOp::Sum,
            0,
        )
    }

    /// Reduce-scatter: `output` becomes chunk `rank` (of `output.len()` elements) of the
    /// reduction of all inputs (at least `world × output.len()` each).
    pub fn reduce_scatter<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        need("input", output.len() * self.world, input.len())?;
        self.run(
            Collective::ReduceScatter,
            input.as_ptr(),
            output.as_mut_ptr(),
            output.len(),
            op,
            0,
        )
    }

    /// Reduce-scatter in place: `buf` holds `world` chunks; chunk `rank` becomes the reduced
    /// chunk (the other chunks are left unspecified).
    pub fn reduce_scatter_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        let n = self.split(buf.len())?;
        let p = buf.as_mut_ptr();
        self.run(
            Collective::ReduceScatter,
            p,
            p.wrapping_add(self.rank * n),
            n,
            op,
            0,
        )
    }

    /// Broadcast in place: every rank's `buf` becomes the root's.
    pub fn broadcast<T: Element>(&self, buf: &mut [T], root: usize) -> Result<()> {
        let p = buf.as_mut_ptr();
        self.run(Collective::Broadcast, p, p, buf.len(), ReduceOp::Sum, root)
    }

    /// Broadcast out of place: `output` becomes the root's `input[..output.len()]` (other
    /// ranks' `input` is not read and may be empty).
    pub fn broadcast_into<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        root: usize,
    ) -> Result<()> {
        if self.rank == root {
            need("input", output.len(), input.len())?;
        }
        self.run(
            Collective::Broadcast,
            input.as_ptr(),
            output.as_mut_ptr(),
            output.len(),
            ReduceOp::Sum,
            root,
        )
    }

    /// Reduce in place: the root's `buf` becomes the reduction of all ranks' `buf` (other
    /// ranks' `buf` is left unchanged).
    pub fn reduce<T: Element>(&self, buf: &mut [T], op: ReduceOp, root: usize) -> Result<()> {
        let p = buf.as_mut_ptr();
        self.run(Collective::Reduce, p, p, buf.len(), op, root)
    }

    /// Reduce out of place: the root's `output` becomes the reduction of all inputs (other
    /// ranks' `output` is not touched and may be empty).
    pub fn reduce_into<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        if self.rank == root {
            need("output", input.len(), output.len())?;
        }
        self.run(
            Collective::Reduce,
            input.as_ptr(),
            output.as_mut_ptr(),
            input.len(),
            op,
            root,
        )
    }

    /// All-to-all: `input` holds `world` chunks; chunk `j` goes to rank `j`, which stores it
    /// as chunk `rank` of its `output` (same length as `input`).
    pub fn all_to_all<T: Element>(&self, input: &[T], output: &mut [T]) -> Result<()> {
        let n = self.split(input.len())?;
        need("output", input.len(), output.len())?;
        self.run(
            Collective::AllToAll,
            input.as_ptr(),
            output.as_mut_ptr(),
            n,
            ReduceOp::Sum,
            0,
        )
    }

    /// All-to-all in place on `buf` (`world` chunks).
    pub fn all_to_all_in_place<T: Element>(&self, buf: &mut [T]) -> Result<()> {
        let n = self.split(buf.len())?;
        let p = buf.as_mut_ptr();
        self.run(Collective::AllToAll, p, p, n, ReduceOp::Sum, 0)
    }

    /// Returns once every rank has entered the barrier.
    pub fn barrier(&self) -> Result<()> {
        self.run::<u8>(
            Collective::Barrier,
            std::ptr::null(),
            std::ptr::null_mut(),
            0,
            ReduceOp::Sum,
            0,
        )
    }

    /// Sends `buf` to `peer` (matched by `peer`'s `recv` of the same length).
    pub fn send<T: Element>(&self, buf: &[T], peer: usize) -> Result<()> {
        self.run(
            Collective::SendRecv,
            buf.as_ptr(),
            std::ptr::null_mut(),
            buf.len(),
            ReduceOp::Sum,
            peer,
        )
    }

    /// Receives into `buf` from `peer`.
    pub fn recv<T: Element>(&self, buf: &mut [T], peer: usize) -> Result<()> {
        self.run(
            Collective::SendRecv,
            std::ptr::null(),
            buf.as_mut_ptr(),
            buf.len(),
            ReduceOp::Sum,
            peer,
        )
    }

    fn split(&self, len: usize) -> Result<usize> {
        if len % self.world != 0 {
            return Err(Error::Indivisible {
                len,
                world: self.world,
            });
        }
        Ok(len / self.world)
    }
}
