//! Collective sweeps: for each type, operator and size, time out-of-place and in-place calls
//! and check their results against the sequential reference.

use std::ffi::c_void;
use std::io::IsTerminal;
use std::time::Instant;

use ferrocoll::verify::{count_wrong, expected, magnitudes, test_input};
use ferrocoll::{CollSpec, Collective, Communicator, DataType, RawCall, ReduceOp};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{type_name, SweepArgs};
use crate::ranks::{self, RankInfo};
use crate::report::{self, Doc, Half, Machine, Params, RegCount, Row};
use crate::Res;

/// The environment variable of the corruption hook: `RANK:BYTE` flips byte `BYTE` (modulo the
/// output length) of rank `RANK`'s result before each check.
pub const CORRUPT_VAR: &str = "FERROCOLL_PROBE_CORRUPT";

/// Bus bandwidth factor of `kind` on `n` ranks (nccl-tests' PERFORMANCE.md).
pub fn busbw_factor(kind: Collective, n: usize) -> f64 {
    let n = n as f64;
    match kind {
        Collective::AllReduce => 2.0 * (n - 1.0) / n,
        Collective::AllGather
        | Collective::ReduceScatter
        | Collective::AllToAll
        | Collective::Gather
        | Collective::Scatter
        | Collective::AllGatherV
        | Collective::ReduceScatterV
        | Collective::AllToAllV => (n - 1.0) / n,
        Collective::Broadcast | Collective::Reduce | Collective::SendRecv => 1.0,
        Collective::Barrier => 0.0,
    }
}

/// NCCL's `count` for a sweep size of `bytes` (nccl-tests' `getCollByteCount`).
fn param_count(kind: Collective, bytes: u64, es: usize, n: usize) -> usize {
    let count = (bytes / es as u64) as usize;
    match kind {
        Collective::AllGather
        | Collective::ReduceScatter
        | Collective::AllToAll
        | Collective::Gather
        | Collective::Scatter => count / n,
        Collective::Barrier => 0,
        _ => count,
    }
}

fn corruption() -> Res<Option<(usize, usize)>> {
    let Ok(v) = std::env::var(CORRUPT_VAR) else {
        return Ok(None);
    };
    let parsed = v
        .split_once(':')
        .and_then(|(r, b)| Some((r.trim().parse().ok()?, b.trim().parse().ok()?)));
    match parsed {
        Some(p) => Ok(Some(p)),
        None => Err(format!("{CORRUPT_VAR}={v:?}: expected RANK:BYTE, e.g. 1:3").into()),
    }
}

/// One rank's buffers for one call shape, laid out as NCCL expects.
struct Layout {
    buf: Vec<u8>,
    input: usize,
    output: usize,
    in_bytes: usize,
    out_bytes: usize,
}

impl Layout {
    fn new(spec: &CollSpec, es: usize, rank: usize, in_place: bool) -> Layout {
        let (ib, ob) = (spec.input_len() * es, spec.output_len() * es);
        if in_place {
            let chunk = spec.count * es;
            let (input, output) = match spec.kind {
                Collective::AllGather | Collective::Gather => (rank * chunk, 0),
                Collective::ReduceScatter | Collective::Scatter => (0, rank * chunk),
                _ => (0, 0),
            };
            Layout {
                buf: vec![0x5A; ib.max(ob)],
                input,
                output,
                in_bytes: ib,
                out_bytes: ob,
            }
        } else {
            Layout {
                buf: vec![0x5A; ib + ob],
                input: 0,
                output: ib,
                in_bytes: ib,
                out_bytes: ob,
            }
        }
    }

    /// Fills the buffer with a marker, then puts `data` (this rank's input, or nothing) in
    /// place.
    fn load(&mut self, data: &[u8]) {
        self.buf.fill(0x5A);
        let n = data.len().min(self.in_bytes);
        self.buf[self.input..self.input + n].copy_from_slice(&data[..n]);
    }

    fn output(&self) -> &[u8] {
        &self.buf[self.output..self.output + self.out_bytes]
    }

