//! Soak (issue 25): many random collectives on 4 ranks, every result checked, and nothing
//! that grows. Four real processes on this host (the launcher's default path: they meet
//! through rank 0's store and connect over shared memory, so `/dev/shm` segments are made);
//! the test binary re-runs itself as the ranks (`FC_SOAK_CHILD` makes `main` run
//! [`child_rank`] instead of the tests: `harness = false`, tests/common/harness.rs).
//!
//! Every rank draws the same calls from one seeded generator (`tests/soak_calls/mod.rs`):
//! the collective (every one of the Rust API, send/recv included), the element type and
//! operator (every pair), the count (0 elements now and then, else log-uniform up to
//! `FC_SOAK_MAX_BYTES` per buffer, 4 MiB by default), the algorithm (the tuner's choice, or
//! one forced algorithm that implements the collective: one communicator per algorithm,
//! split off the first with its own configuration), the root or peer, in place or out of
//! place, and blocking or `*_async` (up to [`MAX_PENDING`] calls in flight, waited in a
//! random order). Each rank computes every rank's input and the expected output itself
//! (`ferrocoll::verify`, the sequential reference; float sums and products within the
//! rounding bound of their order, everything else bit for bit), and the replicated results
//! (all-reduce, all-gather, broadcast) are hashed and compared across ranks at the end.
//!
//! The warm-up is [`prime`] (the largest call of each kind on each communicator, which sizes
//! the engine's scratch and makes the rings' shared pages resident) and then the first tenth
//! of the random calls. After it each rank records its resident set (`VmRSS`, read once the
//! allocator has returned its free pages: see [`Snapshot::take`]), its open file descriptors
//! and the listing of `/dev/shm` (names and sizes); at the end, with no call in flight, the
//! resident set may have grown by at most 1 %, and the other two must be unchanged. Each rank
//! prints one line of figures (`soak rank …`), which the test prints too.
//!
//! `FC_SOAK_CALLS` sets the number of calls (default 500, the suite's run: under a minute in a
//! debug build on a 2-core machine); `.ci/long.sh` runs 10,000 in release. `FC_SOAK_SEED`
//! replays a run (the seed is printed, and named in the failure message). For a diagnosis:
//! `FC_SOAK_TRACE=1` prints every call and wait, `FC_SOAK_RSS_EVERY=N` the resident set and
//! the allocator's counters every N calls (draining the calls in flight first, which changes
//! the run).

mod common;
mod soak_calls;

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::process::Command;
use std::time::{Duration, Instant};

use common::logs::RankLogs;
use ferrocoll::launch::spawn_local_command;
use ferrocoll::verify::{count_wrong, test_input};
use ferrocoll::{AlgoId, Collective, Communicator, DataType, ReduceOp};
use soak_calls::{draw, start_any, want, Draw, Rng, Run, KINDS, WORLD};

/// Most `*_async` calls in flight at once on a rank.
const MAX_PENDING: usize = 6;

