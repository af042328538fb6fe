//! The TCP store client: one connection, one request at a time (shared by threads through a
//! mutex).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrocoll_transports::auth::{self, JobKey, NONCE_BYTES, PROOF_BYTES};

use super::wire::{
    check_key, encode_hello, read_frame, write_frame, Request, Response, AUTH_LABEL,
    HELLO_BAD_VERSION, HELLO_CHALLENGE, HELLO_OK, HELLO_UNAUTHORIZED, MAX_FRAME, MAX_KEY,
    MAX_SECRET,
};
use super::{Store, StoreError};

/// Extra time the client waits for an answer beyond the operation's own timeout, before it
/// declares the server unresponsive.
const SLACK: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_millis(500);

/// A client of a [`super::TcpStoreServer`].
pub struct TcpStore {
    /// `None` once an error left the stream out of step with the server.
    conn: Mutex<Option<TcpStream>>,
    timeout: Duration,
    addr: SocketAddr,
}

impl TcpStore {
    /// Connects to the store at `addr`, retrying while it is not up yet, for at most
    /// `timeout`; `timeout` is also the default wait of [`Store::get`] and [`Store::wait`].
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> Result<TcpStore, StoreError> {
        Self::connect_with_secret(addr, timeout, None)
    }

    /// Like [`TcpStore::connect`], presenting `secret` to a server that requires one.
    pub fn connect_with_secret(
        addr: impl ToSocketAddrs,
        timeout: Duration,
        secret: Option<&[u8]>,
    ) -> Result<TcpStore, StoreError> {
        if secret.is_some_and(|s| s.len() > MAX_SECRET) {
            return Err(StoreError::Protocol(format!(
                "secret longer than {MAX_SECRET} bytes"
            )));
        }
        let deadline = Instant::now() + timeout;
        let mut backoff = FIRST_RETRY;
        let mut last: Option<String> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "cannot reach the store within {timeout:?}: {}",
                        last.unwrap_or_else(|| "no attempt finished".into())
                    ),
                )));
            }
            let left = deadline - now;
            // Resolve every time: the name may only start resolving once the host is up.
            let attempt = addr
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve the store address: {e}"))
                .and_then(|mut a| a.next().ok_or_else(|| "no address to connect to".into()))
                .and_then(|a| {
                    TcpStream::connect_timeout(&a, left.min(Duration::from_secs(2)))
                        .map(|s| (a, s))
                        .map_err(|e| format!("connect to {a}: {e}"))
                });
            match attempt {
                Ok((a, s)) => return Self::handshake(s, a, timeout, secret, deadline),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }

    fn handshake(
        mut s: TcpStream,
        addr: SocketAddr,
        timeout: Duration,
        secret: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<TcpStore, StoreError> {
        s.set_nodelay(true)?;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
            + SLACK;
        s.set_read_timeout(Some(wait))?;
        s.set_write_timeout(Some(wait))?;
        let key = secret.map_or_else(JobKey::none, JobKey::new);
        hello(&mut s, addr, &key)?;
        Ok(TcpStore {
            conn: Mutex::new(Some(s)),
            timeout,
            addr,
        })
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.addr
    }

    fn conn(&self) -> MutexGuard<'_, Option<TcpStream>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one request and reads its answer, waiting up to `wait` + [`SLACK`].
    fn call(&self, req: &Request, wait: Duration) -> Result<Response, StoreError> {
        let mut guard = self.conn();
        let s = guard.as_mut().ok_or(StoreError::Closed)?;
        let result = (|| -> io::Result<Vec<u8>> {
            let t = Some(wait.saturating_add(SLACK));
            s.set_read_timeout(t)?;
            s.set_write_timeout(t)?;
            write_frame(s, &req.encode())?;
            read_frame(s)
        })();
        let body = match result {
            Ok(b) => b,
            Err(e) => {
                // Out of step with the server from now on.
                *guard = None;
                return Err(match e.kind() {
                    io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted => StoreError::Closed,
                    io::ErrorKind::InvalidData => StoreError::Protocol(e.to_string()),
                    _ => StoreError::Io(e),
                });
            }
        };
        Response::decode(&body).map_err(|why| {
            *guard = None;
            StoreError::Protocol(why)
        })
    }

    fn expect_ok(resp: Response) -> Result<Vec<u8>, StoreError> {
        match resp {
            Response::Ok(v) => Ok(v),
            Response::Timeout(key) => Err(StoreError::Timeout { key }),
            Response::Error(m) => Err(StoreError::Protocol(m)),
        }
    }
}

