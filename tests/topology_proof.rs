//! Issue 7's measured proof, short: 2 emulated hosts (network + UTS namespaces, every link
//! shaped to 1 Gbit/s with tbf) × 2 ranks placed cyclically, an 8 MiB f32 all-reduce with the
//! rank-order ring, the topology-ordered ring and hierarchical in the same run; the byte
//! counts give 2×, 3× and 1.5× as limits. The work is in `benches/topo_proof.sh`, whose full
//! mode (release build, 64 MiB) gates on the issue's targets 1.8×, 2.5×, 1.3× and adds the
//! tuner-regret and model-error tables. This test runs the debug build on a machine shared
//! with builds, where the CPU-side phases cost more (hierarchical's intra-host phases most:
//! 1.08–1.26× over the topology ring seen in debug, 1.44–1.51× in release), so it gates on
//! floors (1.5×, 1.8×, 1.0×) that still prove the ordering, and prints the ratios. Then the
//! short part 2: every all-reduce algorithm and the tuner's choice measured side by side
//! (`--compare`) at a few sizes on 2 hosts × 2 (the full mode adds 1 host × 4 and 4 hosts ×
//! 1; here they would add two minutes of figures that are not judged), with the tuner
//! regret and model error table printed; with so few calls its figures are this machine's
//! noise, so the test requires the table and that every run succeeds, not the targets (the
//! full mode gates on them), and short mode prints those figures without a verdict: a
//! passing run shows no `MISS`. It needs root and says why it skips.
//!
//! The script's report goes to this process's real standard output (through `cat` in the
//! child), not through the test harness's capture, so CI's log shows the tables whether the
//! test passes or fails.

use std::process::Command;

#[test]
fn topology_ring_and_hierarchical_beat_the_rank_ring_across_a_slow_link() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/topo_proof.sh");
    let dir = std::env::temp_dir().join(format!("ferrocoll-topo-proof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let report = dir.join("report.txt");
    let status = Command::new("bash")
        .arg("-c")
        .arg(r#"bash "$0" --short "$1" >"$2" 2>&1; rc=$?; cat "$2"; exit $rc"#)
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_ferrocoll-probe"))
        .arg(&report)
        .env("TOPO_PROOF_TARGETS", "1.5 1.8 1.0")
        .env("TOPO_PROOF_HOSTS", "2")
        .status()
        .expect("bash runs");
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    match status.code() {
        Some(0) => {
            for line in [
                "ok   topology ring vs rank ring",
                "ok   hierarchical vs rank ring",
                "ok   hierarchical vs topology ring",
                "-- 2 host(s) x 2 rank(s)",
                "worst tuner regret",
                "worst model error at >= 1 MiB",
            ] {
                assert!(text.contains(line), "{line} missing:\n{text}");
            }
            // Part 1's verdicts gate the exit status, and part 2 gives none in short mode.
            assert!(!text.contains("MISS"), "a MISS in a passing run:\n{text}");
        }
        Some(77) => eprintln!("topology proof skipped: {}", text.trim()),
        c => panic!("topology proof failed ({c:?}):\n{text}"),
    }
}
