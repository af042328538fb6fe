//! The job's trust boundary, checked from outside as an operator would (issue 25):
//! - a second job pointed at a running job's store with another secret is refused, and the
//!   first job goes on to exact results;
//! - no listener of a job on one host is bound outside loopback (`ss`);
//! - a capture of the job's loopback traffic (`tcpdump`) never holds the secret, while it
//!   does hold the job's data (so the capture is known to work).
//!
//! The test binary re-runs itself as the ranks: `FC_SEC` names what a rank does
//! (`harness = false`, tests/common/harness.rs). A test whose tool (`ss`, `tcpdump`, root
//! for the capture) is missing says SKIPPED and why.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::logs::RankLogs;
use ferrocoll::launch::spawn_children;
use ferrocoll::{Communicator, ReduceOp};

/// A job that has not ended by then hangs: fail the test instead of CI.
const HANG: Duration = Duration::from_secs(60);
/// The all-reduce values carry this marker in their bytes: the capture must see it. An
/// integer, so that every sum is exact in f32.
const MARKER: f32 = 1_234_567.0;

fn me() -> Command {
    Command::new(std::env::current_exe().expect("test binary path"))
}

fn main() {
    if let Ok(what) = std::env::var("FC_SEC") {
        std::process::exit(rank(&what));
    }
    common::harness::run_tests(&[
        (
            "a_second_job_with_a_wrong_secret_is_refused_and_the_first_finishes_exact",
            second_job_refused,
        ),
        ("a_one_host_job_listens_on_loopback_only", loopback_only),
        ("the_secret_never_crosses_loopback", secret_not_on_the_wire),
    ]);
}

fn report_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("FC_REPORT").expect("FC_REPORT"))
}

fn report(name: &str, line: &str) {
    std::fs::write(report_dir().join(name), line).expect("report");
}

