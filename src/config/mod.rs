//! Typed configuration, read once from `FERROCOLL_*` variables or set with a builder. This
//! module is the only place that reads the environment:
//! - [`Config`] (this file): the communicator's settings;
//! - [`compression`]: `FERROCOLL_COMPRESSION`, the codec a program asks for (the value types
//!   [`Codec`] and [`CompressionSetting`]; `compress` implements the codecs);
//! - [`launcher`]: the launcher variables (rank, world, store: `FERROCOLL_RANK`, torchrun,
//!   Open MPI, PMI, Slurm), also reached as `bootstrap::env`.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::schedule::Collective;
/// How the ring algorithm orders the ranks (defined with the placement, in
/// `crate::topology`; `FERROCOLL_RING_ORDER` is read here).
pub use crate::topology::RingOrder;

pub mod compression;
pub mod launcher;

pub use compression::{Codec, CompressionSetting};

/// How the algorithm of each call is chosen.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AlgoChoice {
    /// The tuner picks per call from the cost model (see [`crate::Tuner`]).
    #[default]
    Auto,
    /// Always this algorithm; a collective it does not implement is an error.
    Forced(String),
}

/// Which transports carry traffic between ranks (`FERROCOLL_TRANSPORT`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// Shared memory between ranks of one host; between hosts the fastest fabric this
    /// build has and this machine offers (`rdma`, then `ofi` over a hardware provider),
    /// else TCP.
    #[default]
    Auto,
    /// An ordered preference list (`shm,ofi,tcp`): each pair of ranks uses the first
    /// transport that both offer and that reaches across them (`shm` only within a host).
    /// Names that are not available here are skipped with an INFO line; when none is left
    /// for a pair, set-up fails saying why.
    Prefer(Vec<String>),
}

impl TransportChoice {
    /// One transport only, e.g. `TransportChoice::only("tcp")` (TCP even on one host).
    pub fn only(name: &str) -> TransportChoice {
        TransportChoice::Prefer(vec![name.to_string()])
    }

    /// As written in `FERROCOLL_TRANSPORT` (`auto`, or the list joined by commas).
    pub fn spec(&self) -> String {
        match self {
            TransportChoice::Auto => "auto".into(),
            TransportChoice::Prefer(l) => l.join(","),
        }
    }

    /// Parses `FERROCOLL_TRANSPORT`'s value: `auto` (or empty), or a comma-separated list
    /// of distinct transport names from [`ferrocoll_transports::plugin::KNOWN`].
    pub fn parse(v: &str) -> std::result::Result<TransportChoice, String> {
        let v = v.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("auto") {
            return Ok(TransportChoice::Auto);
        }
        let known = ferrocoll_transports::plugin::KNOWN;
        let mut list: Vec<String> = Vec::new();
        for name in v.split(',').map(|n| n.trim().to_ascii_lowercase()) {
            if !known.contains(&name.as_str()) {
                return Err(format!(
                    "unknown transport {name:?}; expected auto or a comma-separated list of {}",
                    known.join(", ")
                ));
            }
            if list.contains(&name) {
                return Err(format!("transport {name} is listed twice"));
            }
            list.push(name);
        }
        Ok(TransportChoice::Prefer(list))
    }
}

