//! `ferrocoll-probe simulate` on the example clusters: 2,048 ranks (256 hosts × 8) price in
//! seconds, every algorithm gets a column, the tuner's choice is printed, and a bad file is
//! refused with the problem named.

use std::process::Command;
use std::time::{Duration, Instant};

fn probe(args: &[&str]) -> (bool, String, String, Duration) {
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_ferrocoll-probe"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        t.elapsed(),
    )
}

#[test]
fn simulates_two_thousand_ranks_in_seconds() {
    for file in ["dgx-h100-256x8.json", "ascend-910b-256x8.json"] {
        let path = format!("{}/examples/topologies/{file}", env!("CARGO_MANIFEST_DIR"));
        for coll in ["all_reduce", "all_gather", "reduce_scatter", "broadcast"] {
            let (ok, out, err, took) =
                probe(&["simulate", "--topo", &path, coll, "8", "1M", "64M"]);
            assert!(ok, "{file} {coll}: {err}");
            // A debug build prices 2,048 ranks in well under a second on the 2-core VM; the
            // bound leaves room for a loaded machine.
            assert!(took < Duration::from_secs(20), "{file} {coll}: {took:?}");
            assert!(out.contains("2048 ranks on 256 hosts"), "{out}");
            assert!(out.contains("source: 256 nodes x 8"), "{out}");
            let rows: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
            assert_eq!(rows.len(), 3, "{out}");
            for row in rows {
                let cols: Vec<&str> = row.split_whitespace().collect();
                let choice = cols[cols.len() - 2];
                assert!(
                    ferrocoll::AlgoId::by_name(choice).is_some(),
                    "{file} {coll}: no choice in {row}"
                );
            }
        }
    }
}

#[test]
fn large_all_reduce_across_hosts_is_hierarchical_and_forcing_works() {
    let path = format!(
        "{}/examples/topologies/ascend-910b-256x8.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let (ok, out, err, _) = probe(&["simulate", "--topo", &path, "all_reduce", "256M"]);
    assert!(ok, "{err}");
    let row = out.lines().find(|l| !l.starts_with('#')).unwrap();
    assert!(row.contains(" hierarchical "), "{out}");
    let (ok, out, err, _) = probe(&[
        "simulate",
        "--topo",
        &path,
        "--algo",
        "ring",
        "all_reduce",
        "8",
    ]);
    assert!(ok, "{err}");
    let row = out.lines().find(|l| !l.starts_with('#')).unwrap();
    assert!(row.split_whitespace().rev().nth(1) == Some("ring"), "{out}");
}

/// A time as `simulate` prints it ("12.3 us", "4.567 ms", "1.2 s"), in seconds.
fn seconds(v: &str, unit: &str) -> f64 {
    let x: f64 = v.parse().unwrap();
    match unit {
        "us" => x * 1e-6,
        "ms" => x * 1e-3,
        "s" => x,
        u => panic!("unit {u}"),
    }
}

#[test]
fn the_composed_plan_is_priced_at_256_by_8() {
    for file in ["dgx-h100-256x8.json", "ascend-910b-256x8.json"] {
        let path = format!("{}/examples/topologies/{file}", env!("CARGO_MANIFEST_DIR"));
        for coll in ["all_reduce", "all_gather", "reduce_scatter", "broadcast"] {
            let (ok, out, err, _) = probe(&[
                "simulate",
                "--composed",
                "--topo",
                &path,
                coll,
                "1M",
                "256M",
            ]);
            assert!(ok, "{file} {coll}: {err}");
            assert!(
                out.contains("# composed plan: the vendor inside each host (8 ranks)"),
                "{out}"
            );
            let rows: Vec<&str> = out
                .lines()
                .skip_while(|l| !l.starts_with("# composed plan"))
                .filter(|l| !l.starts_with('#'))
                .collect();
            assert_eq!(rows.len(), 2, "{out}");
            for row in rows {
                // size, then (value unit) × 3, the cross algorithm, (value unit) × 2, busbw,
                // (value unit): the flat alternative.
                let c: Vec<&str> = row.split_whitespace().collect();
                assert_eq!(c.len(), 15, "{row}");
                let parts: f64 = [(1, 2), (3, 4), (5, 6), (8, 9)]
                    .iter()
                    .map(|&(v, u)| seconds(c[v], c[u]))
                    .sum();
                let total = seconds(c[10], c[11]);
                assert!((parts - total).abs() <= total * 0.01 + 2e-7, "{row}");
                assert!(ferrocoll::AlgoId::by_name(c[7]).is_some(), "{row}");
                assert!(seconds(c[13], c[14]) > 0.0, "{row}");
                let busbw: f64 = c[12].parse().unwrap();
                assert!(busbw > 0.0, "{row}");
            }
        }
        // Large all-reduces: composing beats staging every rank's buffer for a flat job.
        let (ok, out, err, _) = probe(&[
            "simulate",
            "--composed",
            "--topo",
            &path,
            "all_reduce",
            "256M",
        ]);
        assert!(ok, "{err}");
        let row = out.lines().rfind(|l| !l.starts_with('#')).unwrap();
        let c: Vec<&str> = row.split_whitespace().collect();
        let n = c.len();
        let (total, flat) = (seconds(c[10], c[11]), seconds(c[n - 2], c[n - 1]));
        assert!(
            total < flat,
            "{file}: composed {total} s, flat {flat} s: {row}"
        );
    }
}

#[test]
fn composed_pricing_refuses_what_it_cannot_price() {
    let path = format!(
        "{}/examples/topologies/dgx-h100-256x8.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let (ok, _, err, _) = probe(&[
        "simulate",
        "--composed",
        "--topo",
        &path,
        "all_to_all",
        "1M",
    ]);
    assert!(!ok);
    assert!(
        err.contains("the composed plan composes all_reduce"),
        "{err}"
    );
    let (ok, _, err, _) = probe(&[
        "simulate",
        "--composed",
        "--staging-gbit-s",
        "0",
        "--topo",
        &path,
        "all_reduce",
        "1M",
    ]);
    assert!(!ok);
    assert!(err.contains("staging"), "{err}");
}

