//! The `train_dp` example's command line, end to end: the built example binary run as
//! `train_dp --np 2 ...` (it re-runs itself as 2 local ranks), checked for exit status 0,
//! a finite `final loss: X` line, the per-step bit-identity line and, with `--plot`, a PNG.
//!
//! The binary is `target/<profile>/examples/train_dp`. Plain `cargo test` builds it before
//! running the tests; `cargo test --all-targets` (which builds examples as test harnesses
//! instead) and `cargo test --test train_dp_cli` do not: run `cargo build --example train_dp`
//! first. This test fails, saying so, when the binary is missing or older than one of the
//! sources cargo built it from (it would test old code).

use std::path::PathBuf;
use std::process::Command;

/// Steps per run: enough to move the loss, well under a second in a debug build.
const STEPS: &str = "20";

/// The example binary next to this test's binary (`target/<profile>/deps/..`), checked to
/// exist and to be newer than the sources it is built from.
fn train_dp() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lies in target/<profile>/deps");
    let build = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "cargo build --example train_dp".to_string(),
        Some("release") => "cargo build --release --example train_dp".to_string(),
        Some(p) => format!("cargo build --profile {p} --example train_dp"),
    };
    let bin = profile_dir
        .join("examples")
        .join(format!("train_dp{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: build the example first (`{build}`; plain `cargo test` builds it, \
                 `cargo test --all-targets` and `cargo test --test train_dp_cli` do not)",
                bin.display()
            )
        });
    // Cargo's dep-info next to the binary lists the sources it was built from (the example,
    // ferrocoll and its path dependencies): any of them newer means the binary is stale.
    let dep_info = std::fs::read_to_string(bin.with_extension("d")).unwrap_or_default();
    let sources = dep_info
        .lines()
        .next()
        .and_then(|l| l.split_once(": "))
        .map_or("", |(_, deps)| deps);
    for src in sources.replace("\\ ", "\0").split_whitespace() {
        let src = PathBuf::from(src.replace('\0', " "));
        let changed = std::fs::metadata(&src).and_then(|m| m.modified());
        assert!(
            changed.as_ref().is_ok_and(|t| *t <= built),
            "{} was built before {} changed: rebuild it (`{build}`) so that this test runs \
             the current code",
            bin.display(),
            src.display()
        );
    }
    bin
}

/// `train_dp --np 2 --steps STEPS --eval-every 10 ARGS`, in an environment without launcher
/// variables.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(train_dp());
    cmd.args(["--np", "2", "--steps", STEPS, "--eval-every", "10"])
        .args(args)
        .env("FERROCOLL_TIMEOUT", "60");
    // This process may itself run under a launcher (or with a codec or topology set): the
    // example must fork its own 2 ranks with the codec given here.
    for var in [
        "FERROCOLL_RANK",
        "FERROCOLL_WORLD_SIZE",
        "FERROCOLL_LOCAL_RANK",
        "FERROCOLL_LOCAL_WORLD_SIZE",
        "FERROCOLL_STORE",
        "FERROCOLL_COMPRESSION",
        "FERROCOLL_TOPO_FILE",
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "PMI_RANK",
        "PMI_SIZE",
        "SLURM_PROCID",
        "SLURM_NTASKS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs [`command`] and returns its stdout, asserting exit 0 and the per-step check's line.
fn run(args: &[&str]) -> String {
    let out = command(args).output().expect("cannot run train_dp");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "train_dp {args:?}: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("parameters bit-identical on all ranks after every step"),
        "{stdout}"
    );
    stdout
}

/// The X of the `final loss: X` line (which must be there and finite).
fn final_loss(stdout: &str) -> f64 {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("final loss: "))
        .unwrap_or_else(|| panic!("no `final loss:` line in:\n{stdout}"));
    let x: f64 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("`final loss: {line}` is not a number"));
    assert!(x.is_finite(), "final loss {x} in:\n{stdout}");
    x
}

#[test]
fn fp8_trains_and_plots() {
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("train_dp_cli-{}.png", std::process::id()));
    let _ = std::fs::remove_file(&png);
    let out = run(&["--compression", "fp8", "--plot", png.to_str().unwrap()]);
    assert!(
        out.contains("train_dp: 2 ranks, codec fp8"),
        "codec line missing:\n{out}"
    );
    assert!(out.contains("error feedback on"), "{out}");
    let loss = final_loss(&out);
    // Cross-entropy over 4 classes starts near ln 4 ≈ 1.39; 20 steps must not blow it up.
    assert!(loss > 0.0 && loss < 2.0, "final loss {loss}:\n{out}");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    let _ = std::fs::remove_file(&png);
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
}

#[test]
fn onebit_runs_without_error_feedback() {
    let out = run(&["--compression", "onebit", "--no-error-feedback"]);
    assert!(out.contains("codec onebit"), "{out}");
    assert!(out.contains("error feedback off"), "{out}");
    final_loss(&out);
}

#[test]
fn auto_is_uncompressed_on_one_host() {
    // `auto` resolves from the communicator's topology: both ranks are on this host.
    let out = run(&["--compression", "auto"]);
    assert!(out.contains("codec none (auto)"), "{out}");
    final_loss(&out);
}

