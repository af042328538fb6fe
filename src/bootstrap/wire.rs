//! The TCP store's wire protocol (all integers little-endian).
//!
//! Connection hello, a mutual challenge–response with the job's secret
//! (`ferrocoll_transports::auth`; the secret never crosses the wire):
//! 1. client → server: [`STORE_MAGIC`] `"FCST"`, [`STORE_PROTOCOL_VERSION`] (u32), the
//!    client's nonce (32 bytes);
//! 2. server → client: [`HELLO_CHALLENGE`], the server's nonce (32 bytes), the server's proof
//!    (32 bytes); or [`HELLO_BAD_VERSION`] and the end of the connection;
//! 3. client → server: the client's proof (32 bytes), sent only when the server's proof
//!    verified (a client never talks to a store that does not know the secret);
//! 4. server → client: [`HELLO_OK`], or [`HELLO_UNAUTHORIZED`] and the end of the connection.
//!
//! A hello without the magic is dropped without an answer. A job without a secret runs the
//! same exchange with the empty key.
//!
//! Then requests and responses alternate, each a frame: u32 body length (at most
//! [`MAX_FRAME`]) and the body. Request bodies start with an op byte:
//! - `SET`: key, value (the rest of the body);
//! - `GET`: key, timeout in ms (u64);
//! - `ADD`: key, delta (i64);
//! - `WAIT`: key count (u32), keys, timeout in ms (u64);
//! - `CAS` (compare and set): key, a flag byte (1: an expected value follows, 0: the key is
//!   expected to be absent), the expected value (u32-length-prefixed) when the flag is 1, and
//!   the new value (the rest of the body). The answer is the value the key holds afterwards.
//!
//! Keys are u32-length-prefixed UTF-8 (at most [`MAX_KEY`] bytes). Response bodies start with
//! a status byte: `OK` then the payload (a value for GET, an i64 for ADD, nothing else),
//! `TIMEOUT` then the missing key, `ERROR` then a UTF-8 message.

use std::io::{self, Read, Write};
use std::time::Duration;

/// First bytes a store client sends.
pub const STORE_MAGIC: [u8; 4] = *b"FCST";
/// Version of the store protocol; client and server must agree.
pub const STORE_PROTOCOL_VERSION: u32 = 2;
/// The label of the store's proofs (see `ferrocoll_transports::auth`).
pub(crate) const AUTH_LABEL: &[u8] = b"ferrocoll store";
/// Largest frame body accepted.
pub(crate) const MAX_FRAME: usize = 256 << 20;
/// Largest key accepted.
pub(crate) const MAX_KEY: usize = 4096;
/// Largest secret accepted.
pub(crate) const MAX_SECRET: usize = 4096;

pub(crate) const HELLO_OK: u8 = 0;
pub(crate) const HELLO_BAD_VERSION: u8 = 1;
pub(crate) const HELLO_UNAUTHORIZED: u8 = 2;
pub(crate) const HELLO_CHALLENGE: u8 = 3;

const OP_SET: u8 = 1;
const OP_GET: u8 = 2;
const OP_ADD: u8 = 3;
const OP_WAIT: u8 = 4;
const OP_CAS: u8 = 5;

const ST_OK: u8 = 0;
const ST_TIMEOUT: u8 = 1;
const ST_ERROR: u8 = 2;

/// A request from client to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Set {
        key: String,
        value: Vec<u8>,
    },
    Get {
        key: String,
        timeout: Duration,
    },
    Add {
        key: String,
        delta: i64,
    },
    Wait {
        keys: Vec<String>,
        timeout: Duration,
    },
    CompareSet {
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

/// A response from server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    Ok(Vec<u8>),
    Timeout(String),
    Error(String),
}

/// Bounds-checked reading of a body; every failure is a message, never a panic.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "truncated body: {n} bytes needed, {} left",
                self.0.len()
            ));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.arr::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn key(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        if n > MAX_KEY {
            return Err(format!("key of {n} bytes (limit {MAX_KEY})"));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "key is not UTF-8".to_string())
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.0.len()))
        }
    }
}

fn put_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Checks a key before it goes on the wire.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    if key.len() > MAX_KEY {
        return Err(format!("key of {} bytes (limit {MAX_KEY})", key.len()));
    }
    Ok(())
}

