"""The suite's skip policy (conftest): which skips the ``OSFT_REQUIRE_*`` switches turn into
failures, on stand-in test reports."""

import types

import conftest
import pytest


def _report(reason):
    return types.SimpleNamespace(skipped=True, outcome="skipped", longrepr=("test_x.py", 1, f"Skipped: {reason}"))


@pytest.mark.parametrize("reason", [f"{conftest.GPU_SKIP} (no CUDA device visible to torch)",
                                    f"{conftest.CUDA_SKIP} although torch sees a GPU: cublasCreate failed"])
def test_gpu_skips_fail_only_under_require_gpu(monkeypatch, reason):
    monkeypatch.delenv("OSFT_REQUIRE_GPU", raising=False)
    monkeypatch.setenv("OSFT_REQUIRE_TORCH", "1")  # the torch switch does not cover a missing GPU
    rep = _report(reason)
    conftest._enforce(rep, "tests/test_torch.py")
    assert rep.outcome == "skipped"
    monkeypatch.setenv("OSFT_REQUIRE_GPU", "1")
    rep = _report(reason)
    conftest._enforce(rep, "tests/test_torch.py")
    assert rep.outcome == "failed" and "OSFT_REQUIRE_GPU=1" in rep.longrepr


def test_require_gpu_leaves_other_skips_alone(monkeypatch):
    monkeypatch.setenv("OSFT_REQUIRE_GPU", "1")
    rep = _report("ml_dtypes not installed")
    conftest._enforce(rep, "tests/test_ops.py")
    assert rep.outcome == "skipped"
