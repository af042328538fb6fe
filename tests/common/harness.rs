//! The `main` of the integration tests that re-run their own binary as ranks (`harness =
//! false` in Cargo.toml): the binary is either a rank, when the test's environment variable
//! says so (it then runs the rank's side and exits, and is never a test itself), or the test
//! runner, which runs the listed tests through `libtest-mimic` with libtest's command line
//! (name filters, `--exact`, `--list`, `--test-threads`, `--skip`).

use libtest_mimic::{Arguments, Trial};

/// Runs `tests` (name, function) the way libtest would and exits with its status: a test
/// fails when its function panics. `--test-threads` defaults to `RUST_TEST_THREADS`, then to
/// the number of CPUs, as with libtest. Nothing is captured: a test's own output goes straight
/// to the terminal, so the tests here print only on failure.
pub fn run_tests(tests: &[(&'static str, fn())]) -> ! {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|v| v.parse().ok());
    }
    let trials = tests
        .iter()
        .map(|&(name, f)| {
            Trial::test(name, move || {
                f();
                Ok(())
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}
