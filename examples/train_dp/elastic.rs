//! `train_dp --elastic`: training that survives the loss of ranks and grows back.
//!
//! The launcher side (no launcher variables) serves the job's store outside the ranks, starts
//! `--np` ranks, and with `--replace` starts a replacement process (`TRAIN_DP_JOIN=1`) for each
//! rank that dies or stops; it ends the stopped ones when the job is done and exits 0 when
//! every rank that was not made to fail finished training.
//!
//! A rank trains as `train` does (the global batch split over the current world, the
//! gradients all-reduced, the parameters checked bit-identical after every step), and on a
//! revocation: shrinks to the survivors, takes rank 0's state (parameters, momentum, step,
//! which failures already fired) with a broadcast, prints
//! `recovered: world W -> W' in X.XX s at step S` (from the start of the failed step to the
//! end of that broadcast, the first collective on the shrunk communicator) and goes on.
//! Replacements waiting in the store are seen by every rank through the per-step check (each
//! rank adds what it last read from the store, at most every 100 ms); the ranks then grow
//! together, send the state to the newcomers and print `grew: world W -> W' in X.XX s`.
//! With `--replace` the job ends at full strength: after the last step the ranks wait for the
//! replacements still starting (up to the job's timeout) and grow back to `--np` ranks.
//!
//! `--fail kill:R@S` (SIGKILL) or `stop:R@S` (SIGSTOP) makes whoever is rank `R` at step `S`
//! (or `S` seconds into the job: `@30s`) fail; the flag repeats.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrocoll::{Communicator, Error, ReduceOp};

use super::{dataset, fnv, Mlp, Opts, BATCH, DIM, FNV_OFFSET, POINTS};

/// How a rank is made to fail.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FailKind {
    /// SIGKILL.
    Kill,
    /// SIGSTOP (the process stays, silent).
    Stop,
}

/// When a failure fires.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    /// At the start of this step.
    Step(usize),
    /// At the first step that starts this long after the job started.
    After(Duration),
}

/// One `--fail` flag.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FailSpec {
    /// Kill or stop.
    pub kind: FailKind,
    /// The rank (in the communicator of that moment).
    pub rank: usize,
    /// When.
    pub at: Trigger,
}

impl std::str::FromStr for FailSpec {
    type Err = String;

    /// `kill:R@STEP`, `stop:R@STEP`, or with `@SECONDSs`.
    fn from_str(s: &str) -> Result<FailSpec, String> {
        let bad = |why: &str| format!("--fail {s:?}: {why} (expected kill:R@STEP or stop:R@30s)");
        let (kind, rest) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let kind = match kind {
            "kill" => FailKind::Kill,
            "stop" => FailKind::Stop,
            _ => return Err(bad("the kind is kill or stop")),
        };
        let (rank, at) = rest.split_once('@').ok_or_else(|| bad("no '@'"))?;
        let rank = rank.parse().map_err(|_| bad("the rank is not a number"))?;
        let at = match at.strip_suffix('s') {
            Some(secs) => {
                let t: f64 = secs.parse().map_err(|_| bad("bad seconds"))?;
                if !(t >= 0.0 && t.is_finite()) {
                    return Err(bad("bad seconds"));
                }
                Trigger::After(Duration::from_secs_f64(t))
            }
            None => Trigger::Step(at.parse().map_err(|_| bad("the step is not a number"))?),
        };
        Ok(FailSpec { kind, rank, at })
    }
}

/// Seconds since the Unix epoch (printed with failure and recovery lines, for benchmarks).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Everything a rank needs to go on from where rank 0 is.
struct State {
    model: Mlp,
    momentum: Mlp,
    /// Steps done.
    step: usize,
    /// Which `--fail` flags already fired (bit i: flag i).
    fired: u64,
}

