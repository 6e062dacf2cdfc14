#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it through .ci/run).
#
# 1. Tools: ./.venv gets the NVRTC wheel (compile-checks the CUDA kernels), ruff, and, when they
#    are not on PATH, cmake and pkg-config (PyPI's cmake and pkgconf); the Python test venv gets
#    torch, transformers and DeepSpeed (bindings/python/run_tests.sh). Each is installed only when
#    missing.
#    valgrind comes from apt-get when missing (as root). gcc/g++ are expected.
# 2. Form: rustfmt (tree and fuzz/), ruff, clippy with -D warnings, rustdoc with -D warnings.
# 3. Suites: Rust tests, the Python binding (numpy and torch paths), the Python wheel (built,
#    installed in a fresh venv, used), bounded fuzzing, valgrind on the Rust C-ABI tests, C and
#    C++ against the committed header (incl. CMake, pkg-config, the installed library's SONAME,
#    symbol versions and size), the CUDA kernels' host emulation under AddressSanitizer.
# A missing tool is a failure here, not a skip (the OSFT_REQUIRE_* switches below); only tests
# that need a GPU are skipped ("not run: no GPU"; scripts/device-check.sh runs them on one).
# Every suite runs even after a failure; the end is one line per suite with passed / failed /
# skipped, then "N passed, N failed, N skipped". The exit status is non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOGS=$ROOT/target/test-logs
mkdir -p "$LOGS"
T_START=$(date +%s)

# A run from a fresh clone writes about 30 GB (Rust targets, fuzz builds, the torch venv with its
# CUDA wheels, the wheel build); a full disk shows up as an obscure pip or linker error, so say so.
free_gb=$(df -Pk "$ROOT" | awk 'NR == 2 { print int($4 / 1048576) }')
echo "disk: ${free_gb} GB free at $ROOT"
if [ "${free_gb:-0}" -lt 30 ]; then
    echo "warning: under 30 GB free; a full run from a fresh clone may fail for lack of space"
fi

export OSFT_REQUIRE_NVRTC=1 OSFT_REQUIRE_TORCH=1 OSFT_REQUIRE_TRANSFORMERS=1 OSFT_REQUIRE_DEEPSPEED=1
export OSFT_REQUIRE_CMAKE=1 OSFT_REQUIRE_PKGCONFIG=1 OSFT_REQUIRE_VALGRIND=1

# NVRTC pinned to CUDA 13.0: a newer NVRTC emits PTX that the 580 driver (CUDA 13.0) refuses.
NVRTC_PIN="nvidia-cuda-nvrtc==13.0.88"
RUFF_PIN="ruff==0.17.5"
CMAKE_PIN="cmake==4.4.5"
PKGCONF_PIN="pkgconf==3.0.7.post0"

SUITES=()     # "name|passed|failed|skipped|seconds|note"
setup_failures=0

# pip_ensure SPEC...: installs into ./.venv each name==version it lacks (no index traffic else).
pip_ensure() {
    local missing
    missing=$(.venv/bin/python - "$@" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have is None or (want and have != want):
        print(spec)
EOF
    )
    if [ -n "$missing" ]; then
        echo "installing into .venv: $(echo $missing)"
        # shellcheck disable=SC2086
        .venv/bin/python -m pip install --quiet --disable-pip-version-check $missing
    fi
}

apt_ensure() { # apt_ensure PACKAGE: as root, apt-get install it (one apt-get update first)
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq >"$LOGS/apt-update.log" 2>&1 || return 1
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >"$LOGS/apt-$1.log" 2>&1
}

setup_fail() {
    echo "SETUP FAIL: $*"
    setup_failures=$((setup_failures + 1))
}

echo "== Tools =="
[ -x .venv/bin/python ] || python3 -m venv .venv
pip_ensure "$NVRTC_PIN" "$RUFF_PIN" || setup_fail "pip install $NVRTC_PIN $RUFF_PIN"
NVRTC_DIR="$(.venv/bin/python -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')"
export LD_LIBRARY_PATH="$NVRTC_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# After the system's directories: a system cmake / pkg-config is used where there is one.
export PATH="$PATH:$ROOT/.venv/bin"
if ! command -v cmake >/dev/null 2>&1; then
    pip_ensure "$CMAKE_PIN" || setup_fail "pip install $CMAKE_PIN"
fi
if ! command -v pkg-config >/dev/null 2>&1; then
    pip_ensure "$PKGCONF_PIN" || true
    if ! pkg-config --version >/dev/null 2>&1; then
        apt_ensure pkg-config || setup_fail "no pkg-config (PyPI's pkgconf, then apt-get install pkg-config)"
    fi
fi
if ! command -v valgrind >/dev/null 2>&1; then
    apt_ensure valgrind || setup_fail "no valgrind (apt-get install valgrind)"
