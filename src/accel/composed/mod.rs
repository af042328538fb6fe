//! One communicator over hosts with different accelerators: on each host the vendor's
//! library (NCCL on NVIDIA hosts, HCCL on Ascend hosts; ferrocoll itself on CPU hosts) does
//! the part between the host's ranks on device memory, and ferrocoll does the part between
//! hosts over its own transports from host staging buffers, with its topology-aware order
//! and optional compression.
//!
//! Every host must run the same number of ranks. Rank `(h, l)` is local rank `l` of host
//! `h`; the ranks with one local index across the hosts form the *cross* communicator
//! (ordered by host), the ranks of a host the *local* one.
//!
//! - **all-reduce** of `n` elements, `n` a multiple of the local size `L`: the vendor's
//!   reduce-scatter leaves each local rank one `n/L` shard (on device), which goes to host
//!   staging chunk by chunk (copies queued on the caller's stream, each chunk waited on by
//!   its event, so the next chunk's copy runs while this one crosses hosts), is all-reduced
//!   across hosts, and comes back; the vendor's all-gather then assembles the result. Other
//!   sizes: the vendor's all-reduce, then the whole buffer across hosts. Average is a sum
//!   everywhere, scaled once by `1/world` in staging (HCCL has no average).
//! - **reduce-scatter**: the send buffer is rearranged on device so that the vendor's
//!   reduce-scatter leaves local rank `l` the host's partial sums for every `(h, l)`; a
//!   reduce-scatter across hosts finishes them.
//! - **all-gather**: the vendor's all-gather within the host, then across hosts, and each
//!   block copied to its global rank's place.
//! - **broadcast** and **reduce** ([`rooted`]): the vendor's broadcast inside the root's
//!   host, one shard per local rank across hosts, the vendor's all-gather on the other
//!   hosts; reduce is the all-reduce kept by the root alone.
//! - **all-to-all**, **send** and **recv** ([`staged`]): staged through host memory and
//!   carried by ferrocoll between every pair of ranks (the vendor's part is not used), as
//!   are device calls inside a C ABI group.
//!
//! Buffers are [`DeviceBuffer`]s: each declares its memory, checked against this
//! communicator's device (and, where the runtime can tell, against the address) before any
//! work is queued.
//!
//! Each final element is computed once, by one path, and copied to the others: every rank
//! holds identical bits, whatever vendor its host runs. Calls return once the work between
//! hosts is done and the last vendor call is queued on `stream`: synchronise the stream
//! before reading the result.

use std::ffi::c_void;
use std::sync::Arc;

use super::acl::AclRuntime;
use super::cudart::CudaRuntime;
use super::hccl::{Hccl, HcclComm, HcclRootInfo, ROOT_INFO_BYTES};
use super::nccl::{Nccl, NcclComm, NcclUniqueId, UNIQUE_ID_BYTES};
use super::staging::{alloc_host, as_f32, dealloc_host, scale};
use super::{CopyKind, DeviceBuffer, MemoryKind, RawStream, Runtime};
use crate::compress::{Codec, CompressedCollectives, ErrorFeedback};
use crate::error::VendorError;
use crate::{Collective, Communicator, DataType, Error, RawCall, ReduceOp, Result};

mod blocks;
mod rooted;
mod staged;

/// Bytes crossing hosts per pipeline chunk of the all-reduce.
pub(crate) const CHUNK_BYTES: usize = 4 << 20;

/// The library that does a host's part.
#[derive(Clone)]
pub enum Backend {
    /// NCCL with the CUDA runtime.
    Nccl(Arc<Nccl>, Arc<CudaRuntime>),
    /// HCCL with the ACL runtime.
    Hccl(Arc<Hccl>, Arc<AclRuntime>),
    /// No accelerator: buffers are host memory and ferrocoll does the host's part too.
    Cpu,
}

