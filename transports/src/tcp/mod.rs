//! TCP links over non-blocking [`mio`] sockets.
//!
//! A [`TcpEndpoint`] holds one TCP connection per peer (a full mesh), built by
//! [`TcpEndpoint::connect`] with a handshake that proves the job key both ways and checks the world size
//! and the ranks (see [`setup`]). Each [`TcpLink`] is a plain byte stream:
//! - [`Link::try_write`] writes straight to the socket (a partial write is fine, a full socket
//!   buffer gives `Ok(0)`);
//! - [`Link::peek`] shows bytes from a receive buffer refilled from the socket (up to
//!   [`RECV_CHUNK`] at a time) when it is empty;
//! - [`Link::read_into`] reads large requests straight from the socket into the caller's
//!   buffer when nothing is buffered, saving a copy; a small request (a message header)
//!   refills the receive buffer with at most [`SMALL_FILL`] bytes (or the request's size),
//!   so the payload behind a header mostly stays in the socket for the direct read that
//!   follows (a full refill dragged up to [`RECV_CHUNK`] of it through the receive buffer:
//!   one more copy of every byte that only needs copying, 6% of the CPU time of a 64 MiB
//!   loopback all-reduce).
//!
//! Sockets get `TCP_NODELAY` and, when the kernel allows it (`net.core.rmem_max` /
//! `wmem_max`), [`SOCKET_BUFFER_BYTES`] of send and receive buffer; below that cap an explicit
//! size would only switch off the kernel's buffer auto-tuning, so it is left alone.
//!
//! Readiness is edge-triggered (mio): [`Endpoint::wait`] sleeps until a socket reports a new
//! event, [`Endpoint::interrupter`] is called, or the timeout passes. The executor re-polls
//! its links itself after every wake-up; a link whose last read filled the whole request may
//! hold more bytes without a new event, so the caller keeps reading until a read comes back
//! short before it waits.

pub mod factory;
pub mod setup;
#[cfg(test)]
mod tests;
#[cfg_attr(not(feature = "tls"), path = "no_tls.rs")]
pub mod tls;
#[cfg(all(test, feature = "tls"))]
mod tls_tests;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::link::{Endpoint, Link, LinkError};

pub use setup::{CLIENT_HELLO_LEN, HANDSHAKE_IDLE, MAGIC, PROTOCOL_VERSION, SERVER_HELLO_LEN};

/// Bytes read from the socket into a link's receive buffer at most at a time.
pub const RECV_CHUNK: usize = 1 << 20;

/// Bytes a small [`Link::read_into`] request (below [`DIRECT_READ_MIN`]) reads from the socket
/// into the empty receive buffer at most (or the request's size, if more): enough for a
/// header and a small message behind it in one system call.
pub const SMALL_FILL: usize = 16 << 10;

/// [`Link::read_into`] requests at least this large bypass the receive buffer when it is
/// empty and read from the socket straight into the caller's buffer.
pub const DIRECT_READ_MIN: usize = 64 << 10;

/// Socket send and receive buffer size asked for (when the kernel's caps allow it).
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// The mio token of the endpoint's waker (links use their peer rank as token).
const WAKER_TOKEN: Token = Token(usize::MAX);

/// Whether an I/O error means the connection is gone (as opposed to a local failure).
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof
    )
}

