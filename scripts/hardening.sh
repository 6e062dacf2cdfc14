#!/usr/bin/env bash
# Memory checking of the Rust-side C-ABI tests, and the Miri probe (RELIABILITY.md).
#
#   scripts/hardening.sh
#
# 1. builds the test binaries (cargo test --release --no-run) of the C-ABI tests on the CPU
#    (tests/ffi_*.rs except ffi_cuda.rs, whose test needs a GPU), tests/hardening_fuzz.rs and
#    tests/hardening_threads.rs;
# 2. runs each under valgrind memcheck (--error-exitcode=1, definite/indirect leaks are errors,
#    tests/c/valgrind.supp for rayon's worker-thread TLS), with the fuzzer and the stress test
#    scaled down (valgrind is ~50x slower): OSFT_FUZZ_ITERS=60, OSFT_THREADS_ROUNDS=1;
# 3. checks whether Miri can run here (it cannot on this toolchain: see RELIABILITY.md) and says so.
# The C/C++ tests run under valgrind in tests/c/run.sh already. The last line is
# "N passed, M failed, K skipped"; the exit status is non-zero on any failure. Without valgrind
# the memcheck runs are skipped, each with a SKIP line; OSFT_REQUIRE_VALGRIND=1 (set by
# scripts/test.sh) makes that a failure.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
LOG=$ROOT/target/hardening-logs
mkdir -p "$LOG"
export RUST_BACKTRACE=0
passed=0
failed=0
skipped=0
failures=()

step() {
    local name=$1
    shift
    local t0=$(date +%s)
    if "$@" >"$LOG/$name.log" 2>&1; then
        passed=$((passed + 1))
        printf 'PASS  %s (%d s)\n' "$name" "$(($(date +%s) - t0))"
    else
        failed=$((failed + 1))
        failures+=("$name")
        printf 'FAIL  %s (log: %s)\n' "$name" "${LOG#$ROOT/}/$name.log"
        tail -n 25 "$LOG/$name.log" | sed 's/^/      | /'
    fi
}

# Every C-ABI test file, found by name so that a new one is covered too.
TESTS=()
for f in tests/ffi_*.rs; do
    t=$(basename "$f" .rs)
    [ "$t" = ffi_cuda ] || TESTS+=("$t")
done
TESTS+=(hardening_fuzz hardening_threads)
echo "building: cargo test --release --no-run ${TESTS[*]/#/--test }"
args=()
for t in "${TESTS[@]}"; do args+=(--test "$t"); done
if ! cargo test --release --no-run "${args[@]}" >"$LOG/build.log" 2>&1; then
    tail -n 30 "$LOG/build.log"
    echo "0 passed, 1 failed"
    exit 1
fi
bin() { # the newest test binary of test target $1
    ls -t "$ROOT"/target/release/deps/"$1"-* 2>/dev/null | grep -v '\.d$' | head -n 1
}

if command -v valgrind >/dev/null 2>&1; then
    VALGRIND=(valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect
        --show-leak-kinds=definite,indirect --suppressions="$ROOT/tests/c/valgrind.supp" --quiet)
    for t in "${TESTS[@]}"; do
        b=$(bin "$t")
        if [ -z "$b" ]; then
            failed=$((failed + 1))
            failures+=("$t-binary")
            echo "FAIL  no test binary for $t"
            continue
        fi
        step "valgrind-$t" env OSFT_FUZZ_ITERS=60 OSFT_THREADS_ROUNDS=1 "${VALGRIND[@]}" "$b" --test-threads=2
    done
else
    for t in "${TESTS[@]}"; do
        if [ "${OSFT_REQUIRE_VALGRIND:-0}" = 1 ]; then
            failed=$((failed + 1))
            failures+=("valgrind-$t")
            echo "FAIL  valgrind-$t: valgrind is not installed, and OSFT_REQUIRE_VALGRIND=1 requires it"
        else
            skipped=$((skipped + 1))
            echo "SKIP  valgrind-$t: not run: valgrind is not installed (OSFT_REQUIRE_VALGRIND=1 makes this a failure)"
        fi
    done
fi

# Miri: needs the `miri` component (nightly only; nothing can be downloaded here).
miri_probe() {
    if cargo miri --version 2>&1 | grep -q '^miri'; then
        echo "cargo miri is available: run 'cargo miri test --lib desc' by hand"
        return 0
    fi
    echo "Miri is not available on this toolchain:"
    cargo miri --version 2>&1 | head -n 2
    RUSTC_BOOTSTRAP=1 cargo miri --version 2>&1 | head -n 1
    return 0
}
miri_probe | sed 's/^/miri: /'

if [ "$failed" -gt 0 ]; then
    echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
