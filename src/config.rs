//! Typed configuration, read once from `FERROCOLL_*` variables or set with a builder.
//! No other module reads the environment.

use std::time::Duration;

use crate::error::{Error, Result};

/// How the algorithm of each call is chosen.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AlgoChoice {
    /// A size rule picks per call (the cost model of issue 7 will replace it).
    #[default]
    Auto,
    /// Always this algorithm; a collective it does not implement is an error.
    Forced(String),
}

/// Which transport carries traffic between ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// Shared memory between ranks of one host, TCP between hosts.
    #[default]
    Auto,
    /// Shared memory only (every rank on one host).
    Shm,
    /// TCP only, even on one host (how the TCP path is benchmarked).
    Tcp,
}

/// Settings of a communicator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Algorithm choice (`FERROCOLL_ALGO=ring|tree|halving_doubling|direct|auto`).
    pub algo: AlgoChoice,
    /// Largest message segment in bytes (`FERROCOLL_SEGMENT_BYTES`, default 512 KiB). Small
    /// values make tiny tests reach the multi-segment paths.
    pub segment_bytes: usize,
    /// Longest time a call may go without progress before it fails
    /// (`FERROCOLL_TIMEOUT`, seconds, default 300).
    pub timeout: Duration,
    /// How long an idle rank spins before it sleeps (`FERROCOLL_SPIN_US`, default 50 µs).
    pub spin: Duration,
    /// Transport choice (`FERROCOLL_TRANSPORT=auto|shm|tcp`).
    pub transport: TransportChoice,
    /// Host identity override (`FERROCOLL_HOSTNAME`): ranks with equal identity share memory.
    pub hostname: Option<String>,
    /// Interface whose IPv4 address ranks listen on (`FERROCOLL_SOCKET_IFNAME`).
    pub socket_ifname: Option<String>,
    /// Shared secret the store demands of clients (`FERROCOLL_SECRET`).
    pub secret: Option<String>,
    /// Bytes per shared-memory ring (`FERROCOLL_SHM_RING_BYTES`, default 4 MiB).
    pub shm_ring_bytes: usize,
    /// Whether an idle rank gives its core away (`sched_yield`) while it spins
    /// (`FERROCOLL_YIELD_WHEN_IDLE=auto|0|1`, like Open MPI's `mpi_yield_when_idle`). `None`
    /// (auto): yield when this host runs more ranks than this process may use cores, where a
    /// spinning rank would take the core from the peer it waits for.
    pub yield_when_idle: Option<bool>,
}

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
            segment_bytes: 512 << 10,
            timeout: Duration::from_secs(300),
            spin: Duration::from_micros(50),
            transport: TransportChoice::Auto,
            hostname: None,
            socket_ifname: None,
            secret: None,
            shm_ring_bytes: 4 << 20,
            yield_when_idle: None,
        }
    }
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

    /// Like [`Config::from_env`], with variables from `get` (tests, embedded use).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let mut c = Config::default();
        if let Some(v) = get("FERROCOLL_ALGO") {
            c = c.with_algo(&v)?;
        }
        if let Some(v) = get("FERROCOLL_SEGMENT_BYTES") {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| bad("FERROCOLL_SEGMENT_BYTES", &v, "not a byte count"))?;
            if n == 0 {
                return Err(bad("FERROCOLL_SEGMENT_BYTES", &v, "must be at least 1"));
            }
            c.segment_bytes = n;
        }
        if let Some(v) = get("FERROCOLL_TIMEOUT") {
            let s: f64 = v
                .trim()
                .parse()
                .map_err(|_| bad("FERROCOLL_TIMEOUT", &v, "not a number of seconds"))?;
            if !(s > 0.0 && s.is_finite()) {
                return Err(bad(
                    "FERROCOLL_TIMEOUT",
                    &v,
                    "must be a positive number of seconds",
                ));
            }
            c.timeout = Duration::from_secs_f64(s);
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
        if let Some(v) = get("FERROCOLL_TRANSPORT") {
            c.transport = match v.trim() {
                "" | "auto" => TransportChoice::Auto,
                "shm" => TransportChoice::Shm,
                "tcp" => TransportChoice::Tcp,
                _ => return Err(bad("FERROCOLL_TRANSPORT", &v, "expected auto, shm or tcp")),
            };
        }
        c.hostname = get("FERROCOLL_HOSTNAME").filter(|s| !s.is_empty());
        c.socket_ifname = get("FERROCOLL_SOCKET_IFNAME").filter(|s| !s.is_empty());
        c.secret = get("FERROCOLL_SECRET").filter(|s| !s.is_empty());
        if let Some(v) = get("FERROCOLL_SHM_RING_BYTES") {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| bad("FERROCOLL_SHM_RING_BYTES", &v, "not a byte count"))?;
            if n < 4096 {
                return Err(bad("FERROCOLL_SHM_RING_BYTES", &v, "must be at least 4096"));
            }
            c.shm_ring_bytes = n;
        }
        if let Some(v) = get("FERROCOLL_DEBUG") {
            if !matches!(
                v.trim().to_ascii_uppercase().as_str(),
                "" | "WARN" | "INFO" | "DEBUG" | "TRACE"
            ) {
                return Err(bad(
                    "FERROCOLL_DEBUG",
                    &v,
                    "expected WARN, INFO, DEBUG or TRACE",
                ));
            }
        }
        Ok(c)
    }

    /// Sets the algorithm choice from its `FERROCOLL_ALGO` spelling.
    pub fn with_algo(mut self, name: &str) -> Result<Config> {
        let name = name.trim();
        self.algo = if name.is_empty() || name == "auto" {
            AlgoChoice::Auto
        } else if crate::algo::by_name(name).is_some() {
            AlgoChoice::Forced(name.to_string())
        } else {
            let known: Vec<&str> = crate::algo::ALGORITHMS.iter().map(|a| a.name()).collect();
            return Err(bad(
                "FERROCOLL_ALGO",
                name,
                format!("unknown algorithm (known: auto, {})", known.join(", ")),
            ));
        };
        Ok(self)
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
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn reads_and_rejects() {
        let c = Config::from_vars(vars(&[
            ("FERROCOLL_ALGO", "ring"),
            ("FERROCOLL_TIMEOUT", "1.5"),
        ]))
        .unwrap();
        assert_eq!(c.algo, AlgoChoice::Forced("ring".into()));
        assert_eq!(c.timeout, Duration::from_millis(1500));
        let e = Config::from_vars(vars(&[("FERROCOLL_ALGO", "bogus")])).unwrap_err();
        assert!(e.to_string().contains("FERROCOLL_ALGO"), "{e}");
        assert!(Config::from_vars(vars(&[("FERROCOLL_TIMEOUT", "-1")])).is_err());
        assert!(Config::from_vars(vars(&[("FERROCOLL_SEGMENT_BYTES", "0")])).is_err());
        assert!(Config::from_vars(vars(&[("FERROCOLL_SEGMENT_BYTES", "x")])).is_err());
        assert!(Config::from_vars(vars(&[("FERROCOLL_TRANSPORT", "rdma")]))
            .unwrap_err()
            .to_string()
            .contains("FERROCOLL_TRANSPORT"));
        assert_eq!(
            Config::from_vars(vars(&[("FERROCOLL_TRANSPORT", "tcp")]))
                .unwrap()
                .transport,
            TransportChoice::Tcp
        );
        assert!(Config::from_vars(vars(&[("FERROCOLL_DEBUG", "LOUD")])).is_err());
    }
}