/// Reads a `net.core.*mem_max` sysctl; `None` when it cannot be read.
fn sysctl_bytes(name: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Sets `TCP_NODELAY` and, where the kernel caps allow it, large socket buffers.
/// Call it before `connect` (or on the listener) so the window scale covers the buffer.
pub(crate) fn tune_socket(sock: socket2::SockRef<'_>) -> io::Result<()> {
    // Listening sockets reject TCP_NODELAY on some systems; it is inherited where it matters.
    let _ = sock.set_nodelay(true);
    if sysctl_bytes("wmem_max").is_some_and(|m| m >= SOCKET_BUFFER_BYTES) {
        sock.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    }
    if sysctl_bytes("rmem_max").is_some_and(|m| m >= SOCKET_BUFFER_BYTES) {
        sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    }
    Ok(())
}

/// One rank's TCP connection to one peer. See the module docs.
pub struct TcpLink {
    peer: usize,
    stream: TcpStream,
    /// Receive buffer (allocated on first use); bytes `start..end` are unread.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The peer closed its side (EOF or reset); nothing more will arrive.
    eof: bool,
    /// This side was closed with [`Link::close`].
    closed: bool,
    /// The link's TLS session, when the endpoint runs TLS ([`TcpEndpoint::with_tls`]).
    tls: Option<Box<tls::Session>>,
}

impl TcpLink {
    /// Wraps a connected non-blocking stream to `peer`.
    pub fn new(peer: usize, stream: TcpStream) -> Self {
        TcpLink {
            peer,
            stream,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            closed: false,
            tls: None,
        }
    }

    /// Whether the link's bytes go through TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The underlying stream (e.g. to read its addresses).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn closed_err(&self) -> LinkError {
        LinkError::Closed { peer: self.peer }
    }

    fn io_err(&self, source: io::Error) -> LinkError {
        LinkError::Io {
            peer: self.peer,
            source,
        }
    }

    /// One `read` from the socket into `dst`: `Ok(0)` when nothing is there now; sets `eof`
    /// when the peer has closed.
    fn read_socket(stream: &mut TcpStream, eof: &mut bool, dst: &mut [u8]) -> io::Result<usize> {
        loop {
            return match stream.read(dst) {
                Ok(0) => {
                    *eof = true;
                    Ok(0)
                }
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_disconnect(&e) => {
                    *eof = true;
                    Ok(0)
                }
                Err(e) => Err(e),
            };
        }
    }

    /// Reads from the peer into `dst`: from the socket, or through the TLS session.
    fn read_raw(
        stream: &mut TcpStream,
        tls: &mut Option<Box<tls::Session>>,
        eof: &mut bool,
        peer: usize,
        dst: &mut [u8],
    ) -> Result<usize, LinkError> {
        match tls {
            Some(s) => s.read(stream, eof, peer, dst),
            None => {
                Self::read_socket(stream, eof, dst).map_err(|source| LinkError::Io { peer, source })
            }
        }
    }

    /// Refills the (empty) receive buffer from the socket with at most `limit` bytes.
    fn fill(&mut self, limit: usize) -> Result<(), LinkError> {
        debug_assert_eq!(self.start, self.end);
        if self.eof {
            return Ok(());
        }
        if self.buf.is_empty() {
            self.buf = vec![0; RECV_CHUNK];
        }
        self.start = 0;
        self.end = 0;
        let limit = limit.min(self.buf.len());
        self.end = Self::read_raw(
            &mut self.stream,
            &mut self.tls,
            &mut self.eof,
            self.peer,
            &mut self.buf[..limit],
        )?;
        Ok(())
    }
}

impl Link for TcpLink {
    fn peer(&self) -> usize {
        self.peer
    }

    fn try_write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        // Our own close, or the peer's (it never half-closes): no one will read these bytes.
        if self.closed || self.eof {
            return Err(self.closed_err());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(s) = &mut self.tls {
            return s.try_write(&mut self.stream, &mut self.eof, self.peer, buf);
        }
        loop {
            return match self.stream.write(buf) {
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_disconnect(&e) => {
                    self.eof = true;
                    Err(self.closed_err())
                }
                Err(e) => Err(self.io_err(e)),
            };
        }
    }