/// Runs the client's side of the hello (see `wire.rs`) with the store at `addr` over `s`,
/// proving `key`; `Ok` once the server has accepted this client.
pub(crate) fn hello(
    s: &mut (impl Read + Write),
    addr: SocketAddr,
    key: &JobKey,
) -> Result<(), StoreError> {
    let ours = auth::nonce()?;
    s.write_all(&encode_hello(&ours))?;
    let closed = |e: io::Error| -> StoreError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            StoreError::Protocol(format!(
                "{addr} closed the connection during the hello (not a ferrocoll store?)"
            ))
        } else {
            e.into()
        }
    };
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).map_err(closed)?;
    match answer[0] {
        HELLO_CHALLENGE => {}
        HELLO_BAD_VERSION => {
            return Err(StoreError::Protocol(format!(
                "the store at {addr} speaks another protocol version"
            )))
        }
        b => {
            return Err(StoreError::Protocol(format!(
                "unexpected hello answer {b} from {addr}"
            )))
        }
    }
    let mut challenge = [0u8; NONCE_BYTES + PROOF_BYTES];
    s.read_exact(&mut challenge).map_err(closed)?;
    let (theirs, proof) = challenge.split_at(NONCE_BYTES);
    let theirs: [u8; NONCE_BYTES] = theirs.try_into().expect("split at NONCE_BYTES");
    if !key.verify(AUTH_LABEL, b"server", &ours, &theirs, proof) {
        // The store does not know this job's secret: say nothing more to it.
        return Err(StoreError::Unauthorized);
    }
    s.write_all(&key.proof(AUTH_LABEL, b"client", &theirs, &ours))?;
    s.read_exact(&mut answer).map_err(closed)?;
    match answer[0] {
        HELLO_OK => Ok(()),
        HELLO_UNAUTHORIZED => Err(StoreError::Unauthorized),
        b => Err(StoreError::Protocol(format!(
            "unexpected hello answer {b} from {addr}"
        ))),
    }
}

fn key_ok(key: &str) -> Result<(), StoreError> {
    check_key(key).map_err(StoreError::Protocol)
}

impl Store for TcpStore {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        key_ok(key)?;
        if value.len() > MAX_FRAME - MAX_KEY - 16 {
            return Err(StoreError::Protocol(format!(
                "value of {} bytes is too large for the store",
                value.len()
            )));
        }
        let req = Request::Set {
            key: key.into(),
            value: value.to_vec(),
        };
        Self::expect_ok(self.call(&req, self.timeout)?).map(drop)
    }

    fn get_timeout(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, StoreError> {
        key_ok(key)?;
        let req = Request::Get {
            key: key.into(),
            timeout,
        };
        Self::expect_ok(self.call(&req, timeout)?)
    }

    fn wait_timeout(&self, keys: &[&str], timeout: Duration) -> Result<(), StoreError> {
        keys.iter().try_for_each(|k| key_ok(k))?;
        let req = Request::Wait {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            timeout,
        };
        Self::expect_ok(self.call(&req, timeout)?).map(drop)
    }

    fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        key_ok(key)?;
        let req = Request::Add {
            key: key.into(),
            delta,
        };
        let v = Self::expect_ok(self.call(&req, self.timeout)?)?;
        let bytes: [u8; 8] = v
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Protocol(format!("add answered {} bytes", v.len())))?;
        Ok(i64::from_le_bytes(bytes))
    }

    fn compare_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        key_ok(key)?;
        let req = Request::CompareSet {
            key: key.into(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.to_vec(),
        };
        Self::expect_ok(self.call(&req, self.timeout)?)
    }
}
