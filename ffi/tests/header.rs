//! `include/ferrocoll.h` is what cbindgen makes of this crate today: regenerates it and fails
//! on any difference. `FERROCOLL_BLESS=1 cargo test -p ferrocoll-ffi --test header` rewrites
//! the committed header instead.

use std::path::Path;

#[test]
fn committed_header_matches_cbindgen_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed on the ffi crate");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("header is UTF-8");
    let path = dir.join("include/ferrocoll.h");
    if std::env::var_os("FERROCOLL_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let first = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(fresh.lines().count()));
        panic!(
            "ffi/include/ferrocoll.h is stale (first difference at line {}):\n  committed: {:?}\n  generated: {:?}\n\
             regenerate it with `FERROCOLL_BLESS=1 cargo test -p ferrocoll-ffi --test header`",
            first + 1,
            committed.lines().nth(first).unwrap_or("<end>"),
            fresh.lines().nth(first).unwrap_or("<end>"),
        );
    }
    for name in [
        "fcGetVersion",
        "fcGetUniqueId",
        "fcCommInitRank",
        "fcCommInitFromEnv",
        "fcCommSplit",
        "fcCommDestroy",
        "fcCommAbort",
        "fcCommGetAsyncError",
        "fcCommCount",
        "fcCommUserRank",
        "fcCommRevoke",
        "fcCommShrink",
        "fcCommJoinersWaiting",
        "fcCommGrow",
        "fcCommJoin",
        "fcAllReduce",
        "fcAllGather",
        "fcReduceScatter",
        "fcBroadcast",
        "fcReduce",
        "fcAllToAll",
        "fcSend",
        "fcRecv",
        "fcBarrier",
        "fcGroupStart",
        "fcGroupEnd",
        "fcGetErrorString",
        "fcGetLastError",
    ] {
        assert!(
            fresh.contains(&format!("{name}(")),
            "{name} missing from the header"
        );
    }
    for constant in ["FC_SHRINK_DEFAULT", "FC_SHRINK_ABORT", "FC_REVOKE_DEFAULT"] {
        assert!(
            fresh.contains(&format!("#define {constant} ")),
            "{constant} missing from the header"
        );
    }
}
