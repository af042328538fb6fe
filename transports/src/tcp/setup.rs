//! Building the TCP mesh: every rank connects to each lower rank and accepts from each higher
//! one, and both ends of every connection prove they belong to the same job.
//!
//! Handshake (fixed [`HANDSHAKE_LEN`] bytes, little-endian): [`MAGIC`] `"FCOL"`,
//! [`PROTOCOL_VERSION`] (u32), job token (u64), sender rank (u32), world size (u32). The
//! connecting rank sends its hello first; the accepting rank checks it and only then answers
//! with its own, so a stranger never learns the job token. A connection whose hello is
//! garbage, carries another job's token or world size, or names an unexpected rank is dropped
//! with a warning and accepting goes on: a stranger cannot break the job.
//!
//! Everything runs on one non-blocking poll loop under one deadline: connects to a peer that
//! is not listening yet are retried (with a growing back-off) until the deadline, and a peer
//! that never shows up gives an error, never a hang.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::{tune_socket, TcpEndpoint};
use crate::link::LinkError;

/// First bytes of every handshake.
pub const MAGIC: [u8; 4] = *b"FCOL";
/// Version of the handshake and link protocol; both ends must agree.
pub const PROTOCOL_VERSION: u32 = 1;
/// Length in bytes of one hello.
pub const HANDSHAKE_LEN: usize = 24;

const LISTENER: Token = Token(usize::MAX);
const FIRST_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_millis(500);
/// How often the loop looks at every connection even without events.
const TICK: Duration = Duration::from_millis(50);

/// One side's hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) job_token: u64,
    pub(crate) rank: u32,
    pub(crate) world: u32,
}

impl Hello {
    pub(crate) fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut b = [0u8; HANDSHAKE_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.job_token.to_le_bytes());
        b[16..20].copy_from_slice(&self.rank.to_le_bytes());
        b[20..24].copy_from_slice(&self.world.to_le_bytes());
        b
    }

    /// Parses a hello and checks it against ours; `Err` says what is wrong.
    fn check(b: &[u8; HANDSHAKE_LEN], ours: &Hello) -> Result<usize, String> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if b[0..4] != MAGIC {
            return Err(format!("bad magic {:02x?}", &b[0..4]));
        }
        let version = u32_at(4);
        if version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {version}, expected {PROTOCOL_VERSION}"
            ));
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[8..16]);
        if u64::from_le_bytes(t) != ours.job_token {
            return Err("wrong job token (another job?)".into());
        }
        let world = u32_at(20);
        if world != ours.world {
            return Err(format!("world size {world}, expected {}", ours.world));
        }
        let rank = u32_at(16);
        if rank >= ours.world || rank == ours.rank {
            return Err(format!("sender rank {rank} is not a peer"));
        }
        Ok(rank as usize)
    }
}

/// One connection being set up.
struct Conn {
    stream: TcpStream,
    remote: SocketAddr,
    /// `Some(peer)`: we connected to `peer`; `None`: accepted, sender not known yet.
    target: Option<usize>,
    connected: bool,
    out: [u8; HANDSHAKE_LEN],
    /// Bytes of `out` to send (0 for an accepted connection until its hello checked out).
    out_len: usize,
    out_pos: usize,
    inp: [u8; HANDSHAKE_LEN],
    inp_pos: usize,
    /// The peer, once its hello checked out.
    peer: Option<usize>,
}

enum Progress {
    Pending,
    Done(usize),
    Failed(String),
}

impl Conn {
    fn new(stream: TcpStream, remote: SocketAddr, target: Option<usize>, hello: &Hello) -> Conn {
        Conn {
            stream,
            remote,
            target,
            connected: target.is_none(),
            out: hello.encode(),
            out_len: if target.is_some() { HANDSHAKE_LEN } else { 0 },
            out_pos: 0,
            inp: [0; HANDSHAKE_LEN],
            inp_pos: 0,
            peer: None,
        }
    }

