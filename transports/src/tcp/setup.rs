//! Building the TCP mesh: every rank connects to each lower rank and accepts from each higher
//! one, and both ends of every connection prove they hold the job's key.
//!
//! Handshake (little-endian; a header is [`MAGIC`] `"FCOL"`, [`PROTOCOL_VERSION`] (u32),
//! sender rank (u32), world size (u32)), the challenge–response of [`crate::auth`]:
//!
//! ```text
//! connecting rank → accepting rank   header, nonce Nc                       (48 bytes)
//! accepting rank → connecting rank   header, nonce Ns, server proof         (80 bytes)
//! connecting rank → accepting rank   client proof                           (32 bytes)
//! accepting rank → connecting rank   0xA5: accepted                         (1 byte)
//! ```
//!
//! The proofs are HMAC-SHA256s under the job key over both nonces, and over both ranks and
//! the world size (the label), so neither a proof nor a header can be moved to another
//! connection. The key never crosses the wire. A connection whose bytes are garbage, whose
//! header names another world or an unexpected rank, whose proof is wrong (another job, a
//! wrong secret, a replay), or that stays silent for [`HANDSHAKE_IDLE`] is dropped with one
//! warning naming its address, and accepting goes on: a stranger cannot break the job.
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
use crate::auth::{nonce, JobKey, Nonce, NONCE_BYTES, PROOF_BYTES};
use crate::link::LinkError;

/// First bytes of every handshake.
pub const MAGIC: [u8; 4] = *b"FCOL";
/// Version of the handshake and link protocol; both ends must agree.
pub const PROTOCOL_VERSION: u32 = 2;
/// Length in bytes of a header.
pub const HEADER_LEN: usize = 16;
/// Length of the connecting side's first message: header and nonce.
pub const CLIENT_HELLO_LEN: usize = HEADER_LEN + NONCE_BYTES;
/// Length of the accepting side's answer: header, nonce and proof.
pub const SERVER_HELLO_LEN: usize = HEADER_LEN + NONCE_BYTES + PROOF_BYTES;
/// How long an accepted connection may take to finish its handshake before it is dropped.
pub const HANDSHAKE_IDLE: Duration = Duration::from_secs(5);
/// The accepting side's last byte: the connecting side proved the key.
const ACK: u8 = 0xA5;
/// What the proofs of this listener are bound to (with the ranks and world size).
const LABEL: &[u8] = b"ferrocoll tcp link";

const LISTENER: Token = Token(usize::MAX);
const FIRST_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_millis(500);
/// How often the loop looks at every connection even without events.
const TICK: Duration = Duration::from_millis(50);

/// This rank as the handshake sees it.
#[derive(Debug, Clone)]
pub(crate) struct Ours {
    pub(crate) rank: u32,
    pub(crate) world: u32,
    pub(crate) key: JobKey,
}

/// The header of rank `rank` of a `world`-rank job.
pub(crate) fn header(rank: u32, world: u32) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..4].copy_from_slice(&MAGIC);
    b[4..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    b[8..12].copy_from_slice(&rank.to_le_bytes());
    b[12..16].copy_from_slice(&world.to_le_bytes());
    b
}

/// Parses a header and checks it against ours: the sender's rank, or what is wrong.
pub(crate) fn check_header(b: &[u8], ours: &Ours) -> Result<usize, String> {
    if b.len() < HEADER_LEN {
        return Err(format!("header of {} bytes", b.len()));
    }
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
    let world = u32_at(12);
    if world != ours.world {
        return Err(format!("world size {world}, expected {}", ours.world));
    }
    let rank = u32_at(8);
    if rank >= ours.world || rank == ours.rank {
        return Err(format!("sender rank {rank} is not a peer"));
    }
    Ok(rank as usize)
}

/// The label the proofs of the link between `client` and `server` are bound to.
pub(crate) fn label(client: usize, server: usize, world: u32) -> Vec<u8> {
    let mut l = LABEL.to_vec();
    for v in [client as u32, server as u32, world] {
        l.extend_from_slice(&v.to_le_bytes());
    }
    l
}

