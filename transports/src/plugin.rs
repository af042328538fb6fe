//! Transports as plugins: the factory every transport implements, and the registry.
//!
//! A transport lives in one folder under `transports/src/` and offers a
//! [`TransportFactory`]. Setting up a job's links goes through three steps, the same for every
//! transport:
//! 1. [`TransportFactory::availability`]: can it run on this machine at all (a library, a
//!    device, a kernel feature), and if not, why. Cheap; called once per process.
//! 2. [`TransportFactory::prepare`]: create the local resources (a listening socket, a fabric
//!    endpoint, queue pairs) and say how peers reach them, as an opaque, versioned
//!    [`AddressBlob`] that the bootstrap publishes in the store next to the rank's record.
//! 3. [`PreparedTransport::connect`]: given the blobs of the peers this transport was chosen
//!    for, connect to them and return an [`Endpoint`] holding their links.
//!
//! The bootstrap picks one transport per peer from an ordered preference list
//! (`FERROCOLL_TRANSPORT=shm,ofi,tcp`; `auto` = shm within a host, the fastest available
//! fabric between hosts, then TCP) and composes the resulting endpoints behind one
//! `CompositeEndpoint`.
//!
//! Adding a transport: a folder with a factory, one line in [`registry`], and the checklist in
//! ARCHITECTURE.md ("Adding a transport").

use std::net::IpAddr;
use std::time::Duration;

use crate::link::{Endpoint, LinkCaps, LinkError};

/// Why a transport could not be set up, or could not reach a peer. Names the transport.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The transport cannot run on this machine (no library, no device, feature not built).
    #[error("transport {transport} is not available: {why}")]
    Unavailable {
        /// The transport's name.
        transport: &'static str,
        /// Why, in words a user can act on.
        why: String,
    },
    /// A peer's address blob could not be used (truncated, another version, another
    /// transport, an unknown provider).
    #[error("transport {transport}: bad address from rank {peer}: {detail}")]
    BadAddress {
        /// The transport's name.
        transport: &'static str,
        /// The rank that published the blob.
        peer: usize,
        /// What was wrong.
        detail: String,
    },
    /// A link failed while connecting (a peer that never came, a refused handshake).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Connecting failed (the library's or the OS's error, with the peer when known).
    #[error("transport {transport}: {detail}")]
    Failed {
        /// The transport's name.
        transport: &'static str,
        /// What failed.
        detail: String,
    },
}

impl SetupError {
    /// A copy of this error (an I/O cause is re-created from its kind and message).
    pub fn duplicate(&self) -> SetupError {
        match self {
            SetupError::Unavailable { transport, why } => SetupError::Unavailable {
                transport,
                why: why.clone(),
            },
            SetupError::BadAddress {
                transport,
                peer,
                detail,
            } => SetupError::BadAddress {
                transport,
                peer: *peer,
                detail: detail.clone(),
            },
            SetupError::Link(e) => SetupError::Link(e.duplicate()),
            SetupError::Failed { transport, detail } => SetupError::Failed {
                transport,
                detail: detail.clone(),
            },
        }
    }
}

/// Whether a transport can run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// It can.
    Available,
    /// It cannot, and why (one line, shown at INFO when `auto` skips it).
    Unavailable(String),
}

/// An opaque, versioned address: what a peer needs to connect to this rank over one
/// transport. Layout: the transport's name (1 length byte + UTF-8), a version byte, then the
/// transport's own bytes. [`AddressBlob::open`] checks the first two for the transport
/// decoding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressBlob(pub Vec<u8>);

impl AddressBlob {
    /// A blob of `transport`, version `version`, carrying `payload`.
    pub fn new(transport: &str, version: u8, payload: &[u8]) -> AddressBlob {
        let name = transport.as_bytes();
        let mut b = Vec::with_capacity(2 + name.len() + payload.len());
        b.push(name.len() as u8);
        b.extend_from_slice(name);
        b.push(version);
        b.extend_from_slice(payload);
        AddressBlob(b)
    }

    /// The transport name the blob claims, if it is well formed that far.
    pub fn transport(&self) -> Option<&str> {
        let n = *self.0.first()? as usize;
        std::str::from_utf8(self.0.get(1..1 + n)?).ok()
    }