/// An unsigned environment variable, or `default` when unset.
fn env_num(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Calls per rank: `FC_SOAK_CALLS`, default 500.
fn calls() -> usize {
    env_num("FC_SOAK_CALLS", 500) as usize
}

/// The largest buffer of a call, in bytes: `FC_SOAK_MAX_BYTES`, default 4 MiB.
fn max_bytes() -> usize {
    env_num("FC_SOAK_MAX_BYTES", 4 << 20) as usize
}

/// A call in flight, with what it must give.
struct Pending {
    index: usize,
    draw: Draw,
    want: Vec<u8>,
    bound: Vec<f64>,
    finish: Box<dyn FnOnce() -> ferrocoll::Result<Vec<u8>>>,
}

/// What a rank checks as it goes: the hash of the replicated outputs, in call order, and
/// counts for the summary.
#[derive(Default)]
struct Tally {
    replicas: DefaultHasher,
    by_kind: [usize; KINDS.len()],
    asynchronous: usize,
    bytes: u64,
}

impl Tally {
    /// Checks call `index`'s output `got` against `want` (exiting the rank on a mismatch) and
    /// counts it.
    fn check(
        &mut self,
        rank: usize,
        index: usize,
        d: &Draw,
        got: &[u8],
        want: &[u8],
        bound: &[f64],
    ) {
        let wrong = count_wrong(d.dtype, d.op, WORLD, got, want, bound);
        if wrong != 0 || got.len() != want.len() {
            fail(
                rank,
                index,
                d,
                format!(
                    "{wrong} wrong elements ({} bytes, {} expected)",
                    got.len(),
                    want.len()
                ),
            );
        }
        if matches!(
            d.kind,
            Collective::AllReduce | Collective::AllGather | Collective::Broadcast
        ) {
            self.replicas.write_usize(index);
            self.replicas.write(got);
        }
        let k = KINDS.iter().position(|&k| k == d.kind).unwrap_or(0);
        self.by_kind[k] += 1;
        self.asynchronous += usize::from(d.asynchronous);
        self.bytes += got.len() as u64;
    }
}

/// Reports call `index` as failed and ends this rank.
fn fail(rank: usize, index: usize, d: &Draw, what: impl std::fmt::Display) -> ! {
    eprintln!("soak rank {rank}: call {index} {d:?}: {what}");
    std::process::exit(1);
}

/// Waits for `p` and checks it.
fn finish(rank: usize, t: &mut Tally, p: Pending) {
    match (p.finish)() {
        Ok(got) => t.check(rank, p.index, &p.draw, &got, &p.want, &p.bound),
        Err(e) => fail(rank, p.index, &p.draw, format!("wait: {e}")),
    }
}

/// What must not grow: resident set, open descriptors, `/dev/shm`.
struct Snapshot {
    /// `VmRSS` once the allocator has returned its free pages (see [`Snapshot::take`]).
    rss_kib: u64,
    /// `RssAnon` and `RssShmem` (the shared-memory rings' pages), the parts of `rss_kib`.
    anon_kib: u64,
    shmem_kib: u64,
    /// `VmRSS` before that.
    untrimmed_kib: u64,
    fds: usize,
    shm: Vec<(String, u64)>,
    at: Instant,
}

impl Snapshot {
    /// The figures now. The resident set is read twice: as it is, and once `malloc_trim`
    /// has returned the allocator's free pages to the system. The second is the one checked:
    /// it counts the memory in use, where the first also counts what the allocator keeps on
    /// its free lists, a high-water mark set by the order in which the test's own buffers of
    /// random sizes came and went (fragmentation, which is not growth).
    fn take() -> Snapshot {
        let status = || std::fs::read_to_string("/proc/self/status").expect("procfs");
        let kib = |status: &str, field: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
        };
        let untrimmed_kib = kib(&status(), "VmRSS:");
        // SAFETY: malloc_trim only hands free pages of the allocator's arenas back.
        unsafe { libc::malloc_trim(0) };
        let status = status();
        // The fewest of a few looks: a descriptor a background thread holds for an instant
        // (the failure detector reads a peer's /proc/<pid>/stat) is not one that stays.
        let fds = (0..5)
            .map(|i| {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                std::fs::read_dir("/proc/self/fd").expect("procfs").count()
            })
            .min()
            .unwrap_or(0);
        let mut shm: Vec<(String, u64)> = std::fs::read_dir("/dev/shm")
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let len = e.metadata().map_or(0, |m| m.len());
                        (e.file_name().to_string_lossy().into_owned(), len)
                    })
                    .collect()
            })
            .unwrap_or_default();
        shm.sort();
        Snapshot {
            rss_kib: kib(&status, "VmRSS:"),
            anon_kib: kib(&status, "RssAnon:"),
            shmem_kib: kib(&status, "RssShmem:"),
            untrimmed_kib,
            fds,
            shm,
            at: Instant::now(),
        }
    }
}

impl Snapshot {
    /// The resident set and its parts, for people.
    fn rss_text(&self) -> String {
        format!(
            "RSS {} KiB (anonymous {}, shared memory {}; {} before trimming)",
            self.rss_kib, self.anon_kib, self.shmem_kib, self.untrimmed_kib
        )
    }
}

/// The communicators of a rank: the tuner's (from the launcher variables), then one per
/// algorithm, split off it with that algorithm forced.
fn communicators() -> Vec<(Option<AlgoId>, Communicator)> {
    let c = Communicator::from_env().unwrap_or_else(|e| panic!("from_env: {e}"));
    let shm = c.transports().iter().filter(|&&t| t == "shm").count();
    assert_eq!(
        shm,
        WORLD - 1,
        "ranks must meet over shared memory: {:?}",
        c.transports()
    );
    let mut comms = Vec::new();
    for a in AlgoId::all() {
        let cfg = c
            .config()
            .clone()
            .with_algo(a.name())
            .expect("algorithm name");
        let k = c
            .split_with(Some(0), c.rank() as i32, cfg)
            .unwrap_or_else(|e| panic!("split for {}: {e}", a.name()))
            .expect("every rank is in the split");
        comms.push((Some(a), k));
    }
    comms.insert(0, (None, c));
    comms
}