/// Settings of a communicator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Algorithm choice for every collective (`FERROCOLL_ALGO=ring|tree|halving_doubling|
    /// direct|hierarchical|auto`).
    pub algo: AlgoChoice,
    /// Per-collective overrides, before `algo` (`FERROCOLL_ALGO=all_reduce:ring;all_gather:direct`;
    /// collectives not listed are tuned).
    pub algo_per_collective: Vec<(Collective, String)>,
    /// Ring order (`FERROCOLL_RING_ORDER=rank|topology`, default topology).
    pub ring_order: RingOrder,
    /// Topology file to use instead of the discovered topology (`FERROCOLL_TOPO_FILE`).
    pub topo_file: Option<PathBuf>,
    /// Where rank 0 writes the topology in use (`FERROCOLL_TOPO_DUMP_FILE`).
    pub topo_dump_file: Option<PathBuf>,
    /// Largest message segment in bytes (`FERROCOLL_SEGMENT_BYTES`, default 512 KiB). Small
    /// values make tiny tests reach the multi-segment paths.
    pub segment_bytes: usize,
    /// Longest time a call may go without progress before it fails
    /// (`FERROCOLL_TIMEOUT`, seconds, default 300).
    pub timeout: Duration,
    /// How long a peer may stay silent before it is declared failed
    /// (`FERROCOLL_HEARTBEAT_TIMEOUT`, seconds, default 3; 0 turns failure detection off).
    /// Every communicator built through a store runs a detector thread that sends small UDP
    /// heartbeats (see `crate::ft`): a dead, stopped or unreachable peer is found within this
    /// time, also between collectives, and the communicator is revoked on every survivor.
    pub heartbeat_timeout: Duration,
    /// How long an idle rank spins before it sleeps (`FERROCOLL_SPIN_US`, default 50 µs).
    pub spin: Duration,
    /// Transport choice (`FERROCOLL_TRANSPORT=auto|shm|tcp`).
    pub transport: TransportChoice,
    /// Host identity override (`FERROCOLL_HOSTNAME`): ranks with equal identity share memory.
    pub hostname: Option<String>,
    /// Interface whose IPv4 address ranks listen on (`FERROCOLL_SOCKET_IFNAME`).
    pub socket_ifname: Option<String>,
    /// The job's secret (`FERROCOLL_SECRET`, or the file `FERROCOLL_SECRET_FILE` names): the
    /// store and its clients prove it to each other without sending it.
    pub secret: Option<String>,
    /// Bytes per shared-memory ring (`FERROCOLL_SHM_RING_BYTES`, default 4 MiB).
    pub shm_ring_bytes: usize,
    /// Whether an idle rank gives its core away (`sched_yield`) while it spins
    /// (`FERROCOLL_YIELD_WHEN_IDLE=auto|0|1`, like Open MPI's `mpi_yield_when_idle`). `None`
    /// (auto): yield when this host runs more ranks than this process may use cores, where a
    /// spinning rank would take the core from the peer it waits for.
    pub yield_when_idle: Option<bool>,
    /// Single-copy transfers between ranks of a host where the kernel allows them
    /// (`FERROCOLL_SHM_DIRECT=1|0`, default 1): the receiver copies large messages straight
    /// from the sender's buffer (cross-memory attach) instead of through the ring.
    pub shm_direct: bool,
    /// Smallest segment sent by single copy where the link can (`FERROCOLL_DIRECT_MIN_BYTES`,
    /// default 64 KiB; below it the system call and acknowledgement cost more than the copy
    /// through the ring saves). Tests set small values to reach the single-copy paths.
    pub direct_min_bytes: usize,
    /// Where the C ABI's buffers live when a call passes a stream (`FERROCOLL_DEVICE=cpu|cuda|npu`,
    /// default `cpu`: a non-NULL stream is refused). `cuda` and `npu` route such calls to the
    /// composed communicator of `crate::accel::composed` (NCCL or HCCL within a host).
    pub device: Device,
    /// Whether the TCP links run TLS 1.3 (`FERROCOLL_TLS=1|0`, default 0; needs a build with
    /// the `tls` feature): encrypted and authenticated data between hosts, at a CPU cost
    /// (see `PERFORMANCE.md`). Shared-memory links stay on the host and need none.
    pub tls: bool,
    /// Whether collectives whose receivers reduce also use single copy
    /// (`FERROCOLL_SINGLE_COPY_REDUCTIONS=0|1`, default 0): reducing straight out of the
    /// ring that the sender fills in parallel is faster on shared memory than a cross-memory
    /// read into a landing area followed by the reduction (see the planner's copy policy).
    pub single_copy_reductions: bool,
    /// Smallest call output, in bytes, that counts as large: copies into the output that
    /// nothing reads again in the call use streaming stores, single copy is off (the ring
    /// with streaming stores moves less through memory), and a rank that keeps and sends the
    /// same chunk (all-gather, broadcast's root) makes both copies in one read
    /// (`FERROCOLL_STREAMING_MIN_BYTES`, default 8 MiB: on a 2-vCPU VM 8 MiB all-gathers
    /// gained and 4 MiB ones lost; `ferrocoll-probe all_gather -b 4M -e 8M` with this
    /// variable at 0 and at its default compares them). See `ferrocoll_transports::copy`.
    pub streaming_min_bytes: usize,
    /// Most detailed log level that [`crate::init_logging`] lets through on stderr
    /// (`FERROCOLL_DEBUG=WARN|INFO|DEBUG|TRACE`, default WARN).
    pub log_level: tracing::Level,
    /// The compression a program asks for (`FERROCOLL_COMPRESSION`, see
    /// [`CompressionSetting`]; unset or empty: none), checked with the other variables. The
    /// communicator does not compress by itself: programs that opt in to lossy compression
    /// hand it to `CompressedCollectives` ([`CompressionSetting::from_env`] reads it alone).
    pub compression: CompressionSetting,
    /// Where the flight recorder writes its dumps on failure and on `SIGUSR1`
    /// (`FERROCOLL_FR_DIR`; unset or empty: no such dumps, the ring still runs). See
    /// [`crate::recorder`].
    pub fr_dir: Option<PathBuf>,
    /// Calls the flight recorder keeps per communicator (`FERROCOLL_FR_ENTRIES`, default
    /// 1024, at most [`FR_ENTRIES_MAX`]; 0 turns the recorder off).
    pub fr_entries: usize,
}

