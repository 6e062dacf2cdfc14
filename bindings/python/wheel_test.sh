#!/usr/bin/env bash
# The Python package as a user installs it (scripts/test.sh's "wheel" suite):
#
#   bash bindings/python/wheel_test.sh
#
# 1. `pip wheel ./bindings/python` in a fresh venv under target/wheel-test/ (setuptools-rust runs
#    cargo with the `wheel` profile, into target/wheel/: the first build compiles the crate and its
#    dependencies, later ones reuse them);
# 2. the wheel's tag is py3-none-<this platform> and it carries osft/libosft.so;
# 3. the wheel installed into a second fresh venv, then, with OSFT_LIBRARY unset and outside the
#    checkout: `import osft` loads the bundled library, osft.Context("cpu") works, and SVD,
#    decompose and reconstruct agree with numpy's float64 SVD on random matrices of a few shapes.
# Each check prints PASS or FAIL; the last line is "N passed, M failed, 0 skipped".
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT=$ROOT/target/wheel-test
PYTHON=${PYTHON:-python3}
unset OSFT_LIBRARY
passed=0
failed=0

check() { # check NAME CMD...: output in $OUT/NAME.log
    local name=$1
    shift
    if "$@" >"$OUT/$name.log" 2>&1; then
        passed=$((passed + 1))
        printf 'PASS  %s\n' "$name"
    else
        failed=$((failed + 1))
        printf 'FAIL  %s (log: %s)\n' "$name" "${OUT#$ROOT/}/$name.log"
        tail -n 30 "$OUT/$name.log" | sed 's/^/      | /'
    fi
}

rm -rf "$OUT"
mkdir -p "$OUT"

build() {
    # setuptools' build directory (in-tree, ignored by git): no leftovers of an earlier build.
    rm -rf "$HERE/build"
    "$PYTHON" -m venv "$OUT/build-venv" &&
        "$OUT/build-venv/bin/python" -m pip wheel --no-deps --disable-pip-version-check "$HERE" -w "$OUT/dist"
}

tag() {
    local whl plat
    whl=$(ls "$OUT"/dist/osft-*.whl) || return 1
    plat=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_").replace(".", "_"))')
    echo "wheel: $(basename "$whl") ($(stat -c %s "$whl") bytes)"
    case "$(basename "$whl")" in
    osft-*-py3-none-"$plat".whl) ;;
    *) echo "want the tag py3-none-$plat"; return 1 ;;
    esac
    "$PYTHON" -m zipfile -l "$whl" | tee "$OUT/wheel-contents.txt"
    grep -q '^osft/libosft.so ' "$OUT/wheel-contents.txt" || { echo "no osft/libosft.so in the wheel"; return 1; }
}

install() {
    "$PYTHON" -m venv "$OUT/venv" &&
        "$OUT/venv/bin/python" -m pip install --disable-pip-version-check "$OUT"/dist/osft-*.whl
}

use() {
    (cd / && env -u OSFT_LIBRARY "$OUT/venv/bin/python" - "$OUT/venv") <<'PY'
import os
import sys
from pathlib import Path

import numpy as np

import osft

assert "OSFT_LIBRARY" not in os.environ
lib = Path(osft.library_path)
venv = Path(sys.argv[1])
# The bundled copy, inside the installed package, not the checkout's or a system one.
assert lib == Path(osft.__file__).parent / "libosft.so", lib
assert venv in lib.parents, (lib, venv)
print("loaded", lib, lib.stat().st_size, "bytes; version", osft.version(), "ABI", osft.abi_version())
ctx = osft.Context("cpu")
print(ctx)
rng = np.random.default_rng()
eps = np.finfo(np.float64).eps
for n, m, k in [(7, 5, 2), (40, 64, 10), (96, 33, 8)]:
    w = rng.standard_normal((n, m))
    s_ref = np.linalg.svd(w, compute_uv=False)
    _, s, _ = osft.svd_np(w, ctx=ctx)
    # Backward-stable SVDs agree to a small multiple of eps * ||W||_2 per singular value.
    tol = 10 * max(n, m) * eps * s_ref[0]
    err = np.max(np.abs(s - s_ref))
    assert err <= tol, (n, m, err, tol)
    d = osft.decompose_np(w, k, ctx=ctx)
    w_back = osft.reconstruct_np(*d, ctx=ctx)
    rec = np.linalg.norm(w_back - w) / np.linalg.norm(w)
    assert rec <= 10 * max(n, m) * eps, (n, m, rec)
    print(f"{n} x {m}, k = {k}: max |s - s_numpy| = {err:.1e} (tol {tol:.1e}), reconstruction {rec:.1e}")
PY
}

check wheel-build build
check wheel-tag tag
check wheel-install install
check wheel-import-and-use use
printf '%d passed, %d failed, 0 skipped\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