#[test]
fn bad_topology_and_collective_are_refused() {
    let bad = std::env::temp_dir().join(format!("ferrocoll-sim-{}.json", std::process::id()));
    std::fs::write(&bad, "{ \"hosts\": [ }").unwrap();
    let (ok, _, err, _) = probe(&["simulate", "--topo", bad.to_str().unwrap()]);
    let _ = std::fs::remove_file(&bad);
    assert!(!ok);
    assert!(err.contains("malformed topology JSON at line 1"), "{err}");
    let path = format!(
        "{}/examples/topologies/dgx-h100-256x8.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let (ok, _, err, _) = probe(&["simulate", "--topo", &path, "allreduce"]);
    assert!(!ok);
    assert!(err.contains("unknown collective \"allreduce\""), "{err}");
    let (ok, _, err, _) = probe(&["simulate", "--topo", &path, "--ring-order", "fast"]);
    assert!(!ok);
    assert!(
        err.contains("--ring-order \"fast\": expected topology or rank"),
        "{err}"
    );
    let (ok, _, err, _) = probe(&["simulate", "--topo", &path, "--algo", "bogus"]);
    assert!(!ok);
    assert!(err.contains("FERROCOLL_ALGO"), "{err}");
}

#[test]
fn links_save_writes_a_topology_file_the_library_loads() {
    let save = std::env::temp_dir().join(format!("ferrocoll-links-{}.json", std::process::id()));
    let (ok, out, err, _) = probe(&[
        "links",
        "--np",
        "3",
        "--bw-bytes",
        "256K",
        "-n",
        "2",
        "--save",
        save.to_str().unwrap(),
    ]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    let t = ferrocoll::topology::json::load(&save);
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&save).unwrap()).unwrap();
    let _ = std::fs::remove_file(&save);
    let t = t.unwrap();
    assert_eq!(t.world(), 3);
    assert_eq!(t.hosts().len(), 1, "forked local ranks share one host");
    assert!(t.intra.bandwidth > 0.0);
    assert!(t.source.unwrap().contains("measured by ferrocoll-probe"));
    // The raw measurements stay in the file.
    assert_eq!(raw["links"].as_array().unwrap().len(), 6);
}
