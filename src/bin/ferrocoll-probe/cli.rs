//! Command line: one subcommand per collective with nccl-tests' flags, plus `links`,
//! `simulate` and `doctor`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ferrocoll::{Collective, DataType, ReduceOp};

/// nccl-tests-style bandwidth probe for ferrocoll.
///
/// Without launcher variables it starts `--np` local ranks itself; under torchrun, mpirun or
/// srun it joins the job they started. Only rank 0 prints.
#[derive(Parser, Debug, Clone)]
#[command(name = "ferrocoll-probe", version)]
pub struct Cli {
    /// What to measure.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Cmd {
    /// All-reduce sweep (busbw = algbw × 2(n−1)/n).
    #[command(name = "all_reduce", alias = "all-reduce")]
    AllReduce(SweepArgs),
    /// All-gather sweep (busbw = algbw × (n−1)/n).
    #[command(name = "all_gather", alias = "all-gather")]
    AllGather(SweepArgs),
    /// Reduce-scatter sweep (busbw = algbw × (n−1)/n).
    #[command(name = "reduce_scatter", alias = "reduce-scatter")]
    ReduceScatter(SweepArgs),
    /// Broadcast sweep (busbw = algbw).
    #[command(name = "broadcast")]
    Broadcast(SweepArgs),
    /// Reduce sweep (busbw = algbw).
    #[command(name = "reduce")]
    Reduce(SweepArgs),
    /// All-to-all sweep (busbw = algbw × (n−1)/n).
    #[command(name = "all_to_all", alias = "all-to-all", alias = "alltoall")]
    AllToAll(SweepArgs),
    /// Send/recv sweep: every rank sends to rank+1 and receives from rank−1 (busbw = algbw).
    #[command(name = "sendrecv", alias = "send_recv")]
    SendRecv(SweepArgs),
    /// Barrier latency (one row, size 0).
    #[command(name = "barrier")]
    Barrier(SweepArgs),
    /// Point-to-point latency and bandwidth matrix between every ordered pair of ranks.
    #[command(name = "links")]
    Links(LinkArgs),
    /// Price every algorithm on a described cluster (--topo FILE) with the cost model and
    /// print the tuner's choice; starts no ranks.
    #[command(name = "simulate")]
    Simulate(crate::simulate::SimulateArgs),
    /// Read the flight recorder's dumps in DIR (FERROCOLL_FR_DIR) and name the ranks that are
    /// behind, stuck, or called a different collective; starts no ranks. Exit status 0:
    /// healthy, 1: a problem found, 2: nothing readable.
    #[command(name = "doctor")]
    Doctor(crate::doctor::DoctorArgs),
}

/// The options of subcommands that start no ranks.
static NO_RANKS: Common = Common {
    np: 1,
    algo: None,
    transport: None,
    in_process: false,
};

impl Cmd {
    /// The options every subcommand shares.
    pub fn common(&self) -> &Common {
        match self {
            Cmd::Links(a) => &a.common,
            Cmd::Simulate(a) => &a.common,
            Cmd::Doctor(_) => &NO_RANKS,
            Cmd::AllReduce(a)
            | Cmd::AllGather(a)
            | Cmd::ReduceScatter(a)
            | Cmd::Broadcast(a)
            | Cmd::Reduce(a)
            | Cmd::AllToAll(a)
            | Cmd::SendRecv(a)
            | Cmd::Barrier(a) => &a.common,
        }
    }

    /// The collective and options of a sweep subcommand.
    pub fn sweep(&self) -> Option<(Collective, &SweepArgs)> {
        Some(match self {
            Cmd::AllReduce(a) => (Collective::AllReduce, a),
            Cmd::AllGather(a) => (Collective::AllGather, a),
            Cmd::ReduceScatter(a) => (Collective::ReduceScatter, a),
            Cmd::Broadcast(a) => (Collective::Broadcast, a),
            Cmd::Reduce(a) => (Collective::Reduce, a),
            Cmd::AllToAll(a) => (Collective::AllToAll, a),
            Cmd::SendRecv(a) => (Collective::SendRecv, a),
            Cmd::Barrier(a) => (Collective::Barrier, a),
            Cmd::Links(_) | Cmd::Simulate(_) | Cmd::Doctor(_) => return None,
        })
    }
}

