//! The [`Fabric`] trait: the handful of RDMA operations the protocol core needs, which
//! libfabric (the `ofi` transport) and ibverbs RC queue pairs can both provide.

use std::sync::Arc;
use std::time::Duration;

/// Why a fabric operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricError {
    /// The connection to the peer is gone (reset, refused, shut down).
    pub disconnected: bool,
    /// The provider's errno (positive), 0 when there is none.
    pub errno: i32,
    /// The provider's message (e.g. libfabric's `fi_cq_strerror`).
    pub message: String,
}

impl FabricError {
    /// An error that is not a disconnect.
    pub fn other(errno: i32, message: impl Into<String>) -> FabricError {
        FabricError {
            disconnected: false,
            errno,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FabricError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

/// What the fabric's memory registration and transfers need from the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FabricCaps {
    /// Local buffers of transfers must be registered (`FI_MR_LOCAL`; always for verbs).
    pub local_mr: bool,
    /// The largest single RDMA transfer; the core splits larger ones.
    pub max_rma: usize,
}

/// Which remote accesses a registration allows (local read and write are always allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Access {
    /// Peers may RDMA-read it.
    pub remote_read: bool,
    /// Peers may RDMA-write it.
    pub remote_write: bool,
}

/// A registered memory region.
#[derive(Debug)]
pub struct MemRegion<M> {
    /// The fabric's handle, given back to [`Fabric::deregister`].
    pub mr: M,
    /// The key peers quote to access it (`fi_mr_key`, an ibverbs rkey).
    pub rkey: u64,
    /// The local descriptor for transfers from/to it (`fi_mr_desc`, an lkey), 0 for none.
    pub desc: usize,
    /// The address peers name its first byte with: its virtual address where the fabric
    /// addresses remote memory virtually (`FI_MR_VIRT_ADDR`, verbs), 0 where by offset.
    pub remote_base: u64,
}

/// One RDMA transfer between local memory and a peer's registered memory.
#[derive(Clone, Copy, Debug)]
pub struct RmaOp {
    /// The peer (its rank).
    pub peer: usize,
    /// Local buffer (the source of a write, the destination of a read).
    pub local: *mut u8,
    /// Bytes to move.
    pub len: usize,
    /// The local buffer's descriptor ([`MemRegion::desc`]), 0 where none is needed.
    pub desc: usize,
    /// The remote address (in the peer's region's addressing, see [`MemRegion::remote_base`]).
    pub remote_addr: u64,
    /// The peer region's key.
    pub rkey: u64,
    /// The core's context, given back in the completion.
    pub ctx: u64,
}

/// A completion, as the core sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// An operation this side posted finished (`ctx` as posted; `len` for receives).
    Done {
        /// The operation's context.
        ctx: u64,
        /// Bytes received (receives), else the transfer's length or 0.
        len: usize,
    },
    /// An operation this side posted failed.
    Failed {
        /// The operation's context.
        ctx: u64,
        /// The provider's error.
        error: FabricError,
    },
    /// A peer's write with immediate data landed in our memory.
    Remote {
        /// The writer.
        peer: usize,
        /// The immediate data.
        imm: u32,
    },
}

/// The fabric under [`super::RdmaEndpoint`]: one local endpoint reaching every peer (by rank)
/// with reliable, connected semantics (libfabric RDM endpoint, ibverbs RC queue pairs), one
/// completion queue for everything, and a wait object.
///
/// Operations return `Ok(true)` when posted and `Ok(false)` when the send queue is full
/// (poll completions and retry); an `Err` is a local failure.
pub trait Fabric: Send + 'static {
    /// A registration handle.
    type Mr: Send;

    /// What registration and transfers need.
    fn caps(&self) -> FabricCaps;

    /// Registers `len` bytes at `addr`.
    ///
    /// # Safety
    /// The memory must stay allocated until [`Fabric::deregister`], and with `access`
    /// allowing remote writes, nothing may rely on its contents except as the protocol says.
    unsafe fn register(
        &mut self,
        addr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<MemRegion<Self::Mr>, FabricError>;

    /// Deregisters a region (no transfer may still use it).
    fn deregister(&mut self, mr: Self::Mr);

    /// Posts an RDMA write of `op.local[..op.len]` to the peer; with `imm`, the peer gets a
    /// [`Completion::Remote`] carrying it once the bytes are in its memory (libfabric
    /// `fi_writedata`, verbs `RDMA_WRITE_WITH_IMM`), and writes with `imm` to one peer
    /// complete there in the order posted.
    ///
    /// # Safety
    /// `op.local[..op.len]` must stay valid and unchanged until this side's completion.
    unsafe fn write(&mut self, op: &RmaOp, imm: Option<u32>) -> Result<bool, FabricError>;

    /// Posts an RDMA read from the peer's memory into `op.local[..op.len]`.
    ///
    /// # Safety
    /// `op.local[..op.len]` must stay valid, and not be accessed, until the completion.
    unsafe fn read(&mut self, op: &RmaOp) -> Result<bool, FabricError>;

    /// Posts a small message to `peer` (setup only).
    ///
    /// # Safety
    /// `buf[..len]` must stay valid until the completion.
    unsafe fn send(
        &mut self,
        peer: usize,
        buf: *const u8,
        len: usize,
        desc: usize,
        ctx: u64,
    ) -> Result<bool, FabricError>;

    /// Posts a buffer for one incoming message from any peer (setup only).
    ///
    /// # Safety
    /// `buf[..len]` must stay valid, and not be accessed, until the completion or until the
    /// fabric is dropped.
    unsafe fn post_recv(
        &mut self,
        buf: *mut u8,
        len: usize,
        desc: usize,
        ctx: u64,
    ) -> Result<bool, FabricError>;

    /// Appends the completions available now to `out` (never blocks).
    fn poll(&mut self, out: &mut Vec<Completion>) -> Result<(), FabricError>;

    /// Sleeps until a completion may be ready, the waker is called, or `timeout` passes.
    fn wait(&mut self, timeout: Duration) -> Result<(), FabricError>;

    /// Wakes [`Fabric::wait`] from any thread.
    fn waker(&self) -> Arc<dyn Fn() + Send + Sync>;
}
