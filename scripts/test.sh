#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it through .ci/run).
# Installs nothing system-wide: the Rust suite needs only cargo; the C/C++ suite needs gcc/g++
# and valgrind, which it checks for itself.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Rust: unit, integration and doc tests (release build) =="
cargo test --release --no-fail-fast 2>&1

if [ -f tests/c/run.sh ]; then
    echo "== C and C++ against the committed header, shared and static =="
    bash tests/c/run.sh
fi