#[test]
fn ranks_that_diverge_fail_at_that_step() {
    // The example's self-test knob flips one bit of the last rank's parameters after step 3:
    // the per-step check must stop every rank there, with a message naming the step.
    let out = command(&["--compression", "fp16"])
        .env("TRAIN_DP_DIVERGE_AFTER", "3")
        .output()
        .expect("cannot run train_dp");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "diverged ranks exited 0:\n{stdout}");
    assert!(
        stderr.contains("parameters differ between ranks after step 3: ranks [1] disagree"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stdout.contains("final loss"), "{stdout}");
}

/// Runs an elastic job (`--elastic` plus `args`, a 1 s heartbeat timeout, and `env`); its
/// exit status, stdout and stderr. Success is for the caller to check.
fn elastic(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String, String) {
    let mut cmd = command(&[&["--elastic"], args].concat());
    cmd.env("FERROCOLL_HEARTBEAT_TIMEOUT", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("cannot run train_dp");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status, text(&out.stdout), text(&out.stderr))
}

/// [`elastic`], checked to exit 0; its stdout.
fn elastic_ok(args: &[&str]) -> String {
    let (status, stdout, stderr) = elastic(args, &[]);
    assert!(
        status.success(),
        "{status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[test]
fn elastic_training_survives_kills_and_a_stop_and_grows_back() {
    // Rank 0 killed, then rank 1 stopped, then ranks 0 and 1 killed at once; each failed rank
    // is replaced. The per-step parameter check stays on throughout.
    let stdout = elastic_ok(&[
        "--np",
        "4",
        "--steps",
        "1500",
        "--eval-every",
        "500",
        "--replace",
        "--fail",
        "kill:0@100",
        "--fail",
        "stop:1@500",
        "--fail",
        "kill:0@1000",
        "--fail",
        "kill:1@1000",
    ]);
    let count = |p: &str| stdout.lines().filter(|l| l.starts_with(p)).count();
    assert_eq!(count("fail: "), 4, "{stdout}");
    assert_eq!(count("joined: "), 4, "{stdout}");
    // Three failure events; each survivor of each prints one line. The kill at step 100
    // takes the world from 4 to 3. The stop at step 500 takes it from 4 to 3 when the first
    // replacement has joined by then, else from 3 to 2: the replacement starts beside the
    // training, whose 400 steps take a fraction of a second, so either can happen. The
    // double kill at step 1000 takes it from 4 to 2.
    let recovered: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("recovered: world "))
        .collect();
    let seen = |s: &str| recovered.iter().filter(|l| l.contains(s)).count();
    assert!(seen("4 -> 3") >= 3, "the first kill: {stdout}");
    assert!(
        seen("4 -> 3") >= 6 || seen("3 -> 2") >= 2,
        "the stop: {stdout}"
    );
    assert!(seen("4 -> 2") >= 1, "the double failure: {stdout}");
    assert!(count("grew: world ") >= 3, "{stdout}");
    // With --replace the job ends at full strength, however late the replacements join.
    assert!(
        stdout.contains("parameters bit-identical on all ranks after every step; final world 4"),
        "{stdout}"
    );
    final_loss(&stdout);
}

#[test]
fn a_replacement_that_starts_after_the_last_step_still_joins() {
    // The kill fires at the last step: the survivors finish training before the replacement
    // can join, then wait for it and grow back before they end.
    let stdout = elastic_ok(&[
        "--np",
        "3",
        "--steps",
        "30",
        "--replace",
        "--fail",
        "kill:1@30",
    ]);
    let count = |p: &str| stdout.lines().filter(|l| l.starts_with(p)).count();
    assert_eq!(count("recovered: world 3 -> 2"), 2, "{stdout}");
    assert_eq!(count("joined: rank 2 of 3"), 1, "{stdout}");
    assert_eq!(count("grew: world 2 -> 3"), 2, "{stdout}");
    assert!(
        stdout.contains("parameters bit-identical on all ranks after every step; final world 3"),
        "{stdout}"
    );
    final_loss(&stdout);
}

#[test]
fn ranks_waiting_for_replacements_that_never_join_fail_together_at_the_timeout() {
    // The replacement exits at once (the example's self-test knob): the survivors must not
    // wait forever after the last step, but fail together once FERROCOLL_TIMEOUT passes.
    let started = std::time::Instant::now();
    let (status, stdout, stderr) = elastic(
        &[
            "--np",
            "3",
            "--steps",
            "20",
            "--replace",
            "--fail",
            "kill:1@10",
        ],
        &[
            ("FERROCOLL_TIMEOUT", "3"),
            ("TRAIN_DP_REPLACEMENT_FAILS", "1"),
        ],
    );
    assert!(!status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let gave_up = stderr
        .matches("training done at world 2 of 3; no replacement joined within 3s")
        .count();
    assert_eq!(
        gave_up, 2,
        "both survivors give up:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("not joining (TRAIN_DP_REPLACEMENT_FAILS is set)"),
        "{stderr}"
    );
    assert!(!stdout.contains("final loss"), "{stdout}");
    // Three seconds of waiting, not the minutes of a hang (generous for a loaded machine).
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
}