/// Starts call `index` (`d`) on its communicator with every rank's input computed here:
/// checks it at once when it ran to completion, else returns it to be waited for.
fn issue(
    comms: &[(Option<AlgoId>, Communicator)],
    d: &Draw,
    index: usize,
    tally: &mut Tally,
) -> Option<Pending> {
    let c = &comms[d.comm].1;
    let rank = c.rank();
    let len = d.spec(rank).input_len();
    let inputs: Vec<Vec<u8>> = (0..WORLD)
        .map(|q| test_input(d.dtype, d.op, q, len, d.data))
        .collect();
    let (want, bound) = want(d, &inputs, rank);
    match start_any(c, d, &inputs[rank]) {
        Ok(Run::Now(got)) => {
            tally.check(rank, index, d, &got, &want, &bound);
            None
        }
        Ok(Run::Later(f)) => Some(Pending {
            index,
            draw: *d,
            want,
            bound,
            finish: f,
        }),
        Err(e) => fail(rank, index, d, format!("start: {e}")),
    }
}

/// The first part of the warm-up: on every communicator, the largest call of every
/// collective it runs, in both layouts and from every root, and a send/recv at every
/// distance of more than a shared-memory ring's bytes. What is sized by the largest call so far (the engine's
/// scratch) or by the links (the rings' shared pages, resident once data has passed
/// through them) then has its full size before the snapshot, which the random calls of the
/// warm-up alone reach only by chance. Checked like every call; not counted in the summary.
fn prime(comms: &[(Option<AlgoId>, Communicator)], max_bytes: usize) {
    let ring = comms[0].1.config().shm_ring_bytes;
    let mut t = Tally::default();
    let mut index = 0;
    for (comm, (algo, _)) in comms.iter().enumerate() {
        for kind in KINDS {
            let chunks = match kind {
                Collective::AllGather
                | Collective::ReduceScatter
                | Collective::AllToAll
                | Collective::Gather
                | Collective::Scatter => WORLD,
                _ => 1,
            };
            let (count, roots, layouts) = match kind {
                Collective::SendRecv => ((ring.max(max_bytes) + 4096) / 8, 1..WORLD, 1),
                _ if algo.is_some_and(|a| !a.supports(kind)) => continue,
                Collective::Barrier => (0, 0..1, 1),
                // A rank's part in a rooted call (and its scratch) depends on the root.
                Collective::Broadcast
                | Collective::Reduce
                | Collective::Gather
                | Collective::Scatter => (max_bytes / 8 / chunks, 0..WORLD, 2),
                _ => (max_bytes / chunks / 8, 0..1, 2),
            };
            for root in roots {
                for layout in 0..layouts {
                    let d = Draw {
                        kind,
                        comm,
                        // The widest type: the fewest elements to check for the bytes.
                        dtype: DataType::I64,
                        op: ReduceOp::Sum,
                        count,
                        root,
                        in_place: layout == 1,
                        asynchronous: false,
                        data: index as u64,
                    };
                    issue(comms, &d, index, &mut t);
                    index += 1;
                }
            }
        }
    }
}

/// The ranks' side (run by `main` under `FC_SOAK_CHILD`): exits 0 when every result was
/// right and nothing grew, 1 otherwise (the reason on standard error).
fn child_rank() -> ! {
    let t0 = Instant::now();
    let seed = env_num("FC_SOAK_SEED", 0);
    let (calls, max_bytes) = (calls(), max_bytes());
    let comms = communicators();
    let algos: Vec<Option<AlgoId>> = comms.iter().map(|(a, _)| *a).collect();
    let rank = comms[0].1.rank();
    let trace = std::env::var_os("FC_SOAK_TRACE").is_some();
    let rss_every = env_num("FC_SOAK_RSS_EVERY", 0) as usize;
    prime(&comms, max_bytes);
    let mut rng = Rng(seed);
    let mut pending: Vec<Pending> = Vec::new();
    let mut tally = Tally::default();
    let warm_at = calls / 10;
    let mut warm = None;
    for i in 0..=calls {
        if i == warm_at {
            // Drained first: the buffers of calls in flight are not the library's.
            pending.drain(..).for_each(|p| finish(rank, &mut tally, p));
            warm = Some(Snapshot::take());
        }
        if i == calls {
            break;
        }
        if rss_every > 0 && i % rss_every == 0 {
            // Drained first, as for the snapshots (this changes the run: a diagnosis only).
            pending.drain(..).for_each(|p| finish(rank, &mut tally, p));
            // SAFETY: mallinfo2 only reads the allocator's counters.
            let m = unsafe { libc::mallinfo2() };
            eprintln!(
                "soak rank {rank}: call {i}: {}; malloc in use {} KiB, mmapped {} KiB, arena {} KiB",
                Snapshot::take().rss_text(),
                m.uordblks >> 10,
                m.hblkhd >> 10,
                m.arena >> 10
            );
        }
        let d = draw(&mut rng, &algos, max_bytes);
        if trace {
            eprintln!(
                "soak rank {rank}: call {i} {d:?} ({} in flight)",
                pending.len()
            );
        }
        pending.extend(issue(&comms, &d, i, &mut tally));
        // Every rank draws the same waits (the pending count is the same everywhere).
        while pending.len() > MAX_PENDING || (!pending.is_empty() && rng.chance(30)) {
            let p = pending.swap_remove(rng.below(pending.len()));
            if trace {
                eprintln!("soak rank {rank}: wait for call {}", p.index);
            }
            finish(rank, &mut tally, p);
        }
    }
    pending.drain(..).for_each(|p| finish(rank, &mut tally, p));
    let end = Snapshot::take();
    let warm = warm.expect("warm-up snapshot");
    std::process::exit(report(rank, seed, calls, t0, &comms, &tally, &warm, &end));
}