/// Most calls `FERROCOLL_FR_ENTRIES` may ask the flight recorder to keep.
pub const FR_ENTRIES_MAX: usize = 1 << 20;

impl Config {
    /// Resolves an automatic [`Config::yield_when_idle`] for `local_ranks` ranks sharing this
    /// host's cores.
    pub fn resolve_yield(&mut self, local_ranks: usize) {
        if self.yield_when_idle.is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            self.yield_when_idle = Some(local_ranks > cores);
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            algo: AlgoChoice::Auto,
            algo_per_collective: Vec::new(),
            ring_order: RingOrder::Topology,
            topo_file: None,
            topo_dump_file: None,
            segment_bytes: 512 << 10,
            timeout: Duration::from_secs(300),
            heartbeat_timeout: Duration::from_secs(3),
            spin: Duration::from_micros(50),
            transport: TransportChoice::Auto,
            hostname: None,
            socket_ifname: None,
            secret: None,
            shm_ring_bytes: 4 << 20,
            yield_when_idle: None,
            shm_direct: true,
            tls: false,
            device: Device::Cpu,
            direct_min_bytes: 64 << 10,
            single_copy_reductions: false,
            streaming_min_bytes: 8 << 20,
            log_level: tracing::Level::WARN,
            compression: CompressionSetting::Fixed(Codec::None),
            fr_dir: None,
            fr_entries: 1024,
        }
    }
}

/// Where buffers live (`FERROCOLL_DEVICE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// Host memory.
    #[default]
    Cpu,
    /// CUDA device memory (NCCL and the CUDA runtime).
    Cuda,
    /// Ascend NPU memory (HCCL and the ACL runtime).
    Npu,
}

impl Device {
    /// Its `FERROCOLL_DEVICE` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Npu => "npu",
        }
    }
}

/// A duration variable in seconds: positive, or also 0 when `zero_ok` (`what` describes the
/// accepted values in the error).
fn seconds(var: &str, value: &str, zero_ok: bool, what: &str) -> Result<Duration> {
    let s: f64 = value
        .trim()
        .parse()
        .map_err(|_| bad(var, value, "not a number of seconds"))?;
    // Beyond ~584 billion years a Duration overflows; below a nanosecond it is 0.
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| s >= 0.0 && (zero_ok || (s > 0.0 && !d.is_zero())))
        .ok_or_else(|| bad(var, value, what))
}