/// Where one connection's handshake stands: what it reads next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Connecting side: the answer (header, nonce, proof).
    ServerHello,
    /// Connecting side: the accept byte.
    Ack,
    /// Accepting side: the first message (header, nonce).
    ClientHello,
    /// Accepting side: the connecting side's proof.
    ClientProof,
    /// Finished with this peer once the last bytes are out.
    Done(usize),
}

impl Step {
    fn wants(self) -> usize {
        match self {
            Step::ServerHello => SERVER_HELLO_LEN,
            Step::Ack => 1,
            Step::ClientHello => CLIENT_HELLO_LEN,
            Step::ClientProof => PROOF_BYTES,
            Step::Done(_) => 0,
        }
    }
}

/// One connection being set up.
struct Conn {
    stream: TcpStream,
    remote: SocketAddr,
    /// `Some(peer)`: we connected to `peer`; `None`: accepted, sender not known yet.
    target: Option<usize>,
    connected: bool,
    started: Instant,
    step: Step,
    out: Vec<u8>,
    out_pos: usize,
    inp: [u8; SERVER_HELLO_LEN],
    inp_pos: usize,
    /// The connecting side's and the accepting side's nonces.
    nc: Nonce,
    ns: Nonce,
    /// The accepting side's peer, once its header checked out.
    sender: usize,
}

enum Progress {
    Pending,
    Done(usize),
    Failed(String),
}

impl Conn {
    fn new(stream: TcpStream, remote: SocketAddr, target: Option<usize>, ours: &Ours) -> Conn {
        let mut c = Conn {
            stream,
            remote,
            target,
            connected: target.is_none(),
            started: Instant::now(),
            step: Step::ClientHello,
            out: Vec::new(),
            out_pos: 0,
            inp: [0; SERVER_HELLO_LEN],
            inp_pos: 0,
            nc: [0; NONCE_BYTES],
            ns: [0; NONCE_BYTES],
            sender: usize::MAX,
        };
        if target.is_some() {
            c.step = Step::ServerHello;
            c.out.extend_from_slice(&header(ours.rank, ours.world));
            // A failed draw leaves the step to fail at once in `progress`.
            match nonce() {
                Ok(n) => c.nc = n,
                Err(_) => c.step = Step::Done(usize::MAX),
            }
            c.out.extend_from_slice(&c.nc);
        }
        c
    }

