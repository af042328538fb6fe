//! The schedule validator and the sequential simulator.
//!
//! [`simulate`] runs all ranks' plans in one thread with the executor's semantics (see the
//! module docs of [`crate::schedule`]) and bounded streams, and returns every rank's output.
//! It is the reference executor for tests, and [`validate`] uses it to prove that a schedule
//! cannot deadlock.

use std::collections::VecDeque;

use super::{
    dependencies, finish, input_len, layout, output_len, segment, Buf, CollSpec, Layout, RankPlan,
    Region, Step, Uneven,
};
use crate::reduce;
use crate::types::{DataType, ReduceOp};

/// What a simulated call has beyond its spec.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extra<'a> {
    /// Every rank's layout, for the uneven collectives.
    pub uneven: Option<&'a [Uneven]>,
    /// Every rank's premul-sum scalar, for a premul-sum.
    pub premul: Option<&'a [f64]>,
}

impl Extra<'_> {
    fn uneven_of(&self, rank: usize) -> Option<&Uneven> {
        self.uneven.and_then(|u| u.get(rank))
    }
}

/// Checks the static rules of a schedule, then simulates it (separate and in-place layouts,
/// streams holding one segment) to prove every send meets its receive and nothing deadlocks.
pub fn validate(spec: &CollSpec, plans: &[RankPlan]) -> Result<(), String> {
    validate_with(spec, Extra::default(), plans)
}

/// [`validate`] for a call with [`Extra`] arguments (the uneven collectives' layouts).
pub fn validate_with(spec: &CollSpec, extra: Extra<'_>, plans: &[RankPlan]) -> Result<(), String> {
    if plans.len() != spec.world {
        return Err(format!(
            "{} plans for a world of {}",
            plans.len(),
            spec.world
        ));
    }
    for (rank, plan) in plans.iter().enumerate() {
        for (i, st) in plans[rank].steps.iter().enumerate() {
            check_step(spec, extra.uneven_of(rank), plan, rank, st)
                .map_err(|e| format!("rank {rank} step {i} ({st}): {e}"))?;
        }
    }
    // Every directed stream carries the same sequence of message lengths at both ends.
    for a in 0..spec.world {
        for b in 0..spec.world {
            let sends: Vec<usize> = plans[a]
                .steps
                .iter()
                .filter_map(|s| match s {
                    Step::Send { peer, src } if *peer == b => Some(src.len),
                    _ => None,
                })
                .collect();
            let recvs: Vec<usize> = plans[b]
                .steps
                .iter()
                .filter_map(|s| match s {
                    Step::Recv { peer, dst, .. } if *peer == a => Some(dst.len),
                    _ => None,
                })
                .collect();
            if sends != recvs {
                return Err(format!(
                    "stream {a}->{b}: sends of {sends:?} elements but receives of {recvs:?}"
                ));
            }
        }
    }
    let zeros: Vec<Vec<u8>> = (0..spec.world)
        .map(|r| vec![0u8; input_len(spec, extra.uneven_of(r), r)])
        .collect();
    for seg in [usize::MAX, 3] {
        for in_place in [false, true] {
            let (dt, op) = (DataType::U8, ReduceOp::Sum);
            simulate_with(spec, extra, plans, dt, op, &zeros, in_place, seg)?;
        }
    }
    Ok(())
}

fn check_step(
    spec: &CollSpec,
    uneven: Option<&Uneven>,
    plan: &RankPlan,
    rank: usize,
    st: &Step,
) -> Result<(), String> {
    let bound = |r: &Region| -> Result<(), String> {
        let cap = match r.buf {
            Buf::Input => input_len(spec, uneven, rank),
            Buf::Output => output_len(spec, uneven, rank),
            Buf::Scratch => plan.scratch,
        };
        if r.end() > cap {
            return Err(format!("{r} is out of bounds ({cap} elements)"));
        }
        Ok(())
    };
    let same_or_disjoint =
        |x: &Region, y: &Region| x == y || x.buf != y.buf || x.end() <= y.off || y.end() <= x.off;
    if let Some(w) = st.writes() {
        if w.buf == Buf::Input {
            return Err("writes the input".into());
        }
        bound(&w)?;
        for r in st.reads().iter().flatten() {
            if r.len != w.len {
                return Err("operand lengths differ".into());
            }
            if !same_or_disjoint(r, &w) {
                return Err(format!("{r} partly overlaps the destination {w}"));
            }
        }
    }
    for r in st.reads().iter().flatten() {
        bound(r)?;
    }
    match st {
        Step::Send { peer, .. } | Step::Recv { peer, .. }
            if *peer == rank || *peer >= spec.world =>
        {
            Err(format!("bad peer {peer}"))
        }
        Step::Copy { src, dst } if src == dst => Err("copies a region onto itself".into()),
        _ => Ok(()),
    }
}

