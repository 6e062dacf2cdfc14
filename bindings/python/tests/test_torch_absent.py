"""Without torch: ``import osft`` and the osft.torch glue work and import nothing heavy; the
workflow names raise a clear ImportError. Skipped where torch is installed."""

import importlib.util
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                                reason="torch is installed")


def test_osft_torch_without_torch():
    code = (
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
