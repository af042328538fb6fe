//! Store choice: where the ranks of a job meet (`FERROCOLL_STORE`, or the launcher's
//! address).
//!
//! | `FERROCOLL_STORE`            | store                                                  |
//! |------------------------------|--------------------------------------------------------|
//! | `host:port`                  | a [`TcpStoreServer`](super::TcpStoreServer) served by rank 0 |
//! | `tcp://host:port`            | a TCP store served outside the ranks (`ferrocoll-store`, the launcher) |
//! | `etcd://host:port[/prefix]`  | an etcd v3 cluster ([`EtcdStore`]), keys under `prefix` (default `/ferrocoll`) |
//! | `file:DIR`                   | a directory every rank sees ([`FileStore`])            |
//!
//! With a bare `host:port` the store lives inside rank 0, so rank 0 is the one rank whose
//! death ends the job; the `tcp://`, `etcd://` and `file:` stores outlive every rank.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use super::{EtcdStore, FileStore, Store, TcpStore};
use crate::error::{Error, Result};

/// The etcd port used when an `etcd://` address names none.
pub(crate) const ETCD_DEFAULT_PORT: u16 = 2379;
/// The key prefix used when an `etcd://` address names none.
pub(crate) const ETCD_DEFAULT_PREFIX: &str = "/ferrocoll";

/// The store a job meets through, kept for later rendezvous (a split's children meet there
/// too).
pub enum MeetingStore {
    /// A client of the job's [`TcpStoreServer`](super::TcpStoreServer) (served by rank 0 or
    /// outside the ranks).
    Tcp(TcpStore),
    /// A directory every rank sees (`FERROCOLL_STORE=file:DIR`); the rank that is `owner`
    /// (rank 0) removes the store's keys when this is dropped.
    File {
        /// The store.
        store: FileStore,
        /// Whether dropping this clears the directory's keys.
        owner: bool,
    },
    /// An etcd cluster (`FERROCOLL_STORE=etcd://host:port/prefix`).
    Etcd(EtcdStore),
}

impl MeetingStore {
    /// The store itself.
    pub fn store(&self) -> &dyn Store {
        match self {
            MeetingStore::Tcp(s) => s,
            MeetingStore::File { store, .. } => store,
            MeetingStore::Etcd(s) => s,
        }
    }

    /// An address that routes towards the other ranks (the TCP store server's or the etcd
    /// endpoint's), from which a rank picks the interface it listens on; `None` for a file
    /// store.
    pub fn route(&self) -> Option<SocketAddr> {
        match self {
            MeetingStore::Tcp(s) => Some(s.server_addr()),
            MeetingStore::File { .. } => None,
            MeetingStore::Etcd(s) => Some(s.endpoint_addr()),
        }
    }
}

impl Drop for MeetingStore {
    fn drop(&mut self) {
        if let MeetingStore::File { store, owner: true } = self {
            if let Err(e) = store.clear() {
                tracing::warn!(dir = %store.dir().display(), "cannot clear the file store: {e}");
            }
        }
    }
}

/// Where `FERROCOLL_STORE` (or the launcher's address) says the ranks meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoreSpec {
    /// A TCP store at this address, served by rank 0 (a bare `host:port`).
    Tcp(SocketAddr),
    /// A TCP store at this address, served outside the ranks (`tcp://host:port`).
    External(SocketAddr),
    /// A file store in this directory.
    File(PathBuf),
    /// An etcd endpoint.
    Etcd(EtcdSpec),
}

/// An `etcd://host:port/prefix` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EtcdSpec {
    /// `host:port` as written (the HTTP requests go to `http://{authority}`).
    pub authority: String,
    /// The resolved address (the route the ranks pick their interface from).
    pub addr: SocketAddr,
    /// The key prefix, starting with `/` and without a trailing `/`.
    pub prefix: String,
}

fn bad(spec: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        var: "FERROCOLL_STORE".into(),
        value: spec.into(),
        reason: reason.into(),
    }
}

/// Parses a `FERROCOLL_STORE` value (see the module docs for the forms).
pub(crate) fn store_spec(spec: &str) -> Result<StoreSpec> {
    if let Some(dir) = spec.strip_prefix("file:") {
        if dir.trim().is_empty() {
            return Err(bad(spec, "file: needs a directory (file:/shared/dir)"));
        }
        return Ok(StoreSpec::File(PathBuf::from(dir)));
    }
    if let Some(rest) = spec.strip_prefix("tcp://") {
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad(spec, "expected tcp://host:port"));
        }
        return resolve(spec, authority).map(StoreSpec::External);
    }
    if let Some(rest) = spec.strip_prefix("etcd://") {
        return etcd_spec(spec, rest).map(StoreSpec::Etcd);
    }
    if let Some((scheme, _)) = spec.split_once("://") {
        return Err(bad(
            spec,
            format!("unknown scheme {scheme:?} (expected tcp://, etcd://, file: or host:port)"),
        ));
    }
    resolve(spec, spec).map(StoreSpec::Tcp)
}