/// Where the ranks come from and how they communicate.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Local ranks to start when no launcher (torchrun, mpirun, srun) started this process.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub np: u32,
    /// Algorithm (as FERROCOLL_ALGO: ring, tree, halving_doubling, direct, auto).
    #[arg(long)]
    pub algo: Option<String>,
    /// Transports (as FERROCOLL_TRANSPORT: `auto`, or a preference list such as
    /// `shm,ofi,tcp`), passed to the ranks.
    #[arg(long)]
    pub transport: Option<String>,
    /// Run the ranks as threads of this process over the in-process `mem` transport instead
    /// of as processes (ignores --transport).
    #[arg(long)]
    pub in_process: bool,
}

/// nccl-tests' flags.
#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// Smallest size in bytes (K/M/G suffixes are powers of 1024).
    #[arg(short = 'b', long = "minbytes", default_value = "8", value_parser = parse_size)]
    pub minbytes: u64,
    /// Largest size in bytes.
    #[arg(short = 'e', long = "maxbytes", default_value = "64M", value_parser = parse_size)]
    pub maxbytes: u64,
    /// Multiply the size by this factor at each step (default 2, unless -i is given).
    #[arg(short = 'f', long = "stepfactor", value_parser = clap::value_parser!(u64).range(2..))]
    pub stepfactor: Option<u64>,
    /// Add this many bytes at each step (used when -f is not given).
    #[arg(short = 'i', long = "stepbytes", value_parser = parse_size)]
    pub stepbytes: Option<u64>,
    /// Timed iterations per size.
    #[arg(short = 'n', long = "iters", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Untimed warm-up iterations per size.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    pub warmup: u32,
    /// Check iterations per size (0: no check, `#wrong` prints N/A).
    #[arg(short = 'c', long = "check", default_value_t = 1)]
    pub check: u32,
    /// Reduction operator: sum, prod, min, max, avg or all.
    #[arg(short = 'o', long = "op", default_value = "sum", value_parser = parse_ops)]
    pub op: OpList,
    /// Data type: float, double, half, bfloat16, f8e4m3, f8e5m2, int8, uint8, int32, uint32,
    /// int64, uint64 or all.
    #[arg(short = 'd', long = "datatype", default_value = "float", value_parser = parse_types)]
    pub datatype: TypeList,
    /// Root of broadcast and reduce.
    #[arg(short = 'r', long = "root", default_value_t = 0)]
    pub root: usize,
    /// How the per-rank times are combined: 0 rank 0, 1 average (the default, as in
    /// nccl-tests), 2 minimum, 3 maximum (the collective's time: what Open MPI's and Gloo's
    /// drivers report, so `benches/compare.py` passes `-a 3`).
    #[arg(short = 'a', long = "average", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=3))]
    pub average: u8,
    /// Also write every row (and the machine, world size, transports, algorithm per size,
    /// version) as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw bus bandwidth and latency against size to this file (.png or .svg).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// all_reduce only: compress with this codec (none, fp16, bf16, fp8, fp8e5m2, topk:F,
    /// onebit, powersgd:R, or auto: chosen from the slowest link of the communicator's
    /// topology, as FERROCOLL_COMPRESSION=auto); bandwidths count uncompressed bytes and the
    /// max relative error against the exact sum replaces #wrong.
    #[arg(long, value_parser = parse_codec)]
    pub compression: Option<ferrocoll::compress::CompressionSetting>,
    /// Measure several algorithms side by side (e.g. `auto,ring,tree`): each runs through its
    /// own communicator on the same ranks, and every size is timed in `--rounds` rounds that
    /// visit every algorithm in turn (order rotated each round), so they share the machine's
    /// slow and fast spells; each row reports the median round and names its algorithm.
    #[arg(long, value_delimiter = ',', num_args = 1.., conflicts_with_all = ["compression", "plot"])]
    pub compare: Vec<String>,
    /// Rounds per size with `--compare` (each: the warm-up, then `-n` timed calls).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), requires = "compare")]
    pub rounds: u32,
    /// Where the buffers live: `cpu` (host memory, the default), `cuda` (NCCL within a host,
    /// ferrocoll between hosts) or `npu` (HCCL within a host); all_reduce, all_gather and
    /// reduce_scatter of f32 sums. The header names the library and its version.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda", "npu"], conflicts_with_all = ["compression", "compare"])]
    pub device: String,
    /// Where the ranks come from.
    #[command(flatten)]
    pub common: Common,
}

