//! Store choice: where the ranks of a job meet (`FERROCOLL_STORE`, or the launcher's
//! address): a TCP store served by rank 0, or a directory every rank sees ([`FileStore`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use super::{FileStore, Store, TcpStore};
use crate::error::{Error, Result};

/// The store a job meets through, kept for later rendezvous (a split's children meet there
/// too).
pub enum MeetingStore {
    /// A client of the job's [`TcpStoreServer`](super::TcpStoreServer).
    Tcp(TcpStore),
    /// A directory every rank sees (`FERROCOLL_STORE=file:DIR`); the rank that is `owner`
    /// (rank 0) removes the store's keys when this is dropped.
    File {
        /// The store.
        store: FileStore,
        /// Whether dropping this clears the directory's keys.
        owner: bool,
    },
}

impl MeetingStore {
    /// The store itself.
    pub fn store(&self) -> &dyn Store {
        match self {
            MeetingStore::Tcp(s) => s,
            MeetingStore::File { store, .. } => store,
        }
    }

    /// An address that routes towards the other ranks (the TCP store's), from which a rank
    /// picks the interface it listens on; `None` for a file store.
    pub fn route(&self) -> Option<SocketAddr> {
        match self {
            MeetingStore::Tcp(s) => Some(s.server_addr()),
            MeetingStore::File { .. } => None,
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
pub(super) enum StoreSpec {
    /// A TCP store at this address (served by rank 0).
    Tcp(SocketAddr),
    /// A file store in this directory.
    File(PathBuf),
}

pub(super) fn store_spec(spec: &str) -> Result<StoreSpec> {
    match spec.strip_prefix("file:") {
        Some(dir) if dir.trim().is_empty() => Err(Error::Config {
            var: "FERROCOLL_STORE".into(),
            value: spec.into(),
            reason: "file: needs a directory (file:/shared/dir)".into(),
        }),
        Some(dir) => Ok(StoreSpec::File(PathBuf::from(dir))),
        None => resolve(spec).map(StoreSpec::Tcp),
    }
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| Error::Config {
            var: "FERROCOLL_STORE".into(),
            value: addr.into(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| Error::Config {
            var: "FERROCOLL_STORE".into(),
            value: addr.into(),
            reason: "no address".into(),
        })
}