fn etcd_spec(spec: &str, rest: &str) -> Result<EtcdSpec> {
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad(spec, "expected etcd://host:port[/prefix]"));
    }
    if authority.contains('@') {
        return Err(bad(
            spec,
            "credentials in the address are not supported (use etcd's own auth/TLS \
             in front of it)",
        ));
    }
    if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            spec,
            "the prefix may not hold '?', '#', spaces or control characters",
        ));
    }
    // A port is optional (etcd's 2379); `[v6]` alone has colons but no port.
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{ETCD_DEFAULT_PORT}")
    };
    let addr = resolve(spec, &authority)?;
    let trimmed = path.trim_end_matches('/');
    let prefix = if trimmed.is_empty() {
        ETCD_DEFAULT_PREFIX.to_string()
    } else {
        trimmed.to_string()
    };
    Ok(EtcdSpec {
        authority,
        addr,
        prefix,
    })
}

fn resolve(spec: &str, addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| bad(spec, e.to_string()))?
        .next()
        .ok_or_else(|| bad(spec, "no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: &str) -> String {
        match store_spec(spec) {
            Err(e @ Error::Config { .. }) => {
                let m = e.to_string();
                assert!(m.contains("FERROCOLL_STORE"), "{m}");
                m
            }
            Err(e) => panic!("{spec}: not a configuration error: {e}"),
            Ok(s) => panic!("{spec}: accepted as {s:?}"),
        }
    }

    #[test]
    fn the_four_forms() {
        let a: SocketAddr = "127.0.0.1:29400".parse().unwrap();
        assert_eq!(store_spec("127.0.0.1:29400").unwrap(), StoreSpec::Tcp(a));
        assert_eq!(
            store_spec("tcp://127.0.0.1:29400").unwrap(),
            StoreSpec::External(a)
        );
        assert_eq!(
            store_spec("tcp://127.0.0.1:29400/").unwrap(),
            StoreSpec::External(a)
        );
        assert_eq!(
            store_spec("file:/tmp/x").unwrap(),
            StoreSpec::File("/tmp/x".into())
        );
        let StoreSpec::Etcd(e) = store_spec("etcd://127.0.0.1:2380/job1/").unwrap() else {
            panic!("not etcd")
        };
        assert_eq!(
            (e.authority.as_str(), e.addr.port(), e.prefix.as_str()),
            ("127.0.0.1:2380", 2380, "/job1")
        );
    }

    #[test]
    fn etcd_defaults() {
        let StoreSpec::Etcd(e) = store_spec("etcd://127.0.0.1").unwrap() else {
            panic!("not etcd")
        };
        assert_eq!(e.authority, "127.0.0.1:2379");
        assert_eq!(e.prefix, ETCD_DEFAULT_PREFIX);
        let StoreSpec::Etcd(e) = store_spec("etcd://[::1]/a/b").unwrap() else {
            panic!("not etcd")
        };
        assert_eq!(
            (e.authority.as_str(), e.prefix.as_str()),
            ("[::1]:2379", "/a/b")
        );
        let StoreSpec::Etcd(e) = store_spec("etcd://127.0.0.1:1/").unwrap() else {
            panic!("not etcd")
        };
        assert_eq!(e.prefix, ETCD_DEFAULT_PREFIX);
    }

    #[test]
    fn bad_specs_are_typed_errors_naming_the_variable() {
        for spec in [
            "tcp://",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:99999",
            "tcp://127.0.0.1:1/path",
            "tcp://user@127.0.0.1:1",
            "tcp://no-such-host.invalid:1",
            "etcd://",
            "etcd:///prefix",
            "etcd://127.0.0.1:notaport/p",
            "etcd://user:pw@127.0.0.1:2379",
            "etcd://127.0.0.1:2379/p?x=1",
            "etcd://127.0.0.1:2379/a b",
            "etcd://no-such-host.invalid:2379",
            "http://127.0.0.1:1",
            "file:",
            "127.0.0.1",
        ] {
            err(spec);
        }
        assert!(err("redis://h:1").contains("unknown scheme"));
        assert!(err("etcd://u@h:1").contains("credentials"));
    }
}
