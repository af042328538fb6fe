//! Bootstrap: the rendezvous key-value [`Store`] through which ranks find each other.
//!
//! A store maps string keys to byte values. Ranks publish what the others need (listening
//! addresses, host identity, a job token) with [`Store::set`], read it with [`Store::get`]
//! (which blocks until the key exists or the store's timeout passes), and count arrivals with
//! [`Store::add`]. Three implementations:
//! - [`TcpStore`], the client of a [`TcpStoreServer`] (served by rank 0, the launcher or
//!   `ferrocoll-store`; a small length-prefixed binary protocol, optionally authenticated by
//!   a shared secret);
//! - [`FileStore`], a directory on a file system every rank sees (one file per key);
//! - [`EtcdStore`], an etcd v3 cluster reached through its JSON gateway.
//!
//! `FERROCOLL_STORE` chooses among them (see `meeting.rs`): a bare `host:port` is a TCP store
//! served by rank 0, `tcp://host:port` one served outside the ranks (`ferrocoll-store`, or
//! the launcher), `etcd://host:port/prefix` etcd, `file:DIR` a directory.
//!
//! Counters written by [`Store::add`] are stored as decimal ASCII text, so `get` on a counter
//! key returns e.g. `b"3"`.

mod affinity;
pub(crate) mod claims;
mod endpoint;
pub(crate) mod etcd;
mod file_store;
mod interfaces;
mod meeting;
pub mod rendezvous;
mod serve;
pub(crate) mod tcp_client;
pub(crate) mod tcp_server;
#[cfg(test)]
mod tests;
pub(crate) mod wire;

use std::time::Duration;

/// Why a store operation failed (defined with the other errors, in `crate::error`).
pub use crate::error::StoreError;
pub use etcd::EtcdStore;
pub use file_store::FileStore;
pub use serve::serve_until_signal;
pub use tcp_client::TcpStore;
pub use tcp_server::TcpStoreServer;

/// A rendezvous key-value store shared by the ranks of a job.
///
/// Every method may be called from several threads at once.
pub trait Store: Send + Sync {
    /// The timeout used by [`Store::get`] and [`Store::wait`].
    fn timeout(&self) -> Duration;

    /// Sets `key` to `value`, replacing any previous value, and wakes whoever waits for it.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// The value of `key`, waiting up to `timeout` for it to be set.
    fn get_timeout(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, StoreError>;

    /// Waits up to `timeout` until every key of `keys` is set; on timeout the error names
    /// the first key still missing.
    fn wait_timeout(&self, keys: &[&str], timeout: Duration) -> Result<(), StoreError>;

    /// Adds `delta` to the integer counter at `key` (a missing key counts as 0) and returns
    /// the new value.
    fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError>;

    /// Compare and set, atomically: if `key` holds `expected` (`None`: if `key` is not set),
    /// sets it to `new`. Returns the value `key` holds afterwards (`new` when it was set, the
    /// unchanged value otherwise, empty for a key still unset) — as torch's
    /// `TCPStore.compare_set`. The fault-tolerance agreement decides through it.
    fn compare_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<Vec<u8>, StoreError>;

    /// The value of `key`, waiting up to [`Store::timeout`] for it to be set.
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.get_timeout(key, self.timeout())
    }

    /// Waits up to [`Store::timeout`] until every key of `keys` is set.
    fn wait(&self, keys: &[&str]) -> Result<(), StoreError> {
        self.wait_timeout(keys, self.timeout())
    }
}

/// Parses a counter value as written by [`Store::add`].
pub(crate) fn parse_counter(key: &str, v: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| StoreError::Protocol(format!("value of key {key:?} is not an integer")))
}