impl Backend {
    /// The backend of `--device cuda|npu|cpu`, its libraries loaded from their variables'
    /// paths or the default names.
    pub fn load(device: &str) -> Result<Backend> {
        Ok(match device {
            "cuda" => Backend::Nccl(
                Arc::new(Nccl::open(None)?),
                Arc::new(CudaRuntime::open(None)?),
            ),
            "npu" => Backend::Hccl(
                Arc::new(Hccl::open(None)?),
                Arc::new(AclRuntime::open(None)?),
            ),
            "cpu" => Backend::Cpu,
            other => {
                return Err(Error::Config {
                    var: "device".into(),
                    value: other.into(),
                    reason: "expected cuda, npu or cpu".into(),
                })
            }
        })
    }

    /// "NCCL 2.30.7", "HCCL", "cpu": the library and its version where it has one.
    pub fn describe(&self) -> String {
        match self {
            Backend::Nccl(n, _) => format!("NCCL {}", super::nccl::version_text(n.version())),
            Backend::Hccl(_, a) => format!("HCCL (ACL runtime {})", a.version()),
            Backend::Cpu => "cpu".into(),
        }
    }

    /// Where `addr` lives, where this backend's runtime can say (the CUDA runtime can).
    pub fn memory_kind(&self, addr: usize) -> Result<Option<MemoryKind>> {
        match self.runtime() {
            Some(rt) => Ok(rt.memory_kind(addr)?),
            None => Ok(None),
        }
    }

    fn runtime(&self) -> Option<&dyn Runtime> {
        match self {
            Backend::Nccl(_, r) => Some(r.as_ref()),
            Backend::Hccl(_, r) => Some(r.as_ref()),
            Backend::Cpu => None,
        }
    }
}

/// The host's part.
enum Local {
    Nccl(NcclComm),
    Hccl(HcclComm),
    Cpu,
}

/// See the module docs.
pub struct DeviceComm {
    backend: Backend,
    local: Local,
    local_comm: Communicator,
    cross: Communicator,
    /// Every rank, for what is staged through host memory (all-to-all, send/recv).
    whole: Communicator,
    /// This rank's device index on its host.
    device: u32,
    world: usize,
    local_size: usize,
    /// Global rank of `(host, local index)`.
    global: Vec<Vec<usize>>,
    codec: Option<Codec>,
    ef: ErrorFeedback,
    scratch: Vec<(*mut c_void, usize)>,
    staging: Vec<u8>,
}

// SAFETY: the raw pointers are this communicator's own device (or host) allocations, usable
// from any thread of the process; the vendor communicators are `Send`, and `&mut self` on
// every call serialises their use.
unsafe impl Send for DeviceComm {}

