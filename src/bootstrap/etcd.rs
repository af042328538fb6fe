//! A [`Store`] kept in an etcd v3 cluster, spoken to through etcd's JSON gateway (plain HTTP:
//! `POST /v3/kv/put`, `/v3/kv/range`, `/v3/kv/txn`, keys and values in base64).
//!
//! Keys live under a prefix (`<prefix>/<key>`), so one etcd serves many jobs. The store
//! outlives every rank: a job that loses any rank, rank 0 included, can still meet through it.
//!
//! - `set` is a put; `add` and `compare_set` are transactions: `compare_set` compares the
//!   key's value (or, for "not set", its creation revision against 0); `add` reads the counter
//!   and writes `old + delta` only if the key's modification revision is still the one it
//!   read, retrying with the value the losing transaction returns.
//! - `get` and `wait` poll (from 1 ms, doubling up to [`MAX_POLL`]): etcd's watch is a
//!   streaming endpoint, and the rendezvous reads few keys once each, so polling keeps the
//!   client a plain request/answer one.
//! - Every failure is a [`StoreError`] naming etcd and the URL: [`StoreError::Io`] when etcd
//!   cannot be reached (refused, reset, no answer within the store's timeout),
//!   [`StoreError::Protocol`] for an HTTP error status or an answer that is not what the
//!   gateway sends, [`StoreError::Timeout`] when a key does not appear in time.
//!
//! The client sends no credentials: protect etcd with its own authentication and TLS (e.g.
//! behind a TLS-terminating proxy); `FERROCOLL_SECRET` is not sent to it.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use super::wire::check_key;
use super::{parse_counter, Store, StoreError};

/// Longest interval between two looks at a missing key.
pub const MAX_POLL: Duration = Duration::from_millis(20);
/// First interval between two looks at a missing key.
const FIRST_POLL: Duration = Duration::from_millis(1);
/// Shortest time one HTTP request is given (a poll near its deadline still gets an answer).
const MIN_REQUEST: Duration = Duration::from_millis(100);
/// Longest wait for a TCP connection to etcd in one attempt.
const CONNECT: Duration = Duration::from_secs(2);
/// Longest pause between two attempts to reach etcd in [`EtcdStore::connect`].
const MAX_RETRY: Duration = Duration::from_millis(500);

/// A client of an etcd cluster's JSON gateway. See the module docs.
pub struct EtcdStore {
    agent: ureq::Agent,
    /// `http://host:port`.
    base: String,
    addr: SocketAddr,
    prefix: String,
    timeout: Duration,
}

/// One key as etcd holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Its value.
    pub(crate) value: Vec<u8>,
    /// Its modification revision.
    pub(crate) mod_revision: i64,
}

/// How a transaction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Txn {
    /// The compare held and the put was done.
    Done,
    /// The compare failed; the key as it is now (`None`: not set).
    Lost(Option<Entry>),
}