fi
# DeepSpeed's JIT op (tests/test_torch_deepspeed.py) compiles against the Python headers of the
# interpreter the test venv is made from.
PY_INCLUDE="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
if [ ! -f "$PY_INCLUDE/Python.h" ]; then
    apt_ensure python3-dev || setup_fail "no Python.h in $PY_INCLUDE (apt-get install python3-dev)"
fi
for t in cmake pkg-config valgrind; do
    printf '%-11s %s\n' "$t:" "$(command -v "$t" >/dev/null 2>&1 && echo "$(command -v "$t") ($("$t" --version 2>/dev/null | head -n 1))" || echo missing)"
done
echo "ruff:       $(.venv/bin/ruff --version)"

# --- form checks (cheap first) ----------------------------------------------------------------
echo "== Form: rustfmt, ruff, clippy, rustdoc =="
form_pass=0
form_fail=0
form_failed=()
t0=$(date +%s)
form() { # form NAME CMD...
    local name=$1 t=$(date +%s)
    shift
    if "$@" >"$LOGS/form-$name.log" 2>&1; then
        form_pass=$((form_pass + 1))
        printf 'PASS  %s (%d s)\n' "$name" "$(($(date +%s) - t))"
    else
        form_fail=$((form_fail + 1))
        form_failed+=("$name")
        printf 'FAIL  %s (log: target/test-logs/form-%s.log)\n' "$name" "$name"
        tail -n 40 "$LOGS/form-$name.log" | sed 's/^/      | /'
    fi
}
form rustfmt cargo fmt --all --check -- --color never
form rustfmt-fuzz bash -c "cd fuzz && cargo fmt --all --check -- --color never"
form ruff .venv/bin/ruff check bindings/python benches
# --all-targets leaves out `test = false` targets: the GPU check suite (tests/device_check/) by name.
form clippy bash -c "cargo clippy --all-targets --all-features -- -D warnings &&
    cargo clippy --all-features --test device_check -- -D warnings"
form rustdoc env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps
SUITES+=("form checks|$form_pass|$form_fail|0|$(($(date +%s) - t0))|rustfmt, ruff, clippy, rustdoc${form_failed:+; failed: ${form_failed[*]}}")

# --- suites -----------------------------------------------------------------------------------
# count_line LOG: the "N passed, M failed[, K skipped]" closing line of LOG as "N M K".
count_line() {
    grep -E '^[A-Za-z]*:? ?[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1 |
        awk '{ for (i = 1; i <= NF; i++) { gsub(",", "", $(i + 1)); if ($(i + 1) == "passed") p = $i;
               if ($(i + 1) == "failed") f = $i; if ($(i + 1) == "skipped") s = $i } }
             END { print p + 0, f + 0, s + 0 }'
}

# suite NAME RC P F S SECONDS NOTE: records a suite; a non-zero RC with no failure counted (a
# build that broke, a crash before the summary) counts as one failure.
suite() {
    local name=$1 rc=$2 p=$3 f=$4 s=$5 secs=$6 note=$7
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        note="${note:+$note; }exit status $rc with no failure counted"
    fi
    SUITES+=("$name|$p|$f|$s|$secs|$note")
}

echo "== Rust: unit, integration and doc tests (release build) =="
t0=$(date +%s)
cargo test --release --no-fail-fast 2>&1 | tee "$LOGS/rust.log"
rc=${PIPESTATUS[0]}
read -r p f s < <(grep -E '^test result:' "$LOGS/rust.log" | awk '{ p += $4; f += $6; s += $8 } END { print p + 0, f + 0, s + 0 }')
gpu=$(grep -c 'ignored, not run: no GPU' "$LOGS/rust.log")
note="skipped: $gpu not run: no GPU"
[ "$s" -ne "$gpu" ] && note="$note, $((s - gpu)) ignored for another reason"
suite "Rust tests" "$rc" "$p" "$f" "$s" "$(($(date +%s) - t0))" "$note"

# The CUDA kernels run on the CPU under the host emulation: tests/cuda_kernels_emulated/ ran in
# the cargo test above; its own line here, from the per-kernel counts it writes (and the log's result).
kreport="${CARGO_TARGET_DIR:-target}/tmp/cuda_kernels_emulated"
cat "$kreport".kernels.txt "$kreport".casts.txt > "$LOGS/kernels_emulated.log" 2>/dev/null
kp=$(grep -cE '^ +osft_[a-z0-9_]+ +[1-9][0-9]* passed$' "$LOGS/kernels_emulated.log")
kf=$(grep -cE '^test (every_kernel_matches_the_cpu_executor|every_cast_agrees_bit_for_bit) \.\.\. FAILED' "$LOGS/rust.log")
kok=$(grep -cE '^test (every_kernel_matches_the_cpu_executor|every_cast_agrees_bit_for_bit) \.\.\. ok' "$LOGS/rust.log")
[ "$kok" -eq 2 ] || [ "$kf" -gt 0 ] || kf=1
ksecs=$(grep -ohE 'in [0-9.]+ s' "$LOGS/kernels_emulated.log" | awk '{ t += $2 } END { printf "%d", t }')
knote="$(sed -n 's/^KERNELS: //p' "$LOGS/kernels_emulated.log"); $(sed -n 's/^casts: \([0-9]* values\).*/\1 cast bit-identical/p' "$LOGS/kernels_emulated.log")"
suite "CUDA kernels (host emulation)" "$kf" "$kp" "$kf" 0 "${ksecs:-0}" "$knote; per-kernel counts in target/test-logs/kernels_emulated.log"

