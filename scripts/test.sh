#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it through .ci/run).
# Installs what it needs into ./.venv (the NVRTC wheel used to compile-check the CUDA kernels);
# nothing system-wide. The C/C++ suite needs gcc/g++ and valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."

# NVRTC pinned to CUDA 13.0: a newer NVRTC emits PTX that the 580 driver (CUDA 13.0) refuses.
NVRTC_WHEEL="nvidia-cuda-nvrtc==13.0.88"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "$NVRTC_WHEEL"
NVRTC_DIR="$(.venv/bin/python -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')"
export LD_LIBRARY_PATH="$NVRTC_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OSFT_REQUIRE_NVRTC=1

echo "== Rust: unit, integration and doc tests (release build) =="
cargo test --release --no-fail-fast 2>&1

# The shared and static libraries the C, C++ and Python suites load (never a stale one).
cargo build --release 2>&1

echo "== libosft.so links no CUDA library (they are loaded at run time) =="
if ldd target/release/libosft.so | grep -Ei 'libcuda|cublas|cusolver|nvrtc'; then
    echo "FAIL: libosft.so links a CUDA library directly"
    exit 1
fi
echo "ok: $(ldd target/release/libosft.so | wc -l) shared libraries, none from CUDA"

echo "== Python binding (ctypes, numpy path) in bindings/python/.venv =="
bash bindings/python/run_tests.sh

echo "== Bounded fuzzing of the C ABI (about a minute; RELIABILITY.md) =="
bash scripts/fuzz.sh

echo "== Rust C-ABI tests under valgrind memcheck =="
bash scripts/hardening.sh

echo "== C and C++ against the committed header, shared and static (valgrind) =="
bash tests/c/run.sh