/// Parses `--compression`: a codec or `auto` (resolved per communicator, from its topology).
pub fn parse_codec(s: &str) -> Result<ferrocoll::compress::CompressionSetting, String> {
    s.parse().map_err(|e: ferrocoll::Error| e.to_string())
}

/// Options of `links`.
#[derive(Args, Debug, Clone)]
pub struct LinkArgs {
    /// Message size of the latency test.
    #[arg(long, default_value = "8", value_parser = parse_size)]
    pub lat_bytes: u64,
    /// Message size of the bandwidth test.
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pub bw_bytes: u64,
    /// Message size of the loaded test (every host's ranks in a ring exchange at once; each
    /// host's total is saved as its `intra_total_gbit_s`); default `--bw-bytes`, 0 skips it.
    #[arg(long, value_parser = parse_size)]
    pub loaded_bytes: Option<u64>,
    /// Timed iterations per link and test.
    #[arg(short = 'n', long = "iters", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Untimed warm-up iterations per link and test.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 2)]
    pub warmup: u32,
    /// Mark links slower than the median by more than this many percent (0 to under 100).
    #[arg(long, default_value_t = 25.0, value_parser = parse_percent)]
    pub outlier: f64,
    /// Nominal link speed (e.g. 1gbit, 100Gbit, 25GB/s); each link is shown as a % of it.
    #[arg(long, value_parser = parse_rate)]
    pub link_spec: Option<Rate>,
    /// Write the measured topology as JSON (for FERROCOLL_TOPO_FILE).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Where the ranks come from.
    #[command(flatten)]
    pub common: Common,
}

/// Operators to sweep.
#[derive(Debug, Clone)]
pub struct OpList(pub Vec<ReduceOp>);

/// Data types to sweep.
#[derive(Debug, Clone)]
pub struct TypeList(pub Vec<DataType>);

/// A link speed in bytes per second, with the spelling the user gave.
#[derive(Debug, Clone)]
pub struct Rate {
    /// Bytes per second.
    pub bytes_per_s: f64,
    /// As given.
    pub text: String,
}

/// nccl-tests' name of a data type.
pub fn type_name(d: DataType) -> &'static str {
    match d {
        DataType::I8 => "int8",
        DataType::U8 => "uint8",
        DataType::I32 => "int32",
        DataType::U32 => "uint32",
        DataType::I64 => "int64",
        DataType::U64 => "uint64",
        DataType::F16 => "half",
        DataType::F32 => "float",
        DataType::F64 => "double",
        DataType::BF16 => "bfloat16",
        DataType::F8E4M3 => "f8e4m3",
        DataType::F8E5M2 => "f8e5m2",
    }
}

/// Parses a byte count with an optional K/M/G suffix (powers of 1024; `B`/`iB` accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1u64 << 10),
        Some('m') => (&body[..body.len() - 1], 1 << 20),
        Some('g') => (&body[..body.len() - 1], 1 << 30),
        Some('t') => (&body[..body.len() - 1], 1 << 40),
        _ => (body, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 8, 512K, 64M, 1G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a percentage in [0, 100).
fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage in [0, 100)")),
    }
}

fn parse_ops(s: &str) -> Result<OpList, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "all" {
        return Ok(OpList(ReduceOp::ALL.to_vec()));
    }
    ReduceOp::ALL
        .into_iter()
        .find(|o| o.name() == t)
        .map(|o| OpList(vec![o]))
        .ok_or_else(|| format!("unknown operator {s:?} (sum, prod, min, max, avg, all)"))
}

