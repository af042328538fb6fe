//! `links`: one-way latency and bandwidth of every ordered pair of ranks over send/recv, one
//! pair at a time while the other ranks wait, printed as matrices with the outliers marked;
//! then, inside every host at once, a ring exchange among its ranks (`--loaded-bytes`):
//! what a host moves in all when every rank sends, as a collective makes them, saved as the
//! host's `intra_total_gbit_s`. A pair alone, the other ranks idle, varies between runs far
//! more than the collectives' times do (run `ferrocoll-probe links --np 4` a few times on
//! an oversubscribed host); the cost model caps a host's shared-memory traffic at the loaded
//! figure.

use std::time::Instant;

use ferrocoll::topology::json::TopologyDoc;
use ferrocoll::topology::{Host, LinkSpec};
use ferrocoll::Communicator;
use serde::Serialize;

use crate::cli::LinkArgs;
use crate::ranks::{self, RankInfo};
use crate::report::{fmt_g, write_json, Machine};
use crate::Res;

/// One measured directed link.
#[derive(Clone, Debug, Serialize)]
pub struct Link {
    /// Sending rank.
    pub src: usize,
    /// Receiving rank.
    pub dst: usize,
    /// The transport that carries it (`shm`, `tcp`, `ofi`, …).
    pub transport: &'static str,
    /// One-way latency of a `lat_bytes` message, µs (half the ping-pong round trip).
    pub latency_us: f64,
    /// Bandwidth of `bw_bytes` messages, GB/s (1e9 bytes per second).
    pub bandwidth_gbps: f64,
    /// Latency in seconds (the α of an α–β cost model).
    pub alpha_s: f64,
    /// Seconds per byte (the β of an α–β cost model).
    pub beta_s_per_byte: f64,
    /// Whether this link is slower than the median by more than `--outlier` percent.
    pub outlier: bool,
    /// Bandwidth as a percentage of `--link-spec`, when given.
    pub percent_of_spec: Option<f64>,
}

/// The medians of the measured links: (latency s, bandwidth B/s) over `pairs`.
fn medians(pairs: &[(usize, usize)], n: usize, lat: &[f64], bw: &[f64]) -> Option<LinkSpec> {
    if pairs.is_empty() {
        return None;
    }
    Some(LinkSpec {
        alpha: median(pairs.iter().map(|&(s, d)| lat[s * n + d]).collect()),
        bandwidth: median(pairs.iter().map(|&(s, d)| bw[s * n + d]).collect()),
    })
}

/// The measured topology: the communicator's hosts, the median link inside hosts and
/// between them, and every host pair's median as a host link. Nothing measured on one side
/// (one host, or one rank per host) keeps the library's default there.
fn measured_topology(
    comm: &Communicator,
    n: usize,
    lat: &[f64],
    bw: &[f64],
    loaded: &[Option<f64>],
) -> Res<ferrocoll::Topology> {
    let known = comm.topology();
    let host = |r: usize| known.host_of(r);
    let all: Vec<(usize, usize)> = (0..n)
        .flat_map(|s| (0..n).filter(move |&d| d != s).map(move |d| (s, d)))
        .collect();
    let (intra, inter): (Vec<_>, Vec<_>) = all.iter().partition(|&&(s, d)| host(s) == host(d));
    let intra_l = medians(&intra, n, lat, bw).unwrap_or(known.intra);
    let inter_l = medians(&inter, n, lat, bw).unwrap_or(known.inter);
    let mut hosts: Vec<Host> = known.hosts().to_vec();
    for (h, c) in hosts.iter_mut().zip(loaded) {
        h.intra_total = *c;
    }
    let h = hosts.len();
    let mut host_links = Vec::new();
    for a in 0..h {
        for b in a + 1..h {
            let between: Vec<(usize, usize)> = inter
                .iter()
                .copied()
                .filter(|&(s, d)| (host(s), host(d)) == (a, b) || (host(s), host(d)) == (b, a))
                .collect();
            if let Some(l) = medians(&between, n, lat, bw) {
                host_links.push((a, b, l));
            }
        }
    }
    let mut t = ferrocoll::Topology::new(hosts, intra_l, inter_l, None, host_links)?;
    t.source = Some(format!(
        "measured by ferrocoll-probe {} links",
        env!("CARGO_PKG_VERSION")
    ));
    Ok(t)
}

