//! The `ferrocoll-probe` binary, end to end: its table (columns, bus-bandwidth factors,
//! `#wrong`, footer), JSON, plots, `links`, the corruption hook and its errors.

use std::path::PathBuf;
use std::process::{Command, Output};

const PROBE: &str = env!("CARGO_BIN_EXE_ferrocoll-probe");

fn probe(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(PROBE);
    c.args(args).env("FERROCOLL_TIMEOUT", "60");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("cannot run ferrocoll-probe")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ferrocoll-probe-{}-{name}", std::process::id()))
}

/// A data row: size count type redop root | time algbw busbw #wrong | time algbw busbw #wrong.
#[derive(Debug)]
struct TableRow {
    size: u64,
    count: u64,
    dtype: String,
    redop: String,
    root: i64,
    halves: Vec<Option<(f64, f64, f64, u64)>>,
}

struct Table {
    rows: Vec<TableRow>,
    out_of_bounds: u64,
    ok: bool,
    avg_busbw: f64,
}

fn parse(stdout: &str) -> Table {
    let mut rows = Vec::new();
    let (mut oob, mut ok, mut avg) = (None, false, None);
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim();
            if let Some(v) = rest.strip_prefix("Out of bounds values") {
                let v = v.trim_start_matches([' ', ':']);
                let mut it = v.split_whitespace();
                oob = it.next().map(|n| n.parse::<u64>().unwrap());
                ok = it.next() == Some("OK");
            } else if let Some(v) = rest.strip_prefix("Avg bus bandwidth") {
                avg = Some(
                    v.trim_start_matches([' ', ':'])
                        .trim()
                        .parse::<f64>()
                        .unwrap(),
                );
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 13, "a row has 13 columns: {line:?}");
        let half = |s: &[&str]| {
            if s[0] == "N/A" {
                None
            } else {
                Some((
                    s[0].parse().unwrap(),
                    s[1].parse().unwrap(),
                    s[2].parse().unwrap(),
                    s[3].parse().unwrap(),
                ))
            }
        };
        rows.push(TableRow {
            size: f[0].parse().unwrap(),
            count: f[1].parse().unwrap(),
            dtype: f[2].to_string(),
            redop: f[3].to_string(),
            root: f[4].parse().unwrap(),
            halves: vec![half(&f[5..9]), half(&f[9..13])],
        });
    }
    Table {
        rows,
        out_of_bounds: oob.expect("footer: Out of bounds values"),
        ok,
        avg_busbw: avg.expect("footer: Avg bus bandwidth"),
    }
}

fn check_factor(t: &Table, factor: f64) {
    for r in &t.rows {
        for (time, algbw, busbw, wrong) in r.halves.iter().flatten() {
            assert!(*time > 0.0, "{r:?}");
            assert_eq!(*wrong, 0, "{r:?}");
            // Both are rounded to two decimals.
            assert!(
                (busbw - algbw * factor).abs() <= 0.011 + 0.005 * factor,
                "busbw {busbw} != algbw {algbw} x {factor}: {r:?}"
            );
        }
    }
}

