//! [`StoreError`]: why an operation on the rendezvous store failed (the stores are in
//! `crate::bootstrap`, which re-exports it).

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key (or, for a wait, the first missing key) did not appear in time.
    #[error("timed out waiting for store key {key:?}")]
    Timeout {
        /// The key waited for.
        key: String,
    },
    /// An operating-system error talking to the store (including failing to reach it).
    #[error("store I/O error")]
    Io(#[source] std::io::Error),
    /// The other side broke the protocol, or a value is not what the operation needs
    /// (e.g. `add` on a key whose value is not an integer).
    #[error("store protocol error: {0}")]
    Protocol(String),
    /// The store and this client do not hold the same secret: the store refused the
    /// client's proof, or could not prove the secret to it (another job's store).
    #[error("refused: the store and this process do not share the job's secret (missing or wrong FERROCOLL_SECRET, or another job's store)")]
    Unauthorized,
    /// The connection to the store is closed (server gone, or an earlier error left it
    /// unusable).
    #[error("the connection to the store is closed")]
    Closed,
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

impl StoreError {
    /// A copy of this error, for reporting one store failure to many callers (an I/O cause
    /// is re-created from its kind and message).
    pub fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Timeout { key } => StoreError::Timeout { key: key.clone() },
            StoreError::Io(e) => StoreError::Io(std::io::Error::new(e.kind(), e.to_string())),
            StoreError::Protocol(m) => StoreError::Protocol(m.clone()),
            StoreError::Unauthorized => StoreError::Unauthorized,
            StoreError::Closed => StoreError::Closed,
        }
    }
}