impl DeviceComm {
    /// Builds the composed communicator over `comm`'s ranks (collective: every rank calls
    /// it), each rank on `device` of its host with its host's `backend`. `codec`, when
    /// given, compresses f32 sums and averages between hosts.
    pub fn new(
        comm: &Communicator,
        backend: Backend,
        device: u32,
        codec: Option<Codec>,
    ) -> Result<DeviceComm> {
        let topo = comm.topology();
        let (rank, world) = (comm.rank(), comm.world_size());
        let hosts = topo.hosts().len();
        let mut global = vec![Vec::new(); hosts];
        for r in 0..world {
            global[topo.host_of(r)].push(r);
        }
        let local_size = global[0].len();
        if global.iter().any(|g| g.len() != local_size) {
            let per: Vec<usize> = global.iter().map(Vec::len).collect();
            return Err(VendorError::Unsupported {
                library: "ferrocoll",
                what: format!("compose hosts with different rank counts ({per:?})"),
            }
            .into());
        }
        let (host, local_rank) = (topo.host_of(rank), topo.local_of(rank));
        let split = |color: usize, key: usize| -> Result<Communicator> {
            comm.split_by(Some(color as u32), key as i32)?
                .ok_or_else(|| Error::Internal("a split without this rank".into()))
        };
        let local_comm = split(host, local_rank)?;
        let cross = split(local_rank, host)?;
        let whole = split(0, rank)?;
        if let Some(rt) = backend.runtime() {
            rt.set_device(device)?;
        }
        let local = match &backend {
            Backend::Nccl(nccl, _) => {
                let mut id = [0u8; UNIQUE_ID_BYTES];
                if local_rank == 0 {
                    id = nccl.unique_id()?.internal;
                }
                local_comm.broadcast(&mut id, 0)?;
                let id = NcclUniqueId { internal: id };
                Local::Nccl(NcclComm::init_rank(
                    nccl.clone(),
                    local_size,
                    &id,
                    local_rank,
                )?)
            }
            Backend::Hccl(hccl, _) => {
                let mut info = vec![0u8; ROOT_INFO_BYTES];
                if local_rank == 0 {
                    info.copy_from_slice(&hccl.root_info()?.internal);
                }
                local_comm.broadcast(&mut info, 0)?;
                let mut root = HcclRootInfo {
                    internal: [0; ROOT_INFO_BYTES],
                };
                root.internal.copy_from_slice(&info);
                Local::Hccl(HcclComm::init_root_info(
                    hccl.clone(),
                    local_size,
                    &root,
                    local_rank,
                )?)
            }
            Backend::Cpu => Local::Cpu,
        };
        Ok(DeviceComm {
            backend,
            local,
            local_comm,
            cross,
            whole,
            device,
            world,
            local_size,
            global,
            codec,
            ef: ErrorFeedback::new(),
            scratch: Vec::new(),
            staging: Vec::new(),
        })
    }

    /// The library doing this host's part, described ("NCCL 2.30.7").
    pub fn backend(&self) -> String {
        self.backend.describe()
    }

    /// The vendor's asynchronous error, polled (`Ok` on CPU hosts).
    pub fn async_error(&self) -> Result<()> {
        match &self.local {
            Local::Nccl(c) => c.async_error().map(|_| ()).map_err(Into::into),
            Local::Hccl(c) => c.async_error().map_err(Into::into),
            Local::Cpu => Ok(()),
        }
    }

    /// Stops the vendor's work now (`ncclCommAbort`; HCCL: its communicator destroyed) and
    /// frees this communicator: after a peer's failure, where finishing would wait for it.
    pub fn abort(mut self) -> Result<()> {
        match std::mem::replace(&mut self.local, Local::Cpu) {
            Local::Nccl(c) => c.abort()?,
            Local::Hccl(c) => c.abort()?,
            Local::Cpu => {}
        }
        self.local_comm.abort();
        self.cross.abort();
        self.whole.abort();
        Ok(())
    }

    /// Where this communicator's buffers live: its device's memory (host memory on CPU
    /// hosts).
    pub fn memory(&self) -> MemoryKind {
        match self.backend {
            Backend::Nccl(..) => MemoryKind::Cuda(self.device),
            Backend::Hccl(..) => MemoryKind::Npu(self.device),
            Backend::Cpu => MemoryKind::Host,
        }
    }

    /// The address of `b` once its memory is checked: declared as [`DeviceComm::memory`],
    /// and found there by the runtime where the runtime can say. `what` names the buffer in
    /// the error.
    fn addr(&self, b: DeviceBuffer, what: &'static str) -> Result<*mut c_void> {
        let expected = self.memory();
        let wrong = |found: String| -> Error {
            VendorError::WrongMemory {
                what,
                found,
                expected: expected.to_string(),
            }
            .into()
        };
        if b.memory != expected {
            return Err(wrong(format!("declared as {}", b.memory)));
        }
        if let (Some(rt), false) = (self.backend.runtime(), b.ptr.is_null()) {
            match rt.memory_kind(b.ptr as usize)? {
                Some(k) if k != expected => {
                    return Err(wrong(format!("{k}, as the {} says", rt.name())))
                }
                _ => {}
            }
        }
        Ok(b.ptr)
    }