    /// Moves the handshake as far as the socket allows.
    fn progress(&mut self, ours: &Hello, taken: &[bool]) -> Progress {
        if !self.connected {
            match self.stream.take_error() {
                Ok(Some(e)) | Err(e) => return Progress::Failed(format!("connect: {e}")),
                Ok(None) => {}
            }
            match self.stream.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Progress::Pending,
                Err(e) => return Progress::Failed(format!("connect: {e}")),
            }
        }
        loop {
            // Send what is due.
            while self.out_pos < self.out_len {
                match self.stream.write(&self.out[self.out_pos..self.out_len]) {
                    Ok(0) => return Progress::Failed("connection closed while writing".into()),
                    Ok(n) => self.out_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Progress::Failed(format!("write: {e}")),
                }
            }
            if let Some(peer) = self.peer {
                // Accepted side: done once the answer is out. Connecting side: `peer` is set
                // only after the answer was read.
                return Progress::Done(peer);
            }
            // Read the other side's hello.
            while self.inp_pos < HANDSHAKE_LEN {
                match self.stream.read(&mut self.inp[self.inp_pos..]) {
                    Ok(0) => return Progress::Failed("connection closed during handshake".into()),
                    Ok(n) => self.inp_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Progress::Failed(format!("read: {e}")),
                }
            }
            let sender = match Hello::check(&self.inp, ours) {
                Ok(s) => s,
                Err(why) => return Progress::Failed(why),
            };
            match self.target {
                Some(t) if sender != t => {
                    return Progress::Failed(format!("answered as rank {sender}, expected {t}"))
                }
                Some(_) => return Progress::Done(sender),
                None if sender < ours.rank as usize => {
                    return Progress::Failed(format!(
                        "rank {sender} should accept from us, not connect"
                    ))
                }
                None if taken[sender] => {
                    return Progress::Failed(format!("rank {sender} is already connected"))
                }
                None => {
                    self.peer = Some(sender);
                    self.out_len = HANDSHAKE_LEN;
                    // Loop to send the answer.
                }
            }
        }
    }
}

/// A connect attempt still to make.
struct Retry {
    peer: usize,
    at: Instant,
}

fn start_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    tune_socket(SockRef::from(&sock))?;
    sock.set_nonblocking(true)?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}

fn invalid(rank: usize, msg: String) -> LinkError {
    LinkError::Io {
        peer: rank,
        source: io::Error::new(io::ErrorKind::InvalidInput, msg),
    }
}

impl TcpEndpoint {
    /// Builds rank `rank`'s links of a `world`-rank TCP mesh.
    ///
    /// `listener` is this rank's bound listening socket (its address is `peers[rank]`, which
    /// the other ranks learnt through the store); `peers[j]` is rank `j`'s listening address.
    /// `job_token` must be the same on every rank of the job (e.g. drawn by rank 0 and
    /// shared through the store). The whole setup finishes within `timeout`, or fails with
    /// [`LinkError::Io`] of kind [`io::ErrorKind::TimedOut`] naming a missing peer.
    pub fn connect(
        rank: usize,
        world: usize,
        listener: StdTcpListener,
        peers: &[SocketAddr],
        job_token: u64,
        timeout: Duration,
    ) -> Result<TcpEndpoint, LinkError> {
        Self::connect_to(
            rank,
            world,
            listener,
            peers,
            &vec![true; world],
            job_token,
            timeout,
        )
    }