    /// The payload, after checking that the blob is `transport`'s at `version`; `peer` names
    /// the publisher in the error.
    pub fn open(
        &self,
        transport: &'static str,
        version: u8,
        peer: usize,
    ) -> Result<&[u8], SetupError> {
        let bad = |detail: String| SetupError::BadAddress {
            transport,
            peer,
            detail,
        };
        let n = *self.0.first().ok_or_else(|| bad("empty address".into()))? as usize;
        let name = self
            .0
            .get(1..1 + n)
            .ok_or_else(|| bad(format!("truncated address ({} bytes)", self.0.len())))?;
        if name != transport.as_bytes() {
            return Err(bad(format!(
                "address is for transport {:?}",
                String::from_utf8_lossy(name)
            )));
        }
        let v = *self
            .0
            .get(1 + n)
            .ok_or_else(|| bad(format!("truncated address ({} bytes)", self.0.len())))?;
        if v != version {
            return Err(bad(format!(
                "address version {v}, this build speaks version {version}"
            )));
        }
        Ok(&self.0[2 + n..])
    }
}

/// What a transport's setup needs to know about the job and this rank.
#[derive(Clone, Debug)]
pub struct SetupCtx {
    /// This rank.
    pub rank: usize,
    /// Ranks in the job.
    pub world: usize,
    /// The job's token: unique to the job (shared-memory segment names derive from it).
    pub token: u64,
    /// The job's key: links to peers prove they hold it (see [`crate::auth`]).
    pub key: crate::auth::JobKey,
    /// The address of the interface this rank was told to use between hosts.
    pub ip: IpAddr,
    /// How long connecting may take, and how long a link waits on a silent peer.
    pub timeout: Duration,
    /// Bytes of each shared-memory ring (transports with rings of their own may read it).
    pub ring_bytes: usize,
    /// Whether links may offer single-copy transfers (`FERROCOLL_SHM_DIRECT`).
    pub single_copy: bool,
    /// Whether the TCP links run TLS (`FERROCOLL_TLS`; see `tcp::tls`).
    pub tls: bool,
}

/// A transport: see the module docs.
pub trait TransportFactory: Send + Sync {
    /// Its name, as written in `FERROCOLL_TRANSPORT` (`"shm"`, `"tcp"`, `"ofi"`, `"rdma"`).
    fn name(&self) -> &'static str;

    /// Whether it reaches peers on other hosts (`false`: same host only, like `shm`).
    fn crosses_hosts(&self) -> bool;

    /// Whether it can run on this machine, and if not why.
    fn availability(&self) -> Availability;

    /// Whether `auto` may pick it between hosts: a fabric faster than TCP. A transport that
    /// only emulates a fabric over sockets (libfabric's `tcp` provider) says no, so `auto`
    /// keeps the plain TCP path there; it is still used when named in the list.
    fn auto_between_hosts(&self) -> bool {
        self.crosses_hosts()
    }

    /// What its links can do.
    fn caps(&self) -> LinkCaps;

    /// Creates the local resources and returns what peers need to reach them.
    fn prepare(&self, ctx: &SetupCtx) -> Result<Box<dyn PreparedTransport>, SetupError>;
}

/// A transport prepared on this rank, waiting for its peers' addresses.
pub trait PreparedTransport: Send {
    /// This rank's address for peers.
    fn address(&self) -> AddressBlob;

    /// Connects to `peers` (each rank with the blob it published) and returns the endpoint of
    /// their links. Every peer in the list runs `connect` with this rank in its list.
    fn connect(
        self: Box<Self>,
        peers: &[(usize, AddressBlob)],
    ) -> Result<Box<dyn Endpoint>, SetupError>;
}

/// Every transport this build knows, in the order `auto` prefers them between hosts
/// (same-host transports first). Adding a transport adds one line here.
pub fn registry() -> Vec<Box<dyn TransportFactory>> {
    let mut all: Vec<Box<dyn TransportFactory>> = vec![Box::new(crate::shm::factory::ShmFactory)];
    #[cfg(feature = "rdma")]
    all.push(Box::new(crate::rdma::RdmaFactory));
    #[cfg(feature = "ofi")]
    all.push(Box::new(crate::ofi::OfiFactory));
    all.push(Box::new(crate::tcp::factory::TcpFactory));
    all
}

/// Names `FERROCOLL_TRANSPORT` accepts: every transport there is, built into this binary or
/// not (a name whose feature is off is refused at set-up with the reason, not as a typo).
pub const KNOWN: &[&str] = &["shm", "rdma", "ofi", "tcp"];

/// The factory named `name` in [`registry`], or why there is none: a transport whose cargo
/// feature this build lacks, or a name no transport has.
pub fn factory(name: &str) -> Result<Box<dyn TransportFactory>, SetupError> {
    if let Some(f) = registry().into_iter().find(|f| f.name() == name) {
        return Ok(f);
    }
    let transport = KNOWN
        .iter()
        .copied()
        .find(|k| *k == name)
        .unwrap_or("unknown");
    let why = if transport == "unknown" {
        format!(
            "no transport is called {name:?} (known: {})",
            KNOWN.join(", ")
        )
    } else {
        format!("this build of ferrocoll lacks it (build with `--features {name}`)")
    };
    Err(SetupError::Unavailable { transport, why })
}
