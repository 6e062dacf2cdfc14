"""Without torch: ``import osft`` and the osft.torch glue work and import nothing heavy; the
workflow names raise a clear ImportError. Runs in a subprocess that cannot import torch (a
meta-path finder refuses it), so it runs whether or not torch is installed."""

import subprocess
import sys

# Makes every import of torch (and its submodules) fail as if torch were not installed.
_HIDE_TORCH = (
    "import sys\n"
    "class _NoTorch:\n"
    "    @staticmethod\n"
    "    def find_spec(name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
    "        return None\n"
    "sys.meta_path.insert(0, _NoTorch)\n"
)


def test_osft_torch_without_torch():
    code = _HIDE_TORCH + (
        "import sys, osft, osft.torch as ot\n"
        "assert 'torch' not in sys.modules\n"
        "ot.sync_stream(None, [])\n"
        "assert ot.prepare(3) == 3 and not ot.is_tensor(3)\n"
        "assert 'OSFT' in dir(ot) and 'OSFT' in ot.__all__\n"
        "try:\n"
        "    ot.OSFT\n"
        "except ImportError as e:\n"
        "    assert 'needs PyTorch' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
        "try:\n"
        "    ot.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