/// Prints this rank's figures, compares the snapshots and the replicas' hashes, and returns
/// the exit code.
#[allow(clippy::too_many_arguments)]
fn report(
    rank: usize,
    seed: u64,
    calls: usize,
    t0: Instant,
    comms: &[(Option<AlgoId>, Communicator)],
    tally: &Tally,
    warm: &Snapshot,
    end: &Snapshot,
) -> i32 {
    let mine = tally.replicas.finish();
    let mut all = [0u64; WORLD];
    if let Err(e) = comms[0].1.all_gather(&[mine], &mut all) {
        eprintln!("soak rank {rank}: gathering the replicas' hashes: {e}");
        return 1;
    }
    let growth = end.rss_kib as f64 / warm.rss_kib as f64 - 1.0;
    let kinds: Vec<String> = KINDS
        .iter()
        .zip(tally.by_kind)
        .map(|(k, n)| format!("{}={n}", k.name()))
        .collect();
    println!(
        "soak rank {rank}: seed {seed}, {calls} calls ({} async, {:.1} MiB out; {}) on {} \
         communicators in {:.1} s ({:.1} s after warm-up); warm {}, end {} ({:+.2} %); \
         fds warm {}, end {}; /dev/shm warm {} entries, end {}",
        tally.asynchronous,
        tally.bytes as f64 / (1 << 20) as f64,
        kinds.join(" "),
        comms.len(),
        t0.elapsed().as_secs_f64(),
        end.at.duration_since(warm.at).as_secs_f64(),
        warm.rss_text(),
        end.rss_text(),
        growth * 100.0,
        warm.fds,
        end.fds,
        warm.shm.len(),
        end.shm.len(),
    );
    let mut code = 0;
    if all.iter().any(|&h| h != mine) {
        eprintln!("soak rank {rank}: replicated outputs differ between ranks (hashes {all:x?})");
        code = 1;
    }
    // 1 % of the resident set after warm-up, in KiB.
    if end.rss_kib * 100 > warm.rss_kib * 101 {
        eprintln!(
            "soak rank {rank}: RSS grew by {:.2} % (over 1 %)",
            growth * 100.0
        );
        code = 1;
    }
    if end.fds != warm.fds {
        eprintln!(
            "soak rank {rank}: open descriptors {} -> {}",
            warm.fds, end.fds
        );
        code = 1;
    }
    if end.shm != warm.shm {
        eprintln!(
            "soak rank {rank}: /dev/shm changed: {:?} -> {:?}",
            warm.shm, end.shm
        );
        code = 1;
    }
    code
}

fn main() {
    if std::env::var_os("FC_SOAK_CHILD").is_some() {
        child_rank();
    }
    common::harness::run_tests(&[(
        "soak_random_collectives_on_4_ranks",
        soak_random_collectives_on_4_ranks,
    )]);
}

fn soak_random_collectives_on_4_ranks() {
    let seed = match std::env::var("FC_SOAK_SEED") {
        Ok(_) => env_num("FC_SOAK_SEED", 0),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    let calls = calls();
    let release = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    let replay =
        format!("FC_SOAK_SEED={seed} FC_SOAK_CALLS={calls} cargo test{release} --test soak");
    eprintln!("soak: {WORLD} ranks, {calls} calls, seed {seed} (replay: {replay})");
    let logs = RankLogs::new("soak");
    let st = spawn_local_command(
        WORLD,
        logs.command(|| Command::new(std::env::current_exe().expect("test binary path"))),
        &[],
        &[
            ("FC_SOAK_CHILD".into(), "1".into()),
            ("FC_SOAK_SEED".into(), seed.to_string()),
            ("FERROCOLL_TIMEOUT".into(), "120".into()),
        ],
    )
    .expect("spawn ranks");
    for line in logs.dump().lines().filter(|l| l.starts_with("soak rank")) {
        eprintln!("{line}");
    }
    assert!(
        st.iter().all(|s| s.success()),
        "soak failed (replay: {replay}): {st:?}"
    );
}
