//! # ferrocoll
//!
//! Collective communications for distributed training: all-reduce, all-gather,
//! reduce-scatter, broadcast, reduce, all-to-all, gather, scatter, the uneven all-gather-v,
//! reduce-scatter-v and all-to-all-v ([`Uneven`]), barrier and send/recv over every element
//! type (f32, f64, f16, bf16, fp8 e4m3/e5m2, integers) and reduction operator (sum, prod, min,
//! max, avg, and premul-sum), with the algorithm (ring, double binary tree, recursive halving-doubling,
//! direct) chosen per call.
//!
//! Start at [`Communicator`] (`from_env` under a launcher, `from_unique_id` as NCCL's
//! `ncclCommInitRank` does, or [`World`] for ranks as threads of one process). [`config`]
//! holds every setting, [`topology`] the cluster the tuner plans on ([`Tuner`] prices the
//! registered algorithms, [`AlgoId`]), [`compress`] the compressed collectives, [`launch`]
//! the forking of local ranks and the rendezvous stores, [`verify`] the data check that
//! tools run on their results, [`recorder`] the flight recorder's dumps and their analysis,
//! and [`reduce`] the reduction kernels. `ARCHITECTURE.md`
//! describes the inside: a call is checked by the communicator, planned by the planner,
//! queued by the engine and run by the executor over the links of `ferrocoll_transports`.

pub mod accel;
mod algo;
mod bootstrap;
mod comm;
pub mod compress;
pub mod config;
mod cost;
mod engine;
pub mod error;
mod exec;
mod fp8;
mod ft;
/// Entry points of the fuzz targets in `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing;
pub mod launch;
mod plan;
pub mod recorder;
pub mod reduce;
mod reference;
mod schedule;
pub mod topology;
mod tune;
mod types;
pub mod verify;
mod world;

pub use algo::AlgoId;
pub use comm::{Communicator, RawCall, RawExtra, UniqueId, Work, UNIQUE_ID_BYTES};
pub use compress::{Codec, CompressedCollectives, ErrorFeedback};
pub use config::{AlgoChoice, Config, RingOrder};
pub use error::{Error, ErrorKind, Result};
pub use exec::frame::OpHeader;
pub use ferrocoll_transports as transports;
pub use fp8::{F8E4M3, F8E5M2};
pub use schedule::{CollSpec, Collective, LayoutError, Uneven};
pub use topology::{Topology, TopologyError};
pub use tune::{Choice, Tuner};
pub use types::{DataType, Element, ReduceOp};
pub use world::World;

/// Installs a log subscriber on stderr at `level` (a communicator's
/// [`Config::log_level`], from `FERROCOLL_DEBUG`), unless the program installed one already.
/// Called by [`Communicator::from_env`] and [`Communicator::from_unique_id`].
pub fn init_logging(level: tracing::Level) {
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
