//! `all_reduce --compression CODEC`: compressed all-reduce sweeps.
//!
//! Each size is timed like the plain sweep (warm-up, barrier, `-n` calls, times combined as
//! `-a` says); every call starts from the same input (copied in outside the timed region),
//! with error feedback on. Bandwidths count **uncompressed** bytes (the f32 the caller
//! reduces), so they compare directly with the uncompressed table: busbw = algbw × 2(n−1)/n.
//!
//! In place of `#wrong`: the max relative error of one fresh call (error feedback reset)
//! against the exact sum, `max |got − exact| / max |exact|` over the elements, the worst over
//! the ranks; and whether every rank's result has the same bits (the run fails if not).

use std::time::Instant;

use ferrocoll::compress::{auto_link, CompressedCollectives, CompressionSetting, ErrorFeedback};
use ferrocoll::{Codec, Collective, Communicator, DataType, ReduceOp};
use serde::Serialize;

use crate::cli::SweepArgs;
use crate::ranks;
use crate::report;
use crate::sweep::busbw_factor;
use crate::Res;

/// One row of the compressed sweep (also its JSON form).
#[derive(Debug, Serialize)]
struct Row {
    size: u64,
    count: u64,
    codec: String,
    time_us: f64,
    algbw_gbps: f64,
    busbw_gbps: f64,
    /// `None` without `-c`.
    max_rel_err: Option<f64>,
    /// Whether every rank's result had the same bits (`None` without `-c`).
    identical: Option<bool>,
}

#[derive(Serialize)]
struct Doc<'a> {
    tool: &'static str,
    collective: &'static str,
    world_size: usize,
    codec: String,
    rows: &'a [Row],
}

