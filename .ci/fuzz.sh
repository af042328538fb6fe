#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder of outside bytes (fuzz/fuzz_targets/), on the
# stable toolchain: `bash .ci/fuzz.sh [SECONDS] [TARGET...]` builds the fuzz crate and runs
# each target (default: all) for SECONDS (default 30) from its committed corpus
# (fuzz/corpus/<target>/, read only: new inputs go to a scratch directory). Fails on any
# crash, panic, broken invariant, hang (-timeout) or memory blow-up (-rss_limit_mb); the
# input that did it is kept as fuzz/artifacts/<target>/crash-… (or timeout-…, oom-…) and
# its backtrace is printed. One summary line per target: runs, coverage, features, corpus.
#
# The long pass (README, "Fuzzing"): `bash .ci/fuzz.sh 600`. `bash .ci/fuzz.sh --build` only
# builds (the test command starts it early, in the background, so that the build uses the
# time the tests leave idle; the pass itself then finds the build up to date).
#
# How it works on stable Rust: libfuzzer-sys compiles libFuzzer (C++, with the cc crate),
# and rustc instruments the code the way cargo-fuzz asks it to, through stable codegen
# options only (LLVM's SanitizerCoverage pass with -C passes, its options with
# -C llvm-args). No AddressSanitizer (that needs nightly's -Z sanitizer): Rust's bounds and
# overflow checks (-C debug-assertions -C overflow-checks) turn memory and arithmetic bugs
# into panics instead. --target keeps the flags off build scripts and proc macros, which
# are not linked with libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=0
if [ "${1:-}" = --build ]; then
    build_only=1
    shift
    (($# == 0)) || { echo "usage: $0 --build" >&2; exit 2; }
fi
secs=${1:-30}
shift || true
case $secs in '' | *[!0-9]*) echo "usage: $0 [--build | SECONDS [TARGET...]]" >&2; exit 2 ;; esac

command -v c++ >/dev/null || {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
    fi
}

host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# Ferrocoll's own build settings (e.g. a developer's RUSTFLAGS) must not leak in.
unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
# FUZZ_PROFILE=ci (the test command's short pass) builds with less optimisation and no debug
# information, which halves the build; the long pass keeps the release profile.
profile=${FUZZ_PROFILE:-release}
(cd fuzz && cargo build --profile "$profile" --locked -j "${FUZZ_JOBS:-2}" --target "$host" --bins)
((build_only == 0)) || exit 0
bin=fuzz/target/$host/$profile

if (($#)); then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^ferrocoll-fuzz$')
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# fuzz_one TARGET: one target's run, its log in $scratch/TARGET.log, its exit code in
# $scratch/TARGET.rc.
fuzz_one() {
    local t=$1 rc=0 dict=()
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t" "fuzz/corpus/$t"
    # A dictionary of the target's protocol words, where it has one.
    [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
    "$bin/$t" "$scratch/$t" "fuzz/corpus/$t" "${dict[@]}" \
        -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$scratch/$t.log" 2>&1 || rc=$?
    echo "$rc" >"$scratch/$t.rc"
}

for t in "${targets[@]}"; do
    [ -x "$bin/$t" ] || { echo "error: no fuzz target $t" >&2; exit 2; }
done
# FUZZ_PARALLEL targets at a time (default: one per core); each is single-threaded.
par=${FUZZ_PARALLEL:-$(nproc)}
running=0
for t in "${targets[@]}"; do
    if ((running >= par)); then
        wait -n
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
wait

failed=()
for t in "${targets[@]}"; do
    log=$scratch/$t.log
    rc=$(cat "$scratch/$t.rc" 2>/dev/null || echo "?")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
    if [ "$rc" != 0 ]; then
        failed+=("$t")
        printf '%-16s FAILED (exit %s) after %s runs\n' "$t" "$rc" "${runs:-?}"
        # The panic or signal, the input that caused it, and the top of the backtrace.
        grep -E -A40 "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -60
    else
        printf '%-16s ok: %s runs in %ss, cov %s, ft %s, corpus %s\n' \
            "$t" "${runs:-?}" "$secs" "${cov:-?}" "${ft:-?}" "${corp:-?}"
    fi
done
if ((${#failed[@]})); then
    echo "fuzzing found problems in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzzing: ${#targets[@]} targets ran ${secs}s each without a finding"