fn parse_types(s: &str) -> Result<TypeList, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "all" {
        return Ok(TypeList(DataType::ALL.to_vec()));
    }
    let aliases: &[(&str, DataType)] = &[
        ("char", DataType::I8),
        ("int", DataType::I32),
        ("float16", DataType::F16),
        ("fp16", DataType::F16),
        ("float32", DataType::F32),
        ("float64", DataType::F64),
        ("bf16", DataType::BF16),
        ("fp8_e4m3", DataType::F8E4M3),
        ("fp8_e5m2", DataType::F8E5M2),
    ];
    DataType::ALL
        .into_iter()
        .find(|d| type_name(*d) == t || d.name() == t)
        .or_else(|| aliases.iter().find(|(a, _)| *a == t).map(|(_, d)| *d))
        .map(|d| TypeList(vec![d]))
        .ok_or_else(|| {
            format!(
                "unknown data type {s:?} (float, double, half, bfloat16, f8e4m3, f8e5m2, int8, \
                 uint8, int32, uint32, int64, uint64, all)"
            )
        })
}

/// Parses a link speed: `1gbit`, `100Gbit/s`, `400gbps` (bits), `25GB/s`, `12.5gbyte` (bytes);
/// a bare number is GB/s. Decimal prefixes (k, m, g, t = 10^3 …).
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let lower = s.trim().to_ascii_lowercase().replace(' ', "");
    let body = lower.strip_suffix("/s").unwrap_or(&lower);
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, unit) = body.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a link speed (examples: 1gbit, 100Gbit, 25GB/s)"))?;
    let (prefix, rest) = match unit.chars().next() {
        Some('k') => (1e3, &unit[1..]),
        Some('m') => (1e6, &unit[1..]),
        Some('g') => (1e9, &unit[1..]),
        Some('t') => (1e12, &unit[1..]),
        _ if unit.is_empty() => (1e9, ""),
        _ => (1.0, unit),
    };
    let per_unit = match rest {
        "bit" | "bits" | "bps" | "bit/s" => prefix / 8.0,
        "" | "b" | "byte" | "bytes" => prefix,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use bit, bps, B or byte, e.g. 1gbit or 25GB/s)"
            ))
        }
    };
    let bytes_per_s = v * per_unit;
    if !(bytes_per_s > 0.0 && bytes_per_s.is_finite()) {
        return Err(format!("{s:?}: a link speed must be positive"));
    }
    Ok(Rate {
        bytes_per_s,
        text: s.trim().to_string(),
    })
}

impl SweepArgs {
    /// The sizes of the sweep, in bytes.
    pub fn sizes(&self, kind: Collective) -> Result<Vec<u64>, String> {
        if kind == Collective::Barrier {
            return Ok(vec![0]);
        }
        if self.minbytes > self.maxbytes {
            return Err(format!(
                "minbytes ({}) is larger than maxbytes ({})",
                self.minbytes, self.maxbytes
            ));
        }
        let mut out = Vec::new();
        let mut size = self.minbytes;
        loop {
            out.push(size);
            let next = match (self.stepfactor, self.stepbytes) {
                (None, Some(step)) if step > 0 => size.checked_add(step),
                (None, Some(_)) => return Err("stepbytes must be at least 1".into()),
                (f, _) => size.max(1).checked_mul(f.unwrap_or(2)),
            };
            match next {
                Some(n) if n <= self.maxbytes && n > size => size = n,
                _ => break,
            }
            if out.len() > 100_000 {
                return Err("too many sizes in the sweep (raise -i or -f)".into());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("8"), Ok(8));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999G").is_err());
        let r = parse_rate("1gbit").unwrap();
        assert!((r.bytes_per_s - 125e6).abs() < 1.0);
        assert!((parse_rate("25GB/s").unwrap().bytes_per_s - 25e9).abs() < 1.0);
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_percent("25"), Ok(25.0));
        assert_eq!(parse_percent("12.5%"), Ok(12.5));
        for bad in ["-1", "100", "NaN", "inf", "x", ""] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }
}