    fn output_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.output..self.output + self.out_bytes]
    }

    /// Runs the call once. Send/recv sends to rank + 1 and receives from rank − 1 at once.
    fn call(
        &mut self,
        comm: &Communicator,
        spec: &CollSpec,
        dtype: DataType,
        op: ReduceOp,
    ) -> Res<()> {
        let base = self.buf.as_mut_ptr();
        let input = base.wrapping_add(self.input).cast_const().cast::<c_void>();
        let output = base.wrapping_add(self.output).cast::<c_void>();
        let call = RawCall {
            kind: spec.kind,
            input,
            output,
            count: spec.count,
            dtype,
            op,
            root: spec.root,
        };
        if spec.kind != Collective::SendRecv {
            // SAFETY: `buf` holds the input and output regions the spec requires, at the
            // offsets NCCL's in-place conventions give, and `&mut self` keeps it alive and
            // untouched until the call returns.
            unsafe { comm.collective_raw(call)? };
            return Ok(());
        }
        let (n, me) = (comm.world_size(), comm.rank());
        let send = RawCall {
            output: std::ptr::null_mut(),
            root: (me + 1) % n,
            ..call
        };
        let recv = RawCall {
            input: std::ptr::null(),
            root: (me + n - 1) % n,
            ..call
        };
        // SAFETY: the send reads the input region and the receive writes the output region,
        // which do not overlap (send/recv is always laid out out of place); the send is waited
        // for before this function returns, so `buf` outlives both.
        let work = unsafe { comm.collective_raw_async(send)? };
        // SAFETY: as above.
        let received = unsafe { comm.collective_raw(recv) };
        let sent = work.wait();
        received?;
        sent?;
        Ok(())
    }
}

/// What one size of one (type, op) needs.
pub(crate) struct Case<'a> {
    /// The communicator the calls go through.
    pub comm: &'a Communicator,
    /// The call's shape.
    pub spec: CollSpec,
    /// Element type.
    pub dtype: DataType,
    /// Reduction operator.
    pub op: ReduceOp,
    /// The sweep's flags (iterations, warm-up, `-a`).
    pub args: &'a SweepArgs,
    /// The corruption hook's `(rank, byte)`, if set.
    pub corrupt: Option<(usize, usize)>,
    /// Checked calls after the timed ones (`-c`, or 0 where another round checks).
    pub checks: u32,
}

impl Case<'_> {
    /// Times `iters` calls after warm-up and a barrier; then checks.
    fn measure(&self, lay: &mut Layout, bytes: u64) -> Res<Half> {
        let (c, a) = (self.comm, self.args);
        for _ in 0..a.warmup {
            lay.call(c, &self.spec, self.dtype, self.op)?;
        }
        ranks::barrier(c)?;
        let before = c.transport_counters();
        let t0 = Instant::now();
        for _ in 0..a.iters {
            lay.call(c, &self.spec, self.dtype, self.op)?;
        }
        let mine = t0.elapsed().as_secs_f64() / f64::from(a.iters);
        let registration = RegCount::between(before, c.transport_counters(), a.iters);
        let sec = ranks::combine(c, mine, a.average)?;
        let algbw = if sec > 0.0 {
            bytes as f64 / 1e9 / sec
        } else {
            0.0
        };
        let wrong = if self.checks > 0 {
            Some(self.check(lay)?)
        } else {
            None
        };
        Ok(Half {
            time_us: sec * 1e6,
            algbw_gbps: algbw,
            busbw_gbps: algbw * busbw_factor(self.spec.kind, c.world_size()),
            wrong,
            rounds_us: Vec::new(),
            registration,
        })
    }

    /// Runs `-c` checked calls on fresh data; wrong elements summed over the ranks.
    fn check(&self, lay: &mut Layout) -> Res<u64> {
        let (c, spec) = (self.comm, &self.spec);
        let (n, me) = (c.world_size(), c.rank());
        let prev = (me + n - 1) % n;
        // The reference needs the inputs of the ranks whose data reaches this rank.
        let needed = |r: usize| match spec.kind {
            Collective::Broadcast | Collective::Scatter => r == spec.root,
            Collective::SendRecv => r == prev || r == me,
            Collective::Barrier => false,
            _ => true,
        };
        let mut wrong = 0u64;
        for it in 0..self.checks {
            let seed = 0x5EED_0000 + u64::from(it);
            let inputs: Vec<Vec<u8>> = (0..n)
                .map(|r| {
                    if needed(r) {
                        test_input(self.dtype, self.op, r, spec.input_len(), seed)
                    } else {
                        Vec::new()
                    }
                })
                .collect();
            lay.load(&inputs[me]);
            lay.call(c, spec, self.dtype, self.op)?;
            if let Some((rank, byte)) = self.corrupt {
                let out = lay.output_mut();
                if rank == me && !out.is_empty() {
                    let i = byte % out.len();
                    out[i] ^= 0xFF;
                }
            }
            let skip = spec.kind == Collective::Barrier
                || (matches!(spec.kind, Collective::Reduce | Collective::Gather)
                    && me != spec.root);
            if !skip {
                let rspec = if spec.kind == Collective::SendRecv {
                    CollSpec {
                        root: prev,
                        ..*spec
                    }
                } else {
                    *spec
                };
                let want = expected(&rspec, self.dtype, self.op, &inputs, me);
                let bound = magnitudes(&rspec, self.dtype, self.op, &inputs, me);
                wrong += count_wrong(self.dtype, self.op, n, lay.output(), &want, &bound) as u64;
            }
        }
        ranks::total(c, wrong)
    }
}

