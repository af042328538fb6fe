//! Replays the fuzz targets' committed corpus (`fuzz/corpus/<target>/`, seeds and the inputs
//! of every bug fuzzing found) and their seeds through the targets' own functions, so that
//! `cargo test` checks every past finding without the fuzzing toolchain.
//! `FC_WRITE_SEEDS=1 cargo test --test fuzz_corpus` (re)writes the seeds
//! (`seed-<name>`) from the current encoders.

use std::path::Path;

use ferrocoll::fuzzing;
use ferrocoll::transports::fuzzing as tfuzzing;

/// A fuzz target's function.
type Target = fn(&[u8]);

/// Every fuzz target of `fuzz/Cargo.toml` and its function.
const TARGETS: &[(&str, Target)] = &[
    ("unique_id", fuzzing::unique_id),
    ("frame", fuzzing::frame),
    ("store_request", fuzzing::store_request),
    ("store_response", fuzzing::store_response),
    ("store_server", fuzzing::store_server),
    ("store_hello", fuzzing::store_hello),
    ("store_values", fuzzing::store_values),
    ("etcd_answer", fuzzing::etcd_answer),
    ("heartbeat", fuzzing::heartbeat),
    ("decision", fuzzing::decision),
    ("topology_json", fuzzing::topology_json),
    ("codec", fuzzing::codec),
    ("config", fuzzing::config),
    ("flight_record", fuzzing::flight_record),
    ("address_blob", tfuzzing::address_blob),
    ("tcp_handshake", tfuzzing::tcp_handshake),
    ("rdma_wire", tfuzzing::rdma_wire),
];

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(t, _)| *t == name)
        .unwrap_or_else(|| panic!("no fuzz target {name} in tests/fuzz_corpus.rs"))
        .1
}

#[test]
fn every_fuzz_target_is_replayed() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .expect("fuzz/Cargo.toml");
    let bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
        .filter(|n| *n != "ferrocoll-fuzz")
        .collect();
    let mut ours: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    let mut theirs = bins.clone();
    ours.sort_unstable();
    theirs.sort_unstable();
    assert_eq!(ours, theirs, "fuzz/Cargo.toml and TARGETS disagree");
}

#[test]
fn seeds_and_corpus_replay() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut seeds = fuzzing::seeds();
    seeds.extend(tfuzzing::seeds());
    let write = std::env::var_os("FC_WRITE_SEEDS").is_some_and(|v| v == "1");
    for (t, name, bytes) in &seeds {
        if write {
            let dir = corpus.join(t);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
        target(t)(bytes);
    }
    let mut replayed = 0;
    for &(t, run) in TARGETS {
        let Ok(dir) = std::fs::read_dir(corpus.join(t)) else {
            continue;
        };
        for f in dir {
            let path = f.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            eprintln!("{}", path.display());
            run(&bytes);
            replayed += 1;
        }
    }
    assert!(
        replayed >= seeds.len() || !write,
        "{replayed} corpus inputs"
    );
}
