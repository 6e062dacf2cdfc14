#!/usr/bin/env bash
# The GPU device check, in two halves:
#
#   scripts/device-check.sh build   # here, on a CPU machine with cargo: builds the binary into
#                                   # target/device-check/ (carry that path to the GPU machine)
#   scripts/device-check.sh run     # there, on the GPU machine (no cargo, no registries): runs
#                                   # it against the CUDA libraries found there; results to $OUT
#   scripts/device-check.sh bench   # there: the GPU measurements (benches/gpu_compare.py:
#                                   # osft vs the PyTorch loop vs batched cuBLAS) to $OUT
#
# With the device tool (about 15 minutes of device time per session, machine start included):
#   run(command="bash scripts/device-check.sh run", carry=["target/device-check"], timeout_s=540)
#   run(command="bash scripts/device-check.sh bench", carry=["target/device-check"], timeout_s=400)
# `run` stays well under 8 minutes: the full check, the test suite's GPU tests (tests/ffi_cuda.rs,
# ignored where there is no GPU, run here with --include-ignored), a compute-sanitizer memcheck of
# the --quick subset, then the torch tests of the Python package (tests/test_torch*.py) on the GPU
# with the carried libosft.so and a carried pytest. `all` does both in one call.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN_DIR=target/device-check

case "${1:-}" in
build)
    set -e
    cargo build --release --example device_check
    mkdir -p "$BIN_DIR"
    # Stripped: the whole carried tree must stay under 64 MiB.
    strip -o "$BIN_DIR/device_check" target/release/examples/device_check
    # The test suite's GPU tests (#[ignore]d without a GPU), to run there with --include-ignored.
    exe="$(cargo test --release --features cuda --test ffi_cuda --no-run --message-format=json |
        python3 -c 'import json, sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')"
    strip -o "$BIN_DIR/ffi_cuda" "$exe"
    # The C library for the Python binding (torch tests, gpu_compare.py), stripped as well.
    cargo build --release --lib
    strip -o "$BIN_DIR/libosft.so" target/release/libosft.so
    # pytest for the GPU machine, which has PyTorch but maybe no pytest and no registry: pure
    # Python wheels into a folder put on PYTHONPATH there (tomli / exceptiongroup cover < 3.11).
    rm -rf "$BIN_DIR/pylib"
    python3 -m pip install -q --disable-pip-version-check --no-compile --target "$BIN_DIR/pylib" \
        pytest exceptiongroup tomli
    git rev-parse HEAD > "$BIN_DIR/commit" 2>/dev/null || true
    echo "built $BIN_DIR ($(du -sh "$BIN_DIR" | cut -f1)); carry $BIN_DIR"
    ;;
run | bench | all)
    OUT="${OUT:-$PWD/device-check-results}"
    mkdir -p "$OUT"
    # CUDA libraries: the toolkit's (its NVRTC matches the driver's CUDA), then PyTorch's wheels.
    LIBS=""
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$d" ] && LIBS="$LIBS:$d"
    done
    TORCH_NV="$(python3 -c 'import nvidia, os; print(" ".join(sorted({os.path.join(p, d) for p in nvidia.__path__ for d in os.listdir(p)})))' 2>/dev/null || true)"
    for d in $TORCH_NV; do
        [ -d "$d/lib" ] && LIBS="$LIBS:$d/lib"
    done
    export LD_LIBRARY_PATH="${LIBS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    {
        echo "commit: $(cat "$BIN_DIR/commit" 2>/dev/null || echo unknown)"
        date -u
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
        echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    } > "$OUT/device-check-env.txt"
    cat "$OUT/device-check-env.txt"
    export OSFT_LIBRARY="$PWD/$BIN_DIR/libosft.so"
    export PYTHONPATH="$PWD/bindings/python:$PWD/$BIN_DIR/pylib${PYTHONPATH:+:$PYTHONPATH}"
    if [ "$1" = bench ]; then
        timeout 380 python3 benches/gpu_compare.py --json "$OUT/gpu-compare.json" 2>&1 | tee "$OUT/gpu-compare.txt"
        exit "${PIPESTATUS[0]}"
    fi
    timeout 240 "$BIN_DIR/device_check" 2>&1 | tee "$OUT/device-check.txt"
    status=${PIPESTATUS[0]}
    timeout 60 "$BIN_DIR/ffi_cuda" --include-ignored --test-threads=1 > "$OUT/ffi-cuda.txt" 2>&1
    ffi=$?
    tail -3 "$OUT/ffi-cuda.txt"
    echo "ffi_cuda (GPU tests of the test suite) exit code: $ffi" | tee -a "$OUT/ffi-cuda.txt"
    SAN="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
    if [ -n "$SAN" ]; then
        timeout 150 "$SAN" --tool memcheck --leak-check full --error-exitcode 3 "$BIN_DIR/device_check" --quick > "$OUT/memcheck.txt" 2>&1
        san=$?
        tail -5 "$OUT/memcheck.txt"
        echo "compute-sanitizer memcheck exit code: $san" | tee -a "$OUT/memcheck.txt"
    else
        echo "compute-sanitizer not found" | tee "$OUT/memcheck.txt"
        san=0
    fi
    # The Python package's torch tests on this GPU (they skip what needs what is absent).
    (cd bindings/python && timeout 120 python3 -m pytest -q -rs -p no:cacheprovider tests/test_torch*.py) > "$OUT/pytest-torch.txt" 2>&1
    py=$?
    tail -15 "$OUT/pytest-torch.txt"
    echo "pytest (torch tests) exit code: $py" | tee -a "$OUT/pytest-torch.txt"
    if [ "$1" = all ]; then
        timeout 380 python3 benches/gpu_compare.py --json "$OUT/gpu-compare.json" 2>&1 | tee "$OUT/gpu-compare.txt"
    fi
    [ "$status" -eq 0 ] && [ "$ffi" -eq 0 ] && [ "$san" -eq 0 ] && [ "$py" -eq 0 ]
    ;;
*)
    echo "usage: $0 build|run|bench|all" >&2
    exit 2
    ;;
esac
