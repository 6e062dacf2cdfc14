#!/usr/bin/env bash
# Test the Python binding: venv at bindings/python/.venv (created on first use) with numpy,
# pytest and ml_dtypes; the package installed editable without building libosft
# (OSFT_BUILD_LIBOSFT=0, setup.py); libosft from target/release (built with
# `cargo build --release` if missing, or $OSFT_LIBRARY if set); then pytest and the continual-
# learning demo. Exits non-zero on any failure. Extra arguments go to pytest. (The built and
# bundled package, `pip wheel`, is tested by the "wheel" suite of scripts/test.sh.)
#
# The torch tests (tests/test_torch*.py) need torch, the Hugging Face ones transformers too.
# OSFT_REQUIRE_TORCH=1 installs torch into the venv when it is missing and makes any skip of a
# torch test a failure (tests/conftest.py), except a GPU test's "not run: no GPU";
# OSFT_REQUIRE_TRANSFORMERS=1 does the same for transformers and tests/test_torch_hf.py
# (scripts/test.sh sets both). OSFT_REQUIRE_DEEPSPEED=1 installs DeepSpeed and ninja (its JIT op
# is compiled by g++ against the Python headers, which must be present) for
# tests/test_torch_deepspeed.py and makes its skips failures (scripts/test.sh sets it, and
# installs the headers when missing). Without them the torch tests run if the venv has torch, else skip,
# and the end of the pytest output lists what was not run and why.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)

if [ ! -x "$PY" ]; then
    echo "run_tests.sh: creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
# Installs only what is missing (no index traffic when everything is there).
if ! "$PY" -c "import numpy, pytest, ml_dtypes" 2>/dev/null; then
    "${PIP[@]}" numpy pytest ml_dtypes
fi
# PyPI's torch wheel (with its CUDA libraries: about 3 GB, a few minutes to install), versions the
# tests have passed with.
TORCH_PIN="torch==2.15.0"
TRANSFORMERS_PIN="transformers==5.23.0"
if [ "${OSFT_REQUIRE_TORCH:-0}" = 1 ] && ! "$PY" -c "import torch" 2>/dev/null; then
    echo "run_tests.sh: installing $TORCH_PIN into $VENV (OSFT_REQUIRE_TORCH=1)"
    t0=$(date +%s)
    "${PIP[@]}" "$TORCH_PIN"
    echo "run_tests.sh: torch installed in $(($(date +%s) - t0)) s"
fi
if [ "${OSFT_REQUIRE_TRANSFORMERS:-0}" = 1 ] && ! "$PY" -c "import transformers" 2>/dev/null; then
    echo "run_tests.sh: installing $TRANSFORMERS_PIN into $VENV (OSFT_REQUIRE_TRANSFORMERS=1)"
    "${PIP[@]}" "$TRANSFORMERS_PIN"
fi
# DeepSpeed's CPU path (CPU accelerator, gloo); ninja builds its JIT op and must be on PATH.
DEEPSPEED_PIN="deepspeed==0.19.8"
NINJA_PIN="ninja==1.13.2"
if [ "${OSFT_REQUIRE_DEEPSPEED:-0}" = 1 ] && ! "$PY" -c "import deepspeed, ninja" 2>/dev/null; then
    echo "run_tests.sh: installing $DEEPSPEED_PIN $NINJA_PIN into $VENV (OSFT_REQUIRE_DEEPSPEED=1)"
    t0=$(date +%s)
    "${PIP[@]}" "$DEEPSPEED_PIN" "$NINJA_PIN"
    echo "run_tests.sh: deepspeed installed in $(($(date +%s) - t0)) s"
fi
export PATH="$VENV/bin:$PATH"
for mod in torch transformers deepspeed; do
    if v=$("$PY" -c "import $mod; print($mod.__version__)" 2>/dev/null); then
        echo "run_tests.sh: $mod $v"
    else
        echo "run_tests.sh: $mod is not installed: its tests will be skipped (listed at the end)"
    fi
done

LIB="${OSFT_LIBRARY:-$ROOT/target/release/libosft.so}"
if [ ! -f "$LIB" ]; then
    if [ -n "${OSFT_LIBRARY:-}" ]; then
        echo "run_tests.sh: OSFT_LIBRARY=$OSFT_LIBRARY does not exist" >&2
        exit 1
    fi
    echo "run_tests.sh: $LIB missing, running cargo build --release"
    (cd "$ROOT" && cargo build --release)
fi
export OSFT_LIBRARY="$LIB"

# The package, editable, unless this checkout's copy is already what the venv imports. No
# libosft build here (it would be a second cargo build of the crate): OSFT_LIBRARY names the
# library, and the editable package falls back to the checkout's target/release anyway.
ORIGIN="$(cd / && "$PY" -c 'import importlib.util as u; s = u.find_spec("osft"); print(s.origin if s else "")' 2>/dev/null || true)"
if [ "$ORIGIN" != "$HERE/osft/__init__.py" ]; then
    OSFT_BUILD_LIBOSFT=0 "${PIP[@]}" -e "$HERE"
fi

cd "$HERE"
echo "run_tests.sh: pytest (libosft: $OSFT_LIBRARY)"
# A collection error (a module that cannot import) does not stop the other modules.
"$PY" -m pytest tests -q -rs --continue-on-collection-errors "$@"
echo "run_tests.sh: continual-learning demo"
"$PY" examples/continual_demo.py
