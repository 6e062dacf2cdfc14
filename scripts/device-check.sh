#!/usr/bin/env bash
# The GPU device check. Built on a machine with cargo, run on a machine with an NVIDIA GPU (no
# cargo, no network there), in calls that each fit a 600 s command limit with margin:
#
#   scripts/device-check.sh build          # here: binaries into target/device-check/ (carry it)
#   scripts/device-check.sh run            # there: correctness (device_check, the GPU check
#                                          # suite in tests/device_check/; the test suite's GPU
#                                          # tests, compute-sanitizer, the torch tests)
#   scripts/device-check.sh bench-project  # there: the projection step, osft vs torch vs cuBLAS
#   scripts/device-check.sh bench-svd      # there: decomposition, osft vs torch.linalg.svd
#   scripts/device-check.sh bench          # there: both bench parts in one call
#   scripts/device-check.sh plan           # anywhere: every mode's steps, timeouts and their sum
#   scripts/device-check.sh dry-run        # here, no GPU: the same steps on the CPU executor
#
# Every step runs under `timeout -k GRACE LIMIT`; a mode's worst case is the sum of its steps'
# limits plus GRACE per timed step, and `plan` prints it (the dry run fails when a device mode's
# sum reaches MAX_CALL_S). Results go to $OUT (default target/device-check-results; the dry run's to
# target/device-check-dry-run): a log per step, one JSON per part rewritten after every case
# (a step stopped by its timeout leaves every case it finished), steps.tsv (step, exit status,
# seconds, limit) and summary.txt, the one-screen summary printed at the end of every call.
#
# CUDA libraries: osft loads cuBLAS / cuSOLVER / NVRTC at run time (unversioned name first,
# e.g. libcublas.so), torch through its wheel's RPATH (libcublas.so.13). So that both use one
# cuBLAS / cuBLASLt / cuSOLVER in one process, the unversioned names are linked to the wheel's
# files in a scratch directory that comes first in LD_LIBRARY_PATH, then the wheel's
# directories, then /usr/local/cuda. NVRTC is left to that order (the toolkit's unversioned
# libnvrtc.so where there is one, else the wheel's): osft and torch share no NVRTC state. Every
# part records the libraries its process had mapped (/proc/self/maps); the summary warns when
# two different cuBLAS, cuBLASLt or cuSOLVER files were loaded.
#
# The carried pytest (target/device-check/pylib) is appended to sys.path after the image's
# site-packages: it only fills in what the machine lacks, it never shadows its own packages.
#
# PYTHON selects the interpreter (default python3; the dry run takes bindings/python/.venv when
# there is one), OSFT_TEST_SEED the seed of device_check (a fresh one is drawn and recorded).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN_DIR=target/device-check
MAX_CALL_S=540 # a device call's worst case must stay below this (commands may run 600 s)
GRACE=3        # seconds from a step's SIGTERM to its SIGKILL

MODE="${1:-}"
PLAN=0  # 1: steps are listed, not run
DRY=0   # 1: the CPU dry run (CUDA-only steps skipped: no GPU)
PLAN_SUM=0
FAILED=0
PASSED=0
SKIPPED=0

# --- the step runner --------------------------------------------------------------------------
# step NAME LIMIT_S CMD...: runs CMD under timeout, output to $OUT/NAME.txt (its tail printed),
# a row in $OUT/steps.tsv. In plan mode it adds LIMIT_S + GRACE to the mode's sum instead.
step() {
    local name=$1 limit=$2
    shift 2
    if [ "$PLAN" = 1 ]; then
        PLAN_SUM=$((PLAN_SUM + limit + GRACE))
        printf '  %-22s %4d s (+%d s kill grace)\n' "$name" "$limit" "$GRACE"
        return 0
    fi
    local t0 rc secs
    t0=$(date +%s)
    echo "== $name (limit $limit s)"
    timeout -k "$GRACE" "$limit" "$@" >"$OUT/$name.txt" 2>&1
    rc=$?
    secs=$(($(date +%s) - t0))
    grep -v '^ *loaded: ' "$OUT/$name.txt" | tail -n "${TAIL:-6}" | sed 's/^/   | /'
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "   stopped by its limit of $limit s" | tee -a "$OUT/$name.txt"
    fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$limit" >>"$OUT/steps.tsv"
    if [ "$rc" -eq 0 ]; then
        PASSED=$((PASSED + 1))
        echo "   PASS $name ($secs s)"
    else
        FAILED=$((FAILED + 1))
        echo "   FAIL $name: exit status $rc after $secs s (log: $OUT/$name.txt)"
    fi
}