/// Memory of one simulated rank: spaces 0 and 1 (caller buffers) and 2 (scratch), bytes.
struct Mem {
    spaces: [Vec<u8>; 3],
    layout: Layout,
    esize: usize,
}

impl Mem {
    fn range(&self, r: Region) -> (usize, std::ops::Range<usize>) {
        let (space, a, b) = self.layout.locate(r);
        (space as usize, a * self.esize..b * self.esize)
    }
    fn read(&self, r: Region) -> Vec<u8> {
        let (s, rg) = self.range(r);
        self.spaces[s][rg].to_vec()
    }
    fn write(&mut self, r: Region, data: &[u8]) {
        let (s, rg) = self.range(r);
        self.spaces[s][rg].copy_from_slice(data);
    }
}

/// Runs a local step (copy, reduction, scaling) on a simulated rank's memory; `premul` is
/// the rank's premul-sum scalar.
fn run_local(m: &mut Mem, st: Step, dtype: DataType, op: ReduceOp, premul: f64) {
    match st {
        Step::Copy { src, dst } => {
            let d = m.read(src);
            m.write(dst, &d);
        }
        Step::Reduce { dst, a, b } => {
            let mut acc = m.read(a);
            reduce::reduce(dtype, op, &mut acc, &m.read(b));
            m.write(dst, &acc);
        }
        Step::Scale { dst, divisor } => {
            let mut d = m.read(dst);
            reduce::divide(dtype, &mut d, divisor);
            m.write(dst, &d);
        }
        Step::PreMul { src, dst } => {
            let s = m.read(src);
            let mut d = vec![0u8; s.len()];
            reduce::premultiply(dtype, &mut d, &s, premul);
            m.write(dst, &d);
        }
        Step::Send { .. } | Step::Recv { .. } => {}
    }
}

/// Runs `plans` sequentially on byte `inputs` (one per rank, `spec.input_len()` elements of
/// `dtype`), in place or not, with steps split into segments of `seg` elements and streams
/// that hold one segment's worth of messages (a stream accepts a message when it is empty or
/// the message fits beside what is queued). Each plan first gets its post-steps
/// ([`finish`]: `Avg`'s scaling), as in the engine. Returns every rank's output bytes.
pub fn simulate(
    spec: &CollSpec,
    plans: &[RankPlan],
    dtype: DataType,
    op: ReduceOp,
    inputs: &[Vec<u8>],
    in_place: bool,
    seg: usize,
) -> Result<Vec<Vec<u8>>, String> {
    simulate_with(
        spec,
        Extra::default(),
        plans,
        dtype,
        op,
        inputs,
        in_place,
        seg,
    )
}