/// The topology document of `--save`.
#[derive(Clone, Debug, Serialize)]
pub struct Topology<'a> {
    /// Format tag.
    pub format: &'static str,
    /// Format version.
    pub version: u32,
    /// ferrocoll's version.
    pub ferrocoll_version: &'static str,
    /// Number of ranks.
    pub world_size: usize,
    /// The machine of rank 0.
    pub machine: Machine,
    /// Every rank's pid and host.
    pub ranks: &'a [RankInfo],
    /// Transports in use.
    pub transports: Vec<String>,
    /// Message size of the latency test.
    pub latency_bytes: u64,
    /// Message size of the bandwidth test.
    pub bandwidth_bytes: u64,
    /// Median bandwidth over all links, GB/s.
    pub median_bandwidth_gbps: f64,
    /// Median latency over all links, µs.
    pub median_latency_us: f64,
    /// `--link-spec` in GB/s, when given.
    pub link_spec_gbps: Option<f64>,
    /// Every directed link.
    pub links: &'a [Link],
}

/// When each rank started and finished `iters` steps of a ring exchange among its host's
/// ranks (each sends `bytes` to the next local rank and receives from the previous one,
/// every host at once, after a barrier and one untimed step), as wall-clock seconds at `[2 r]` and
/// `[2 r + 1]`; rank 0 gets them all (zeros for ranks alone on their host). Wall-clock,
/// because ranks sharing cores need not run at the same time: a host's rate is its bytes
/// over the span from its first start to its last finish, which only the host's clock sees.
fn loaded_times(comm: &Communicator, bytes: usize, iters: u32) -> Res<Vec<f64>> {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let me = comm.rank();
    let topo = comm.topology();
    let local = &topo.hosts()[topo.host_of(me)].ranks;
    let k = local.len();
    let i = local.iter().position(|&r| r == me).unwrap_or(0);
    let (next, prev) = (local[(i + 1) % k], local[(i + k - 1) % k]);
    let out = vec![0x5au8; bytes];
    let mut inn = vec![0u8; bytes];
    // Even positions send first, odd ones receive first: blocking sends of large messages
    // wait for their receiver, and a ring of senders would wait for ever (an odd ring
    // serialises one step, it does not deadlock). Every rank is busy in every step.
    let mut step = || -> Res<()> {
        if i % 2 == 0 {
            comm.send(&out, next)?;
            comm.recv(&mut inn, prev)?;
        } else {
            comm.recv(&mut inn, prev)?;
            comm.send(&out, next)?;
        }
        Ok(())
    };
    let mut t = vec![0f64; 2 * comm.world_size()];
    if k > 1 {
        step()?;
    }
    ranks::barrier(comm)?;
    if k > 1 {
        let start = now();
        for _ in 0..iters {
            step()?;
        }
        t[2 * me] = start;
        t[2 * me + 1] = now();
    }
    ranks::reduce_f64(comm, &mut t, |a, b| a + b)?;
    Ok(t)
}

/// Each host's loaded rate, bytes per second: what its ranks sent (`each` bytes apiece)
/// over the span from the first one's start to the last one's finish; `None` where
/// nothing was measured (one rank on the host, or the test skipped).
fn host_loaded(comm: &Communicator, times: &[f64], each: f64) -> Vec<Option<f64>> {
    comm.topology()
        .hosts()
        .iter()
        .map(|h| {
            let at = |r: usize, i: usize| times.get(2 * r + i).copied();
            let first = h
                .ranks
                .iter()
                .filter_map(|&r| at(r, 0))
                .fold(f64::INFINITY, f64::min);
            let last = h.ranks.iter().filter_map(|&r| at(r, 1)).fold(0.0, f64::max);
            let span = last - first;
            let many = h.ranks.len() > 1;
            (many && span > 0.0 && span.is_finite()).then(|| each * h.ranks.len() as f64 / span)
        })
        .collect()
}