impl State {
    /// Sends rank 0's state to every rank of `comm` (the first collective on a shrunk or
    /// grown communicator).
    fn sync(&mut self, comm: &Communicator) -> ferrocoll::Result<()> {
        let mut flat: Vec<f32> = self.model.t.concat();
        flat.extend(self.momentum.t.concat());
        comm.broadcast(&mut flat, 0)?;
        let mut rest = flat.as_slice();
        for t in self.model.t.iter_mut().chain(self.momentum.t.iter_mut()) {
            let (head, tail) = rest.split_at(t.len());
            t.copy_from_slice(head);
            rest = tail;
        }
        let mut meta = [self.step as u64, self.fired];
        comm.broadcast(&mut meta, 0)?;
        self.step = meta[0] as usize;
        self.fired = meta[1];
        Ok(())
    }
}

/// One rank of an elastic job (a replacement when `joining`). Returns once training is done
/// and, with `full` (`--replace`: every failed rank is replaced), the world is back to `full`
/// ranks.
pub fn rank(
    opts: &Opts,
    fails: &[FailSpec],
    joining: bool,
    full: Option<usize>,
) -> Result<(), String> {
    let t0 = std::env::var("TRAIN_DP_T0")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(unix_now);
    let mut state = State {
        model: Mlp::init(),
        momentum: Mlp::zeros(),
        step: 0,
        fired: 0,
    };
    let mut comm = if joining {
        let c = Communicator::join_from_env().map_err(|e| format!("join: {}", chain(&e)))?;
        state
            .sync(&c)
            .map_err(|e| format!("state: {}", chain(&e)))?;
        println!(
            "joined: rank {} of {} at step {}",
            c.rank(),
            c.world_size(),
            state.step + 1
        );
        c
    } else {
        Communicator::from_env().map_err(|e| e.to_string())?
    };
    let (x, y) = dataset();
    let mut joiners = (0usize, Instant::now() - Duration::from_secs(1));
    while state.step < opts.steps {
        let started = Instant::now();
        fire(&comm, fails, &mut state, t0);
        match step(&comm, opts, &mut state, &x, &y, &mut joiners) {
            Ok(grow) => {
                if grow {
                    comm = grow_world(comm, &mut state)?;
                }
            }
            Err(Error::Revoked { .. }) => {
                comm = recover(comm, &mut state, started, fails, t0)?;
            }
            Err(e) => return Err(format!("rank {}: {}", comm.rank(), chain(&e))),
        }
        if comm.rank() == 0 && (state.step % opts.eval_every == 0 || state.step == opts.steps) {
            println!(
                "step {:>5}  loss {:.6}",
                state.step,
                state.model.loss(&x, &y)
            );
        }
    }
    if let Some(full) = full {
        comm = await_replacements(comm, full, &mut state, fails, t0)?;
    }
    if comm.rank() == 0 {
        println!(
            "parameters bit-identical on all ranks after every step; final world {}",
            comm.world_size()
        );
        println!("final loss: {:.6}", state.model.loss(&x, &y));
    }
    Ok(())
}

/// `e` and its causes, `outer: inner: …`, so that "bootstrap failed" says what failed.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(&format!(": {cause}"));
        next = cause.source();
    }
    text
}

/// After the last step, with `--replace`: the replacements of failures late in the job may
/// still be starting, so the ranks poll the store together (every 20 ms) and grow until the
/// world is `full` again. The ranks agree on every decision through an all-reduce of the
/// maximum, so they give up together: when no replacement arrived within the job's timeout
/// (`FERROCOLL_TIMEOUT`), that is an error. A rank failing meanwhile is recovered from as
/// during training.
fn await_replacements(
    mut comm: Communicator,
    full: usize,
    state: &mut State,
    fails: &[FailSpec],
    t0: f64,
) -> Result<Communicator, String> {
    let mut since = Instant::now();
    while comm.world_size() < full {
        let started = Instant::now();
        let expired = since.elapsed() >= comm.config().timeout;
        let mut vote = [0u64, u64::from(expired)];
        let polled = comm.joiners_waiting().and_then(|n| {
            vote[0] = n as u64;
            comm.all_reduce(&mut vote, ReduceOp::Max)
        });
        match polled {
            Ok(()) if vote[0] > 0 => {
                comm = grow_world(comm, state)?;
                since = Instant::now();
            }
            Ok(()) if vote[1] > 0 => {
                return Err(format!(
                    "rank {}: training done at world {} of {full}; no replacement joined \
                     within {:?}",
                    comm.rank(),
                    comm.world_size(),
                    comm.config().timeout
                ))
            }
            Ok(()) => std::thread::sleep(Duration::from_millis(20)),
            Err(Error::Revoked { .. }) => {
                comm = recover(comm, state, started, fails, t0)?;
                since = Instant::now();
            }
            Err(e) => return Err(format!("rank {}: {}", comm.rank(), chain(&e))),
        }
    }
    Ok(comm)
}

