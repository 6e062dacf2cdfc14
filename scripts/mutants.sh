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
# Cost, measured on the shared 2-core development machine: one mutant is an incremental release
# build of the crate and its test binaries (about 50-80 s) plus the test run (about 90-110 s when
# no test fails; a caught mutant usually stops sooner, an unviable one never gets there). A
# 42-minute sample tried 29 mutants after a 5-minute baseline build (cargo-mutants builds an
# unmutated copy of the tree first; about 12 minutes when the dependencies are not built yet),
# about 80 s each. `--list` counts the mutants: 724 for the default set (about 16 hours at that
# rate). So a shuffled sample within a budget of an hour or a few is the practical use; with more
# cores, raise JOBS (each job builds separately: about 2 cores and 3 GB of disk per job).
#
# Needs: cargo install cargo-mutants. Output: target/mutants.out/ (caught.txt, missed.txt,
# timeout.txt, unviable.txt, outcomes.json, a log per mutant). Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    sed -n '2,24p' "$0"
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
# The in-repo fuzzer runs 2000 inputs per op by default; a few hundred still exercise every path.
export OSFT_FUZZ_ITERS=${OSFT_FUZZ_ITERS:-200}
export RUST_BACKTRACE=0
status=0
timeout --signal=INT --kill-after=60 "$((minutes * 60))" \
    cargo mutants --shuffle --jobs "${JOBS:-1}" --output target "${files[@]}" || status=$?
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
