//! `ferrocoll-probe all_reduce --compression CODEC`, end to end: rows with bus bandwidth in
//! uncompressed bytes, the max relative error within each codec's range, bit-identical ranks,
//! and refused combinations.

use std::process::{Command, Output};

const PROBE: &str = env!("CARGO_BIN_EXE_ferrocoll-probe");

fn probe(args: &[&str]) -> Output {
    Command::new(PROBE)
        .args(args)
        .env("FERROCOLL_TIMEOUT", "60")
        .output()
        .expect("cannot run ferrocoll-probe")
}

#[test]
fn compressed_sweep_reports_error_and_identity() {
    for (codec, max_err) in [("fp16", 1e-3), ("fp8", 0.1), ("topk:0.01", 1.0)] {
        let json = std::env::temp_dir().join(format!(
            "ferrocoll-compress-probe-{}-{}.json",
            std::process::id(),
            codec.replace(':', "_")
        ));
        let j = json.to_str().unwrap();
        let o = probe(&[
            "all_reduce",
            "--compression",
            codec,
            "-b",
            "4K",
            "-e",
            "64K",
            "-f",
            "4",
            "-n",
            "2",
            "-w",
            "1",
            "--np",
            "3",
            "--json",
            j,
        ]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{codec}: {out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("bit-identical on every rank: true"), "{out}");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let _ = std::fs::remove_file(&json);
        let rows = doc["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{doc}");
        for (row, size) in rows.iter().zip([4096u64, 16384, 65536]) {
            assert_eq!(row["size"].as_u64(), Some(size));
            assert_eq!(row["count"].as_u64(), Some(size / 4));
            assert_eq!(row["codec"].as_str(), Some(codec));
            assert_eq!(row["identical"].as_bool(), Some(true));
            let err = row["max_rel_err"].as_f64().unwrap();
            assert!(err > 0.0 && err <= max_err, "{codec}: error {err}");
            // busbw = algbw × 2(n−1)/n with n = 3.
            let (alg, bus) = (
                row["algbw_gbps"].as_f64().unwrap(),
                row["busbw_gbps"].as_f64().unwrap(),
            );
            assert!(alg > 0.0 && (bus - alg * 4.0 / 3.0).abs() <= 1e-9 * bus.max(1.0));
        }
    }
}

#[test]
fn compression_refuses_what_it_cannot_do() {
    for (args, needle) in [
        (
            &["all_reduce", "--compression", "zstd"][..],
            "expected none",
        ),
        (
            &["all_reduce", "--compression", "topk:2"][..],
            "fraction k must be in (0, 1]",
        ),
        (
            &["all_gather", "--compression", "fp8", "--np", "1"][..],
            "all_reduce only",
        ),
        (
            &[
                "all_reduce",
                "--compression",
                "fp8",
                "-d",
                "half",
                "--np",
                "1",
            ][..],
            "f32 sums",
        ),
    ] {
        let o = probe(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `--compression auto` resolves per communicator, as `FERROCOLL_COMPRESSION=auto`: local
/// ranks (one host, shared memory) stay uncompressed, and the header says why.
#[test]
fn compression_auto_is_resolved_from_the_topology() {
    let o = probe(&[
        "all_reduce",
        "--compression",
        "auto",
        "-b",
        "4K",
        "-e",
        "4K",
        "-n",
        "1",
        "--np",
        "2",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(
            "compression auto: slowest link between hosts none (one host: shared memory) -> none"
        ),
        "{out}"
    );
    assert!(out.contains("bit-identical on every rank: true"), "{out}");
}