/// A count variable (bytes, entries): a non-negative integer (`unit` names it in the error).
fn count(var: &str, value: &str, unit: &str) -> Result<usize> {
    value
        .trim()
        .parse()
        .map_err(|_| bad(var, value, format!("not a number of {unit}")))
}

/// An on/off variable: `1`/`true`/`yes` or `0`/`false`/`no`; empty means `empty`.
fn switch(var: &str, value: &str, empty: bool) -> Result<bool> {
    match value.trim() {
        "" => Ok(empty),
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(bad(var, value, "expected 0 or 1")),
    }
}

/// The job's secret: `FERROCOLL_SECRET`, or the content of the file `FERROCOLL_SECRET_FILE`
/// names without its trailing newline (the file must not be readable by group or others, as
/// ssh demands of its keys). Both set, an empty or unreadable file, or a file others can read
/// is a [`Error::Config`].
fn secret(get: &impl Fn(&str) -> Option<String>) -> Result<Option<String>> {
    let direct = get("FERROCOLL_SECRET").filter(|s| !s.is_empty());
    let Some(path) = get("FERROCOLL_SECRET_FILE").filter(|s| !s.is_empty()) else {
        return Ok(direct);
    };
    const VAR: &str = "FERROCOLL_SECRET_FILE";
    if direct.is_some() {
        return Err(bad(
            VAR,
            &path,
            "FERROCOLL_SECRET is set too: set one of them",
        ));
    }
    let meta =
        std::fs::metadata(&path).map_err(|e| bad(VAR, &path, format!("cannot read: {e}")))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(
                VAR,
                &path,
                format!("readable by others (mode {mode:04o}): chmod 600 it"),
            ));
        }
    }
    let bytes = std::fs::read(&path).map_err(|e| bad(VAR, &path, format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| bad(VAR, &path, "not UTF-8 text"))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return Err(bad(VAR, &path, "the file is empty"));
    }
    Ok(Some(text.to_string()))
}

