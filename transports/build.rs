//! Build script: with the `ofi` feature, compiles the libfabric shim (src/ofi/shim.c) and
//! links libfabric (found with pkg-config). Without it, does nothing, so a default build
//! needs no system library.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/ofi/shim.c");
    if std::env::var_os("CARGO_FEATURE_OFI").is_none() {
        return;
    }
    let lib = match pkg_config::Config::new()
        .atleast_version("1.17")
        .probe("libfabric")
    {
        Ok(lib) => lib,
        Err(e) => panic!(
            "the `ofi` feature needs libfabric >= 1.17 and its headers (Debian: apt-get install \
             libfabric-dev): {e}"
        ),
    };
    let mut build = cc::Build::new();
    build.file("src/ofi/shim.c").warnings(true);
    for dir in &lib.include_paths {
        build.include(dir);
    }
    build.compile("ferrocoll_ofi_shim");
    // pkg-config already printed the link lines for libfabric; the shim's archive comes
    // first on the link line, so its references to fi_* resolve against it.
}
