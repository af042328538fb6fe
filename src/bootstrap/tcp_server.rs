//! The TCP store server: one background thread accepts, one thread per client serves.
//!
//! A client that breaks the protocol (no magic, oversized or malformed frames, a hello that
//! never completes) is dropped with a `tracing::warn!` line; other clients are unaffected.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrocoll_transports::auth::{self, JobKey, PROOF_BYTES};

use super::wire::{
    write_frame, Request, Response, AUTH_LABEL, HELLO_BAD_VERSION, HELLO_CHALLENGE, HELLO_OK,
    HELLO_UNAUTHORIZED, MAX_FRAME, MAX_SECRET, STORE_MAGIC, STORE_PROTOCOL_VERSION,
};
use super::{parse_counter, StoreError};

/// How long a new client may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idle client threads look at the stop flag.
const TICK: Duration = Duration::from_millis(200);
/// Most clients served at once; more are refused (closed) with a warning.
const MAX_CLIENTS: usize = 4096;

/// What the server shares between its threads: the map, its waiters, the job's key.
pub(crate) struct State {
    map: Mutex<HashMap<String, Vec<u8>>>,
    changed: Condvar,
    stop: AtomicBool,
    key: JobKey,
    clients: AtomicUsize,
}

impl State {
    /// A new server's state: an empty map, and the job's key that clients must prove.
    pub(crate) fn new(key: JobKey) -> State {
        State {
            map: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            key,
            clients: AtomicUsize::new(0),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `ready(map)` holds, the deadline passes or the server stops.
    fn wait_until(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(&HashMap<String, Vec<u8>>) -> bool,
    ) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut map = self.map();
        loop {
            if ready(&map) {
                return true;
            }
            let left = deadline.map_or(TICK, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() || self.stop.load(Ordering::Acquire) {
                return false;
            }
            // Bounded by TICK so a stopping server is noticed.
            map = self
                .changed
                .wait_timeout(map, left.min(TICK))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Carries out one request (waiting up to its timeout for a GET or WAIT).
    pub(crate) fn handle(&self, req: Request) -> Response {
        match req {
            Request::Set { key, value } => {
                self.map().insert(key, value);
                self.changed.notify_all();
                Response::Ok(Vec::new())
            }
            Request::Get { key, timeout } => {
                let mut value = None;
                self.wait_until(timeout, |m| {
                    value = m.get(&key).cloned();
                    value.is_some()
                });
                match value {
                    Some(v) => Response::Ok(v),
                    None => Response::Timeout(key),
                }
            }
            Request::Add { key, delta } => {
                let mut map = self.map();
                let old = match map.get(&key) {
                    Some(v) => match parse_counter(&key, v) {
                        Ok(n) => n,
                        Err(e) => return Response::Error(e.to_string()),
                    },
                    None => 0,
                };
                let Some(new) = old.checked_add(delta) else {
                    return Response::Error(format!("counter {key:?} overflows"));
                };
                map.insert(key, new.to_string().into_bytes());
                drop(map);
                self.changed.notify_all();
                Response::Ok(new.to_le_bytes().to_vec())
            }
            Request::CompareSet { key, expected, new } => {
                let mut map = self.map();
                let now = map.get(&key);
                if now.map(Vec::as_slice) == expected.as_deref() {
                    map.insert(key, new.clone());
                    drop(map);
                    self.changed.notify_all();
                    Response::Ok(new)
                } else {
                    Response::Ok(now.cloned().unwrap_or_default())
                }
            }
            Request::Wait { keys, timeout } => {
                let mut missing = None;
                self.wait_until(timeout, |m| {
                    missing = keys.iter().find(|k| !m.contains_key(*k)).cloned();
                    missing.is_none()
                });
                match missing {
                    None => Response::Ok(Vec::new()),
                    Some(k) => Response::Timeout(k),
                }
            }
        }
    }
}

/// Reads exactly `buf.len()` bytes from a socket whose read timeout is [`TICK`], giving up
/// when the server stops or (if given) the deadline passes.
fn read_full(
    s: &mut impl Read,
    buf: &mut [u8],
    state: &State,
    deadline: Option<Instant>,
) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if state.stop.load(Ordering::Acquire) {
                    return Err(io::Error::other("server stopping"));
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs the server's side of the hello (see `wire.rs`); `Err` is the reason to drop the
/// client.
pub(crate) fn hello(s: &mut (impl Read + Write), state: &State) -> Result<(), String> {
    let deadline = Some(Instant::now() + HELLO_TIMEOUT);
    let mut head = [0u8; 8];
    read_full(s, &mut head, state, deadline).map_err(|e| format!("no hello: {e}"))?;
    if head[0..4] != STORE_MAGIC {
        return Err(format!("bad magic {:02x?}", &head[0..4]));
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if version != STORE_PROTOCOL_VERSION {
        let _ = s.write_all(&[HELLO_BAD_VERSION]);
        return Err(format!(
            "protocol version {version}, expected {STORE_PROTOCOL_VERSION}"
        ));
    }
    let mut theirs = [0u8; auth::NONCE_BYTES];
    read_full(s, &mut theirs, state, deadline).map_err(|e| format!("short hello: {e}"))?;
    let ours = auth::nonce().map_err(|e| format!("no random nonce: {e}"))?;
    let mut challenge = vec![HELLO_CHALLENGE];
    challenge.extend_from_slice(&ours);
    challenge.extend_from_slice(&state.key.proof(AUTH_LABEL, b"server", &theirs, &ours));
    s.write_all(&challenge)
        .map_err(|e| format!("cannot send the challenge: {e}"))?;
    let mut proof = [0u8; PROOF_BYTES];
    read_full(s, &mut proof, state, deadline).map_err(|e| format!("no proof: {e}"))?;
    if !state
        .key
        .verify(AUTH_LABEL, b"client", &ours, &theirs, &proof)
    {
        let _ = s.write_all(&[HELLO_UNAUTHORIZED]);
        return Err("wrong proof of the job's secret (another job, or a replay)".into());
    }
    s.write_all(&[HELLO_OK])
        .map_err(|e| format!("cannot answer hello: {e}"))
}

fn serve_client(mut s: TcpStream, remote: SocketAddr, state: &State) {
    let _ = s.set_nodelay(true);
    if let Err(e) = s.set_read_timeout(Some(TICK)) {
        tracing::warn!(%remote, "store: cannot set a read timeout, dropping client: {e}");
        return;
    }
    if let Err(why) = hello(&mut s, state) {
        tracing::warn!(%remote, "store: dropping client: {why}");
        return;
    }
    loop {
        let mut len = [0u8; 4];
        match read_full(&mut s, &mut len, state, None) {
            Ok(()) => {}
            // A client going away between requests is the normal end.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                tracing::debug!(%remote, "store: client connection ends: {e}");
                return;
            }
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            tracing::warn!(%remote, "store: dropping client: frame of {len} bytes (limit {MAX_FRAME})");
            return;
        }
        let mut body = vec![0u8; len];
        if let Err(e) = read_full(&mut s, &mut body, state, None) {
            tracing::warn!(%remote, "store: dropping client: truncated frame: {e}");
            return;
        }
        let req = match Request::decode(&body) {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(%remote, "store: dropping client: malformed request: {why}");
                return;
            }
        };
        // A stopped server answers nothing more, even on a connection still open.
        if state.stop.load(Ordering::Acquire) {
            return;
        }
        let resp = state.handle(req);
        if let Err(e) = write_frame(&mut s, &resp.encode()) {
            tracing::debug!(%remote, "store: cannot answer client: {e}");
            return;
        }
    }
}

/// A running TCP store server; stops (and frees its port) when dropped.
pub struct TcpStoreServer {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpStoreServer {
    /// Binds `addr` (port 0 picks a free port) and serves on a background thread, without
    /// authentication.
    pub fn bind(addr: impl ToSocketAddrs) -> Result<TcpStoreServer, StoreError> {
        Self::bind_with_secret(addr, None)
    }

    /// Binds `addr` and serves on a background thread; when `secret` is given, clients must
    /// prove that they hold it (see [`super::TcpStore::connect_with_secret`]) or are refused,
    /// and the server proves it to them. The secret itself never crosses the wire (a
    /// challenge–response over fresh nonces, `ferrocoll_transports::auth`); the requests
    /// that follow are not encrypted.
    pub fn bind_with_secret(
        addr: impl ToSocketAddrs,
        secret: Option<&[u8]>,
    ) -> Result<TcpStoreServer, StoreError> {
        if secret.is_some_and(|s| s.len() > MAX_SECRET) {
            return Err(StoreError::Protocol(format!(
                "secret longer than {MAX_SECRET} bytes"
            )));
        }
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(secret.map_or_else(JobKey::none, JobKey::new)));
        let st = state.clone();
        let acceptor = std::thread::Builder::new()
            .name("ferrocoll-store".into())
            .spawn(move || accept_loop(listener, st))?;
        Ok(TcpStoreServer {
            addr,
            state,
            acceptor: Some(acceptor),
        })
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    for conn in listener.incoming() {
        if state.stop.load(Ordering::Acquire) {
            return;
        }
        let s = match conn {
            Ok(s) => s,
            Err(e) => {
                // ECONNABORTED, EMFILE...: this connection is lost, the server is not.
                tracing::warn!("store: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let remote = s
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        if state.clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            state.clients.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%remote, "store: too many clients, refusing");
            continue;
        }
        let st = state.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrocoll-store-client".into())
            .spawn(move || {
                serve_client(s, remote, &st);
                st.clients.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            state.clients.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%remote, "store: cannot start a client thread: {e}");
        }
    }
}

impl Drop for TcpStoreServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        self.state.changed.notify_all();
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        match TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
            Ok(s) => {
                let _ = s.shutdown(Shutdown::Both);
                if let Some(h) = self.acceptor.take() {
                    let _ = h.join();
                }
            }
            // Could not wake it: leave the thread to exit at its next connection.
            Err(e) => tracing::debug!("store: cannot wake the accept thread: {e}"),
        }
    }
}
