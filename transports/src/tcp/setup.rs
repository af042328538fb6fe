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
        let mut mesh = Mesh::new(rank, world, listener, peers, wanted, job_token)?;
        while mesh.taken.iter().any(|t| !t) {
            let now = Instant::now();
            if now >= deadline {
                return Err(mesh.timed_out(timeout));
            }
            mesh.start_due_connects(now);
            mesh.accept_waiting();
            mesh.move_handshakes();
            if mesh.taken.iter().all(|&t| t) {
                break;
            }
            mesh.sleep(deadline)?;
        }
        let Mesh { done, .. } = mesh;
        TcpEndpoint::from_streams(rank, done)
    }
}

/// The state of one rank's mesh while it forms: connections it makes to lower ranks (with
/// retries and back-off), connections it accepts from higher ones, and the handshakes of
/// both, polled together.
struct Mesh<'a> {
    rank: usize,
    peers: &'a [SocketAddr],
    ours: Hello,
    listener: TcpListener,
    poll: Poll,
    events: Events,
    /// The finished link to each peer.
    done: Vec<Option<TcpStream>>,
    /// Peers that need no more work: linked, this rank itself, or not wanted.
    taken: Vec<bool>,
    conns: Vec<(Token, Conn)>,
    next_token: usize,
    retries: Vec<Retry>,
    backoff: Vec<Duration>,
    last_error: Vec<Option<String>>,
    max_pending: usize,
}

impl<'a> Mesh<'a> {
    fn new(
        rank: usize,
        world: usize,
        listener: StdTcpListener,
        peers: &'a [SocketAddr],
        wanted: &[bool],
        job_token: u64,
    ) -> Result<Mesh<'a>, LinkError> {
        let io_err = |source| LinkError::Io { peer: rank, source };
        listener.set_nonblocking(true).map_err(io_err)?;
        tune_socket(SockRef::from(&listener)).map_err(io_err)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new().map_err(io_err)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(io_err)?;
        let mut taken = vec![false; world];
        taken[rank] = true;
        for (t, w) in taken.iter_mut().zip(wanted) {
            *t |= !w;
        }
        let retries = (0..rank)
            .filter(|&p| wanted[p])
            .map(|peer| Retry {
                peer,
                at: Instant::now(),
            })
            .collect();
        Ok(Mesh {
            rank,
            peers,
            ours: Hello {
                job_token,
                rank: rank as u32,
                world: world as u32,
            },
            listener,
            poll,
            events: Events::with_capacity(64),
            done: (0..world).map(|_| None).collect(),
            taken,
            conns: Vec::new(),
            next_token: 0,
            retries,
            backoff: vec![FIRST_RETRY; world],
            last_error: vec![None; world],
            max_pending: 64 + 2 * world,
        })
    }

    /// The error of a mesh not formed within `timeout`: the ranks still missing, and the
    /// last error seen with the first of them.
    fn timed_out(&self, timeout: Duration) -> LinkError {
        let missing: Vec<usize> = (0..self.taken.len()).filter(|&p| !self.taken[p]).collect();
        let first = missing[0];
        let why = self.last_error[first]
            .as_deref()
            .map(|e| format!(" (last error with rank {first}: {e})"))
            .unwrap_or_default();
        LinkError::Io {
            peer: first,
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "rank {}: TCP mesh not formed within {timeout:?}; \
                     no link to ranks {missing:?}{why}",
                    self.rank
                ),
            ),
        }
    }

    /// Tries `peer` again after its back-off, which doubles up to [`MAX_RETRY`].
    fn retry_later(&mut self, peer: usize, now: Instant, why: String) {
        self.last_error[peer] = Some(why);
        let wait = self.backoff[peer];
        self.backoff[peer] = (wait * 2).min(MAX_RETRY);
        self.retries.push(Retry {
            peer,
            at: now + wait,
        });
    }

    /// Registers a new connection's stream with the poll; its token.
    fn register(&mut self, s: &mut TcpStream) -> io::Result<Token> {
        let tok = Token(self.next_token);
        self.poll
            .registry()
            .register(s, tok, Interest::READABLE | Interest::WRITABLE)?;
        self.next_token += 1;
        Ok(tok)
    }

    /// Starts the connects whose time has come.
    fn start_due_connects(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.retries.len() {
            if self.retries[i].at > now {
                i += 1;
                continue;
            }
            let r = self.retries.swap_remove(i);
            let addr = self.peers[r.peer];
            match start_connect(addr).and_then(|mut s| Ok((self.register(&mut s)?, s))) {
                Ok((tok, s)) => {
                    let c = Conn::new(s, addr, Some(r.peer), &self.ours);
                    self.conns.push((tok, c));
                }
                Err(e) => self.retry_later(r.peer, now, format!("connect to {addr}: {e}")),
            }
        }
    }

    /// Accepts whoever is waiting on the listener.
    fn accept_waiting(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut s, remote)) => {
                    if self.conns.len() >= self.max_pending {
                        tracing::warn!(%remote, "TCP setup: too many pending connections, dropping");
                        continue;
                    }
                    let _ = s.set_nodelay(true);
                    match self.register(&mut s) {
                        Ok(tok) => {
                            let c = Conn::new(s, remote, None, &self.ours);
                            self.conns.push((tok, c));
                        }
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
    }

    /// Moves every handshake along; finished ones become links, failed connects are
    /// retried, failed strangers dropped.
    fn move_handshakes(&mut self) {
        let mut i = 0;
        while i < self.conns.len() {
            match self.conns[i].1.progress(&self.ours, &self.taken) {
                Progress::Pending => i += 1,
                Progress::Done(peer) => {
                    let (_, mut c) = self.conns.swap_remove(i);
                    let _ = self.poll.registry().deregister(&mut c.stream);
                    if self.taken[peer] {
                        tracing::warn!(peer, remote = %c.remote, "TCP setup: dropping a second connection from a connected rank");
                    } else {
                        self.taken[peer] = true;
                        self.done[peer] = Some(c.stream);
                    }
                }
                Progress::Failed(why) => {
                    let (_, mut c) = self.conns.swap_remove(i);
                    let _ = self.poll.registry().deregister(&mut c.stream);
                    match c.target {
                        Some(peer) => {
                            tracing::debug!(peer, remote = %c.remote, "TCP setup: retrying: {why}");
                            self.retry_later(peer, Instant::now(), why);
                        }
                        None => tracing::warn!(
                            remote = %c.remote,
                            "TCP setup: dropping a connection that is not a peer of this job: {why}"
                        ),
                    }
                }
            }
        }
    }

    /// Sleeps on the poll until something is ready, the next retry is due, a tick passes
    /// or `deadline` comes.
    fn sleep(&mut self, deadline: Instant) -> Result<(), LinkError> {
        let now = Instant::now();
        let mut sleep = deadline.saturating_duration_since(now).min(TICK);
        if let Some(r) = self.retries.iter().map(|r| r.at).min() {
            sleep = sleep.min(r.saturating_duration_since(now));
        }
        match self.poll.poll(&mut self.events, Some(sleep)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(source) => Err(LinkError::Io {
                peer: self.rank,
                source,
            }),
        }
    }
}
