//! The RDMA protocol core: links over any fabric with one-sided writes, immediate data and
//! reads (libfabric now, in [`crate::ofi`]; ibverbs RC queue pairs later), generic over the
//! small [`Fabric`] trait. No FFI here; it is compiled in every build so that its logic and
//! its registration cache are checked and unit-tested without any system library.
//!
//! # Protocol (after NCCL net_ib and Gloo's ibverbs pair)
//! - **Receive slots and credits.** For every peer, a rank registers a ring of `slots`
//!   receive slots of `slot_bytes` each and tells the peer its address and key in the setup
//!   hello. The sender starts with `slots` credits; the n-th write of the stream goes into
//!   slot `n % slots` with an RDMA write carrying 32-bit immediate data (`Data{slot, len}`,
//!   libfabric `fi_writedata` remote CQ data, verbs `RDMA_WRITE_WITH_IMM`). The receiver
//!   shows a slot's bytes through [`crate::Link::peek`] straight from the ring (no copy),
//!   and once they are consumed returns a credit: an 8-byte write to the sender's control
//!   word with immediate `Credit{n}`, batched (a quarter of the ring) but never held while
//!   the ring is drained. The sender never writes without a credit (receiver-driven flow
//!   control as in NCCL and Gloo, where the receiver's posted region is the credit); a full
//!   ring makes `try_write` accept 0 bytes, and a partial write is the bytes that fit.
//!   Each immediate carries the slot index, so the receiver does not rely on completion
//!   order.
//! - **Single copy** ([`crate::SingleCopy`], pull model). At
//!   [`crate::SingleCopy::post_region`] the sender registers its buffer through the
//!   [`RegCache`] and announces `{addr, len, remote address, key}` in a slot (immediate
//!   `Announce{slot}`), taking a credit like data; the receiver records announcements as
//!   they arrive. [`crate::SingleCopy::read`] finds the announcement covering the address,
//!   RDMA-reads from the sender's memory into `dst` (registered through the cache where the
//!   fabric needs local registration) and waits for the read's completion by polling the
//!   completion queue, bounded by the link's timeout; [`crate::SingleCopy::ack`] is a
//!   control write `Ack{n}`; the sender's [`crate::SingleCopy::acked`] counts them and
//!   releases the cache references.
//! - **Registration cache** ([`RegCache`]): page-aligned, reference-counted, bounded with
//!   LRU eviction of unreferenced entries, with public counters ([`CacheStats`],
//!   [`RdmaEndpoint::cache_stats`]).
//! - **Progress** happens inside the link calls (`try_write`, `peek`, `acked`, `read`) and
//!   [`crate::Endpoint::wait`], which polls the completion queue and otherwise sleeps on the
//!   fabric's wait object ([`Fabric::wait`]) until a completion may be ready, the waker is
//!   called, or the timeout passes. There is no progress thread, as in the other
//!   transports.
//! - **Failure.** An error completion fails the link to that peer: a lost connection
//!   becomes [`crate::LinkError::Closed`], another error [`crate::LinkError::Io`] with the
//!   provider's message, a write that breaks the protocol [`crate::LinkError::Protocol`].
//!   Closing a link writes `Close`. A peer that went away without closing is found by a
//!   probe: after [`PROBE_AFTER`](core::PROBE_AFTER) without hearing from it while
//!   waiting on it, a link writes 8 bytes without immediate data to the peer's control
//!   word, and the connection's failure fails the probe. Nothing blocks longer than the
//!   wait timeout it is given (`read` is bounded by the setup timeout; a stopped peer makes
//!   the executor's own timeout fire).
//! - **Setup**: each rank sends each peer a hello (magic, version, job token, rank, world,
//!   ring and control addresses and keys) as a small message and checks the peers'; a
//!   message with another job's token is dropped and its receive posted again, so a
//!   stranger cannot break the job.

mod core;
mod dmabuf;
mod endpoint;
mod fabric;
mod link;
mod regcache;
mod wakeup;
pub(crate) mod wire;

pub use endpoint::{RdmaEndpoint, RdmaParams};
pub use fabric::{Access, Completion, Fabric, FabricCaps, FabricError, MemRegion, RmaOp};
pub use link::RdmaLink;
pub use regcache::{page_range, CacheStats, RegCache, RegRef, PAGE};
pub use wakeup::Wakeup;

/// Bytes of unreferenced registrations the cache keeps by default.
pub const DEFAULT_CACHE_BYTES: usize = 1 << 30;