# The shared and static libraries the C, C++ and Python suites load (never a stale one).
if ! cargo build --release 2>&1; then
    SUITES+=("release build|0|1|0|0|cargo build --release failed")
fi

echo "== libosft.so links no CUDA library (they are loaded at run time) =="
if ldd target/release/libosft.so | grep -Ei 'libcuda|cublas|cusolver|nvrtc'; then
    echo "FAIL: libosft.so links a CUDA library directly"
    SUITES+=("libosft.so deps|0|1|0|0|links a CUDA library")
else
    echo "ok: $(ldd target/release/libosft.so | wc -l) shared libraries, none from CUDA"
    SUITES+=("libosft.so deps|1|0|0|0|no CUDA library linked")
fi

echo "== Python binding (numpy and torch paths) in bindings/python/.venv =="
t0=$(date +%s)
bash bindings/python/run_tests.sh --junitxml="$LOGS/python.xml" 2>&1 | tee "$LOGS/python.log"
rc=${PIPESTATUS[0]}
line=$(grep -E '[0-9]+ (passed|failed|skipped|errors?)\b.* in [0-9.]+s' "$LOGS/python.log" | tail -n 1)
num() { echo "$line" | grep -Eo "[0-9]+ $1" | grep -Eo '[0-9]+' | head -n 1; }
p=$(num passed)
f=$(($(num failed || true) + $(num error || true) + 0))
s=$(num skipped)
gpu=$(grep -E '^SKIPPED \[[0-9]+\] .*: not run: no GPU' "$LOGS/python.log" | grep -Eo '^SKIPPED \[[0-9]+\]' | grep -Eo '[0-9]+' | awk '{ n += $1 } END { print n + 0 }')
note="pytest + demo; torch $(bindings/python/.venv/bin/python -c 'import torch; print(torch.__version__)' 2>/dev/null || echo missing); skipped: $gpu not run: no GPU"
[ "${s:-0}" -ne "$gpu" ] && note="$note, $((${s:-0} - gpu)) for another reason"
# The torch and DeepSpeed tests' own counts (tests/test_torch*.py), from pytest's JUnit report.
torch_counts=$(python3 - "$LOGS/python.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

n = {"passed": 0, "failed": 0, "skipped": 0}
try:
    cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
except (OSError, ET.ParseError):
    cases = []
for c in cases:
    if not any(part.startswith("test_torch") for part in c.get("classname", "").split(".")):
        continue
    kinds = {e.tag for e in c}
    n["failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"] += 1
print(f"torch tests {n['passed']} passed / {n['failed']} failed / {n['skipped']} skipped")
EOF
)
suite "Python" "$rc" "${p:-0}" "$f" "${s:-0}" "$(($(date +%s) - t0))" "$note; $torch_counts"

echo "== Python wheel: pip wheel ./bindings/python, installed into a fresh venv, used without OSFT_LIBRARY =="
t0=$(date +%s)
bash bindings/python/wheel_test.sh 2>&1 | tee "$LOGS/wheel.log"
rc=${PIPESTATUS[0]}
read -r p f s < <(count_line "$LOGS/wheel.log")
suite "wheel" "$rc" "$p" "$f" "$s" "$(($(date +%s) - t0))" "$(grep -Eo 'osft-[^ ]*\.whl \([0-9]+ bytes\)' target/wheel-test/wheel-tag.log 2>/dev/null | head -n 1)"

echo "== GPU device check, CPU dry run (scripts/device-check.sh dry-run; about two minutes) =="
t0=$(date +%s)
bash scripts/device-check.sh dry-run 2>&1 | tee "$LOGS/device-check-dry-run.log"
rc=${PIPESTATUS[0]}
read -r p f s < <(count_line "$LOGS/device-check-dry-run.log")
suite "device check dry run" "$rc" "$p" "$f" "$s" "$(($(date +%s) - t0))" "steps on the CPU executor; skipped: $s CUDA-only, no GPU"