# skip NAME WHY: a step that cannot run here.
skip() {
    if [ "$PLAN" = 1 ]; then
        printf '  %-22s skipped in the dry run\n' "$1"
        return 0
    fi
    echo "== $1: $2"
    echo "$2" >"$OUT/$1.txt"
    printf '%s\t%s\t%s\t%s\n' "$1" "skip" 0 0 >>"$OUT/steps.tsv"
    SKIPPED=$((SKIPPED + 1))
}

# fixed NAME LIMIT_S: an untimed stage of a call (setup, summary), counted in the plan at LIMIT_S;
# the commands inside it carry their own, smaller timeouts.
fixed() {
    [ "$PLAN" = 1 ] && PLAN_SUM=$((PLAN_SUM + $2)) && printf '  %-22s %4d s (bounded inside)\n' "$1" "$2"
    return 0
}

# --- setup: CUDA library order, Python paths, environment record ---------------------------------
# The directories of torch's own CUDA libraries (torch/lib, then the nvidia wheels' */lib),
# found without importing torch.
torch_lib_dirs() {
    timeout 10 "$PY" - <<'EOF' 2>/dev/null
import importlib.util
import os

dirs = []
spec = importlib.util.find_spec("torch")
if spec and spec.submodule_search_locations:
    dirs.append(os.path.join(list(spec.submodule_search_locations)[0], "lib"))
try:
    import nvidia

    for p in nvidia.__path__:
        dirs += [os.path.join(p, d, "lib") for d in sorted(os.listdir(p))]
except ImportError:
    pass
for d in dirs:
    if os.path.isdir(d) and any(f.startswith(("libcu", "libnv")) and ".so" in f for f in os.listdir(d)):
        print(d)
EOF
}