/// Waits (up to [`HANG`]) for the file `name` in the report directory.
fn wait_for(dir: &Path, name: &str) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < HANG {
        if dir.join(name).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// One rank. `train`: all-reduces checked exactly until the parent writes `stop`, then
/// reports `ok <calls>`. `intruder`: must fail to join; reports the error. `hold`: joins,
/// reports `up-<rank>`, waits for `stop`.
fn rank(what: &str) -> i32 {
    if what == "intruder" {
        let t0 = Instant::now();
        let r = std::env::var("FERROCOLL_RANK").unwrap_or_default();
        let line = match Communicator::from_env() {
            Ok(c) => format!("joined as rank {} of {}", c.rank(), c.world_size()),
            Err(e) => format!("refused in {} ms: {e:?}", t0.elapsed().as_millis()),
        };
        report(&format!("intruder-{r}"), &line);
        return 0;
    }
    let c = Communicator::from_env().unwrap_or_else(|e| panic!("from_env: {e:?}"));
    let (me, n) = (c.rank(), c.world_size());
    report(&format!("up-{me}"), "");
    let dir = report_dir();
    let mut calls = 0u64;
    loop {
        let stop = dir.join("stop").exists();
        // Every rank must call the same number of times: agree on stopping first.
        let mut flag = [u32::from(stop)];
        c.all_reduce(&mut flag, ReduceOp::Max).expect("agreement");
        if flag[0] == 1 {
            break;
        }
        if what == "train" {
            let mut v: Vec<f32> = (0..16_384)
                .map(|i| MARKER + (me * 7 + i % 13) as f32)
                .collect();
            c.all_reduce(&mut v, ReduceOp::Sum).expect("all-reduce");
            let base = n as f32 * MARKER + (7 * n * (n - 1) / 2) as f32;
            for (i, x) in v.iter().enumerate() {
                let want = base + (n * (i % 13)) as f32;
                assert_eq!(*x, want, "rank {me}, call {calls}, element {i}");
            }
            calls += 1;
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    report(&format!("ok-{me}"), &format!("ok {calls}"));
    0
}

/// A job of `np` ranks doing `what`, reporting into a fresh directory.
struct Job {
    kids: Vec<Child>,
    dir: PathBuf,
    logs: RankLogs,
}

impl Job {
    fn start(np: usize, what: &str, env: &[(&str, &str)], dir: Option<&Path>) -> Job {
        let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| {
            let d = std::env::temp_dir().join(format!(
                "ferrocoll-security-{what}-{}-{}",
                std::process::id(),
                rand_tag()
            ));
            std::fs::create_dir_all(&d).unwrap();
            d
        });
        let mut vars: Vec<(String, String)> = vec![
            ("FC_SEC".into(), what.into()),
            ("FC_REPORT".into(), dir.display().to_string()),
            ("FERROCOLL_TIMEOUT".into(), "20".into()),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let logs = RankLogs::new(&format!("security {what}"));
        let kids = spawn_children(np, logs.command(me), &[], &vars).unwrap();
        Job { kids, dir, logs }
    }

    fn wait_up(&self, np: usize) {
        for r in 0..np {
            assert!(
                wait_for(&self.dir, &format!("up-{r}")),
                "rank {r} never came up\n{}",
                self.logs.dump()
            );
        }
    }

    /// Tells the ranks to stop and waits for them; every one must exit 0.
    fn stop(mut self) -> (PathBuf, RankLogs) {
        std::fs::write(self.dir.join("stop"), "").unwrap();
        let t0 = Instant::now();
        for (r, k) in self.kids.iter_mut().enumerate() {
            let st = loop {
                if let Some(s) = k.try_wait().unwrap() {
                    break s;
                }
                assert!(t0.elapsed() < HANG, "rank {r} hangs\n{}", self.logs.dump());
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(st.success(), "rank {r}: {st:?}\n{}", self.logs.dump());
        }
        (self.dir, self.logs)
    }
}

fn rand_tag() -> String {
    ferrocoll::launch::fresh_secret().unwrap()[..8].to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A second job started with another secret on a running job's store address: its rank 0
/// finds the address taken, its other ranks are refused within 1 s, and the first job goes on
/// with exact results.
fn second_job_refused() {
    let store = format!("127.0.0.1:{}", free_port());
    let first = Job::start(
        3,
        "train",
        &[
            ("FERROCOLL_STORE", &store),
            ("FERROCOLL_SECRET", "the first job's secret"),
        ],
        None,
    );
    first.wait_up(3);
    // The second job: the same store address, another secret, started while the first
    // trains. Its rank 0 finds the address taken; the others are refused by the store.
    let second = Job::start(
        3,
        "intruder",
        &[
            ("FERROCOLL_STORE", &store),
            ("FERROCOLL_SECRET", "a wrong secret, not the first"),
        ],
        None,
    );
    for r in 0..3 {
        assert!(
            wait_for(&second.dir, &format!("intruder-{r}")),
            "intruder {r} neither joined nor was refused\n{}",
            second.logs.dump()
        );
    }
    let line =
        |r: usize| std::fs::read_to_string(second.dir.join(format!("intruder-{r}"))).unwrap();
    let l0 = line(0);
    assert!(
        l0.starts_with("refused") && l0.contains("already listens"),
        "rank 0: {l0}"
    );
    for r in 1..3 {
        let l = line(r);
        assert!(
            l.starts_with("refused") && l.contains("Unauthorized"),
            "rank {r}: {l}"
        );
        let ms: u64 = l["refused in ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ms < 1_000, "rank {r} refused only after {ms} ms");
    }
    drop(second.stop());
    let (dir, logs) = first.stop();
    for r in 0..3 {
        let l = std::fs::read_to_string(dir.join(format!("ok-{r}"))).unwrap_or_default();
        let calls: u64 = l
            .strip_prefix("ok ")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        assert!(
            calls > 0,
            "rank {r} of the first job: {l:?}\n{}",
            logs.dump()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tool` runs here (`--version` or similar), or the reason it does not.
fn have(tool: &str, arg: &str) -> Result<(), String> {
    match Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{tool}: {e}")),
    }
}

/// Every socket of a one-host job (listening or not) is bound to loopback.
fn loopback_only() {
    if let Err(why) = have("ss", "-V") {
        println!("SKIPPED: a_one_host_job_listens_on_loopback_only ({why}; iproute2 has it)");
        return;
    }
    // Over TCP so that data links listen too (shared memory listens nowhere), with the
    // failure detector's datagram socket, and rank 0 serving the store.
    let job = Job::start(3, "hold", &[("FERROCOLL_TRANSPORT", "tcp")], None);
    job.wait_up(3);
    // Every TCP and UDP socket, listening or connected.
    let out = Command::new("ss")
        .args(["-H", "-t", "-u", "-a", "-n", "-p"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pids: Vec<String> = job
        .kids
        .iter()
        .map(|k| format!("pid={},", k.id()))
        .collect();
    let mut per_rank = vec![0usize; 3];
    let mut outside = Vec::new();
    for line in text.lines() {
        let Some(r) = pids.iter().position(|p| line.contains(p.as_str())) else {
            continue;
        };
        per_rank[r] += 1;
        // netid state recv-q send-q local peer process
        let local = line.split_whitespace().nth(4).unwrap_or("");
        if !(local.starts_with("127.") || local.starts_with("[::1]")) {
            outside.push(format!("rank {r}: {line}"));
        }
    }
    let (dir, _) = job.stop();
    let _ = std::fs::remove_dir_all(&dir);
    // Each rank: its links, its datagram socket, its store connection (rank 0: the store's
    // listener too).
    assert!(
        per_rank.iter().all(|&n| n >= 3),
        "sockets per rank {per_rank:?}:\n{text}"
    );
    assert!(
        outside.is_empty(),
        "sockets outside loopback:\n{}",
        outside.join("\n")
    );
}

/// A capture of loopback while a 2-rank TCP job with a secret runs holds the job's data, and
/// never the secret.
fn secret_not_on_the_wire() {
    if let Err(why) = have("tcpdump", "--version") {
        println!("SKIPPED: the_secret_never_crosses_loopback ({why})");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the_secret_never_crosses_loopback (capturing needs root)");
        return;
    }
    let secret = format!("fc-secret-{}", ferrocoll::launch::fresh_secret().unwrap());
    let dir = std::env::temp_dir().join(format!("ferrocoll-security-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("lo.pcap");
    let store = format!("127.0.0.1:{}", free_port());
    let mut dump = Command::new("tcpdump")
        .args(["-i", "lo", "-U", "-s", "0", "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // tcpdump says "listening on lo" once it captures.
    let mut err = dump.stderr.take().unwrap();
    let mut seen = Vec::new();
    let t0 = Instant::now();
    while !String::from_utf8_lossy(&seen).contains("listening on") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "tcpdump: {}",
            String::from_utf8_lossy(&seen)
        );
        let mut b = [0u8; 256];
        let n = std::io::Read::read(&mut err, &mut b).unwrap();
        assert!(n > 0, "tcpdump ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&b[..n]);
    }
    let job = Job::start(
        2,
        "train",
        &[
            ("FERROCOLL_STORE", &store),
            ("FERROCOLL_SECRET", &secret),
            ("FERROCOLL_TRANSPORT", "tcp"),
        ],
        Some(&dir),
    );
    job.wait_up(2);
    std::thread::sleep(Duration::from_millis(300));
    let (_, _) = job.stop();
    // SAFETY: kill(2) on our own child's pid; tcpdump flushes and exits on SIGINT.
    unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
    let _ = dump.wait();
    let bytes = std::fs::read(&pcap).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    // The job's data crossed loopback in the capture (the check below could fail)...
    let marker: Vec<u8> = (MARKER + 0.0).to_le_bytes().to_vec();
    assert!(
        has(&marker),
        "the capture ({} bytes) holds none of the job's data",
        bytes.len()
    );
    // ...and its secret never did.
    assert!(!has(secret.as_bytes()), "the secret crossed loopback");
}