/// Makes this rank fail if a `--fail` flag says so now.
fn fire(comm: &Communicator, fails: &[FailSpec], state: &mut State, t0: f64) {
    let next = state.step + 1;
    for (i, f) in fails.iter().enumerate() {
        let due = match f.at {
            Trigger::Step(s) => s == next,
            Trigger::After(d) => unix_now() - t0 >= d.as_secs_f64(),
        };
        if state.fired & (1 << i) != 0 || !due || f.rank != comm.rank() {
            continue;
        }
        let (name, sig) = match f.kind {
            FailKind::Kill => ("SIGKILL", libc::SIGKILL),
            FailKind::Stop => ("SIGSTOP", libc::SIGSTOP),
        };
        println!(
            "fail: rank {} (pid {}) {name} at step {next} at {:.6}",
            comm.rank(),
            std::process::id(),
            unix_now()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: raising a signal on ourselves has no memory-safety preconditions.
        unsafe { libc::raise(sig) };
    }
}

/// One training step on `comm`; whether replacements wait (every rank gets the same answer).
fn step(
    comm: &Communicator,
    opts: &Opts,
    state: &mut State,
    x: &[f32],
    y: &[usize],
    joiners: &mut (usize, Instant),
) -> ferrocoll::Result<bool> {
    let (w, me) = (comm.world_size(), comm.rank());
    let next = state.step + 1;
    let mut grad = Mlp::zeros();
    for b in (me..BATCH).step_by(w) {
        let p = ((next - 1) * BATCH + b) % POINTS;
        grad_point(&state.model, &x[p * DIM..(p + 1) * DIM], y[p], &mut grad);
    }
    let mut flat = grad.t.concat();
    comm.all_reduce(&mut flat, ReduceOp::Sum)?;
    let t = (next - 1) as f32 / opts.steps as f32;
    let lr = opts.lr * 0.5 * (1.0 + (std::f32::consts::PI * t).cos());
    let mut rest = flat.as_slice();
    for (p, m) in state.model.t.iter_mut().zip(&mut state.momentum.t) {
        let (g, tail) = rest.split_at(p.len());
        rest = tail;
        for ((p, m), g) in p.iter_mut().zip(m.iter_mut()).zip(g) {
            *m = 0.9 * *m + g;
            *p -= lr * *m;
        }
    }
    // The per-step check, with each rank's last view of the waiting replacements.
    if joiners.1.elapsed() >= Duration::from_millis(100) {
        *joiners = (comm.joiners_waiting()?, Instant::now());
    }
    let h = state.model.t.iter().fold(FNV_OFFSET, |h, t| fnv(h, t));
    let mut all = vec![0u64; 2 * w];
    comm.all_gather(&[h, joiners.0 as u64], &mut all)?;
    if (0..w).any(|r| all[2 * r] != all[0]) {
        let prints: Vec<u64> = (0..w).map(|r| all[2 * r]).collect();
        return Err(Error::Internal(format!(
            "parameters differ between ranks after step {next}: hashes {prints:016x?}"
        )));
    }
    state.step = next;
    Ok((0..w).any(|r| all[2 * r + 1] > 0))
}

fn grad_point(model: &Mlp, x: &[f32], y: usize, grad: &mut Mlp) {
    model.point(x, y, Some((grad, 1.0 / BATCH as f32)));
}

/// After a revocation: shrink, take rank 0's state, mark the failures that fired.
fn recover(
    comm: Communicator,
    state: &mut State,
    started: Instant,
    fails: &[FailSpec],
    t0: f64,
) -> Result<Communicator, String> {
    let old = comm.world_size();
    let small = comm.shrink().map_err(|e| format!("shrink: {e}"))?;
    drop(comm);
    // Every failure due by now has fired (the victims are gone).
    let next = state.step + 1;
    for (i, f) in fails.iter().enumerate() {
        let due = match f.at {
            Trigger::Step(s) => s <= next,
            Trigger::After(d) => unix_now() - t0 >= d.as_secs_f64(),
        };
        if due {
            state.fired |= 1 << i;
        }
    }
    state
        .sync(&small)
        .map_err(|e| format!("state after shrink: {e}"))?;
    println!(
        "recovered: world {old} -> {} in {:.2} s at step {} (at {:.6})",
        small.world_size(),
        started.elapsed().as_secs_f64(),
        state.step + 1,
        unix_now()
    );
    Ok(small)
}

/// Grows the world by the replacements waiting, and sends them the state.
fn grow_world(comm: Communicator, state: &mut State) -> Result<Communicator, String> {
    let t = Instant::now();
    let Some(big) = comm.grow().map_err(|e| format!("grow: {e}"))? else {
        return Ok(comm);
    };
    state
        .sync(&big)
        .map_err(|e| format!("state after grow: {e}"))?;
    println!(
        "grew: world {} -> {} in {:.2} s",
        comm.world_size(),
        big.world_size(),
        t.elapsed().as_secs_f64()
    );
    Ok(big)
}

/// The launcher of an elastic job: see the module docs.
pub fn launch(np: usize, args: &[std::ffi::OsString], replace: bool) -> Result<(), String> {
    use std::process::Command;
    // The job's store lives in this process: it outlives every rank. It demands this
    // process's secret, or a fresh one, which the ranks and replacements get with its address.
    let store = ferrocoll::launch::LocalStore::start().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let t0 = [("TRAIN_DP_T0".to_string(), format!("{:.6}", unix_now()))];
    let kids =
        ferrocoll::launch::spawn_children_with_store(np, || Command::new(&exe), args, &t0, &store)
            .map_err(|e| e.to_string())?;
    let mut env = store.env();
    env.extend_from_slice(&t0);
    let result = supervise(kids, replace, || {
        let mut c = Command::new(&exe);
        c.args(args).env("TRAIN_DP_JOIN", "1");
        for (k, v) in &env {
            c.env(k, v);
        }
        c.spawn()
    });
    drop(store);
    result
}

/// Watches the ranks: a rank that dies by a signal or stops is a failure (replaced with
/// `replace`), every other rank must exit 0. Stopped ranks are killed at the end.
fn supervise(
    mut kids: Vec<std::process::Child>,
    replace: bool,
    spawn: impl Fn() -> std::io::Result<std::process::Child>,
) -> Result<(), String> {
    let mut done = vec![false; kids.len()];
    let mut stopped: Vec<usize> = Vec::new();
    let mut bad = Vec::new();
    loop {
        let mut new = Vec::new();
        for (i, k) in kids.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid pointer to an int.
            let rc = unsafe {
                libc::waitpid(k.id() as i32, &mut status, libc::WNOHANG | libc::WUNTRACED)
            };
            if rc <= 0 {
                continue;
            }
            let failed = if libc::WIFSTOPPED(status) {
                stopped.push(i);
                true
            } else if libc::WIFSIGNALED(status) {
                true
            } else {
                if libc::WEXITSTATUS(status) != 0 {
                    bad.push(format!(
                        "pid {} exited with {}",
                        k.id(),
                        libc::WEXITSTATUS(status)
                    ));
                }
                false
            };
            done[i] = true;
            if failed && replace {
                new.push(spawn().map_err(|e| format!("replacement: {e}"))?);
            }
        }
        for k in new {
            kids.push(k);
            done.push(false);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in stopped {
        let _ = kids[i].kill();
        let _ = kids[i].wait();
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}