/// The median of the links' bandwidths and, per link, whether it is slower than that median
/// by more than `percent` percent.
fn outliers(bw: &[f64], percent: f64) -> (f64, Vec<bool>) {
    let med = median(bw.to_vec());
    let floor = med * (1.0 - percent / 100.0);
    (med, bw.iter().map(|&b| b < floor).collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Times every ordered pair in turn (the others wait at a barrier): ping-pong latency of
/// `lat_bytes` and streaming bandwidth of `bw_bytes`. Returns this rank's entries of
/// `lat[src * n + dst]` and `bw[src * n + dst]` (the sender's), zero elsewhere.
fn measure_pairs(
    comm: &Communicator,
    a: &LinkArgs,
    lat_bytes: usize,
    bw_bytes: usize,
) -> Res<(Vec<f64>, Vec<f64>)> {
    let (n, me) = (comm.world_size(), comm.rank());
    let mut small = vec![0u8; lat_bytes];
    let mut big = vec![0x33u8; bw_bytes];
    let mut ack = [0u8; 1];
    // lat[src * n + dst], bw[src * n + dst]: filled by the sender, summed over ranks.
    let mut lat = vec![0f64; n * n];
    let mut bw = vec![0f64; n * n];
    for src in 0..n {
        for dst in (0..n).filter(|&d| d != src) {
            ranks::barrier(comm)?;
            if me == src {
                for _ in 0..a.warmup {
                    comm.send(&small, dst)?;
                    comm.recv(&mut small, dst)?;
                }
                let t0 = Instant::now();
                for _ in 0..a.iters {
                    comm.send(&small, dst)?;
                    comm.recv(&mut small, dst)?;
                }
                lat[src * n + dst] = t0.elapsed().as_secs_f64() / f64::from(a.iters) / 2.0;
                for _ in 0..a.warmup {
                    comm.send(&big, dst)?;
                }
                comm.recv(&mut ack, dst)?;
                let t0 = Instant::now();
                for _ in 0..a.iters {
                    comm.send(&big, dst)?;
                }
                comm.recv(&mut ack, dst)?;
                let secs = t0.elapsed().as_secs_f64();
                bw[src * n + dst] = (bw_bytes as f64 * f64::from(a.iters)) / secs.max(1e-12);
            } else if me == dst {
                for _ in 0..a.warmup + a.iters {
                    comm.recv(&mut small, src)?;
                    comm.send(&small, src)?;
                }
                for _ in 0..a.warmup {
                    comm.recv(&mut big, src)?;
                }
                comm.send(&ack, src)?;
                for _ in 0..a.iters {
                    comm.recv(&mut big, src)?;
                }
                comm.send(&ack, src)?;
            }
        }
    }
    Ok((lat, bw))
}

/// Prints the latency and bandwidth matrices, the medians, the loaded intra-host rates and
/// the outliers. `sizes` are the latency, bandwidth and loaded-exchange message sizes,
/// `medians` the median bandwidth (bytes/s) and latency (s).
fn print_report(
    comm: &Communicator,
    a: &LinkArgs,
    links: &[Link],
    loaded: &[Option<f64>],
    sizes: (usize, usize, usize),
    medians: (f64, f64),
) {
    let n = comm.world_size();
    let (lat_bytes, bw_bytes, loaded_bytes) = sizes;
    let (med_bw, med_lat) = medians;
    println!(
        "# ferrocoll-probe {} links: {n} ranks, transports {}, latency {} B, bandwidth {} B, \
         {} iters",
        env!("CARGO_PKG_VERSION"),
        crate::pair_summary(&comm.transport_matrix()),
        lat_bytes,
        bw_bytes,
        a.iters
    );
    println!("#");
    print_matrix(
        "Transport, row = sender, column = receiver",
        n,
        links,
        |l| l.transport.to_string(),
    );
    print_matrix(
        "One-way latency (us), row = sender, column = receiver",
        n,
        links,
        |l| format!("{:.2}", l.latency_us),
    );
    print_matrix(
        "Bandwidth (GB/s), row = sender, column = receiver; * = outlier",
        n,
        links,
        |l| {
            format!(
                "{:.2}{}",
                l.bandwidth_gbps,
                if l.outlier { "*" } else { "" }
            )
        },
    );
    if let Some(r) = &a.link_spec {
        print_matrix(
            &format!(
                "Bandwidth as % of link spec {} ({} GB/s)",
                r.text,
                fmt_g(r.bytes_per_s / 1e9)
            ),
            n,
            links,
            |l| format!("{:.1}%", l.percent_of_spec.unwrap_or(0.0)),
        );
    }
    println!(
        "# Median bandwidth : {} GB/s   Median latency : {} us",
        fmt_g(med_bw / 1e9),
        fmt_g(med_lat * 1e6)
    );
    if loaded.iter().any(Option::is_some) {
        let topo = comm.topology();
        let hosts = topo.hosts();
        let each: Vec<String> = hosts
            .iter()
            .zip(loaded)
            .filter_map(|(h, c)| c.map(|c| format!("{} {}", h.name, fmt_g(c / 1e9))))
            .collect();
        println!(
            "# Inside hosts, every rank sending at once ({loaded_bytes} B ring exchange) : {} GB/s in all",
            each.join(", ")
        );
    }
    let outliers: Vec<&Link> = links.iter().filter(|l| l.outlier).collect();
    if outliers.is_empty() {
        println!("# Outliers (> {}% below median) : none", a.outlier);
    } else {
        println!(
            "# Outliers (> {}% below median) : {}",
            a.outlier,
            outliers.len()
        );
        for l in outliers {
            println!(
                "#   {} -> {} : {:.2} GB/s ({:.0}% of median)",
                l.src,
                l.dst,
                l.bandwidth_gbps,
                100.0 * l.bandwidth_gbps * 1e9 / med_bw
            );
        }
    }
}

/// Measures every ordered pair; rank 0 prints. Outliers are reported, not failures.
pub fn run(comm: &Communicator, a: &LinkArgs) -> Res<bool> {
    let (n, me) = (comm.world_size(), comm.rank());
    if n < 2 {
        return Err("links needs at least 2 ranks (--np 2 or more)".into());
    }
    let infos = ranks::gather(comm)?;
    let lat_bytes = usize::try_from(a.lat_bytes.max(1))?;
    let bw_bytes = usize::try_from(a.bw_bytes.max(1))?;
    let (mut lat, mut bw) = measure_pairs(comm, a, lat_bytes, bw_bytes)?;
    ranks::reduce_f64(comm, &mut lat, |a, b| a + b)?;
    ranks::reduce_f64(comm, &mut bw, |a, b| a + b)?;
    let loaded_bytes = usize::try_from(a.loaded_bytes.unwrap_or(a.bw_bytes))?;
    let loaded_s = if loaded_bytes > 0 {
        loaded_times(comm, loaded_bytes, a.iters)?
    } else {
        Vec::new()
    };
    if me != 0 {
        return Ok(true);
    }
    let loaded = host_loaded(comm, &loaded_s, loaded_bytes as f64 * f64::from(a.iters));

    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|s| (0..n).filter(move |&d| d != s).map(move |d| (s, d)))
        .collect();
    let pair_bw: Vec<f64> = pairs.iter().map(|&(s, d)| bw[s * n + d]).collect();
    let (med_bw, slow_links) = outliers(&pair_bw, a.outlier);
    let med_lat = median(pairs.iter().map(|&(s, d)| lat[s * n + d]).collect());
    let spec = a.link_spec.as_ref().map(|r| r.bytes_per_s);
    let matrix = comm.transport_matrix();
    let links: Vec<Link> = pairs
        .iter()
        .zip(slow_links)
        .map(|(&(s, d), outlier)| {
            let (l, b) = (lat[s * n + d], bw[s * n + d]);
            Link {
                src: s,
                dst: d,
                transport: matrix[s][d],
                latency_us: l * 1e6,
                bandwidth_gbps: b / 1e9,
                alpha_s: l,
                beta_s_per_byte: if b > 0.0 { 1.0 / b } else { f64::INFINITY },
                outlier,
                percent_of_spec: spec.map(|sp| 100.0 * b / sp),
            }
        })
        .collect();
    let transports = crate::transports(comm);
    print_report(
        comm,
        a,
        &links,
        &loaded,
        (lat_bytes, bw_bytes, loaded_bytes),
        (med_bw, med_lat),
    );
    if let Some(path) = &a.save {
        let measured = measured_topology(comm, n, &lat, &bw, &loaded)?;
        let probe = Topology {
            format: "ferrocoll-topology",
            version: 1,
            ferrocoll_version: env!("CARGO_PKG_VERSION"),
            world_size: n,
            machine: Machine::here(),
            ranks: &infos,
            transports,
            latency_bytes: lat_bytes as u64,
            bandwidth_bytes: bw_bytes as u64,
            median_bandwidth_gbps: med_bw / 1e9,
            median_latency_us: med_lat * 1e6,
            link_spec_gbps: spec.map(|s| s / 1e9),
            links: &links,
        };
        // One document: what FERROCOLL_TOPO_FILE reads (hosts, intra_host, inter_host,
        // host_links), plus the raw measurements, which the loader ignores.
        let mut doc = serde_json::to_value(TopologyDoc::of(&measured))?;
        if let (Some(d), serde_json::Value::Object(extra)) =
            (doc.as_object_mut(), serde_json::to_value(&probe)?)
        {
            for (k, v) in extra {
                d.entry(k).or_insert(v);
            }
        }
        write_json(path, &doc)?;
        println!(
            "# Topology written to {} (FERROCOLL_TOPO_FILE reads it)",
            path.display()
        );
    }
    Ok(true)
}

fn print_matrix(title: &str, n: usize, links: &[Link], cell: impl Fn(&Link) -> String) {
    println!("# {title}");
    let mut head = format!("# {:>6}", "");
    for d in 0..n {
        head += &format!(" {d:>10}");
    }
    println!("{head}");
    for s in 0..n {
        let mut line = format!("# {s:>6}");
        for d in 0..n {
            let text = links
                .iter()
                .find(|l| l.src == s && l.dst == d)
                .map_or_else(|| "-".to_string(), &cell);
            line += &format!(" {text:>10}");
        }
        println!("{line}");
    }
    println!("#");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_below_the_median_by_more_than_the_margin_is_an_outlier() {
        // Five links at ~10 GB/s and one at 7: 30% below the median.
        let bw = [10e9, 10.2e9, 9.9e9, 7e9, 10.1e9, 10e9];
        let (med, marks) = outliers(&bw, 25.0);
        assert_eq!(med, 10e9);
        assert_eq!(marks, [false, false, false, true, false, false]);
        // A wider margin spares it; a margin of 0 marks everything below the median.
        assert!(outliers(&bw, 35.0).1.iter().all(|&m| !m));
        assert_eq!(
            outliers(&bw, 0.0).1,
            [false, false, true, true, false, false]
        );
        // Faster than the median is never an outlier, however far.
        assert_eq!(outliers(&[1e9, 1e9, 9e9], 25.0).1, [false, false, false]);
        assert_eq!(outliers(&[], 25.0), (0.0, vec![]));
    }
}