impl Request {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Request::Set { key, value } => {
                b.push(OP_SET);
                put_key(&mut b, key);
                b.extend_from_slice(value);
            }
            Request::Get { key, timeout } => {
                b.push(OP_GET);
                put_key(&mut b, key);
                b.extend_from_slice(&millis(*timeout).to_le_bytes());
            }
            Request::Add { key, delta } => {
                b.push(OP_ADD);
                put_key(&mut b, key);
                b.extend_from_slice(&delta.to_le_bytes());
            }
            Request::Wait { keys, timeout } => {
                b.push(OP_WAIT);
                b.extend_from_slice(&(keys.len() as u32).to_le_bytes());
                keys.iter().for_each(|k| put_key(&mut b, k));
                b.extend_from_slice(&millis(*timeout).to_le_bytes());
            }
            Request::CompareSet { key, expected, new } => {
                b.push(OP_CAS);
                put_key(&mut b, key);
                match expected {
                    None => b.push(0),
                    Some(e) => {
                        b.push(1);
                        b.extend_from_slice(&(e.len() as u32).to_le_bytes());
                        b.extend_from_slice(e);
                    }
                }
                b.extend_from_slice(new);
            }
        }
        b
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Request, String> {
        let mut c = Cursor(body);
        let req = match c.u8()? {
            OP_SET => Request::Set {
                key: c.key()?,
                value: c.rest().to_vec(),
            },
            OP_GET => Request::Get {
                key: c.key()?,
                timeout: Duration::from_millis(c.u64()?),
            },
            OP_ADD => Request::Add {
                key: c.key()?,
                delta: i64::from_le_bytes(c.arr()?),
            },
            OP_WAIT => {
                let n = c.u32()? as usize;
                // Each key takes at least its 4-byte length: bounds `n` by the body size.
                if n > body.len() / 4 {
                    return Err(format!("{n} keys cannot fit a {}-byte body", body.len()));
                }
                let keys = (0..n).map(|_| c.key()).collect::<Result<_, _>>()?;
                Request::Wait {
                    keys,
                    timeout: Duration::from_millis(c.u64()?),
                }
            }
            OP_CAS => {
                let key = c.key()?;
                let expected = match c.u8()? {
                    0 => None,
                    1 => {
                        let n = c.u32()? as usize;
                        Some(c.take(n)?.to_vec())
                    }
                    f => return Err(format!("compare-set flag {f} (0 or 1)")),
                };
                Request::CompareSet {
                    key,
                    expected,
                    new: c.rest().to_vec(),
                }
            }
            op => return Err(format!("unknown op {op}")),
        };
        c.end()?;
        Ok(req)
    }
}

impl Response {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (st, payload) = match self {
            Response::Ok(v) => (ST_OK, v.as_slice()),
            Response::Timeout(k) => (ST_TIMEOUT, k.as_bytes()),
            Response::Error(m) => (ST_ERROR, m.as_bytes()),
        };
        let mut b = Vec::with_capacity(1 + payload.len());
        b.push(st);
        b.extend_from_slice(payload);
        b
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Response, String> {
        let mut c = Cursor(body);
        let st = c.u8()?;
        let rest = c.rest();
        let text = || String::from_utf8_lossy(rest).into_owned();
        match st {
            ST_OK => Ok(Response::Ok(rest.to_vec())),
            ST_TIMEOUT => Ok(Response::Timeout(text())),
            ST_ERROR => Ok(Response::Error(text())),
            s => Err(format!("unknown status {s}")),
        }
    }
}

/// The hello a client sends: magic, version, its nonce.
pub(crate) fn encode_hello(nonce: &ferrocoll_transports::auth::Nonce) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + nonce.len());
    b.extend_from_slice(&STORE_MAGIC);
    b.extend_from_slice(&STORE_PROTOCOL_VERSION.to_le_bytes());
    b.extend_from_slice(nonce);
    b
}

/// Writes one frame (length prefix and body) with a single write call where possible.
pub(crate) fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let mut b = Vec::with_capacity(4 + body.len());
    b.extend_from_slice(&(body.len() as u32).to_le_bytes());
    b.extend_from_slice(body);
    w.write_all(&b)
}

/// Reads one frame body with plain blocking reads (the client side).
pub(crate) fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes (limit {MAX_FRAME})"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_an_error() {
        let reqs = [
            Request::Set {
                key: "a".into(),
                value: vec![1, 2, 3],
            },
            Request::Get {
                key: "k".into(),
                timeout: Duration::from_millis(5),
            },
            Request::Add {
                key: "c".into(),
                delta: -7,
            },
            Request::Wait {
                keys: vec!["x".into(), "y".into()],
                timeout: Duration::from_millis(9),
            },
            Request::CompareSet {
                key: "d".into(),
                expected: None,
                new: vec![4],
            },
            Request::CompareSet {
                key: "d".into(),
                expected: Some(vec![4, 5]),
                new: vec![],
            },
        ];
        for r in reqs {
            let b = r.encode();
            assert_eq!(Request::decode(&b).unwrap(), r);
            for cut in 0..b.len() {
                let _ = Request::decode(&b[..cut]);
            }
        }
        assert!(Request::decode(&[OP_WAIT, 255, 255, 255, 255]).is_err());
        assert!(Request::decode(&[99]).is_err());
        assert!(Request::decode(&[OP_CAS, 1, 0, 0, 0, b'k', 7]).is_err());
        assert!(Request::decode(&[OP_CAS, 1, 0, 0, 0, b'k', 1, 9, 0, 0, 0]).is_err());
        assert!(Request::decode(&[]).is_err());
    }
}