impl EtcdStore {
    /// A store at the etcd endpoint `authority` (`host:port`, spoken to over plain HTTP) with
    /// keys under `prefix`; retries while etcd does not answer, for at most `timeout`, which
    /// is also the default wait of [`Store::get`] and [`Store::wait`] and the limit of each
    /// request.
    pub fn connect(
        authority: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<EtcdStore, StoreError> {
        let base = format!("http://{authority}");
        let addr = authority
            .to_socket_addrs()
            .and_then(|mut a| {
                a.next()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
            })
            .map_err(|e| {
                StoreError::Io(io::Error::new(
                    e.kind(),
                    format!("etcd at {base}: cannot resolve {authority:?}: {e}"),
                ))
            })?;
        let store = EtcdStore {
            agent: ureq::AgentBuilder::new().timeout_connect(CONNECT).build(),
            base,
            addr,
            prefix: prefix.trim_end_matches('/').to_string(),
            timeout,
        };
        store.reach()?;
        Ok(store)
    }

    /// Reads the prefix key until etcd answers or the timeout passes.
    fn reach(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.range(&self.prefix, left) {
                Ok(_) => return Ok(()),
                Err(StoreError::Io(e)) if !left.is_zero() => {
                    tracing::debug!("{e}; retrying");
                }
                Err(StoreError::Io(e)) => {
                    return Err(StoreError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("cannot reach etcd within {:?}: {e}", self.timeout),
                    )))
                }
                Err(e) => return Err(e),
            }
            std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }

    /// The etcd endpoint's address.
    pub fn endpoint_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The prefix the keys live under (without a trailing `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        check_key(key).map_err(StoreError::Protocol)?;
        Ok(format!("{}/{key}", self.prefix))
    }

    /// POSTs `body` to the gateway's `path` and returns the JSON answer.
    fn post(&self, path: &str, body: &Value, timeout: Duration) -> Result<Value, StoreError> {
        let url = format!("{}{path}", self.base);
        let answer = self
            .agent
            .post(&url)
            .timeout(timeout.max(MIN_REQUEST))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string());
        match answer {
            Ok(r) => {
                let text = r.into_string().map_err(|e| {
                    StoreError::Io(io::Error::new(e.kind(), format!("etcd at {url}: {e}")))
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    StoreError::Protocol(format!("etcd at {url}: the answer is not JSON: {e}"))
                })
            }
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                let why = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("message")?.as_str().map(str::to_string))
                    .unwrap_or_else(|| text.chars().take(200).collect());
                Err(StoreError::Protocol(format!(
                    "etcd at {url} answered HTTP {code}: {why}"
                )))
            }
            Err(ureq::Error::Transport(t)) => {
                let kind = std::error::Error::source(&t)
                    .and_then(|s| s.downcast_ref::<io::Error>())
                    .map_or(io::ErrorKind::Other, io::Error::kind);
                Err(StoreError::Io(io::Error::new(
                    kind,
                    format!("etcd at {url}: {t}"),
                )))
            }
        }
    }

    fn bad_answer(&self, what: &str) -> StoreError {
        StoreError::Protocol(format!("etcd at {}: {what}", self.base))
    }

    fn range(&self, full: &str, timeout: Duration) -> Result<Option<Entry>, StoreError> {
        let answer = self.post("/v3/kv/range", &json!({ "key": B64.encode(full) }), timeout)?;
        first_kv(&answer).map_err(|what| self.bad_answer(what))
    }

    /// Puts `new` at `full` if `compare` holds, else reads the key.
    fn txn(&self, full: &str, compare: Value, new: &[u8]) -> Result<Txn, StoreError> {
        let key = B64.encode(full);
        let body = json!({
            "compare": [compare],
            "success": [{ "request_put": { "key": key, "value": B64.encode(new) } }],
            "failure": [{ "request_range": { "key": key } }],
        });
        let answer = self.post("/v3/kv/txn", &body, self.timeout)?;
        txn_outcome(&answer).map_err(|what| self.bad_answer(what))
    }
}

/// The first key of a range answer (`kvs` absent: none); `Err` says what is wrong with it.
pub(crate) fn first_kv(answer: &Value) -> Result<Option<Entry>, &'static str> {
    let Some(kv) = answer.get("kvs").and_then(|k| k.get(0)) else {
        return Ok(None);
    };
    // The gateway leaves out fields at their default: an empty value has no `value`.
    let value = match kv.get("value") {
        None => Vec::new(),
        Some(v) => v
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .ok_or("a value is not base64 text")?,
    };
    let mod_revision = match kv.get("mod_revision") {
        Some(Value::String(s)) => s.parse().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .ok_or("a key has no mod_revision")?;
    Ok(Some(Entry {
        value,
        mod_revision,
    }))
}

/// How a transaction answer says it ended; `Err` says what is wrong with it.
pub(crate) fn txn_outcome(answer: &Value) -> Result<Txn, &'static str> {
    // `succeeded` is left out when false.
    if answer.get("succeeded").and_then(Value::as_bool) == Some(true) {
        return Ok(Txn::Done);
    }
    let range = answer
        .get("responses")
        .and_then(|r| r.get(0))
        .and_then(|r| r.get("response_range"))
        .ok_or("a failed transaction returned no range")?;
    Ok(Txn::Lost(first_kv(range)?))
}

/// A compare that holds while `key` is not set.
fn unset(key: &str) -> Value {
    json!({ "key": B64.encode(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0" })
}

impl Store for EtcdStore {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        let body = json!({ "key": B64.encode(&full), "value": B64.encode(value) });
        self.post("/v3/kv/put", &body, self.timeout).map(drop)
    }

    fn get_timeout(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, StoreError> {
        let full = self.full_key(key)?;
        let deadline = Instant::now() + timeout;
        let mut pause = FIRST_POLL;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(e) = self.range(&full, left)? {
                return Ok(e.value);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Timeout { key: key.into() });
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    fn wait_timeout(&self, keys: &[&str], timeout: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + timeout;
        for key in keys {
            self.get_timeout(key, deadline.saturating_duration_since(Instant::now()))?;
        }
        Ok(())
    }

    fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let full = self.full_key(key)?;
        let deadline = Instant::now() + self.timeout;
        let mut now = self.range(&full, self.timeout)?;
        loop {
            let old = match &now {
                Some(e) => parse_counter(key, &e.value)?,
                None => 0,
            };
            let new = old
                .checked_add(delta)
                .ok_or_else(|| StoreError::Protocol(format!("counter {key:?} overflows")))?;
            let compare = match &now {
                Some(e) => json!({
                    "key": B64.encode(&full),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": e.mod_revision.to_string(),
                }),
                None => unset(&full),
            };
            match self.txn(&full, compare, new.to_string().as_bytes())? {
                Txn::Done => return Ok(new),
                // Another client changed the counter first: retry on its value.
                Txn::Lost(e) => now = e,
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout { key: key.into() });
            }
        }
    }

    fn compare_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let full = self.full_key(key)?;
        let compare = match expected {
            // etcd fails a value compare on a missing key, as `Some(_)` must.
            Some(v) => json!({
                "key": B64.encode(&full),
                "target": "VALUE",
                "result": "EQUAL",
                "value": B64.encode(v),
            }),
            None => unset(&full),
        };
        match self.txn(&full, compare, new)? {
            Txn::Done => Ok(new.to_vec()),
            Txn::Lost(e) => Ok(e.map(|e| e.value).unwrap_or_default()),
        }
    }
}