    fn peek(&mut self) -> Result<&[u8], LinkError> {
        if self.start == self.end {
            self.fill(RECV_CHUNK)?;
            if self.start == self.end && self.eof {
                return Err(self.closed_err());
            }
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start = (self.start + n).min(self.end);
    }

    fn read_into(&mut self, dst: &mut [u8]) -> Result<usize, LinkError> {
        if self.start < self.end {
            let n = (self.end - self.start).min(dst.len());
            dst[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            return Ok(n);
        }
        if dst.len() < DIRECT_READ_MIN {
            // Small request (a header, a small message): one read of the request or
            // SMALL_FILL, whichever is more, brings a small message or the next headers
            // along and leaves a large payload in the socket.
            self.fill(SMALL_FILL.max(dst.len()))?;
            if self.start == self.end && self.eof {
                return Err(self.closed_err());
            }
            let n = (self.end - self.start).min(dst.len());
            dst[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            return Ok(n);
        }
        if self.eof {
            return Err(self.closed_err());
        }
        match Self::read_raw(
            &mut self.stream,
            &mut self.tls,
            &mut self.eof,
            self.peer,
            dst,
        )? {
            0 if self.eof => Err(self.closed_err()),
            n => Ok(n),
        }
    }

    /// The payload goes from the socket into `dst` by the kernel's copy: no hint to honour.
    fn read_into_with(
        &mut self,
        dst: &mut [u8],
        _stores: crate::copy::Stores,
    ) -> Result<usize, LinkError> {
        self.read_into(dst)
    }

    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            if let Some(s) = &mut self.tls {
                s.close(&mut self.stream, &mut self.eof, self.peer);
            }
            // NotConnected when the peer already reset the connection: nothing to do then.
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }
}

/// One rank's TCP links (a full mesh) and the poller that sleeps on them.
pub struct TcpEndpoint {
    rank: usize,
    world: usize,
    links: Vec<Option<TcpLink>>,
    poll: Poll,
    events: Events,
    waker: Arc<Waker>,
    /// Bumped whenever `poll` reports events and by the interrupter.
    activity: Arc<AtomicU64>,
}

impl TcpEndpoint {
    /// Builds an endpoint from connected streams: `streams[p]` is the stream to peer `p`
    /// (`None` at `rank` and at peers this endpoint does not link to). Registers every stream for read and write readiness.
    pub fn from_streams(
        rank: usize,
        streams: Vec<Option<TcpStream>>,
    ) -> Result<TcpEndpoint, LinkError> {
        let world = streams.len();
        let io_err = |source| LinkError::Io { peer: rank, source };
        let poll = Poll::new().map_err(io_err)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN).map_err(io_err)?);
        let mut links = Vec::with_capacity(world);
        for (peer, s) in streams.into_iter().enumerate() {
            match s {
                Some(mut s) if peer != rank => {
                    poll.registry()
                        .register(&mut s, Token(peer), Interest::READABLE | Interest::WRITABLE)
                        .map_err(|source| LinkError::Io { peer, source })?;
                    links.push(Some(TcpLink::new(peer, s)));
                }
                Some(_) => {
                    return Err(LinkError::Protocol {
                        peer,
                        detail: "a stream to oneself".into(),
                    })
                }
                // No stream: this rank itself, or a peer reached another way (shm).
                None => links.push(None),
            }
        }
        Ok(TcpEndpoint {
            rank,
            world,
            links,
            poll,
            events: Events::with_capacity(world.max(1) + 8),
            waker,
            activity: Arc::new(AtomicU64::new(0)),
        })
    }
}

impl Endpoint for TcpEndpoint {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn link(&mut self, peer: usize) -> Option<&mut dyn Link> {
        self.links
            .get_mut(peer)?
            .as_mut()
            .map(|l| l as &mut dyn Link)
    }

    fn activity_token(&self) -> u64 {
        self.activity.load(Ordering::SeqCst)
    }

    fn wait(&mut self, token: u64, timeout: Duration) -> Result<(), LinkError> {
        // Events that came between the caller's token read and now are still queued in epoll
        // (edge-triggered events are kept until polled), so none is lost here.
        if self.activity.load(Ordering::SeqCst) != token {
            return Ok(());
        }
        // Records a TLS session queued on its own (answers to the peer) go out before we
        // sleep; a full socket wakes us when it drains.
        for l in self.links.iter_mut().flatten() {
            if let Some(s) = &mut l.tls {
                s.flush(&mut l.stream, &mut l.eof, l.peer);
            }
        }
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(LinkError::Io {
                    peer: self.rank,
                    source,
                })
            }
        }
        if !self.events.is_empty() {
            self.activity.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn interrupter(&self) -> Arc<dyn Fn() + Send + Sync> {
        let waker = self.waker.clone();
        let activity = self.activity.clone();
        Arc::new(move || {
            activity.fetch_add(1, Ordering::SeqCst);
            // A failed wake leaves the sleeper to its timeout; nothing better to do here.
            let _ = waker.wake();
        })
    }

    fn close_all(&mut self) {
        for l in self.links.iter_mut().flatten() {
            l.close();
        }
        let _ = self.waker.wake();
    }
}

impl Drop for TcpEndpoint {
    fn drop(&mut self) {
        self.close_all();
    }
}