    /// Moves the handshake as far as the socket allows.
    fn progress(&mut self, ours: &Ours, taken: &[bool]) -> Progress {
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
            while self.out_pos < self.out.len() {
                match self.stream.write(&self.out[self.out_pos..]) {
                    Ok(0) => return Progress::Failed("connection closed while writing".into()),
                    Ok(n) => self.out_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Progress::Failed(format!("write: {e}")),
                }
            }
            if let Step::Done(peer) = self.step {
                if peer == usize::MAX {
                    return Progress::Failed("no random nonce from the system".into());
                }
                return Progress::Done(peer);
            }
            // Read exactly the next message: what follows it is the link's.
            let want = self.step.wants();
            while self.inp_pos < want {
                match self.stream.read(&mut self.inp[self.inp_pos..want]) {
                    Ok(0) => return Progress::Failed("connection closed during handshake".into()),
                    Ok(n) => self.inp_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Progress::Failed(format!("read: {e}")),
                }
            }
            self.inp_pos = 0;
            if let Err(why) = self.on_message(ours, taken) {
                return Progress::Failed(why);
            }
        }
    }

    /// Handles the message now in `inp` and queues the answer.
    fn on_message(&mut self, ours: &Ours, taken: &[bool]) -> Result<(), String> {
        let me = ours.rank as usize;
        self.out.clear();
        self.out_pos = 0;
        match self.step {
            Step::ServerHello => {
                let t = self.target.unwrap_or(usize::MAX);
                let sender = check_header(&self.inp[..HEADER_LEN], ours)?;
                if sender != t {
                    return Err(format!("answered as rank {sender}, expected {t}"));
                }
                self.ns
                    .copy_from_slice(&self.inp[HEADER_LEN..HEADER_LEN + NONCE_BYTES]);
                let l = label(me, t, ours.world);
                let proof = &self.inp[HEADER_LEN + NONCE_BYTES..SERVER_HELLO_LEN];
                if !ours.key.verify(&l, b"server", &self.nc, &self.ns, proof) {
                    return Err(format!(
                        "rank {t} at {} could not prove the job's key (another job's process, \
                         or a different FERROCOLL_SECRET)",
                        self.remote
                    ));
                }
                let p = ours.key.proof(&l, b"client", &self.ns, &self.nc);
                self.out.extend_from_slice(&p);
                self.step = Step::Ack;
            }
            Step::Ack => {
                if self.inp[0] != ACK {
                    return Err(format!("refused by the peer (answer {:#04x})", self.inp[0]));
                }
                self.step = Step::Done(self.target.unwrap_or(usize::MAX));
            }
            Step::ClientHello => {
                let sender = check_header(&self.inp[..HEADER_LEN], ours)?;
                if sender < me {
                    return Err(format!("rank {sender} should accept from us, not connect"));
                }
                if taken[sender] {
                    return Err(format!("rank {sender} is already connected"));
                }
                self.sender = sender;
                self.nc
                    .copy_from_slice(&self.inp[HEADER_LEN..CLIENT_HELLO_LEN]);
                self.ns = nonce().map_err(|e| format!("no random nonce: {e}"))?;
                let l = label(sender, me, ours.world);
                let p = ours.key.proof(&l, b"server", &self.nc, &self.ns);
                self.out.extend_from_slice(&header(ours.rank, ours.world));
                self.out.extend_from_slice(&self.ns);
                self.out.extend_from_slice(&p);
                self.step = Step::ClientProof;
            }
            Step::ClientProof => {
                let l = label(self.sender, me, ours.world);
                let proof = &self.inp[..PROOF_BYTES];
                if !ours.key.verify(&l, b"client", &self.ns, &self.nc, proof) {
                    return Err(format!(
                        "rank {} sent a wrong proof of the job's key (another job, a wrong \
                         secret, or a replayed handshake)",
                        self.sender
                    ));
                }
                if taken[self.sender] {
                    return Err(format!("rank {} is already connected", self.sender));
                }
                self.out.push(ACK);
                self.step = Step::Done(self.sender);
            }
            Step::Done(_) => {}
        }
        Ok(())
    }

    /// Whether an accepted connection has been silent or slow for too long.
    fn stale(&self, now: Instant) -> bool {
        self.target.is_none() && now.duration_since(self.started) > HANDSHAKE_IDLE
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
    /// `key` must be the same on every rank of the job (e.g. drawn by rank 0 and shared
    /// through the authenticated store); both ends of every link prove they hold it. The whole setup finishes within `timeout`, or fails with
    /// [`LinkError::Io`] of kind [`io::ErrorKind::TimedOut`] naming a missing peer.
    pub fn connect(
        rank: usize,
        world: usize,
        listener: StdTcpListener,
        peers: &[SocketAddr],
        key: &JobKey,
        timeout: Duration,
    ) -> Result<TcpEndpoint, LinkError> {
        Self::connect_to(
            rank,
            world,
            listener,
            peers,
            &vec![true; world],
            key,
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
        key: &JobKey,
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
        let mut mesh = Mesh::new(rank, world, listener, peers, wanted, key)?;
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
    ours: Ours,
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
        key: &JobKey,
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
            ours: Ours {
                rank: rank as u32,
                world: world as u32,
                key: key.clone(),
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
            let now = Instant::now();
            let progress = if self.conns[i].1.stale(now) {
                Progress::Failed(format!("no handshake within {HANDSHAKE_IDLE:?}"))
            } else {
                self.conns[i].1.progress(&self.ours, &self.taken)
            };
            match progress {
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
