//! The table in nccl-tests' columns, and the JSON document of a sweep.

use std::path::Path;

use serde::Serialize;

use crate::ranks::RankInfo;
use crate::Res;

/// One half of a row: out-of-place or in-place.
#[derive(Clone, Debug, Serialize)]
pub struct Half {
    /// Time per call, µs (ranks combined as `-a` says).
    pub time_us: f64,
    /// Algorithm bandwidth, GB/s (1e9 bytes): size / time.
    pub algbw_gbps: f64,
    /// Bus bandwidth, GB/s: algbw × the collective's factor.
    pub busbw_gbps: f64,
    /// Wrong elements over all ranks and check iterations (`None` without `-c`).
    pub wrong: Option<u64>,
    /// With `--compare`: the time of each round, µs (`time_us` is their median).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds_us: Vec<f64>,
    /// The registration cache's work during the timed calls, on this rank (RDMA transports
    /// only; absent when nothing was looked up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration: Option<RegCount>,
}

/// What an RDMA transport's registration cache did during a row's timed calls (after the
/// warm-up): new registrations there mean a loop on the same buffers kept registering.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct RegCount {
    /// Registrations made during the timed calls.
    pub new_registrations: u64,
    /// Lookups the cache served without registering.
    pub hits: u64,
    /// Timed calls.
    pub calls: u32,
}

impl RegCount {
    /// The difference of two readings of the counters around `calls` calls; `None` when the
    /// cache was not used.
    pub fn between(
        before: ferrocoll::transports::EndpointCounters,
        after: ferrocoll::transports::EndpointCounters,
        calls: u32,
    ) -> Option<RegCount> {
        let new_registrations = after.registrations.saturating_sub(before.registrations);
        let hits = after.reg_hits.saturating_sub(before.reg_hits);
        (new_registrations + hits > 0).then_some(RegCount {
            new_registrations,
            hits,
            calls,
        })
    }
}

/// One size of one (type, operator).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Bytes: the larger of the send and receive buffer of a rank.
    pub size: u64,
    /// Element count as NCCL's `count` argument.
    pub count: u64,
    /// nccl-tests' type name.
    #[serde(rename = "type")]
    pub dtype: String,
    /// Operator, `none` where the collective does not reduce.
    pub redop: String,
    /// Root, −1 where the collective has none.
    pub root: i64,
    /// Algorithm the library chose (or was told to use) for this size.
    pub algorithm: String,
    /// With `--compare`: the entry of the list this row measures (`auto` or a forced name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Out-of-place result.
    pub out_of_place: Option<Half>,
    /// In-place result (`None` for sendrecv, whose buffers cannot alias).
    pub in_place: Option<Half>,
}

/// The header block (after the probe's own first lines).
pub fn header() -> String {
    let mut s = String::from("#\n");
    s += &format!(
        "# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}           out-of-place                       in-place          \n",
        "", "", "", "", ""
    );
    s += &format!(
        "# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}",
        "size", "count", "type", "redop", "root"
    );
    s += &format!(
        "  {:>7}  {:>6}  {:>6}  {:>6}",
        "time", "algbw", "busbw", "#wrong"
    );
    s += &format!(
        "  {:>7}  {:>6}  {:>6}  {:>6}\n",
        "time", "algbw", "busbw", "#wrong"
    );
    s += &format!(
        "# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}",
        "(B)", "(elements)", "", "", ""
    );
    s += &format!(
        "  {:>7}  {:>6}  {:>6}  {:>5}",
        "(us)", "(GB/s)", "(GB/s)", ""
    );
    s += &format!(
        "  {:>7}  {:>6}  {:>6}  {:>5}",
        "(us)", "(GB/s)", "(GB/s)", ""
    );
    s
}

fn time_str(us: f64) -> String {
    if us >= 10000.0 {
        format!("{us:>7.0}")
    } else if us >= 100.0 {
        format!("{us:>7.1}")
    } else {
        format!("{us:>7.2}")
    }
}

fn half_str(h: Option<&Half>) -> String {
    match h {
        Some(h) => {
            let wrong = h.wrong.map_or_else(|| "N/A".to_string(), |w| w.to_string());
            format!(
                "  {}  {:>6.2}  {:>6.2}  {:>5}",
                time_str(h.time_us),
                h.algbw_gbps,
                h.busbw_gbps,
                wrong
            )
        }
        None => format!("  {:>7}  {:>6}  {:>6}  {:>5}", "N/A", "N/A", "N/A", "N/A"),
    }
}

