//! The docs name files that exist: every backticked path under one of the repository's
//! top-level folders in `README.md`, `ARCHITECTURE.md` and `PERFORMANCE.md` must be in the
//! tree (a moved file otherwise leaves the docs pointing at nothing), and nothing in them
//! points outside the repository.

use std::path::Path;

const DOCS: [&str; 3] = ["README.md", "ARCHITECTURE.md", "PERFORMANCE.md"];
const ROOTS: [&str; 7] = [
    "src/",
    "transports/",
    "ffi/",
    "tests/",
    "benches/",
    "examples/",
    ".ci/",
];

/// The backticked spans of `text` that look like a path in the repository.
fn paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| ROOTS.iter().any(|r| s.starts_with(r)))
        .filter(|s| !s.contains(' ') && !s.contains('*') && !s.contains('<'))
        // `src/comm.rs` (`Communicator::make_call`) style: the path ends at the first `:`.
        .map(|s| s.split(':').next().unwrap_or(s).to_string())
        .collect()
}

#[test]
fn every_path_the_docs_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    let mut seen = 0;
    for doc in DOCS {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for p in paths(&text) {
            seen += 1;
            if !root.join(&p).exists() {
                missing.push(format!("{doc}: `{p}`"));
            }
        }
    }
    assert!(
        seen > 20,
        "only {seen} paths found: is the extraction broken?"
    );
    assert!(
        missing.is_empty(),
        "paths that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_docs_do_not_point_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in DOCS {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (i, line) in text.lines().enumerate() {
            assert!(
                !line.contains("../shared") && !line.contains("NOTES.md"),
                "{doc}:{}: points outside the repository or at a removed diary: {line}",
                i + 1
            );
        }
    }
}

#[test]
fn path_extraction_finds_paths_and_skips_prose() {
    let t = "see `src/plan.rs` and `src/comm.rs:12`, not `cargo test` or `src/*.rs`";
    assert_eq!(paths(t), vec!["src/plan.rs", "src/comm.rs"]);
}
