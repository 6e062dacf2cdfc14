#!/usr/bin/env bash
# Create .venv-bench/ (at the repository root) with the Python packages that
# benches/compare_peers.py needs: numpy, scipy (gesdd SVD) and threadpoolctl (to report which
# BLAS kernel and how many threads the peers use). PyTorch is optional and not installed here:
# the GPU comparison path runs only where torch with CUDA is importable.
#
#   bash benches/setup_venv.sh            # creates/updates .venv-bench/
#   .venv-bench/bin/python benches/compare_peers.py
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv-bench}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet numpy scipy threadpoolctl
"$venv/bin/python" - <<'PY'
import numpy, scipy, threadpoolctl
print("numpy", numpy.__version__, "scipy", scipy.__version__, "threadpoolctl", threadpoolctl.__version__)
PY
echo "venv ready: $venv"