/// [`simulate`] for a call with [`Extra`] arguments: the uneven collectives' layouts (each
/// rank's input holds its own input length, see [`input_len`]) and premul-sum scalars
/// (whose pre-step [`finish`] adds).
#[allow(clippy::too_many_arguments)]
pub fn simulate_with(
    spec: &CollSpec,
    extra: Extra<'_>,
    plans: &[RankPlan],
    dtype: DataType,
    op: ReduceOp,
    inputs: &[Vec<u8>],
    in_place: bool,
    seg: usize,
) -> Result<Vec<Vec<u8>>, String> {
    let n = spec.world;
    let es = dtype.size();
    let cap_bytes = seg.saturating_mul(es);
    // The pre- and post-steps (premul-sum's multiplication, `Avg`'s scaling) are part of
    // what runs, as in the engine.
    let finished: Vec<RankPlan> = plans
        .iter()
        .enumerate()
        .map(|(r, p)| {
            let mut p = p.clone();
            let premul = extra.premul.is_some();
            finish(&mut p, spec, extra.uneven_of(r), r, op, premul);
            p
        })
        .collect();
    let progs: Vec<Vec<Step>> = finished.iter().map(|p| segment(&p.steps, seg)).collect();
    let mut mems: Vec<Mem> = (0..n)
        .map(|r| {
            let u = extra.uneven_of(r);
            let layout = layout(spec, u, r, in_place);
            let (n_in, n_out) = (input_len(spec, u, r), output_len(spec, u, r));
            let mut sizes = [0usize; 3];
            for (p, len) in [(layout.input, n_in), (layout.output, n_out)] {
                let s = &mut sizes[p.space as usize];
                *s = (*s).max((p.off + len) * es);
            }
            sizes[2] = finished[r].scratch * es;
            // Fill with a pattern so reads of never-written memory show up as wrong data.
            let mut m = Mem {
                spaces: sizes.map(|s| vec![0xA5u8; s]),
                layout,
                esize: es,
            };
            m.write(Region::input(0, n_in), &inputs[r]);
            m
        })
        .collect();
    let deps: Vec<Vec<Vec<u32>>> = (0..n)
        .map(|r| dependencies(&progs[r], &mems[r].layout))
        .collect();
    let mut done: Vec<Vec<bool>> = progs.iter().map(|p| vec![false; p.len()]).collect();
    let mut left: usize = progs.iter().map(Vec::len).sum();
    let mut streams: Vec<VecDeque<Vec<u8>>> = vec![VecDeque::new(); n * n];
    while left > 0 {
        let mut progressed = false;
        for r in 0..n {
            // Per-peer stream order: only the first pending send/recv of each peer may run.
            let mut send_blocked = vec![false; n];
            let mut recv_blocked = vec![false; n];
            for i in 0..progs[r].len() {
                if done[r][i] {
                    continue;
                }
                let ready = deps[r][i].iter().all(|&j| done[r][j as usize]);
                let st = progs[r][i];
                let ran = match st {
                    Step::Send { peer, src } => {
                        let q = &mut streams[r * n + peer];
                        let queued: usize = q.iter().map(Vec::len).sum();
                        let fits = q.is_empty() || queued + src.len * es <= cap_bytes;
                        let go = ready && !send_blocked[peer] && fits;
                        send_blocked[peer] = true;
                        if go {
                            let data = mems[r].read(src);
                            streams[r * n + peer].push_back(data);
                        }
                        go
                    }
                    Step::Recv { peer, dst, with } => {
                        let q = &mut streams[peer * n + r];
                        let go = ready && !recv_blocked[peer] && !q.is_empty();
                        recv_blocked[peer] = true;
                        if go {
                            let msg = q.pop_front().unwrap_or_default();
                            if msg.len() != dst.len * es {
                                return Err(format!(
                                    "rank {r} step {i} ({st}): message from {peer} has {} bytes",
                                    msg.len()
                                ));
                            }
                            let out = match with {
                                None => msg,
                                Some(w) => {
                                    let mut acc = mems[r].read(w);
                                    reduce::reduce(dtype, op, &mut acc, &msg);
                                    acc
                                }
                            };
                            mems[r].write(dst, &out);
                        }
                        go
                    }
                    Step::Copy { .. }
                    | Step::Reduce { .. }
                    | Step::Scale { .. }
                    | Step::PreMul { .. } => {
                        if ready {
                            let s = extra.premul.and_then(|p| p.get(r)).copied();
                            run_local(&mut mems[r], st, dtype, op, s.unwrap_or(1.0));
                        }
                        ready
                    }
                };
                if ran {
                    done[r][i] = true;
                    left -= 1;
                    progressed = true;
                }
            }
        }
        if !progressed {
            let stuck: Vec<String> = (0..n)
                .filter_map(|r| {
                    let i = done[r].iter().position(|d| !d)?;
                    Some(format!("rank {r} at step {i} ({})", progs[r][i]))
                })
                .collect();
            return Err(format!(
                "deadlock (seg {seg}, in_place {in_place}): {}",
                stuck.join("; ")
            ));
        }
    }
    if let Some((a, _)) = streams.iter().enumerate().find(|(_, q)| !q.is_empty()) {
        return Err(format!(
            "stream {}->{} has unreceived messages",
            a / n,
            a % n
        ));
    }
    Ok(mems
        .iter()
        .enumerate()
        .map(|(r, m)| m.read(Region::output(0, output_len(spec, extra.uneven_of(r), r))))
        .collect())
}