/// What a sweep of `kind` covers: sizes, operators and types (checked against the world).
pub(crate) struct Plan {
    /// Sizes in bytes, smallest first.
    pub sizes: Vec<u64>,
    /// Operators (`sum` alone where the collective does not reduce).
    pub ops: Vec<ReduceOp>,
    /// Element types (the first alone for barrier).
    pub types: Vec<DataType>,
    /// The corruption hook's `(rank, byte)`, if set.
    pub corrupt: Option<(usize, usize)>,
}

impl Plan {
    /// The sweep the arguments ask for; a root outside the world or a bad size range or
    /// corruption hook is an error.
    pub fn new(kind: Collective, a: &SweepArgs, n: usize) -> Res<Plan> {
        let sizes = a.sizes(kind)?;
        if matches!(kind, Collective::Broadcast | Collective::Reduce) && a.root >= n {
            return Err(format!("root {} out of range for a world of {n} ranks", a.root).into());
        }
        let ops = if kind.reduces() {
            a.op.0.clone()
        } else {
            vec![ReduceOp::Sum]
        };
        let types = if kind == Collective::Barrier {
            a.datatype.0[..1].to_vec()
        } else {
            a.datatype.0.clone()
        };
        Ok(Plan {
            sizes,
            ops,
            types,
            corrupt: corruption()?,
        })
    }
}

/// Runs the sweep of `kind` on this rank; rank 0 prints. `Ok(false)` when results were wrong.
pub fn run(comm: &Communicator, kind: Collective, a: &SweepArgs) -> Res<bool> {
    if a.device != "cpu" {
        return crate::device::run(comm, kind, a);
    }
    if let Some(setting) = a.compression {
        return crate::compressed::run(comm, kind, setting, a);
    }
    if !a.compare.is_empty() {
        return crate::compare::run(comm, kind, a);
    }
    let n = comm.world_size();
    let lead = comm.rank() == 0;
    let Plan {
        sizes,
        ops,
        types,
        corrupt,
    } = Plan::new(kind, a, n)?;
    let infos = ranks::gather(comm)?;
    let algo = comm_algo(comm);
    let transports = crate::transports(comm);
    if lead {
        print_intro(kind, a, n, &algo, &comm.transport_matrix(), &infos);
    }
    let total = (types.len() * ops.len() * sizes.len()) as u64;
    let bar = progress(lead, total);
    let mut rows = Vec::new();
    for &dtype in &types {
        for &op in &ops {
            for &size in &sizes {
                bar.set_message(format!("{} {} {size} B", type_name(dtype), op.name()));
                let row = measure_size(comm, kind, dtype, op, size, a, corrupt)?;
                if lead {
                    bar.suspend(|| println!("{}", report::row(&row)));
                }
                bar.inc(1);
                rows.push(row);
            }
        }
    }
    bar.finish_and_clear();
    let wrong = finish(comm, kind, a, &rows, &infos, transports, algo)?;
    if lead {
        if let Some(path) = &a.plot {
            crate::plot::draw(path, kind, n, &rows)?;
        }
    }
    Ok(wrong == 0)
}

/// Prints the footer and writes the JSON document (rank 0); returns the wrong elements.
pub(crate) fn finish(
    comm: &Communicator,
    kind: Collective,
    a: &SweepArgs,
    rows: &[Row],
    infos: &[RankInfo],
    transports: Vec<String>,
    algo: String,
) -> Res<u64> {
    let n = comm.world_size();
    let wrong = report::wrong_total(rows);
    let avg = report::avg_busbw(rows);
    if comm.rank() == 0 {
        println!("{}", report::footer(wrong, avg));
        if let Some(line) = report::registration_line(rows) {
            println!("{line}");
        }
        if let Some(path) = &a.json {
            let doc = Doc {
                tool: "ferrocoll-probe",
                ferrocoll_version: env!("CARGO_PKG_VERSION"),
                collective: kind.name(),
                world_size: n,
                machine: Machine::here(),
                ranks: infos,
                transports,
                busbw_factor: busbw_factor(kind, n),
                params: Params {
                    minbytes: a.minbytes,
                    maxbytes: a.maxbytes,
                    iters: a.iters,
                    warmup_iters: a.warmup,
                    check: a.check,
                    average: a.average,
                    algo,
                },
                rows,
                out_of_bounds: wrong,
                ok: wrong == 0,
                avg_busbw_gbps: avg,
            };
            report::write_json(path, &doc)?;
        }
    }
    Ok(wrong)
}

