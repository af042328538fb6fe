//! The `Link` and `Endpoint` traits: the contract between the executor and a transport.

use std::time::Duration;

use crate::copy::Stores;

/// Why a link could not move bytes.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer closed the link or its process went away; no more bytes will come.
    #[error("link to rank {peer} is closed (peer exited, crashed or the link was dropped)")]
    Closed {
        /// The peer on the other end.
        peer: usize,
    },
    /// This rank was killed (fault injection) or aborted; its links no longer work.
    #[error("this rank's endpoint was shut down")]
    Shutdown,
    /// An operating-system error on the link to `peer`.
    #[error("I/O error on the link to rank {peer}")]
    Io {
        /// The peer on the other end.
        peer: usize,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The peer sent bytes that break the transport's framing.
    #[error("protocol error on the link to rank {peer}: {detail}")]
    Protocol {
        /// The peer on the other end.
        peer: usize,
        /// What was wrong.
        detail: String,
    },
}

impl LinkError {
    /// A copy of this error (an I/O cause is re-created from its kind and message).
    pub fn duplicate(&self) -> LinkError {
        match self {
            LinkError::Closed { peer } => LinkError::Closed { peer: *peer },
            LinkError::Shutdown => LinkError::Shutdown,
            LinkError::Io { peer, source } => LinkError::Io {
                peer: *peer,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            LinkError::Protocol { peer, detail } => LinkError::Protocol {
                peer: *peer,
                detail: detail.clone(),
            },
        }
    }
}

/// One rank's byte stream to one peer, in both directions.
///
/// Contract:
/// - Bytes written with [`Link::try_write`] arrive at the peer in order, exactly once, as one
///   continuous stream (no message boundaries; framing is the caller's business).
/// - No call blocks. `try_write` may accept fewer bytes than offered (0 when full); `peek` may
///   return an empty slice.
/// - Once the peer has closed, `peek` still returns what arrived before the close; after that
///   it returns [`LinkError::Closed`]. `try_write` to a closed peer fails at once.
pub trait Link: Send {
    /// The rank at the other end.
    fn peer(&self) -> usize;

    /// Copies as many leading bytes of `buf` as the link accepts now and returns how many.
    fn try_write(&mut self, buf: &[u8]) -> Result<usize, LinkError>;

    /// Pushes bytes the link buffered internally towards the peer. Returns `true` when none
    /// are left buffered. Links that never buffer keep the default.
    fn flush(&mut self) -> Result<bool, LinkError> {
        Ok(true)
    }

    /// The contiguous bytes that have arrived and are not yet consumed (possibly empty, and
    /// possibly only part of what has arrived, e.g. up to a ring buffer's wrap point).
    fn peek(&mut self) -> Result<&[u8], LinkError>;

    /// Marks the first `n` bytes returned by the last [`Link::peek`] as consumed.
    /// `n` must not exceed that slice's length.
    fn consume(&mut self, n: usize);

    /// Reads up to `dst.len()` arrived bytes into `dst`, returning how many. Transports that
    /// can read straight from the wire into `dst` (TCP) override this to save a copy.
    fn read_into(&mut self, dst: &mut [u8]) -> Result<usize, LinkError> {
        let src = self.peek()?;
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
        self.consume(n);
        Ok(n)
    }

    /// [`Link::read_into`] storing into `dst` with `stores` (see [`crate::copy`]), a hint.
    /// The default honours it through `peek` (ring links); TCP ignores it, since its large
    /// reads go from the socket straight into `dst` by the kernel's copy.
    fn read_into_with(&mut self, dst: &mut [u8], stores: Stores) -> Result<usize, LinkError> {
        if stores == Stores::Cached {
            return self.read_into(dst);
        }
        let src = self.peek()?;
        let n = src.len().min(dst.len());
        crate::copy::copy(&mut dst[..n], &src[..n], stores);
        self.consume(n);
        Ok(n)
    }

    /// [`Link::try_write`] that also copies the bytes it accepts to the front of `tee` (same
    /// length as `buf`) with `stores`: a rank that keeps the bytes it sends (its own chunk of
    /// an all-gather) makes both copies at once. Links over a memory ring do it in one pass
    /// over `buf`; the default writes, then copies.
    ///
    /// # Panics
    /// If `tee` and `buf` differ in length (a caller bug).
    fn try_write_tee(
        &mut self,
        buf: &[u8],
        tee: &mut [u8],
        stores: Stores,
    ) -> Result<usize, LinkError> {
        assert_eq!(buf.len(), tee.len(), "tee must match the written bytes");
        let n = self.try_write(buf)?;
        crate::copy::copy(&mut tee[..n], &buf[..n], stores);
        Ok(n)
    }

    /// Tells the peer that no more bytes will come from this side.
    fn close(&mut self);

    /// What this link can do beyond the byte stream. The executor reads this instead of
    /// guessing from the collective or the transport's name. The default declares nothing.
    fn caps(&self) -> LinkCaps {
        LinkCaps::default()
    }