fn bad(var: &str, value: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        var: var.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

impl Config {
    /// Reads the `FERROCOLL_*` variables over the defaults.
    pub fn from_env() -> Result<Config> {
        Config::from_vars(|k| std::env::var(k).ok())
    }

    /// Like [`Config::from_env`], with `overrides` (name, value) taking precedence over the
    /// environment, the last of a name winning: the configuration of a child process started
    /// with those variables added.
    pub fn from_env_with(overrides: &[(String, String)]) -> Result<Config> {
        Config::from_vars(|k| {
            overrides
                .iter()
                .rev()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(k).ok())
        })
    }

    /// Like [`Config::from_env`], with variables from `get` (tests, embedded use).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let mut c = Config::default();
        if let Some(v) = get("FERROCOLL_ALGO") {
            c = c.with_algo(&v)?;
        }
        if let Some(v) = get("FERROCOLL_SEGMENT_BYTES") {
            let n = count("FERROCOLL_SEGMENT_BYTES", &v, "bytes")?;
            if n == 0 {
                return Err(bad("FERROCOLL_SEGMENT_BYTES", &v, "must be at least 1"));
            }
            c.segment_bytes = n;
        }
        if let Some(v) = get("FERROCOLL_TIMEOUT") {
            let what = "must be a positive number of seconds";
            c.timeout = seconds("FERROCOLL_TIMEOUT", &v, false, what)?;
        }
        if let Some(v) = get("FERROCOLL_HEARTBEAT_TIMEOUT") {
            let what = "must be 0 (off) or a positive number of seconds";
            c.heartbeat_timeout = seconds("FERROCOLL_HEARTBEAT_TIMEOUT", &v, true, what)?;
        }
        if let Some(v) = get("FERROCOLL_SPIN_US") {
            let us: u64 = v
                .trim()
                .parse()
                .map_err(|_| bad("FERROCOLL_SPIN_US", &v, "not a number of microseconds"))?;
            c.spin = Duration::from_micros(us);
        }
        if let Some(v) = get("FERROCOLL_YIELD_WHEN_IDLE") {
            c.yield_when_idle = match v.trim() {
                "" | "auto" => None,
                "1" | "true" | "yes" => Some(true),
                "0" | "false" | "no" => Some(false),
                _ => {
                    return Err(bad(
                        "FERROCOLL_YIELD_WHEN_IDLE",
                        &v,
                        "expected auto, 0 or 1",
                    ))
                }
            };
        }
        if let Some(v) = get("FERROCOLL_SHM_DIRECT") {
            c.shm_direct = switch("FERROCOLL_SHM_DIRECT", &v, true)?;
        }
        if let Some(v) = get("FERROCOLL_DIRECT_MIN_BYTES") {
            c.direct_min_bytes = count("FERROCOLL_DIRECT_MIN_BYTES", &v, "bytes")?;
        }
        if let Some(v) = get("FERROCOLL_DEVICE") {
            c.device = match v.trim().to_ascii_lowercase().as_str() {
                "" | "cpu" => Device::Cpu,
                "cuda" => Device::Cuda,
                "npu" => Device::Npu,
                _ => return Err(bad("FERROCOLL_DEVICE", &v, "expected cpu, cuda or npu")),
            };
        }
        if let Some(v) = get("FERROCOLL_TLS") {
            c.tls = switch("FERROCOLL_TLS", &v, false)?;
            if c.tls && !ferrocoll_transports::tcp::tls::AVAILABLE {
                return Err(bad(
                    "FERROCOLL_TLS",
                    &v,
                    "this build has no TLS: build ferrocoll with the `tls` feature",
                ));
            }
        }
        if let Some(v) = get("FERROCOLL_SINGLE_COPY_REDUCTIONS") {
            c.single_copy_reductions = switch("FERROCOLL_SINGLE_COPY_REDUCTIONS", &v, false)?;
        }
        if let Some(v) = get("FERROCOLL_STREAMING_MIN_BYTES") {
            c.streaming_min_bytes = count("FERROCOLL_STREAMING_MIN_BYTES", &v, "bytes")?;
        }
        if let Some(v) = get("FERROCOLL_TRANSPORT") {
            c.transport =
                TransportChoice::parse(&v).map_err(|why| bad("FERROCOLL_TRANSPORT", &v, &why))?;
        }
        if let Some(v) = get("FERROCOLL_RING_ORDER") {
            c.ring_order = match v.trim() {
                "" | "topology" => RingOrder::Topology,
                "rank" => RingOrder::Rank,
                _ => return Err(bad("FERROCOLL_RING_ORDER", &v, "expected rank or topology")),
            };
        }
        c.topo_file = get("FERROCOLL_TOPO_FILE")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        c.topo_dump_file = get("FERROCOLL_TOPO_DUMP_FILE")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        c.hostname = get("FERROCOLL_HOSTNAME").filter(|s| !s.is_empty());
        c.socket_ifname = get("FERROCOLL_SOCKET_IFNAME").filter(|s| !s.is_empty());
        c.secret = secret(&get)?;
        if let Some(v) = get("FERROCOLL_SHM_RING_BYTES") {
            let n = count("FERROCOLL_SHM_RING_BYTES", &v, "bytes")?;
            if n < 4096 {
                return Err(bad("FERROCOLL_SHM_RING_BYTES", &v, "must be at least 4096"));
            }
            c.shm_ring_bytes = n;
        }
        if let Some(v) = get("FERROCOLL_DEBUG") {
            c.log_level = match v.trim().to_ascii_uppercase().as_str() {
                "" | "WARN" => tracing::Level::WARN,
                "INFO" => tracing::Level::INFO,
                "DEBUG" => tracing::Level::DEBUG,
                "TRACE" => tracing::Level::TRACE,
                _ => {
                    return Err(bad(
                        "FERROCOLL_DEBUG",
                        &v,
                        "expected WARN, INFO, DEBUG or TRACE",
                    ))
                }
            };
        }
        c.compression = CompressionSetting::from_vars(&get)?;
        c.fr_dir = get("FERROCOLL_FR_DIR")
            .filter(|s| !s.trim().is_empty())
            .map(PathBuf::from);
        if let Some(v) = get("FERROCOLL_FR_ENTRIES") {
            let n = count("FERROCOLL_FR_ENTRIES", &v, "entries")?;
            if n > FR_ENTRIES_MAX {
                return Err(bad(
                    "FERROCOLL_FR_ENTRIES",
                    &v,
                    format!("at most {FR_ENTRIES_MAX}"),
                ));
            }
            c.fr_entries = n;
        }
        Ok(c)
    }

    /// Sets the algorithm choice from its `FERROCOLL_ALGO` spelling: one name (or `auto`) for
    /// every collective, or `collective:name` pairs separated by `;` or `,`
    /// (`all_reduce:ring;all_gather:direct`), like `NCCL_ALGO`.
    pub fn with_algo(mut self, spec: &str) -> Result<Config> {
        let spec = spec.trim();
        let check = |name: &str| -> Result<()> {
            if name == "auto" || crate::algo::by_name(name).is_some() {
                return Ok(());
            }
            let known: Vec<&str> = crate::algo::ALGORITHMS.iter().map(|a| a.name()).collect();
            Err(bad(
                "FERROCOLL_ALGO",
                spec,
                format!(
                    "unknown algorithm {name:?} (known: auto, {})",
                    known.join(", ")
                ),
            ))
        };
        self.algo = AlgoChoice::Auto;
        self.algo_per_collective.clear();
        if !spec.contains(':') {
            check(spec)?;
            if !spec.is_empty() && spec != "auto" {
                self.algo = AlgoChoice::Forced(spec.to_string());
            }
            return Ok(self);
        }
        for part in spec
            .split([';', ','])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let Some((coll, name)) = part.split_once(':') else {
                return Err(bad(
                    "FERROCOLL_ALGO",
                    spec,
                    format!("{part:?} is not collective:algorithm"),
                ));
            };
            let (coll, name) = (coll.trim(), name.trim());
            let kind = Collective::COLLECTIVES
                .into_iter()
                .chain(Collective::UNEVEN)
                .find(|k| k.name() == coll)
                .ok_or_else(|| {
                    bad(
                        "FERROCOLL_ALGO",
                        spec,
                        format!("unknown collective {coll:?}"),
                    )
                })?;
            check(name)?;
            self.algo_per_collective.retain(|(k, _)| *k != kind);
            if name != "auto" {
                self.algo_per_collective.push((kind, name.to_string()));
            }
        }
        Ok(self)
    }

    /// The algorithm forced for `kind`, if any (per-collective entry first).
    pub fn forced_algo(&self, kind: Collective) -> Option<&str> {
        if let Some((_, n)) = self.algo_per_collective.iter().find(|(k, _)| *k == kind) {
            return Some(n);
        }
        match &self.algo {
            AlgoChoice::Forced(n) => Some(n),
            AlgoChoice::Auto => None,
        }
    }

    /// Sets the ring order.
    pub fn with_ring_order(mut self, order: RingOrder) -> Config {
        self.ring_order = order;
        self
    }

    /// Sets the segment size in bytes (at least 1).
    pub fn with_segment_bytes(mut self, bytes: usize) -> Config {
        self.segment_bytes = bytes.max(1);
        self
    }

    /// Sets the no-progress timeout.
    pub fn with_timeout(mut self, t: Duration) -> Config {
        self.timeout = t;
        self
    }
}

#[cfg(test)]
mod tests;