    /// Like [`TcpEndpoint::connect`], but links only to the peers `p` with `wanted[p]` (the
    /// others, e.g. ranks on the same host reached over shared memory, get no link; every
    /// rank must agree on who links to whom).
    pub fn connect_to(
        rank: usize,
        world: usize,
        listener: StdTcpListener,
        peers: &[SocketAddr],
        wanted: &[bool],
        job_token: u64,
        timeout: Duration,
    ) -> Result<TcpEndpoint, LinkError> {
        if wanted.len() != world {
            return Err(invalid(
                rank,
                format!("{} wanted flags for a world of {world}", wanted.len()),
            ));
        }
        if rank >= world || peers.len() != world || u32::try_from(world).is_err() {
            return Err(invalid(
                rank,
                format!(
                    "invalid TCP mesh: rank {rank}, world {world}, {} peer addresses",
                    peers.len()
                ),
            ));
        }
        let deadline = Instant::now() + timeout;
        let ours = Hello {
            job_token,
            rank: rank as u32,
            world: world as u32,
        };
        let io_err = |peer| move |source| LinkError::Io { peer, source };
        listener.set_nonblocking(true).map_err(io_err(rank))?;
        tune_socket(SockRef::from(&listener)).map_err(io_err(rank))?;
        let mut listener = TcpListener::from_std(listener);
        let mut poll = Poll::new().map_err(io_err(rank))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(io_err(rank))?;
        let mut events = Events::with_capacity(64);

        let mut done: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
        let mut taken = vec![false; world];
        taken[rank] = true;
        for (t, w) in taken.iter_mut().zip(wanted) {
            *t |= !w;
        }
        let mut conns: Vec<(Token, Conn)> = Vec::new();
        let mut next_token = 0usize;
        let mut retries: Vec<Retry> = (0..rank)
            .filter(|&p| wanted[p])
            .map(|peer| Retry {
                peer,
                at: Instant::now(),
            })
            .collect();
        let mut backoff = vec![FIRST_RETRY; world];
        let mut last_error: Vec<Option<String>> = vec![None; world];
        let max_pending = 64 + 2 * world;

        while taken.iter().any(|t| !t) {
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<usize> = (0..world).filter(|&p| !taken[p]).collect();
                let first = missing[0];
                let why = last_error[first]
                    .as_deref()
                    .map(|e| format!(" (last error with rank {first}: {e})"))
                    .unwrap_or_default();
                return Err(LinkError::Io {
                    peer: first,
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "rank {rank}: TCP mesh not formed within {timeout:?}; \
                             no link to ranks {missing:?}{why}"
                        ),
                    ),
                });
            }
            // Start due connects.
            let mut i = 0;
            while i < retries.len() {
                if retries[i].at > now {
                    i += 1;
                    continue;
                }
                let r = retries.swap_remove(i);
                let addr = peers[r.peer];
                let started = start_connect(addr).and_then(|mut s| {
                    let tok = Token(next_token);
                    poll.registry().register(
                        &mut s,
                        tok,
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    Ok((tok, s))
                });
                match started {
                    Ok((tok, s)) => {
                        next_token += 1;
                        conns.push((tok, Conn::new(s, addr, Some(r.peer), &ours)));
                    }
                    Err(e) => {
                        last_error[r.peer] = Some(format!("connect to {addr}: {e}"));
                        let wait = backoff[r.peer];
                        backoff[r.peer] = (wait * 2).min(MAX_RETRY);
                        retries.push(Retry {
                            at: now + wait,
                            ..r
                        });
                    }
                }
            }
            // Accept whoever is waiting.
            loop {
                match listener.accept() {
                    Ok((mut s, remote)) => {
                        if conns.len() >= max_pending {
                            tracing::warn!(%remote, "TCP setup: too many pending connections, dropping");
                            continue;
                        }
                        let _ = s.set_nodelay(true);
                        let tok = Token(next_token);
                        next_token += 1;
                        match poll.registry().register(
                            &mut s,
                            tok,
                            Interest::READABLE | Interest::WRITABLE,
                        ) {
                            Ok(()) => conns.push((tok, Conn::new(s, remote, None, &ours))),
                            Err(e) => tracing::warn!(%remote, "TCP setup: cannot poll: {e}"),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // E.g. ECONNABORTED or EMFILE: this connection is lost, the listener is not.
                    Err(e) => {
                        tracing::warn!("TCP setup: accept failed: {e}");
                        break;
                    }
                }
            }
            // Move every handshake along.
            let mut i = 0;
            while i < conns.len() {
                match conns[i].1.progress(&ours, &taken) {
                    Progress::Pending => i += 1,
                    Progress::Done(peer) => {
                        let (_, mut c) = conns.swap_remove(i);
                        let _ = poll.registry().deregister(&mut c.stream);
                        if taken[peer] {
                            tracing::warn!(peer, remote = %c.remote, "TCP setup: dropping a second connection from a connected rank");
                        } else {
                            taken[peer] = true;
                            done[peer] = Some(c.stream);
                        }
                    }
                    Progress::Failed(why) => {
                        let (_, mut c) = conns.swap_remove(i);
                        let _ = poll.registry().deregister(&mut c.stream);
                        match c.target {
                            Some(peer) => {
                                tracing::debug!(peer, remote = %c.remote, "TCP setup: retrying: {why}");
                                last_error[peer] = Some(why);
                                let wait = backoff[peer];
                                backoff[peer] = (wait * 2).min(MAX_RETRY);
                                retries.push(Retry {
                                    peer,
                                    at: Instant::now() + wait,
                                });
                            }
                            None => tracing::warn!(
                                remote = %c.remote,
                                "TCP setup: dropping a connection that is not a peer of this job: {why}"
                            ),
                        }
                    }
                }
            }
            if taken.iter().all(|&t| t) {
                break;
            }
            let now = Instant::now();
            let mut sleep = deadline.saturating_duration_since(now).min(TICK);
            if let Some(r) = retries.iter().map(|r| r.at).min() {
                sleep = sleep.min(r.saturating_duration_since(now));
            }
            match poll.poll(&mut events, Some(sleep)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(rank)(e)),
            }
        }
        drop(conns);
        TcpEndpoint::from_streams(rank, done)
    }
}
