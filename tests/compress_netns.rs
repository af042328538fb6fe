//! Reduced CI form of issue 8's measured proof (`tests/netns/compression.sh`): 2 emulated
//! hosts × 1 rank over a 1 Gbit/s tbf link, a 4 MiB all-reduce per codec. It checks that every
//! codec runs across the shaped link with bit-identical results and prints the speed-ups; the
//! speed targets are only enforced by the full run (64 MiB, `REPORT_ONLY` unset). Needs root
//! for the namespaces and says why it skips otherwise.

use std::process::Command;

#[test]
fn compressed_all_reduce_across_a_shaped_link() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/compression.sh");
    let out = Command::new("bash")
        .args([script, env!("CARGO_BIN_EXE_ferrocoll-probe"), "4M", "2"])
        .env("REPORT_ONLY", "1")
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    match out.status.code() {
        Some(0) => {
            for codec in ["none", "fp16", "fp8", "onebit", "topk:0.01"] {
                assert!(
                    text.lines()
                        .any(|l| l.starts_with(codec) && l.contains('x')),
                    "no row for {codec}:\n{text}"
                );
            }
            assert!(!text.contains("FAIL"), "{text}");
        }
        Some(77) => eprintln!("compression proof skipped: {}", text.trim()),
        c => panic!("compression proof failed ({c:?}):\n{text}"),
    }
}
