//! Each rank's standard output and error, captured per rank: the ranks a test starts write
//! into one file each (stdout and stderr together, in the order written), and the files are
//! printed, labelled by rank, only when the test fails. A passing test prints nothing of
//! its ranks, and the ranks' lines never interleave with each other or with the harness's.
//! `FC_SHOW_RANKS=1` prints them after a passing job too (the ranks' own figures, e.g. the
//! resident sets of tests/memory.rs in `.ci/long.sh`).

use std::cell::Cell;
use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The log files of one job's ranks, in a fresh directory that is removed on drop. Dropped
/// while its thread panics (a failed assertion), or with `FC_SHOW_RANKS=1`, it first prints
/// every rank's output to standard error, labelled by rank.
pub struct RankLogs {
    what: String,
    dir: PathBuf,
    /// Commands built so far: the next one is this rank's.
    next: Cell<usize>,
}

impl RankLogs {
    /// Logs for the job `what` (a label for the failure output and the directory's name).
    pub fn new(what: &str) -> RankLogs {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let tag: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir = std::env::temp_dir().join(format!(
            "ferrocoll-logs-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("log directory");
        RankLogs {
            what: what.into(),
            dir,
            next: Cell::new(0),
        }
    }

    /// `base` with its output sent to the next rank's file: the command builder to hand to
    /// `ferrocoll::launch::spawn_children` / `spawn_local_command`, which build rank `r`'s
    /// command with their `r`-th call (rank order, one call per rank).
    pub fn command<'a>(&'a self, base: impl Fn() -> Command + 'a) -> impl Fn() -> Command + 'a {
        move || {
            let rank = self.next.get();
            self.next.set(rank + 1);
            let out = File::create(self.path(rank)).expect("rank log file");
            let err = out.try_clone().expect("rank log file");
            let mut c = base();
            c.stdout(out).stderr(err);
            c
        }
    }

    fn path(&self, rank: usize) -> PathBuf {
        self.dir.join(format!("rank-{rank}.log"))
    }

    /// Every rank's output so far, each under a line naming the job and the rank.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for rank in 0..self.next.get() {
            let text = std::fs::read_to_string(self.path(rank))
                .unwrap_or_else(|e| format!("(log unreadable: {e})\n"));
            s += &format!("---- {}: rank {rank}, stdout and stderr ----\n", self.what);
            if text.is_empty() {
                s += "(no output)\n";
            } else {
                s += &text;
                if !text.ends_with('\n') {
                    s.push('\n');
                }
            }
        }
        s
    }
}

impl Drop for RankLogs {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("FC_SHOW_RANKS").is_some_and(|v| v == "1") {
            eprint!("{}", self.dump());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
