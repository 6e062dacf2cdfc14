#!/usr/bin/env bash
# Mutation testing of the CPU-testable code with cargo-mutants: every mutant (a small deliberate
# bug: a replaced return value, a flipped comparison, a deleted `!`, ...) must make some test fail.
# A "missed" mutant is a bug the suite would not notice: add a test, or explain why the mutant is
# equivalent to the original.
#
#   scripts/mutants.sh MINUTES [FILE...]
#
# MINUTES: the time budget; the run is stopped when it is spent, and the outcomes so far are
# reported (mutants are tried in a shuffled order, so a partial run is a fair sample).
# FILE...: the files (globs) to mutate; default src/ops, src/desc.rs, src/view.rs and src/ffi.
# src/exec/cuda is never mutated (.cargo/mutants.toml holds the settings).
#
# Judged by the library's unit tests and every integration test in tests/ except four that
# test nothing these files hold: rounding.rs (src/dtype.rs's casts, 15 s), cuda_kernels_emulated/
# (kernels.cu against src/exec/cpu, 96 s), kernel_signatures.rs (kernels.cu against
# src/exec/cuda) and header_fresh.rs (mutants change function bodies, never the header).
# A mutant caught only by those would be reported missed, never wrongly caught.
#
# Cost, measured on the shared 2-core development machine: a baseline build of an unmutated copy
# of the tree first (about 2.5 minutes), then per mutant an incremental build in Cargo.toml's
# `mutants` profile (median 12 s) and the suite (at most about 5 s; a caught mutant stops at
# its first failing test binary). `--list` counts 724 mutants for the default set; all of them
# took 100 minutes with JOBS=2 (RELIABILITY.md, "Mutation testing", has the results).
#
# ITERATE=1 continues an earlier run: mutants it caught or found unviable are skipped.
# JOBS=N runs N mutants at once, each in its own copy of the tree (about 1.5 GB of disk each).
#
# Needs: cargo install cargo-mutants. Output: target/mutants.out/ (caught.txt, missed.txt,
# timeout.txt, unviable.txt, outcomes.json, a log per mutant). Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    sed -n '2,30p' "$0"
    exit 2
fi
minutes=$1
shift
if ! cargo mutants --version >/dev/null 2>&1; then
    echo "cargo-mutants is not installed: cargo install cargo-mutants" >&2
    exit 2
fi
[ $# -gt 0 ] || set -- 'src/ops/*.rs' 'src/ops/svd/*.rs' src/desc.rs src/view.rs 'src/ffi/*.rs' 'src/ffi/api/*.rs'
files=()
for f in "$@"; do
    files+=(--file "$f")
done
targets=(--cargo-arg=--lib)
for t in tests/*.rs tests/*/main.rs; do
    name=$(basename "${t%/main.rs}" .rs)
    case $name in
    rounding | cuda_kernels_emulated | kernel_signatures | header_fresh | device_check) ;;
    *) targets+=(--cargo-arg=--test "--cargo-arg=$name") ;;
    esac
done
iterate=()
[ "${ITERATE:-0}" = 1 ] && iterate=(--iterate)
# The in-repo fuzzer runs 2000 inputs per op by default; a few hundred still exercise every path.
export OSFT_FUZZ_ITERS=${OSFT_FUZZ_ITERS:-200}
export RUST_BACKTRACE=0
status=0
timeout --signal=INT --kill-after=60 "$((minutes * 60))" \
    cargo mutants --shuffle --jobs "${JOBS:-1}" --output target "${targets[@]}" "${files[@]}" "${iterate[@]}" || status=$?
out=target/mutants.out
count() { [ -f "$out/$1.txt" ] && wc -l <"$out/$1.txt" || echo 0; }
echo
echo "caught $(count caught), missed $(count missed), timeout $(count timeout), unviable $(count unviable)"
if [ -s "$out/missed.txt" ]; then
    echo "missed (each needs a test, or a reason it is equivalent):"
    sed 's/^/  /' "$out/missed.txt"
fi
[ "$status" -eq 124 ] && echo "stopped at the budget of $minutes minutes"
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts: pass that on.
exit "$status"