/// Rank `r`'s input: deterministic values in [-1, 1).
fn input(r: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let mut z = (i as u64) ^ ((r as u64) << 40) ^ 0x9e37_79b9_7f4a_7c15;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// Rows of a near-square matrix of `n` elements (PowerSGD compresses matrices).
fn rows_of(n: usize) -> usize {
    let mut r = (n as f64).sqrt() as usize;
    while r > 1 && n % r != 0 {
        r -= 1;
    }
    r.max(1)
}

fn call(
    comm: &Communicator,
    buf: &mut [f32],
    ef: &mut ErrorFeedback,
    codec: Codec,
) -> ferrocoll::Result<()> {
    match codec {
        Codec::PowerSgd { .. } => {
            let rows = rows_of(buf.len());
            comm.all_reduce_compressed_2d(buf, rows, ef, "probe", codec)
        }
        _ => comm.all_reduce_compressed(buf, ef, "probe", codec),
    }
}

/// FNV-1a over the bits of `v`.
fn fingerprint(v: &[f32]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs the compressed sweep on this rank; rank 0 prints. `Ok(false)` if ranks disagreed.
pub fn run(
    comm: &Communicator,
    kind: Collective,
    setting: CompressionSetting,
    a: &SweepArgs,
) -> Res<bool> {
    if kind != Collective::AllReduce {
        return Err("--compression applies to all_reduce only".into());
    }
    if a.datatype.0 != [DataType::F32] || a.op.0 != [ReduceOp::Sum] {
        return Err("--compression compresses f32 sums: use -d float -o sum".into());
    }
    let (n, me) = (comm.world_size(), comm.rank());
    let lead = me == 0;
    let sizes = a.sizes(kind)?;
    // Every rank resolves `auto` from the same topology, so they agree on the codec.
    let codec = setting.resolve_for(comm);
    if lead {
        println!(
            "# ferrocoll-probe {}: all_reduce on {n} ranks, compression {codec} (error feedback on), transports {}",
            env!("CARGO_PKG_VERSION"),
            crate::pair_summary(&comm.transport_matrix())
        );
        if setting == CompressionSetting::Auto {
            let link = auto_link(&comm.topology())
                .map_or("none (one host: shared memory)".to_string(), |b| {
                    format!("{:.3} GB/s", b / 1e9)
                });
            println!("# compression auto: slowest link between hosts {link} -> {codec}");
        }
        println!("# bandwidths count uncompressed f32 bytes; maxerr = max|got-exact| / max|exact|");
        println!(
            "# {:>10}  {:>12}  {:>8}  {:>10}  {:>9}  {:>6}  {:>6}  {:>9}",
            "size", "count", "type", "codec", "time", "algbw", "busbw", "maxerr"
        );
        println!(
            "# {:>10}  {:>12}  {:>8}  {:>10}  {:>9}  {:>6}  {:>6}  {:>9}",
            "(B)", "(elements)", "", "", "(us)", "(GB/s)", "(GB/s)", ""
        );
    }
    let mut rows = Vec::new();
    for size in sizes {
        let count = (size / 4) as usize;
        if count == 0 {
            continue;
        }
        let data = input(me, count);
        let mut buf = data.clone();
        let mut ef = ErrorFeedback::new();
        for _ in 0..a.warmup {
            buf.copy_from_slice(&data);
            call(comm, &mut buf, &mut ef, codec)?;
        }
        ranks::barrier(comm)?;
        let mut spent = 0.0;
        for _ in 0..a.iters {
            buf.copy_from_slice(&data);
            let t0 = Instant::now();
            call(comm, &mut buf, &mut ef, codec)?;
            spent += t0.elapsed().as_secs_f64();
        }
        let sec = ranks::combine(comm, spent / f64::from(a.iters), a.average)?;
        let bytes = 4 * count as u64;
        let algbw = if sec > 0.0 {
            bytes as f64 / 1e9 / sec
        } else {
            0.0
        };
        let (max_rel_err, identical) = if a.check > 0 {
            ef.reset_all();
            buf.copy_from_slice(&data);
            call(comm, &mut buf, &mut ef, codec)?;
            let mut exact = vec![0f64; count];
            for r in 0..n {
                for (e, x) in exact.iter_mut().zip(input(r, count)) {
                    *e += f64::from(x);
                }
            }
            let scale = exact
                .iter()
                .fold(0f64, |m, e| m.max(e.abs()))
                .max(f64::MIN_POSITIVE);
            let worst = buf
                .iter()
                .zip(&exact)
                .fold(0f64, |m, (g, e)| m.max((f64::from(*g) - e).abs()));
            let mut err = [worst / scale];
            ranks::reduce_f64(comm, &mut err, f64::max)?;
            let mut prints = vec![0u64; n];
            comm.all_gather(&[fingerprint(&buf)], &mut prints)?;
            (Some(err[0]), Some(prints.iter().all(|p| *p == prints[0])))
        } else {
            (None, None)
        };
        let row = Row {
            size: bytes,
            count: count as u64,
            codec: codec.to_string(),
            time_us: sec * 1e6,
            algbw_gbps: algbw,
            busbw_gbps: algbw * busbw_factor(kind, n),
            max_rel_err,
            identical,
        };
        if lead {
            let err = match (row.max_rel_err, row.identical) {
                (Some(e), Some(true)) => format!("{e:>9.3e}"),
                (Some(e), _) => format!("{e:>9.3e} (ranks differ!)"),
                _ => format!("{:>9}", "N/A"),
            };
            println!(
                "{:>12}  {:>12}  {:>8}  {:>10}  {:>9.1}  {:>6.2}  {:>6.2}  {err}",
                row.size,
                row.count,
                "float",
                row.codec,
                row.time_us,
                row.algbw_gbps,
                row.busbw_gbps
            );
        }
        rows.push(row);
    }
    let ok = rows.iter().all(|r| r.identical != Some(false));
    if lead {
        let avg = rows.iter().map(|r| r.busbw_gbps).sum::<f64>() / rows.len().max(1) as f64;
        let worst = rows
            .iter()
            .filter_map(|r| r.max_rel_err)
            .fold(0f64, f64::max);
        println!("# Max relative error: {worst:.3e}; bit-identical on every rank: {ok}");
        println!("# Avg bus bandwidth    : {avg:.4} (uncompressed bytes)");
        if let Some(path) = &a.json {
            let doc = Doc {
                tool: "ferrocoll-probe",
                collective: kind.name(),
                world_size: n,
                codec: codec.to_string(),
                rows: &rows,
            };
            report::write_json(path, &doc)?;
        }
    }
    Ok(ok)
}
