//! Links that move ferrocoll's bytes between ranks.
//!
//! A [`Link`] is one rank's two-way byte stream to one peer. It is non-blocking: writes take
//! what fits now, reads show what has arrived now. An [`Endpoint`] owns one rank's links and
//! knows how to sleep until any of them may have moved. The executor in the `ferrocoll` crate
//! drives endpoints; transports never see a schedule, and the executor never knows which
//! transport it is driving.
//!
//! Implementations:
//! - [`mem`]: ranks as threads of one process, over [`ring`] buffers on the heap, with fault
//!   injection (delay, dropped links, killed ranks) for tests.
//! - [`shm`]: ranks on one host, over rings in a shared-memory segment, with futex doorbells
//!   and peer-death detection.
//! - [`tcp`]: ranks on other hosts, over a mio-driven TCP mesh.
//! - [`auth`]: the challenge–response with the job's secret that every listener runs.
//! - [`composite`]: one rank's endpoints of several transports behind one endpoint.
//! - [`plugin`]: the factory every transport implements, and the registry.
//! - [`rdma_core`]: the RDMA protocol (credits over registered slots, single copy by RDMA
//!   read, a registration cache) over any [`rdma_core::Fabric`].
//! - `ofi` (feature `ofi`): that protocol over libfabric.
//! - `rdma` (feature `rdma`): that protocol over ibverbs RC queue pairs (`rdma-sys`).

pub mod auth;
mod cma;
pub mod composite;
pub mod copy;
pub mod doorbell;
/// Entry points of the fuzz targets in the workspace's `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing;
pub mod link;
pub mod mem;
#[cfg(feature = "ofi")]
pub mod ofi;
pub mod plugin;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod rdma_core;
pub mod ring;
pub mod shm;
pub mod tcp;

pub use copy::Stores;
pub use link::{Endpoint, EndpointCounters, Link, LinkCaps, LinkError, SingleCopy};
