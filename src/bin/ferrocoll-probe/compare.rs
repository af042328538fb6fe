//! `--compare A,B,…`: one sweep through several algorithms, side by side.
//!
//! Why: on a shared machine the same algorithm measured in two runs differs by more than
//! two algorithms do (4 ranks on 2 cores: ±20% between runs of one algorithm at 8 MiB), so
//! choosing between algorithms from separate runs measures the machine's spells, not the
//! algorithms. Here every entry runs through its own communicator, split off the same ranks
//! with its own `FERROCOLL_ALGO` (`Communicator::split_with`), and each size is measured in
//! `--rounds` rounds that visit every entry in turn, the order rotated each round; a row
//! reports an entry's median round. The communicators stay idle when not called (no thread,
//! no polling), so they do not disturb one another.

use ferrocoll::{Collective, Communicator};

use crate::cli::{type_name, SweepArgs};
use crate::report::{self, Half, Row};
use crate::sweep::{self, Case, Plan};
use crate::Res;

/// Runs the compared sweep of `kind` on this rank; rank 0 prints. `Ok(false)` when results
/// were wrong.
pub fn run(comm: &Communicator, kind: Collective, a: &SweepArgs) -> Res<bool> {
    let n = comm.world_size();
    let lead = comm.rank() == 0;
    let plan = Plan::new(kind, a, n)?;
    let mut kids = Vec::with_capacity(a.compare.len());
    for entry in &a.compare {
        let cfg = comm.config().clone().with_algo(entry)?;
        let kid = comm
            .split_with(Some(0), comm.rank() as i32, cfg)
            .map_err(|e| format!("--compare needs communicators of their own: {e}"))?
            .ok_or("--compare: a split left this rank out")?;
        kids.push(kid);
    }
    // An algorithm that does not apply to this collective: refused before anything runs.
    if let (Some(&dtype), Some(&size)) = (plan.types.first(), plan.sizes.first()) {
        let (spec, _) = sweep::shape(kind, dtype, size, a, n);
        if kind != Collective::SendRecv {
            for kid in &kids {
                kid.algorithm_for(&spec, dtype.size())?;
            }
        }
    }
    let infos = crate::ranks::gather(comm)?;
    let transports = crate::transports(comm);
    let label = format!("{} (compared)", a.compare.join(","));
    if lead {
        sweep::print_intro(kind, a, n, &label, &comm.transport_matrix(), &infos);
        println!(
            "#  {} round(s) per size; each row: the median round of its algorithm (last column)",
            a.rounds
        );
    }
    let total = (plan.types.len() * plan.ops.len() * plan.sizes.len()) as u64;
    let bar = sweep::progress(lead, total);
    let mut rows = Vec::new();
    for &dtype in &plan.types {
        for &op in &plan.ops {
            for &size in &plan.sizes {
                bar.set_message(format!("{} {} {size} B", type_name(dtype), op.name()));
                let (spec, bytes) = sweep::shape(kind, dtype, size, a, n);
                let cases: Vec<Case<'_>> = kids
                    .iter()
                    .map(|kid| Case {
                        comm: kid,
                        spec,
                        dtype,
                        op,
                        args: a,
                        corrupt: plan.corrupt,
                        checks: 0,
                    })
                    .collect();
                let mut runs: Vec<Vec<(Half, Option<Half>)>> = vec![Vec::new(); kids.len()];
                let last = a.rounds - 1;
                for round in 0..a.rounds {
                    for k in 0..kids.len() {
                        let i = (k + round as usize) % kids.len();
                        let case = Case {
                            checks: if round == last { a.check } else { 0 },
                            ..cases[i]
                        };
                        runs[i].push(sweep::halves(&case, bytes)?);
                    }
                }
                for (i, got) in runs.into_iter().enumerate() {
                    let algorithm = sweep::algorithm_name(&kids[i], &spec, dtype.size());
                    let oop: Vec<Half> = got.iter().map(|h| h.0.clone()).collect();
                    let ip: Vec<Half> = got.iter().filter_map(|h| h.1.clone()).collect();
                    let halves = (median(&oop), (!ip.is_empty()).then(|| median(&ip)));
                    let mut row = sweep::row_of(&cases[i], bytes, algorithm, halves);
                    row.entry = Some(a.compare[i].clone());
                    if lead {
                        bar.suspend(|| println!("{}  {}", report::row(&row), label_of(&row)));
                    }
                    rows.push(row);
                }
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    let wrong = sweep::finish(comm, kind, a, &rows, &infos, transports, label)?;
    Ok(wrong == 0)
}

/// The last column: the entry, and the tuner's choice where the entry is `auto`.
fn label_of(r: &Row) -> String {
    match r.entry.as_deref() {
        Some(e) if e != r.algorithm => format!("{e}:{}", r.algorithm),
        Some(e) => e.to_string(),
        None => r.algorithm.clone(),
    }
}

/// The median round of `rounds` (by time; the upper median of an even count), keeping
/// every round's time and the wrong elements of all of them.
fn median(rounds: &[Half]) -> Half {
    let mut times: Vec<f64> = rounds.iter().map(|h| h.time_us).collect();
    times.sort_by(f64::total_cmp);
    let mid = times[times.len() / 2];
    let at = rounds
        .iter()
        .position(|h| h.time_us == mid)
        .unwrap_or_default();
    let wrong = rounds.iter().filter_map(|h| h.wrong).reduce(|x, y| x + y);
    Half {
        wrong,
        rounds_us: rounds.iter().map(|h| h.time_us).collect(),
        ..rounds[at].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(t: f64, wrong: Option<u64>) -> Half {
        Half {
            time_us: t,
            algbw_gbps: 1.0 / t,
            busbw_gbps: 2.0 / t,
            wrong,
            rounds_us: Vec::new(),
            registration: None,
        }
    }

    #[test]
    fn the_median_round_keeps_its_bandwidths_and_every_rounds_time() {
        let m = median(&[half(3.0, None), half(1.0, None), half(2.0, Some(4))]);
        assert_eq!(m.time_us, 2.0);
        assert_eq!(m.busbw_gbps, 1.0);
        assert_eq!(m.rounds_us, [3.0, 1.0, 2.0]);
        assert_eq!(m.wrong, Some(4));
        let m = median(&[half(5.0, None), half(1.0, None)]);
        assert_eq!(m.time_us, 5.0);
        assert_eq!(m.wrong, None);
    }
}
