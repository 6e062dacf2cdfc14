#!/usr/bin/env bash
# Bounded fuzzing of the osft C ABI (CPU backend): every target in fuzz/fuzz_targets for a share
# of a time budget, with AddressSanitizer, then a summary.
#
#   scripts/fuzz.sh            # about 60 s of fuzzing in all (plus the first build)
#   scripts/fuzz.sh 600        # a longer run: 600 s in all
#   OSFT_FUZZ_TARGETS="svd project" scripts/fuzz.sh 120
#
# What it does:
# 1. installs cargo-fuzz 0.13 with `cargo install --locked` when it is missing (about 1.5 min);
# 2. builds the targets: `RUSTC_BOOTSTRAP=1 cargo fuzz build -a` (the toolchain is stable Rust;
#    RUSTC_BOOTSTRAP lets it take cargo-fuzz's -Zsanitizer=address; -a keeps debug assertions
#    and overflow checks on in osft). The first build compiles faer & co. with ASan and
#    coverage instrumentation: about 8-9 min on 2 cores; later builds only the harness;
# 3. runs each target with libFuzzer for its share of the budget on the corpus in
#    fuzz/corpus/TARGET (kept between runs, not committed), seeded with the committed
#    regression inputs fuzz/regressions/TARGET, -timeout=10 (an input running longer than 10 s,
#    e.g. a hang on NaN input, is a failure) and -rss_limit_mb=2048;
# 4. prints runs, execs/s and corpus size per target, and "N passed, M failed".
#
# A crash leaves its input in fuzz/artifacts/TARGET/; reproduce with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -a TARGET fuzz/artifacts/TARGET/crash-...
# or, without cargo-fuzz, copy it into fuzz/regressions/TARGET/ and run
#   cargo test --release --test hardening_fuzz
# (the in-repo fuzzer replays every regression input; keep the file there once fixed).
#
# Where cargo-fuzz cannot be installed or built (or with OSFT_FUZZ_FALLBACK=1), the script falls
# back to the in-repo seeded fuzzer (tests/hardening_fuzz.rs) for the same budget, and says so.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
BUDGET=${1:-${OSFT_FUZZ_SECONDS:-60}}
TARGETS=(${OSFT_FUZZ_TARGETS:-svd decompose project two_phase reconstruct diagnostics desc})
LOG=$ROOT/target/fuzz-logs
mkdir -p "$LOG"
export RUST_BACKTRACE=0

passed=0
failed=0
failures=()

fallback() {
    echo "fuzz: $1; falling back to the in-repo seeded fuzzer (tests/hardening_fuzz.rs)"
    # The 7 targets run as parallel tests on the machine's cores: each gets budget * cores / 7.
    local cores secs
    cores=$(nproc 2>/dev/null || echo 2)
    secs=$(awk -v b="$BUDGET" -v c="$cores" -v n=7 'BEGIN { s = b * c / n; if (s > b) s = b; printf "%.1f", s }')
    if OSFT_FUZZ_SECONDS=$secs OSFT_FUZZ_SEED=$(date +%s) cargo test --release --test hardening_fuzz -- --nocapture 2>&1 | tee "$LOG/fallback.log" | grep -E "calls checked|panicked|test result"; then
        grep -q "test result: ok" "$LOG/fallback.log" && { echo "1 passed, 0 failed"; exit 0; }
    fi
    echo "0 passed, 1 failed"
    exit 1
}

# --- 1. cargo-fuzz ------------------------------------------------------------------------------
if [ "${OSFT_FUZZ_FALLBACK:-0}" = 1 ]; then
    fallback "OSFT_FUZZ_FALLBACK=1"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    if ! cargo install cargo-fuzz --version '^0.13' --locked >"$LOG/install.log" 2>&1; then
        tail -n 20 "$LOG/install.log"
        fallback "cargo-fuzz could not be installed"
    fi
fi
echo "fuzz: $(cargo fuzz --version)"

# --- 2. build -----------------------------------------------------------------------------------
export RUSTC_BOOTSTRAP=1
start=$(date +%s)
echo "fuzz: building the targets (cargo fuzz build -a; the first build takes minutes)"
if ! (cd fuzz && cargo fuzz build -a >"$LOG/build.log" 2>&1); then
    tail -n 30 "$LOG/build.log"
    fallback "the fuzz targets did not build"
fi
echo "fuzz: built in $(($(date +%s) - start)) s"

# --- 3. run -------------------------------------------------------------------------------------
share=$((BUDGET / ${#TARGETS[@]}))
[ "$share" -lt 2 ] && share=2
total_runs=0
printf '%-12s %10s %8s %8s %7s  %s\n' target runs secs exec/s corpus result
for t in "${TARGETS[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus" "fuzz/regressions/$t" "fuzz/artifacts/$t"
    (cd fuzz && cargo fuzz run -a "$t" "corpus/$t" "regressions/$t" -- \
        -max_total_time="$share" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$LOG/$t.log" 2>&1)
    rc=$?
    runs=$(grep -Eo 'Done [0-9]+ runs' "$LOG/$t.log" | grep -Eo '[0-9]+' | tail -n 1)
    [ -z "$runs" ] && runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$LOG/$t.log" | grep -Eo '[0-9]+$' | tail -n 1)
    runs=${runs:-0}
    secs=$(grep -Eo 'in [0-9]+ second' "$LOG/$t.log" | grep -Eo '[0-9]+' | tail -n 1)
    secs=${secs:-$share}
    size=$(find "$corpus" -type f | wc -l)
    total_runs=$((total_runs + runs))
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        result=ok
    else
        failed=$((failed + 1))
        failures+=("$t")
        result="FAIL (log: ${LOG#$ROOT/}/$t.log)"
    fi
    printf '%-12s %10s %8s %8s %7s  %s\n' "$t" "$runs" "$secs" "$((runs / (secs > 0 ? secs : 1)))" "$size" "$result"
    if [ "$rc" -ne 0 ]; then
        grep -E 'osft fuzz violation|ERROR: AddressSanitizer|SUMMARY|deadly signal|timeout|panicked' "$LOG/$t.log" | head -n 5 | sed 's/^/      | /'
        ls -t "fuzz/artifacts/$t" 2>/dev/null | head -n 1 | sed "s@^@      | input: fuzz/artifacts/$t/@"
    fi
done
echo "fuzz: $total_runs runs in all; corpora in fuzz/corpus/, logs in ${LOG#$ROOT/}/"
if [ "$failed" -gt 0 ]; then
    echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
