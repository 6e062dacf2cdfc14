#!/usr/bin/env bash
# Test the Python binding: venv at bindings/python/.venv (created on first use) with numpy,
# pytest and ml_dtypes; the package installed editable; libosft from target/release (built with
# `cargo build --release` if missing, or $OSFT_LIBRARY if set); then pytest and the continual-
# learning demo. Exits non-zero on any failure. Extra arguments go to pytest.
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

# The package, editable, unless this checkout's copy is already what the venv imports.
ORIGIN="$(cd / && "$PY" -c 'import importlib.util as u; s = u.find_spec("osft"); print(s.origin if s else "")' 2>/dev/null || true)"
if [ "$ORIGIN" != "$HERE/osft/__init__.py" ]; then
    "${PIP[@]}" -e "$HERE"
fi

cd "$HERE"
echo "run_tests.sh: pytest (libosft: $OSFT_LIBRARY)"
"$PY" -m pytest tests -q -rs "$@"
echo "run_tests.sh: continual-learning demo"
"$PY" examples/continual_demo.py