echo "== Bounded fuzzing of the C ABI (about a minute; RELIABILITY.md) =="
t0=$(date +%s)
bash scripts/fuzz.sh 2>&1 | tee "$LOGS/fuzz.log"
rc=${PIPESTATUS[0]}
read -r p f s < <(count_line "$LOGS/fuzz.log")
note="cargo-fuzz targets, libFuzzer + ASan"
grep -q 'falling back to the in-repo' "$LOGS/fuzz.log" && note="cargo-fuzz unavailable: the in-repo seeded fuzzer ran instead"
suite "fuzzing" "$rc" "$p" "$f" "$s" "$(($(date +%s) - t0))" "$note"

echo "== Rust C-ABI tests under valgrind memcheck =="
t0=$(date +%s)
bash scripts/hardening.sh 2>&1 | tee "$LOGS/hardening.log"
rc=${PIPESTATUS[0]}
read -r p f s < <(count_line "$LOGS/hardening.log")
suite "valgrind hardening" "$rc" "$p" "$f" "$s" "$(($(date +%s) - t0))" "test binaries under memcheck"

echo "== C and C++ against the committed header, shared and static (valgrind, CMake, pkg-config) =="
t0=$(date +%s)
bash tests/c/run.sh 2>&1 | tee "$LOGS/c.log"
rc=${PIPESTATUS[0]}
read -r p f s < <(count_line "$LOGS/c.log")
# The installed library's line (tests/c/run.sh checks it: SONAME, versions, at most 10 MB).
lib_line=$(grep -Eo 'library: .*' "$LOGS/c.log" | tail -n 1)
# The consumer paths inside it, each with its count: CMake (install, find_package,
# add_subdirectory) and pkg-config (shared, static, installed suppressions).
sect() { echo "$1 $(grep -cE "^PASS  $2" "$LOGS/c.log") passed / $(grep -cE "^FAIL  $2" "$LOGS/c.log") failed"; }
sections="$(sect CMake 'cmake-'), $(sect pkg-config 'pkg-config')"
suite "C/C++" "$rc" "$p" "$f" "$s" "$(($(date +%s) - t0))" "programs and configurations; $sections${lib_line:+; installed $lib_line}"

echo "== CUDA kernels (host emulation) under AddressSanitizer =="
# Last, because it rebuilds the emulation with -fsanitize=address (the next plain build rebuilds
# it back); the Rust test binary preloads ASan's runtime. About 2 minutes on 2 cores. It guards
# heap memory and the emulator's own state; `__shared__` arrays live in a linker section that ASan
# does not guard (an off-by-one read there is not reported: the poisoning and the comparison
# with the CPU executor cover those).
t0=$(date +%s)
asan_bin=$(OSFT_KERNEL_EMU_SANITIZE=address cargo test --release --test cuda_kernels_emulated --no-run 2>&1 |
    tee "$LOGS/kernels_asan.log" | grep -Eo 'target/release/deps/cuda_kernels_emulated-[0-9a-f]+' | tail -n 1)
# grep without -q reads all of ldd's output: with -q it can exit first, and under pipefail ldd's
# SIGPIPE would fail the check although libasan is linked.
if [ -n "$asan_bin" ] && ldd "$asan_bin" | grep libasan >/dev/null; then
    LD_PRELOAD="$(gcc -print-file-name=libasan.so)" "$asan_bin" 2>&1 | tee -a "$LOGS/kernels_asan.log"
    rc=${PIPESTATUS[0]}
    read -r p f s < <(grep -E '^test result:' "$LOGS/kernels_asan.log" | awk '{ print $4 + 0, $6 + 0, $8 + 0 }' | tail -n 1)
else
    rc=1 p=0 f=1 s=0
    echo "the ASan build of the kernel emulation failed (see $LOGS/kernels_asan.log)"
fi
suite "CUDA kernels under ASan" "$rc" "${p:-0}" "${f:-0}" "${s:-0}" "$(($(date +%s) - t0))" "emulator and kernels built with -fsanitize=address"

# --- summary ----------------------------------------------------------------------------------
if [ "$setup_failures" -gt 0 ]; then
    SUITES+=("tool setup|0|$setup_failures|0|0|see SETUP FAIL above")
fi
echo
echo "== Summary ($(($(date +%s) - T_START)) s; logs in target/test-logs/) =="
tp=0
tf=0
ts=0
printf '%-20s %7s %7s %8s %6s  %s\n' suite passed failed skipped secs note
for row in "${SUITES[@]}"; do
    IFS='|' read -r name p f s secs note <<<"$row"
    printf '%-20s %7d %7d %8d %6d  %s\n' "$name" "$p" "$f" "$s" "$secs" "$note"
    tp=$((tp + p))
    tf=$((tf + f))
    ts=$((ts + s))
done
echo "$tp passed, $tf failed, $ts skipped"
[ "$tf" -eq 0 ]
