//! `simulate`: prices every algorithm on a described cluster with the library's cost model
//! (the one the tuner uses) and prints the table and the tuner's choice, without starting
//! any rank. Linear in the number of ranks, so clusters of thousands of ranks price in
//! seconds.
//!
//! ```text
//! ferrocoll-probe simulate --topo examples/topologies/dgx-h100-256x8.json all_reduce 8 1M 64M
//! ferrocoll-probe simulate --composed --topo examples/topologies/dgx-h100-256x8.json all_reduce
//! ```
//!
//! `--composed` also prices the composed plan of device memory
//! (`ferrocoll::accel::price`): the vendor inside each host on the topology's intra-host
//! link, the staging copies, ferrocoll between hosts; next to the flat alternative.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use ferrocoll::accel::price::{ComposedPricer, Staging};
use ferrocoll::topology::json;
use ferrocoll::{AlgoId, CollSpec, Tuner};
use ferrocoll::{Collective, Config, RingOrder};

use crate::cli::{parse_size, Common};
use crate::Res;

/// Options of `simulate`.
#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Topology file (the format of FERROCOLL_TOPO_FILE).
    #[arg(long)]
    pub topo: PathBuf,
    /// Collective: all_reduce, all_gather, reduce_scatter, broadcast, reduce, all_to_all,
    /// barrier.
    #[arg(default_value = "all_reduce")]
    pub collective: String,
    /// Sizes in bytes (K/M/G suffixes); default 8 B, ×4 steps, and 64 MiB. For all-gather
    /// and reduce-scatter, the size of the whole gathered buffer, as in the sweeps.
    #[arg(value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// Element size in bytes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub elem_bytes: u64,
    /// Ring order: topology (default) or rank.
    #[arg(long, default_value = "topology")]
    pub ring_order: String,
    /// Largest segment in bytes (as FERROCOLL_SEGMENT_BYTES).
    #[arg(long, default_value = "512K", value_parser = parse_size)]
    pub segment_bytes: u64,
    /// Also price the composed plan of device memory: the vendor's library inside each host
    /// (on the topology's intra-host link), ferrocoll between hosts from staging buffers.
    #[arg(long)]
    pub composed: bool,
    /// Host–device copy bandwidth of one rank for `--composed`, Gbit/s each way (400: PCIe
    /// Gen5 x16 as measured in practice).
    #[arg(long, default_value_t = 400.0)]
    pub staging_gbit_s: f64,
    /// Latency of one staging copy for `--composed`, µs.
    #[arg(long, default_value_t = 10.0)]
    pub staging_latency_us: f64,
    /// `--algo` forces the choice as FERROCOLL_ALGO would; the other options are unused.
    #[command(flatten)]
    pub common: Common,
}

fn fmt_time(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} us", s * 1e6)
    } else if s < 1.0 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.3} s", s)
    }
}