#[test]
fn all_reduce_table_has_nccl_tests_columns_and_factor() {
    let json = temp("ar.json");
    let o = probe(
        &["all_reduce", "-e", "1M", "-n", "5", "-w", "1", "--json"],
        &[],
    );
    // `--json` needs a value: clap refuses and the exit is non-zero.
    assert!(!o.status.success());
    let o = probe(
        &[
            "all_reduce",
            "-b",
            "8",
            "-e",
            "1M",
            "-n",
            "5",
            "-w",
            "1",
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("out-of-place") && out.contains("in-place"),
        "{out}"
    );
    assert!(out.contains("#wrong") && out.contains("(GB/s)"), "{out}");
    let t = parse(&out);
    let sizes: Vec<u64> = t.rows.iter().map(|r| r.size).collect();
    let want: Vec<u64> = (3..=20).map(|k| 1u64 << k).collect();
    assert_eq!(sizes, want);
    for r in &t.rows {
        assert_eq!(r.count, r.size / 4);
        assert_eq!(
            (r.dtype.as_str(), r.redop.as_str(), r.root),
            ("float", "sum", -1)
        );
    }
    check_factor(&t, 2.0 * (2.0 - 1.0) / 2.0);
    assert_eq!(t.out_of_bounds, 0);
    assert!(t.ok);
    assert!(t.avg_busbw > 0.0);

    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
        .expect("the JSON file parses");
    let _ = std::fs::remove_file(&json);
    assert_eq!(doc["world_size"], 2);
    assert_eq!(doc["collective"], "all_reduce");
    assert_eq!(doc["ferrocoll_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["ok"], true);
    // nccl-tests' default `-a`: the average of the ranks' times.
    assert_eq!(doc["params"]["average"], 1);
    assert!(!doc["transports"].as_array().unwrap().is_empty());
    assert!(doc["machine"]["hostname"].is_string());
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), t.rows.len());
    for (r, tr) in rows.iter().zip(&t.rows) {
        assert_eq!(r["size"].as_u64(), Some(tr.size));
        assert!(!r["algorithm"].as_str().unwrap().is_empty(), "{r}");
        for half in ["out_of_place", "in_place"] {
            let h = &r[half];
            let (alg, bus) = (
                h["algbw_gbps"].as_f64().unwrap(),
                h["busbw_gbps"].as_f64().unwrap(),
            );
            assert!((bus - alg).abs() <= 1e-9 * alg.max(1.0), "{r}");
            assert_eq!(h["wrong"], 0);
        }
    }
}

#[test]
fn every_collective_checks_clean_on_three_ranks() {
    let n = 3.0;
    for (cmd, factor, in_place) in [
        ("all_gather", (n - 1.0) / n, true),
        ("reduce_scatter", (n - 1.0) / n, true),
        ("all_to_all", (n - 1.0) / n, true),
        ("broadcast", 1.0, true),
        ("reduce", 1.0, true),
        ("sendrecv", 1.0, false),
        ("barrier", 0.0, true),
    ] {
        let o = probe(
            &[
                cmd, "--np", "3", "-b", "1K", "-e", "64K", "-f", "4", "-n", "3", "-w", "1", "-r",
                "1",
            ],
            &[],
        );
        let (out, err) = text(&o);
        assert!(o.status.success(), "{cmd}: stdout:\n{out}\nstderr:\n{err}");
        let t = parse(&out);
        assert!(!t.rows.is_empty(), "{cmd}: {out}");
        assert!(t.ok && t.out_of_bounds == 0, "{cmd}: {out}");
        check_factor(&t, factor);
        for r in &t.rows {
            assert_eq!(r.halves[1].is_some(), in_place, "{cmd}: {r:?}");
            let rooted = cmd == "broadcast" || cmd == "reduce";
            assert_eq!(r.root, if rooted { 1 } else { -1 }, "{cmd}: {r:?}");
        }
    }
}

/// The large-call paths (ring instead of single copy, streaming stores, a send carrying the
/// own chunk's copy) between processes over shared memory, forced at small sizes.
#[test]
fn large_call_paths_check_clean_across_processes() {
    for cmd in ["all_gather", "broadcast", "all_to_all", "all_reduce"] {
        let o = probe(
            &[
                cmd, "--np", "3", "-b", "1K", "-e", "1M", "-f", "32", "-n", "2", "-w", "1", "-c",
                "1", "-r", "1",
            ],
            &[("FERROCOLL_STREAMING_MIN_BYTES", "0")],
        );
        let (out, err) = text(&o);
        assert!(o.status.success(), "{cmd}: stdout:\n{out}\nstderr:\n{err}");
        let t = parse(&out);
        assert_eq!(t.rows.len(), 3, "{cmd}: {out}");
        assert!(t.ok && t.out_of_bounds == 0, "{cmd}: {out}");
    }
}

#[test]
fn links_matrix_on_three_ranks_saves_topology() {
    let save = temp("topo.json");
    let o = probe(
        &[
            "links",
            "--np",
            "3",
            "--bw-bytes",
            "1M",
            "-n",
            "3",
            "--link-spec",
            "1gbit",
            "--save",
            save.to_str().unwrap(),
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("One-way latency (us)"), "{out}");
    assert!(out.contains("Bandwidth (GB/s)"), "{out}");
    assert!(out.contains("% of link spec 1gbit"), "{out}");
    assert!(out.contains("Outliers"), "{out}");
    // Three ranks on one host: the loaded ring exchange has an odd length (the ordering
    // that keeps blocking sends from waiting on each other must still finish).
    assert!(out.contains("every rank sending at once"), "{out}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&save).unwrap()).unwrap();
    let _ = std::fs::remove_file(&save);
    assert_eq!(doc["world_size"], 3);
    let host = &doc["hosts"][0];
    assert!(host["intra_total_gbit_s"].as_f64().unwrap() > 0.0, "{host}");
    let links = doc["links"].as_array().unwrap();
    assert_eq!(links.len(), 6, "every ordered pair");
    for l in links {
        assert_ne!(l["src"], l["dst"]);
        assert!(l["bandwidth_gbps"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["latency_us"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["percent_of_spec"].as_f64().unwrap() > 0.0, "{l}");
    }
}

#[test]
fn plots_are_valid_png_and_svg() {
    for (ext, check) in [
        (
            "png",
            (|b: &[u8]| b.starts_with(b"\x89PNG\r\n\x1a\n")) as fn(&[u8]) -> bool,
        ),
        ("svg", |b: &[u8]| {
            String::from_utf8_lossy(b).contains("<svg")
        }),
    ] {
        let path = temp(&format!("plot.{ext}"));
        let o = probe(
            &[
                "all_gather",
                "-e",
                "64K",
                "-n",
                "2",
                "-w",
                "1",
                "--plot",
                path.to_str().unwrap(),
            ],
            &[],
        );
        let (out, err) = text(&o);
        assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(bytes.len() > 1000, "{ext}: {} bytes", bytes.len());
        assert!(check(&bytes), "{ext}: not a valid file");
    }
    let o = probe(&["all_reduce", "-e", "1K", "--plot", "x.jpg"], &[]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains(".png or .svg"), "{}", text(&o).1);
}

#[test]
fn corrupted_result_is_counted_and_fails() {
    let o = probe(
        &["all_reduce", "-e", "4K", "-n", "2", "-w", "1"],
        &[("FERROCOLL_PROBE_CORRUPT", "1:3")],
    );
    let (out, err) = text(&o);
    assert!(!o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    let t = parse(&out);
    assert!(t.out_of_bounds > 0 && !t.ok, "{out}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(
        t.rows.iter().any(|r| r.halves[0].is_some_and(|h| h.3 > 0)),
        "{out}"
    );
}

#[test]
fn forced_algorithm_that_does_not_apply_is_refused() {
    let o = probe(
        &["all_to_all", "--algo", "ring", "-e", "1K", "-n", "2"],
        &[],
    );
    let (out, err) = text(&o);
    assert!(!o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("not supported"), "{err}");

    // The forced algorithm is used, and reported per size.
    let json = temp("ring.json");
    let o = probe(
        &[
            "all_reduce",
            "--algo",
            "ring",
            "-e",
            "64K",
            "-n",
            "2",
            "--np",
            "3",
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    for r in doc["rows"].as_array().unwrap() {
        assert_eq!(r["algorithm"], "ring", "{r}");
    }
}

#[test]
fn bad_arguments_are_explained() {
    for (args, needle) in [
        (&["all_reduce", "-e", "lots"][..], "not a size"),
        (&["all_reduce", "-d", "float128"][..], "unknown data type"),
        (&["all_reduce", "-o", "xor"][..], "unknown operator"),
        (
            &["all_reduce", "-b", "2M", "-e", "1M"][..],
            "larger than maxbytes",
        ),
        (&["all_reduce", "--algo", "bogus"][..], "FERROCOLL_ALGO"),
        (&["links", "--link-spec", "fast"][..], "link speed"),
    ] {
        let o = probe(args, &[]);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{args:?}: {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn in_process_ranks_print_the_same_table() {
    let o = probe(
        &[
            "reduce_scatter",
            "--in-process",
            "--np",
            "4",
            "-e",
            "1K",
            "-n",
            "1",
            "-w",
            "0",
            "-d",
            "all",
            "-o",
            "all",
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("transports mem 0-1 0-2 0-3 1-2 1-3 2-3"),
        "{out}"
    );
    let t = parse(&out);
    assert_eq!(t.rows.len(), 12 * 5 * 8, "every type x op x size");
    assert!(t.ok);
    check_factor(&t, 3.0 / 4.0);
}

#[test]
fn compare_measures_every_algorithm_in_alternating_rounds() {
    let json = temp("compare.json");
    let o = probe(
        &[
            "all_reduce",
            "--np",
            "3",
            "-b",
            "1K",
            "-e",
            "64K",
            "-f",
            "8",
            "-n",
            "3",
            "-w",
            "1",
            "--compare",
            "auto,ring,direct",
            "--rounds",
            "2",
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    // The table: nccl-tests' 13 columns, then the entry (`auto:CHOICE` for auto).
    let labels: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 14, "{l:?}");
            f[13]
        })
        .collect();
    assert_eq!(labels.len(), 3 * 3, "3 sizes x 3 entries:\n{out}");
    for (i, l) in labels.iter().enumerate() {
        match i % 3 {
            0 => assert!(l.starts_with("auto:"), "{l}"),
            1 => assert_eq!(*l, "ring"),
            _ => assert_eq!(*l, "direct"),
        }
    }
    assert!(out.contains("# Out of bounds values : 0 OK"), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
        .expect("the JSON file parses");
    let _ = std::fs::remove_file(&json);
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 9);
    for (i, r) in rows.iter().enumerate() {
        let entry = r["entry"].as_str().unwrap();
        assert_eq!(entry, ["auto", "ring", "direct"][i % 3], "{r}");
        if entry != "auto" {
            assert_eq!(r["algorithm"], entry, "{r}");
        }
        assert_eq!(r["size"].as_u64(), Some(1024 << (3 * (i / 3))), "{r}");
        for half in ["out_of_place", "in_place"] {
            let h = &r[half];
            let rounds: Vec<f64> = h["rounds_us"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_f64().unwrap())
                .collect();
            assert_eq!(rounds.len(), 2, "{r}");
            // The reported time is one of the rounds (the upper median of two: the slower).
            let t = h["time_us"].as_f64().unwrap();
            assert_eq!(t, rounds.iter().copied().fold(0.0, f64::max), "{r}");
            assert_eq!(h["wrong"], 0, "{r}");
        }
    }
}

#[test]
fn compare_refuses_what_it_cannot_measure() {
    for (args, want) in [
        (
            &["all_reduce", "--compare", "ring,bogus", "-e", "1K"][..],
            "bogus",
        ),
        (
            &["all_gather", "--compare", "ring,tree", "-e", "1K"][..],
            "not supported",
        ),
        (
            &[
                "all_reduce",
                "--compare",
                "ring",
                "--in-process",
                "-e",
                "1K",
            ][..],
            "--compare needs communicators of their own",
        ),
        (
            &["all_reduce", "--rounds", "2", "-e", "1K"][..],
            "--compare",
        ),
        (
            &["all_reduce", "--compare", "ring", "--plot", "x.png"][..],
            "cannot be used with",
        ),
    ] {
        let o = probe(args, &[]);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded:\n{out}");
        assert!(
            err.contains(want) || out.contains(want),
            "{args:?}: {want:?} missing:\n{out}\n{err}"
        );
    }
}

/// An error says what caused it, not only its outermost layer: a rank whose store cannot be
/// reached names the address and the system's reason after "bootstrap failed".
#[test]
fn errors_carry_their_cause() {
    let o = probe(
        &["all_reduce", "-e", "8"],
        &[
            ("FERROCOLL_RANK", "1"),
            ("FERROCOLL_WORLD_SIZE", "2"),
            ("FERROCOLL_STORE", "127.0.0.1:1"),
            ("FERROCOLL_TIMEOUT", "1"),
        ],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("bootstrap failed: "), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

/// `FERROCOLL_DEBUG=INFO` logs the tuner's choice per shape (collective, bytes, algorithm,
/// predicted time), once per shape; `FERROCOLL_TOPO_DUMP_FILE` makes rank 0 write the
/// topology in use. Both read from the environment, as a launched job gets them.
#[test]
fn info_log_shows_the_tuners_choice_and_the_topology_is_dumped() {
    let dump = temp("dump.json");
    let o = probe(
        &[
            "all_reduce",
            "-b",
            "1K",
            "-e",
            "4K",
            "-f",
            "4",
            "-n",
            "3",
            "-w",
            "1",
        ],
        &[
            ("FERROCOLL_DEBUG", "INFO"),
            ("FERROCOLL_TOPO_DUMP_FILE", dump.to_str().unwrap()),
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    let choices = |bytes: usize| -> Vec<&str> {
        err.lines()
            .filter(|l| l.contains("tuner choice") && l.contains("\"all_reduce\""))
            .filter(|l| l.contains(&format!(" bytes={bytes} ")))
            .collect()
    };
    // Both ranks log each size once, however many calls (in-place, out-of-place, warm-up,
    // timed) it makes.
    for bytes in [1024, 4096] {
        let lines = choices(bytes);
        assert_eq!(lines.len(), 2, "{bytes} B:\n{err}");
        for l in lines {
            assert!(l.contains("INFO") && l.contains(" algorithm="), "{l}");
            assert!(l.contains(" predicted_us="), "{l}");
        }
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dump).expect("the dump was written"))
            .expect("the dump parses");
    let _ = std::fs::remove_file(&dump);
    assert_eq!(doc["world_size"], 2);

    // Without the variable nothing is logged at INFO.
    let o = probe(
        &["all_reduce", "-b", "1K", "-e", "1K", "-n", "1", "-w", "0"],
        &[],
    );
    let (_, err) = text(&o);
    assert!(o.status.success());
    assert!(!err.contains("tuner choice"), "{err}");
}