setup() {
    fixed setup 25
    [ "$PLAN" = 1 ] && return 0
    mkdir -p "$OUT"
    local dirs d lib f torch_dirs="" toolkit=""
    SHIM="$(mktemp -d "${TMPDIR:-/tmp}/osft-cuda-libs.XXXXXX")"
    trap 'rm -rf "$SHIM"' EXIT
    dirs="$(torch_lib_dirs)"
    for d in $dirs; do torch_dirs="$torch_dirs:$d"; done
    for lib in cublas cublasLt cusolver; do
        for d in $dirs; do
            f="$(find "$d" -maxdepth 1 -name "lib$lib.so.[0-9]*" 2>/dev/null | sort | head -n 1)"
            if [ -n "$f" ]; then
                ln -sf "$f" "$SHIM/lib$lib.so"
                break
            fi
        done
    done
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$d" ] && toolkit="$toolkit:$d"
    done
    export LD_LIBRARY_PATH="$SHIM$torch_dirs$toolkit${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export OSFT_LIBRARY="$ROOT/$LIB"
    export PYTHONPATH="$ROOT/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
    export OSFT_PYLIB="$ROOT/$BIN_DIR/pylib"
    export OSFT_TEST_SEED="${OSFT_TEST_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
    {
        echo "mode: $MODE"
        echo "commit: $(cat "$BIN_DIR/commit" 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)"
        echo "date: $(date -u)"
        if [ "$DRY" = 1 ]; then
            echo "gpu: none (dry run: CPU executor; CUDA-only steps skipped: no GPU)"
        else
            echo "gpu: $(timeout 5 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 2)"
        fi
        echo "python: $PY ($(timeout 5 "$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1))"
        echo "OSFT_TEST_SEED=$OSFT_TEST_SEED"
        echo "OSFT_LIBRARY=$OSFT_LIBRARY"
        echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
        for f in "$SHIM"/*; do
            [ -e "$f" ] && echo "unversioned link: $(basename "$f") -> $(readlink "$f")"
        done
        [ -z "$(ls -A "$SHIM")" ] && echo "unversioned links: none (no torch CUDA libraries found)"
    } >"$OUT/env.txt"
    sed 's/^/   /' "$OUT/env.txt"
    : >>"$OUT/steps.tsv"
}

# The torch tests through pytest, the carried pytest appended after the image's site-packages.
PYTEST_LAUNCHER='
import glob, os, sys
pylib = os.environ.get("OSFT_PYLIB", "")
if os.path.isdir(pylib):
    sys.path.append(pylib)  # after site-packages: fills gaps, shadows nothing
os.chdir(sys.argv[1])
import pytest
print("pytest", pytest.__version__, "from", os.path.dirname(pytest.__file__), flush=True)
files = [f for pattern in sys.argv[2:] for f in sorted(glob.glob(pattern))]
code = int(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", *files]))
maps = [line.split(None, 5) for line in open("/proc/self/maps")]
libs = sorted({m[5].strip() for m in maps if len(m) == 6})
names = ("libcuda.", "libcublas", "libcusolver", "libnvrtc", "libnvJitLink", "libcudart")
for lib in libs:
    if os.path.basename(lib).startswith(names):
        print("loaded:", lib)
sys.exit(code)
'
# The torch tests with CUDA paths (the gloo-only distributed tests run in scripts/test.sh).
TORCH_TESTS=(tests/test_torch.py tests/test_torch_hf.py
    tests/test_torch_{targets,ranks,decompose,projection,lifecycle,deepspeed_hook}.py)

# --- the device calls -------------------------------------------------------------------------
steps_run() {
    local cpu=()
    [ "$DRY" = 1 ] && cpu=(--cpu)
    TAIL=4 step device-check 100 "$DC" "${cpu[@]}" --json "$OUT/device-check.json"
    if [ "$DRY" = 1 ]; then
        skip ffi-cuda "skipped: no GPU (the test suite's GPU tests, tests/ffi_cuda.rs)"
        skip memcheck "skipped: no GPU (compute-sanitizer memcheck of device_check --quick)"
    else
        step ffi-cuda 25 "$BIN_DIR/ffi_cuda" --include-ignored --test-threads=1
        local san
        san="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
        if [ -n "$san" ] || [ "$PLAN" = 1 ]; then
            step memcheck 60 "$san" --tool memcheck --leak-check full --error-exitcode 3 \
                "$DC" --quick --json "$OUT/memcheck-device-check.json"
        else
            # Counted as a failure: the check was asked for and could not run.
            step memcheck 5 sh -c 'echo "compute-sanitizer not found"; exit 127'
        fi
    fi
    # On the GPU a skipped CUDA test (osft's CUDA backend did not start) is a failure.
    local require=(OSFT_REQUIRE_GPU=1)
    [ "$DRY" = 1 ] && require=()
    TAIL=8 step pytest-torch 60 env "${require[@]}" "$PY" -c "$PYTEST_LAUNCHER" bindings/python "${TORCH_TESTS[@]}"
}

steps_bench_project() {
    local args=()
    [ "$DRY" = 1 ] && args=(--device cpu --scale 32 --layers 2 --iters 3)
    TAIL=8 step gpu-compare-project 230 "$PY" benches/gpu_compare.py --part project "${args[@]}" \
        --json "$OUT/gpu-compare-project.json"
}

steps_bench_svd() {
    local args=()
    [ "$DRY" = 1 ] && args=(--device cpu --scale 32)
    TAIL=8 step gpu-compare-svd 260 "$PY" benches/gpu_compare.py --part svd "${args[@]}" \
        --json "$OUT/gpu-compare-svd.json"
}

# --- the one-screen summary -------------------------------------------------------------------
summary() {
    fixed summary 10
    [ "$PLAN" = 1 ] && return 0
    timeout 10 "$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json
import os
import re
import sys

out = sys.argv[1]


def read(name):
    try:
        with open(os.path.join(out, name)) as f:
            return f.read()
    except OSError:
        return None


def load(name):
    try:
        return json.loads(read(name) or "null")
    except ValueError as e:
        return {"state": f"unreadable: {e}"}


print(f"== device check summary ({out})")
for line in (read("env.txt") or "").splitlines():
    if line.startswith(("mode:", "commit:", "gpu:", "OSFT_TEST_SEED")):
        print("  " + line)
libs = {}  # library path -> the parts that had it loaded
rows = {}  # the last row of each step (an $OUT reused by a later call of the same mode)
for line in (read("steps.tsv") or "").splitlines():
    name = line.split("\t")[0]
    rows.pop(name, None)
    rows[name] = line.split("\t")
for name, rc, secs, limit in rows.values():
    verdict = "skipped" if rc == "skip" else ("ok" if rc == "0" else f"FAILED (exit {rc})")
    if rc in ("124", "137"):
        verdict = f"STOPPED at its {limit} s limit"
    detail = ""
    log = read(name + ".txt") or ""
    if rc == "skip":
        detail = log.strip()
    elif name == "device-check":
        d = load("device-check.json") or {}
        detail = f"{d.get('passed')} passed, {d.get('failed')} failed, {d.get('skipped')} skipped ({d.get('state')})"
        fails = [c["name"] for c in d.get("cases", []) if c["status"] == "fail"]
        detail += "".join(f"\n      FAIL {n}" for n in fails[:8]) + (f"\n      ... {len(fails) - 8} more" if len(fails) > 8 else "")
    elif name == "memcheck":
        m = re.findall(r"ERROR SUMMARY: .*", log)
        detail = m[-1] if m else (log.strip().splitlines() or ["no output"])[-1]
        # Leaks apart from bad accesses: a library's pooled memory can show up as a leak.
        kinds = {
            "invalid accesses": r"=+ Invalid \S* ?(?:read|write)",
            "leaks": r"=+ Leaked \d+ bytes",
            "API errors": r"=+ Program hit ",
        }
        detail += "; " + ", ".join(f"{k}: {len(re.findall(p, log))}" for k, p in kinds.items())
    elif name == "ffi-cuda":
        m = re.findall(r"test result: .*", log)
        detail = m[-1] if m else "no test result line; last: " + (log.strip().splitlines() or [""])[-1]
    elif name == "pytest-torch":
        m = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|error).*?)\s*=*$", log, re.M)
        detail = m[-1] if m else "no pytest result line; last: " + (log.strip().splitlines() or [""])[-1]
        for lib in re.findall(r"^loaded: (.*)$", log, re.M):
            libs.setdefault(lib, []).append(name)
    elif name.startswith("gpu-compare-"):
        d = load(name + ".json") or {}
        detail = f"state: {d.get('state')}"
        p = d.get("projection") or {}
        if "rows" in p:
            detail += (f"\n      projection: osft {p['rows']['osft']['ms']:.2f} ms, torch loop "
                       f"{p['rows']['torch loop']['ms']:.2f} ms, cuBLAS bound {p['rows']['cuBLAS bound']['ms']:.2f} ms"
                       f" ({p['speedup_vs_torch_loop']:.2f}x the loop, {100 * p['fraction_of_cublas']:.0f}% of cuBLAS)")
        if "max_rel_error_vs_f64" in p:
            detail += f"\n      projection error vs f64 {p['max_rel_error_vs_f64']:.2e}, leakage {p['max_leakage']:.2e}"
        s = d.get("decomposition") or {}
        if s.get("shapes_done"):
            detail += (f"\n      decomposition ({s['shapes_done']}/7 shapes): osft {s['osft_s']:.2f} s, torch "
                       f"{s['torch_s']:.2f} s; rec error osft {s['osft_rec']:.1e} torch {s['torch_rec']:.1e}")
            if s.get("randomized_topk_s"):
                detail += (f"; randomized top-k {s['randomized_topk_s']:.2f} s, "
                           f"error {s['randomized_topk_rel_error']:.1e}")
        if s.get("randomized_topk_error"):
            detail += f"\n      randomized top-k: {s['randomized_topk_error']}"
    results = {"device-check": "device-check.json", "memcheck": "memcheck-device-check.json"}.get(name, name + ".json")
    for lib in (load(results) or {}).get("loaded_libraries", []):
        libs.setdefault(lib, []).append(name)
    print(f"  {name:<20} {verdict:<17} {secs:>4} s  {detail}")
if libs:
    print("  CUDA libraries loaded (by step):")
    for lib, parts in sorted(libs.items()):
        print(f"    {lib}  [{', '.join(sorted(set(parts)))}]")
    for kind in ("libcublas.so", "libcublasLt.so", "libcusolver.so"):
        copies = sorted({os.path.realpath(p) for p in libs if os.path.basename(p).startswith(kind)})
        if len(copies) > 1:
            print(f"  WARNING: {len(copies)} different {kind.split('.')[0]} files loaded across steps: {copies}")
else:
    print("  CUDA libraries loaded: none recorded")
EOF
}

# --- plan: every mode's worst case ------------------------------------------------------------
plan_mode() { # plan_mode MODE FUNCTION...: prints the steps and the sum; 1 when over MAX_CALL_S
    local mode=$1 f
    shift
    PLAN=1
    PLAN_SUM=0
    echo "$mode:"
    for f in "$@"; do "$f"; done
    local verdict="ok, under $MAX_CALL_S s"
    [ "$PLAN_SUM" -ge "$MAX_CALL_S" ] && verdict="OVER the $MAX_CALL_S s a call may take"
    printf '  %-22s %4d s worst case: %s; command limit to ask for: %d s\n' "sum" "$PLAN_SUM" "$verdict" \
        "$(((PLAN_SUM + 30) < 600 ? PLAN_SUM + 30 : 600))"
    PLAN=0
    [ "$PLAN_SUM" -lt "$MAX_CALL_S" ]
}

plan_all() {
    local bad=0
    plan_mode run setup steps_run summary || bad=1
    plan_mode bench-project setup steps_bench_project summary || bad=1
    plan_mode bench-svd setup steps_bench_svd summary || bad=1
    plan_mode bench setup steps_bench_project steps_bench_svd summary || bad=1
    return "$bad"
}

finish() {
    echo "steps: $PASSED passed, $FAILED failed, $SKIPPED skipped"
    [ "$FAILED" -eq 0 ]
}

# test_exe NAME: builds the test target NAME (release, CUDA executor) and prints its executable's
# path; cargo's progress goes to stderr. device_check is such a target (harness = false, its own
# command line), not run by `cargo test` (Cargo.toml says why).
test_exe() {
    cargo test --release --features cuda --test "$1" --no-run --message-format=json |
        python3 -c 'import json, sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])'
}

# --- modes ------------------------------------------------------------------------------------
PY="${PYTHON:-python3}"
DC="$BIN_DIR/device_check"
LIB="$BIN_DIR/libosft.so"
OUT="${OUT:-$ROOT/target/device-check-results}"
case "$MODE" in
build)
    set -e
    exe="$(test_exe device_check)"
    mkdir -p "$BIN_DIR"
    # Stripped: the whole carried tree must stay under 64 MiB.
    strip -o "$BIN_DIR/device_check" "$exe"
    # The test suite's GPU tests (#[ignore]d without a GPU), to run there with --include-ignored.
    exe="$(test_exe ffi_cuda)"
    strip -o "$BIN_DIR/ffi_cuda" "$exe"
    # The C library for the Python binding (torch tests, gpu_compare.py), stripped as well.
    cargo build --release --lib
    strip -o "$BIN_DIR/libosft.so" target/release/libosft.so
    # pytest for a GPU machine that may lack it, appended after that machine's site-packages by
    # the launcher above: pure-Python wheels only (py3-none-any, resolved for Python 3.10 so that
    # tomli / exceptiongroup come along), nothing compiled for this machine's Python.
    rm -rf "$BIN_DIR/pylib"
    python3 -m pip install -q --disable-pip-version-check --no-compile --target "$BIN_DIR/pylib" \
        --only-binary=:all: --implementation py --abi none --platform any --python-version 3.10 \
        pytest exceptiongroup tomli
    git rev-parse HEAD >"$BIN_DIR/commit" 2>/dev/null || true
    echo "built $BIN_DIR ($(du -sh "$BIN_DIR" | cut -f1)); carry $BIN_DIR"
    ;;
run)
    setup
    steps_run
    summary
    finish
    ;;
bench-project | bench-svd | bench)
    setup
    [ "$MODE" != bench-svd ] && steps_bench_project
    [ "$MODE" != bench-project ] && steps_bench_svd
    summary
    finish
    ;;
plan)
    plan_all
    ;;
dry-run)
    # The device calls' logic on this machine, CPU executor in the GPU's place: the plan check,
    # then `run` and both bench parts, their CUDA-only steps skipped: no GPU.
    OUT="${OUT_DRY:-$ROOT/target/device-check-dry-run}"
    rm -rf "$OUT"
    mkdir -p "$OUT"
    if [ -z "${PYTHON:-}" ] && [ -x bindings/python/.venv/bin/python ]; then
        PY="$ROOT/bindings/python/.venv/bin/python"
    fi
    echo "== plan: each device call's worst case"
    if plan_all >"$OUT/plan.txt" 2>&1; then
        PASSED=$((PASSED + 1))
    else
        FAILED=$((FAILED + 1))
        echo "   FAIL plan: a device call can exceed $MAX_CALL_S s"
    fi
    sed 's/^/   | /' "$OUT/plan.txt"
    DRY=1
    echo "== build: device_check (tests/device_check/) and libosft.so (release)"
    if cargo build --release --lib >"$OUT/build.txt" 2>&1 && DC="$(test_exe device_check 2>>"$OUT/build.txt")"; then
        LIB=target/release/libosft.so
        setup
        steps_run
        steps_bench_project
        steps_bench_svd
        summary
    else
        tail -n 20 "$OUT/build.txt"
        FAILED=$((FAILED + 1))
        echo "   FAIL build (log: $OUT/build.txt)"
    fi
    finish
    ;;
all)
    echo "$0: 'all' would exceed the $MAX_CALL_S s a device call may take; run 'run', then" \
        "'bench-project' and 'bench-svd' as separate calls ('plan' shows each one's worst case)" >&2
    exit 2
    ;;
*)
    echo "usage: $0 build|run|bench-project|bench-svd|bench|plan|dry-run" >&2
    exit 2
    ;;
esac