/// Prices and prints; returns `Ok(true)` on success.
pub fn run(a: &SimulateArgs) -> Res<bool> {
    let started = Instant::now();
    let topo = json::load(&a.topo)?;
    let kind = Collective::COLLECTIVES
        .into_iter()
        .find(|k| k.name() == a.collective.replace('-', "_"))
        .ok_or_else(|| format!("unknown collective {:?}", a.collective))?;
    let order = match a.ring_order.as_str() {
        "topology" => RingOrder::Topology,
        "rank" => RingOrder::Rank,
        o => return Err(format!("--ring-order {o:?}: expected topology or rank").into()),
    };
    let mut cfg = Config::default()
        .with_ring_order(order)
        .with_segment_bytes(a.segment_bytes as usize);
    if let Some(al) = &a.common.algo {
        cfg = cfg.with_algo(al)?;
    }
    let world = topo.world();
    let hosts = topo.hosts().len();
    let source = topo.source.clone().unwrap_or_default();
    let composed = if a.composed {
        let staging = Staging {
            bandwidth: a.staging_gbit_s * 1e9 / 8.0,
            latency: a.staging_latency_us * 1e-6,
            ..Staging::default()
        };
        Some(ComposedPricer::new(&cfg, &topo, staging)?)
    } else {
        None
    };
    let tuner = Tuner::new(&cfg, topo)?;
    let built = started.elapsed();
    let es = a.elem_bytes as usize;
    let sizes: Vec<u64> = if a.sizes.is_empty() {
        let mut v: Vec<u64> = std::iter::successors(Some(8u64), |s| Some(s * 4))
            .take_while(|s| *s < 64 << 20)
            .collect();
        v.push(64 << 20);
        v
    } else {
        a.sizes.clone()
    };
    println!(
        "# ferrocoll-probe simulate: {} ranks on {} hosts, {kind}, {}-byte elements, ring order {}",
        world, hosts, es, a.ring_order
    );
    if !source.is_empty() {
        println!("# source: {source}");
    }
    let names: Vec<&str> = AlgoId::all().map(AlgoId::name).collect();
    let mut head = format!("# {:>12}", "size");
    for n in &names {
        head += &format!(" {n:>17}");
    }
    head += &format!(" {:>17} {:>9}", "choice", "segment");
    println!("{head}");
    for &size in &sizes {
        let count = match kind {
            Collective::AllGather
            | Collective::ReduceScatter
            | Collective::AllToAll
            | Collective::Gather
            | Collective::Scatter => size as usize / es / world,
            Collective::Barrier => 0,
            _ => size as usize / es,
        };
        let spec = CollSpec {
            kind,
            world,
            count,
            root: 0,
        };
        let mut line = format!("  {:>12}", size);
        for (_, price) in tuner.price_all(&spec, es) {
            line += &format!(
                " {:>17}",
                price.map_or_else(|| "-".to_string(), |(t, _)| fmt_time(t))
            );
        }
        match tuner.decide(&spec, es) {
            Ok(c) => line += &format!(" {:>17} {:>9}", c.algo.name(), c.segment_bytes),
            Err(e) => line += &format!(" {:>17}", e.to_string()),
        }
        println!("{line}");
    }
    if let Some(p) = &composed {
        print_composed(a, p, &cfg, kind, &sizes, es, world)?;
    }
    println!(
        "# priced in {:.3} s (topology and ring order {:.3} s)",
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
    Ok(true)
}

/// The composed plan's table: each part's time, the total and its bus bandwidth, and the
/// flat alternative's total.
fn print_composed(
    a: &SimulateArgs,
    p: &ComposedPricer,
    cfg: &Config,
    kind: Collective,
    sizes: &[u64],
    es: usize,
    world: usize,
) -> Res<()> {
    println!(
        "# composed plan: the vendor inside each host ({} ranks), ferrocoll between hosts; \
         staging {} Gbit/s, {} us per copy",
        p.local_size(),
        a.staging_gbit_s,
        a.staging_latency_us
    );
    println!(
        "# {:>12} {:>12} {:>12} {:>12} {:>17} {:>12} {:>12} {:>9} {:>12}",
        "size",
        "vendor",
        "staging",
        "cross",
        "cross algo",
        "vendor",
        "total",
        "busbw",
        "flat staged"
    );
    for &size in sizes {
        let count = match kind {
            Collective::AllGather | Collective::ReduceScatter => size as usize / es / world,
            _ => size as usize / es,
        };
        if count == 0 {
            continue;
        }
        let c = p.price(kind, count, es)?;
        let flat = p.flat(cfg, kind, count, es)?;
        let factor = match kind {
            Collective::AllReduce => 2.0 * (world as f64 - 1.0) / world as f64,
            Collective::Broadcast => 1.0,
            _ => (world as f64 - 1.0) / world as f64,
        };
        let busbw = size as f64 / c.total * factor / 1e9;
        println!(
            "  {:>12} {:>12} {:>12} {:>12} {:>17} {:>12} {:>12} {:>9.2} {:>12}",
            size,
            fmt_time(c.vendor_before),
            fmt_time(c.staging),
            fmt_time(c.cross),
            c.cross_algo.map_or("-", |x| x.name()),
            fmt_time(c.vendor_after),
            fmt_time(c.total),
            busbw,
            fmt_time(flat)
        );
    }
    Ok(())
}