    /// Single-copy transfers, where the transport can read the peer's memory directly
    /// (processes of one host with cross-memory attach, threads of one process). `None` (the
    /// default) when it cannot; `Some` exactly when [`LinkCaps::single_copy`] is set.
    fn single_copy(&mut self) -> Option<&mut dyn SingleCopy> {
        None
    }
}

/// The capabilities a [`Link`] declares.
///
/// A capability is what the link *can* do; whether a given message uses it is the
/// executor's policy (message size, whether the receiver reduces, the call's size), set by
/// the communicator's `Config`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCaps {
    /// The receiver can copy straight from the sender's memory ([`Link::single_copy`]).
    pub single_copy: bool,
    /// Reads honour [`Stores::Streaming`] in [`Link::read_into_with`] (links over a memory
    /// ring; TCP's large reads are the kernel's copy and ignore the hint).
    pub streaming_stores: bool,
    /// The link can write into memory the peer registered with it (RDMA-style one-sided
    /// transfers). No link of this crate does yet.
    pub registered_memory: bool,
    /// Bytes that can be in flight towards the peer before [`Link::try_write`] accepts no
    /// more (a ring's capacity); `None` where the transport buffers without a fixed bound.
    pub max_in_flight: Option<usize>,
}

/// Single-copy transfers over a [`Link`]: instead of streaming a large buffer through the
/// link, the sender announces its address in the stream and the receiver copies straight
/// from the sender's memory, then acknowledges. The sender must leave the buffer untouched
/// until the acknowledgement, which it learns from [`SingleCopy::acked`].
///
/// Tickets count announcements per direction over the link's lifetime: the sender's n-th
/// [`SingleCopy::post`] returns n, and the receiver's n-th [`SingleCopy::ack`] makes the
/// sender's [`SingleCopy::acked`] reach n. Both sides therefore see the announcements in stream order.
pub trait SingleCopy {
    /// Registers one announced buffer; returns its ticket (1, 2, …).
    fn post(&mut self) -> u64;

    /// [`SingleCopy::post`] for a buffer of `len` bytes at `addr` (the address the frame
    /// header announces): transports that must prepare the buffer for the peer's access
    /// (RDMA: register it and send its key) override this. The default calls `post`.
    fn post_region(&mut self, addr: u64, len: usize) -> u64 {
        let _ = (addr, len);
        self.post()
    }

    /// How many of our tickets the peer has acknowledged (an error if the peer is gone).
    fn acked(&mut self) -> Result<u64, LinkError>;

    /// Copies `dst.len()` bytes at address `addr` of the peer into `dst`.
    fn read(&mut self, addr: u64, dst: &mut [u8]) -> Result<(), LinkError>;

    /// Acknowledges the oldest unacknowledged announcement of the peer's (wakes the peer).
    fn ack(&mut self);
}

/// Counters an endpoint keeps for benchmarks and tests ([`Endpoint::counters`]); an
/// endpoint composed of several adds its parts' counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Memory registrations made by the registration cache (its misses).
    pub registrations: u64,
    /// Registration-cache lookups served by an existing registration.
    pub reg_hits: u64,
    /// Registrations dropped to stay within the cache's bound or replaced by a larger one.
    pub reg_evictions: u64,
}

impl std::ops::Add for EndpointCounters {
    type Output = EndpointCounters;

    fn add(self, o: EndpointCounters) -> EndpointCounters {
        EndpointCounters {
            registrations: self.registrations + o.registrations,
            reg_hits: self.reg_hits + o.reg_hits,
            reg_evictions: self.reg_evictions + o.reg_evictions,
        }
    }
}

/// One rank's set of links, plus a way to sleep until one of them may have moved.
pub trait Endpoint: Send {
    /// This endpoint's rank.
    fn rank(&self) -> usize;

    /// Number of ranks in the job.
    fn world_size(&self) -> usize;

    /// The link to `peer`, or `None` for `peer == rank` or a peer out of range.
    fn link(&mut self, peer: usize) -> Option<&mut dyn Link>;

    /// A value that changes whenever any link of this endpoint may have moved. Read it before
    /// polling the links, and pass it to [`Endpoint::wait`], so that no wake-up is lost
    /// between the poll and the wait.
    fn activity_token(&self) -> u64;

    /// Sleeps until the activity token differs from `token`, the function that
    /// [`Endpoint::interrupter`] returned is called, or `timeout` passes.
    fn wait(&mut self, token: u64, timeout: Duration) -> Result<(), LinkError>;

    /// [`Endpoint::wait`] for a caller whose pending work is on the links to `peers` only:
    /// an endpoint with several kinds of link may watch just the kinds those peers use (it
    /// may still return on activity elsewhere). The default watches everything.
    fn wait_for(
        &mut self,
        token: u64,
        timeout: Duration,
        peers: &[usize],
    ) -> Result<(), LinkError> {
        let _ = peers;
        self.wait(token, timeout)
    }

    /// Whether this endpoint has work that only its own calls move: operations posted to a
    /// fabric with manual progress (libfabric's tcp provider transmits a posted write only
    /// while its completion queue is polled) or messages waiting for room to be sent. An
    /// endpoint composed with others must then keep being polled while the caller waits on
    /// the others' links ([`crate::composite::CompositeEndpoint`]). The default: none.
    fn needs_progress(&mut self) -> bool {
        false
    }

    /// What this endpoint has counted so far (its registration cache's work, for the
    /// benchmarks that show a loop on the same buffers registers nothing new). The default:
    /// nothing counted.
    fn counters(&self) -> EndpointCounters {
        EndpointCounters::default()
    }

    /// A handle that wakes this endpoint's `wait` from any thread (used by `abort`).
    fn interrupter(&self) -> std::sync::Arc<dyn Fn() + Send + Sync>;

    /// Closes every link (on drop, abort or failure) so peers see the end instead of hanging.
    fn close_all(&mut self);
}