    /// Device scratch buffer `i` of at least `bytes` (host memory on CPU hosts).
    fn scratch(&mut self, i: usize, bytes: usize) -> Result<*mut c_void> {
        while self.scratch.len() <= i {
            self.scratch.push((std::ptr::null_mut(), 0));
        }
        if self.scratch[i].1 < bytes {
            let old = self.scratch[i];
            let p = match self.backend.runtime() {
                Some(rt) => {
                    if !old.0.is_null() {
                        // SAFETY: `old` came from this runtime's malloc, and no queued work
                        // uses it: every call synchronises its stream before it returns.
                        unsafe { rt.free(old.0)? };
                    }
                    rt.malloc(bytes)?
                }
                None => {
                    if !old.0.is_null() {
                        // SAFETY: allocated below with this size and alignment.
                        unsafe { dealloc_host(old.0, old.1) };
                    }
                    alloc_host(bytes)
                }
            };
            self.scratch[i] = (p, bytes);
        }
        Ok(self.scratch[i].0)
    }

    /// Queues (device) or does (CPU) a copy.
    ///
    /// # Safety
    /// As [`Runtime::copy_async`].
    unsafe fn copy(
        &self,
        dst: *mut c_void,
        src: *const c_void,
        bytes: usize,
        kind: CopyKind,
        stream: RawStream,
    ) -> Result<()> {
        match self.backend.runtime() {
            // SAFETY: the caller's contract.
            Some(rt) => unsafe { rt.copy_async(dst, src, bytes, kind, stream)? },
            // SAFETY: the caller's contract; host memory on both sides.
            None => unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) },
        }
        Ok(())
    }

    /// Waits for everything queued on `stream` (nothing to wait for on CPU hosts).
    ///
    /// # Safety
    /// `stream` is live.
    unsafe fn sync(&self, stream: RawStream) -> Result<()> {
        if let Some(rt) = self.backend.runtime() {
            // SAFETY: the caller's contract.
            unsafe { rt.synchronize(stream)? };
        }
        Ok(())
    }

    /// The host's part of `kind` on device pointers, queued on `stream` (CPU: run now by
    /// the local ferrocoll communicator).
    ///
    /// # Safety
    /// The pointers hold what `kind` reads and writes for `count` elements of `dt`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn local_call(
        &self,
        kind: Collective,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dt: DataType,
        op: ReduceOp,
        stream: RawStream,
    ) -> Result<()> {
        match (&self.local, kind) {
            // SAFETY: the caller's contract.
            (Local::Nccl(c), Collective::AllReduce) => unsafe {
                c.all_reduce(send, recv, count, dt, op, stream)?
            },
            // SAFETY: the caller's contract.
            (Local::Nccl(c), Collective::ReduceScatter) => unsafe {
                c.reduce_scatter(send, recv, count, dt, op, stream)?
            },
            // SAFETY: the caller's contract.
            (Local::Nccl(c), Collective::AllGather) => unsafe {
                c.all_gather(send, recv, count, dt, stream)?
            },
            // SAFETY: the caller's contract.
            (Local::Hccl(c), Collective::AllReduce) => unsafe {
                c.all_reduce(send, recv, count, dt, op, stream)?
            },
            // SAFETY: the caller's contract.
            (Local::Hccl(c), Collective::ReduceScatter) => unsafe {
                c.reduce_scatter(send, recv, count, dt, op, stream)?
            },
            // SAFETY: the caller's contract.
            (Local::Hccl(c), Collective::AllGather) => unsafe {
                c.all_gather(send, recv, count, dt, stream)?
            },
            (Local::Cpu, _) => {
                let call = RawCall {
                    kind,
                    input: send,
                    output: recv,
                    count,
                    dtype: dt,
                    op,
                    root: 0,
                };
                // SAFETY: the caller's contract.
                unsafe { self.local_comm.collective_raw(call)? }
            }
            (_, k) => return Err(Error::Internal(format!("no host part for {k:?}"))),
        }
        Ok(())
    }

    /// The part between hosts, on host staging memory (in place unless `out` is given).
    /// `key` names the tensor's error feedback when the call is compressed.
    #[allow(clippy::too_many_arguments)]
    fn cross_call(
        &mut self,
        kind: Collective,
        buf: &mut [u8],
        out: Option<&mut [u8]>,
        count: usize,
        dt: DataType,
        op: ReduceOp,
        key: &str,
    ) -> Result<()> {
        let sum_op = if op == ReduceOp::Avg {
            ReduceOp::Sum
        } else {
            op
        };
        match (self.codec, kind, dt, sum_op) {
            (Some(codec), Collective::AllReduce, DataType::F32, ReduceOp::Sum) => {
                let v = as_f32(buf);
                self.cross
                    .all_reduce_compressed(v, &mut self.ef, key, codec)?;
            }
            _ => {
                let output = match out {
                    Some(o) => o.as_mut_ptr() as *mut c_void,
                    None => buf.as_mut_ptr() as *mut c_void,
                };
                let call = RawCall {
                    kind,
                    input: buf.as_ptr() as *const c_void,
                    output,
                    count,
                    dtype: dt,
                    op: sum_op,
                    root: 0,
                };
                // SAFETY: `buf` (and `out`) are host buffers sized by the callers for
                // `count` elements of `dt` as `kind` reads and writes them.
                unsafe { self.cross.collective_raw(call)? };
            }
        }
        Ok(())
    }

    /// Sums (or averages, max, …) `count` elements of `dt` from `send` into `recv` over
    /// every rank; see the module docs.
    ///
    /// # Safety
    /// `send` and `recv` are buffers of `count` elements of `dt` in this rank's device
    /// memory (host memory on CPU hosts), valid until `stream` has run the work queued;
    /// `stream` is a live stream of this rank's device (null: the default stream).
    pub unsafe fn all_reduce(
        &mut self,
        send: DeviceBuffer,
        recv: DeviceBuffer,
        count: usize,
        dt: DataType,
        op: ReduceOp,
        stream: RawStream,
    ) -> Result<()> {
        let send = self.addr(send, "sendbuff")? as *const c_void;
        let recv = self.addr(recv, "recvbuff")?;
        // SAFETY: the caller's contract, the memory checked.
        unsafe { self.all_reduce_ptr(send, recv, count, dt, op, stream) }
    }

    /// [`DeviceComm::all_reduce`] on checked addresses.
    ///
    /// # Safety
    /// As [`DeviceComm::all_reduce`].
    unsafe fn all_reduce_ptr(
        &mut self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        dt: DataType,
        op: ReduceOp,
        stream: RawStream,
    ) -> Result<()> {
        let es = dt.size();
        let sum_op = if op == ReduceOp::Avg {
            ReduceOp::Sum
        } else {
            op
        };
        let l = self.local_size;
        let sharded = count % l == 0 && count >= l;
        let (shard_dev, shard) = if sharded {
            let shard = count / l;
            let s = self.scratch(0, shard * es)?;
            // SAFETY: `send` holds `count` = l × shard elements; `s` holds `shard`.
            unsafe {
                self.local_call(
                    Collective::ReduceScatter,
                    send,
                    s,
                    shard,
                    dt,
                    sum_op,
                    stream,
                )?
            };
            (s, shard)
        } else {
            // SAFETY: `send` and `recv` hold `count` elements.
            unsafe {
                self.local_call(Collective::AllReduce, send, recv, count, dt, sum_op, stream)?
            };
            (recv, count)
        };
        let bytes = shard * es;
        let mut staging = std::mem::take(&mut self.staging);
        staging.resize(bytes, 0);
        let chunk = (CHUNK_BYTES / es).max(1) * es;
        // Every chunk's copy out is queued at once; each is waited for by its event, so the
        // next chunks copy while this one crosses hosts.
        let events = self.queue_out(&mut staging, shard_dev, bytes, chunk, stream)?;
        let mut result = Ok(());
        for (i, off) in (0..bytes).step_by(chunk).enumerate() {
            let end = (off + chunk).min(bytes);
            if let (Some(rt), Some(e)) = (self.backend.runtime(), events.get(i)) {
                // SAFETY: recorded on `stream` after this chunk's copy.
                unsafe { rt.event_synchronize(*e)? };
            }
            let part = &mut staging[off..end];
            // Error feedback is kept per tensor; without the caller's name for it, a
            // tensor is known by its length (and the chunk by its offset).
            let key = format!("device all-reduce of {count} from {off}");
            let n = part.len() / es;
            result = self.cross_call(Collective::AllReduce, part, None, n, dt, op, &key);
            if result.is_err() {
                break;
            }
            if op == ReduceOp::Avg {
                scale(part, dt, self.world);
            }
            // SAFETY: the chunk lies within the shard on both sides; `staging` outlives
            // the copy (it is synchronised below before it is reused).
            unsafe {
                self.copy(
                    (shard_dev as *mut u8).add(off) as *mut c_void,
                    part.as_ptr() as *const c_void,
                    end - off,
                    CopyKind::HostToDevice,
                    stream,
                )?
            };
        }
        self.drop_events(events);
        result?;
        if !sharded {
            // The fallback: the host's all-reduce left its sum in `recv`, and the sum across
            // hosts went back into `recv` in place. The copies back read `staging`.
            // SAFETY: a live stream.
            unsafe { self.sync(stream)? };
        } else {
            // SAFETY: `shard_dev` holds this rank's `shard`, `recv` holds l × shard.
            unsafe {
                self.local_call(
                    Collective::AllGather,
                    shard_dev,
                    recv,
                    shard,
                    dt,
                    op,
                    stream,
                )?;
                // `staging` must outlive the copies back.
                self.sync(stream)?;
            }
        }
        self.staging = staging;
        Ok(())
    }

    /// Queues the copies of `bytes` from `dev` into `staging`, chunk by chunk, each followed
    /// by an event (none on CPU hosts, where the copies are done now).
    fn queue_out(
        &self,
        staging: &mut [u8],
        dev: *const c_void,
        bytes: usize,
        chunk: usize,
        stream: RawStream,
    ) -> Result<Vec<super::RawEvent>> {
        let mut events = Vec::new();
        for off in (0..bytes).step_by(chunk) {
            let end = (off + chunk).min(bytes);
            // SAFETY: both ranges lie within their buffers of `bytes`.
            unsafe {
                self.copy(
                    staging[off..end].as_mut_ptr() as *mut c_void,
                    (dev as *const u8).add(off) as *const c_void,
                    end - off,
                    CopyKind::DeviceToHost,
                    stream,
                )?
            };
            if let Some(rt) = self.backend.runtime() {
                let e = rt.event_create()?;
                // SAFETY: a live event and stream.
                unsafe { rt.event_record(e, stream)? };
                events.push(e);
            }
        }
        Ok(events)
    }

    fn drop_events(&self, events: Vec<super::RawEvent>) {
        if let Some(rt) = self.backend.runtime() {
            for e in events {
                // SAFETY: created by `queue_out`, not used afterwards.
                let _ = unsafe { rt.event_destroy(e) };
            }
        }
    }
}

impl Drop for DeviceComm {
    fn drop(&mut self) {
        for &(p, n) in &self.scratch {
            if p.is_null() {
                continue;
            }
            match self.backend.runtime() {
                Some(rt) => {
                    // SAFETY: allocated by this runtime; every call synchronised its stream.
                    let _ = unsafe { rt.free(p) };
                }
                // SAFETY: allocated by `alloc_host` with `n` bytes.
                None => unsafe { dealloc_host(p, n) },
            }
        }
    }
}