/// One row as nccl-tests prints it.
pub fn row(r: &Row) -> String {
    format!(
        "{:>12}  {:>12}  {:>8}  {:>6}  {:>6}{}{}",
        r.size,
        r.count,
        r.dtype,
        r.redop,
        r.root,
        half_str(r.out_of_place.as_ref()),
        half_str(r.in_place.as_ref())
    )
}

/// The footer line on the registration cache, summed over every measured half of every
/// row: `None` when no transport registered memory.
pub fn registration_line(rows: &[Row]) -> Option<String> {
    let sum = rows
        .iter()
        .flat_map(|r| [&r.out_of_place, &r.in_place])
        .filter_map(|h| h.as_ref().and_then(|h| h.registration))
        .reduce(|a, b| RegCount {
            new_registrations: a.new_registrations + b.new_registrations,
            hits: a.hits + b.hits,
            calls: a.calls + b.calls,
        })?;
    Some(format!(
        "# {:<20} : {} new registrations, {} hits over {} timed calls (rank 0, after warm-up)",
        "Registration cache", sum.new_registrations, sum.hits, sum.calls
    ))
}

/// Total wrong elements of all rows.
pub fn wrong_total(rows: &[Row]) -> u64 {
    rows.iter()
        .flat_map(|r| [&r.out_of_place, &r.in_place])
        .filter_map(|h| h.as_ref().and_then(|h| h.wrong))
        .sum()
}

/// Average bus bandwidth over every measured half of every row, as nccl-tests.
pub fn avg_busbw(rows: &[Row]) -> f64 {
    let v: Vec<f64> = rows
        .iter()
        .flat_map(|r| [&r.out_of_place, &r.in_place])
        .filter_map(|h| h.as_ref().map(|h| h.busbw_gbps))
        .collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The footer: out-of-bounds count with OK/FAILED, and the average bus bandwidth.
pub fn footer(wrong: u64, avg: f64) -> String {
    format!(
        "# {:<20} : {} {}\n# {:<20} : {} \n#",
        "Out of bounds values",
        wrong,
        if wrong == 0 { "OK" } else { "FAILED" },
        "Avg bus bandwidth",
        fmt_g(avg)
    )
}

/// C's `%g`: six significant digits, trailing zeros dropped.
pub fn fmt_g(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let exp = x.abs().log10().floor() as i32;
    if !(-4..6).contains(&exp) {
        let s = format!("{x:.5e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = trim_zeros(m);
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let decimals = (5 - exp).max(0) as usize;
    trim_zeros(&format!("{x:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// The machine the lead rank runs on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// Operating system.
    pub os: &'static str,
    /// CPU architecture.
    pub arch: &'static str,
    /// Logical CPUs.
    pub cpus: usize,
}

impl Machine {
    /// This machine.
    pub fn here() -> Machine {
        Machine {
            hostname: crate::ranks::hostname(),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Parameters of the sweep, as run.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// Smallest size asked for.
    pub minbytes: u64,
    /// Largest size asked for.
    pub maxbytes: u64,
    /// Timed iterations.
    pub iters: u32,
    /// Warm-up iterations.
    pub warmup_iters: u32,
    /// Check iterations.
    pub check: u32,
    /// `-a` mode.
    pub average: u8,
    /// `--algo` / `FERROCOLL_ALGO` (`auto` when unset).
    pub algo: String,
}

/// The JSON document of a sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Doc<'a> {
    /// Tool that wrote it.
    pub tool: &'static str,
    /// ferrocoll's version.
    pub ferrocoll_version: &'static str,
    /// The collective.
    pub collective: &'static str,
    /// Number of ranks.
    pub world_size: usize,
    /// The machine of rank 0.
    pub machine: Machine,
    /// Every rank's pid and host.
    pub ranks: &'a [RankInfo],
    /// Transports in use.
    pub transports: Vec<String>,
    /// Bus bandwidth factor of the collective at this world size.
    pub busbw_factor: f64,
    /// Sweep parameters.
    pub params: Params,
    /// Every row.
    pub rows: &'a [Row],
    /// Wrong elements in total.
    pub out_of_bounds: u64,
    /// Whether every check passed.
    pub ok: bool,
    /// Average bus bandwidth, GB/s.
    pub avg_busbw_gbps: f64,
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Res<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n")
        .map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_format() {
        assert_eq!(fmt_g(12.345678), "12.3457");
        assert_eq!(fmt_g(0.0), "0");
        assert_eq!(fmt_g(0.5), "0.5");
        assert_eq!(fmt_g(1234567.0), "1.23457e+06");
        assert_eq!(fmt_g(0.00001234), "1.234e-05");
    }
}