/// The call of one sweep size: its spec and the byte count the table reports.
pub(crate) fn shape(
    kind: Collective,
    dtype: DataType,
    size: u64,
    a: &SweepArgs,
    n: usize,
) -> (CollSpec, u64) {
    let es = dtype.size();
    let rooted = matches!(kind, Collective::Broadcast | Collective::Reduce);
    let spec = CollSpec {
        kind,
        world: n,
        count: param_count(kind, size, es, n),
        root: if rooted { a.root } else { 0 },
    };
    (spec, (spec.input_len().max(spec.output_len()) * es) as u64)
}

/// The algorithm `comm` runs `spec` with, as the table names it.
pub(crate) fn algorithm_name(comm: &Communicator, spec: &CollSpec, es: usize) -> String {
    if spec.kind == Collective::SendRecv {
        "p2p".to_string()
    } else {
        comm.algorithm_for(spec, es)
            .map_or_else(|_| "-".to_string(), |c| c.algo.name().to_string())
    }
}

/// Times `case` out of place, then in place (send/recv: no in-place half).
pub(crate) fn halves(case: &Case<'_>, bytes: u64) -> Res<(Half, Option<Half>)> {
    let me = case.comm.rank();
    let spec = &case.spec;
    let es = case.dtype.size();
    let data = test_input(case.dtype, case.op, me, spec.input_len(), 0);
    let mut oop = Layout::new(spec, es, me, false);
    oop.load(&data);
    let out_of_place = case.measure(&mut oop, bytes)?;
    drop(oop);
    // Send/recv cannot alias its buffers: the receive would overwrite what is being sent.
    let in_place = if spec.kind == Collective::SendRecv {
        None
    } else {
        let mut ip = Layout::new(spec, es, me, true);
        ip.load(&data);
        Some(case.measure(&mut ip, bytes)?)
    };
    Ok((out_of_place, in_place))
}

/// A table row for `spec` of `bytes` bytes.
pub(crate) fn row_of(
    case: &Case<'_>,
    bytes: u64,
    algorithm: String,
    (out_of_place, in_place): (Half, Option<Half>),
) -> Row {
    let kind = case.spec.kind;
    let rooted = matches!(kind, Collective::Broadcast | Collective::Reduce);
    Row {
        size: bytes,
        count: case.spec.count as u64,
        dtype: type_name(case.dtype).to_string(),
        redop: if kind.reduces() {
            case.op.name()
        } else {
            "none"
        }
        .to_string(),
        root: if rooted { case.spec.root as i64 } else { -1 },
        algorithm,
        entry: None,
        out_of_place: Some(out_of_place),
        in_place,
    }
}

fn measure_size(
    comm: &Communicator,
    kind: Collective,
    dtype: DataType,
    op: ReduceOp,
    size: u64,
    a: &SweepArgs,
    corrupt: Option<(usize, usize)>,
) -> Res<Row> {
    let (spec, bytes) = shape(kind, dtype, size, a, comm.world_size());
    let algorithm = algorithm_name(comm, &spec, dtype.size());
    let case = Case {
        comm,
        spec,
        dtype,
        op,
        args: a,
        corrupt,
        checks: a.check,
    };
    let h = halves(&case, bytes)?;
    Ok(row_of(&case, bytes, algorithm, h))
}

pub(crate) fn comm_algo(comm: &Communicator) -> String {
    match &comm.config().algo {
        ferrocoll::AlgoChoice::Auto => "auto".into(),
        ferrocoll::AlgoChoice::Forced(name) => name.clone(),
    }
}

pub(crate) fn progress(lead: bool, total: u64) -> ProgressBar {
    if !lead || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {msg}") {
        bar.set_style(style);
    }
    bar
}

pub(crate) fn print_intro(
    kind: Collective,
    a: &SweepArgs,
    n: usize,
    algo: &str,
    matrix: &[Vec<&str>],
    infos: &[RankInfo],
) {
    let step = match (a.stepfactor, a.stepbytes) {
        (None, Some(b)) => format!("{b}(bytes)"),
        (f, _) => format!("{}(factor)", f.unwrap_or(2)),
    };
    println!(
        "# ferrocoll-probe {}: {} on {n} ranks, algorithm {algo}, transports {}",
        env!("CARGO_PKG_VERSION"),
        kind.name(),
        crate::pair_summary(matrix)
    );
    println!(
        "# nThread 1 nGpus 1 minBytes {} maxBytes {} step: {step} warmup iters: {} iters: {} \
         agg iters: 1 validation: {} graph: 0",
        a.minbytes,
        a.maxbytes,
        a.warmup,
        a.iters,
        u32::from(a.check > 0)
    );
    println!("#\n# Using devices");
    for r in infos {
        println!(
            "#  Rank {:>2} Group  0 Pid {:>6} on {:>10} device  0 [cpu] ferrocoll {}",
            r.rank,
            r.pid,
            r.host,
            matrix
                .get(r.rank)
                .map_or_else(|| "?".into(), |row| crate::row_transports(row).join(","))
        );
    }
    println!("{}", report::header());
}
