"""Shared helpers: contexts, layouts, dtypes, float64 references; and the skip policy.

Skip policy: a test that needs a GPU skips with a reason starting with ``GPU_SKIP`` ("not run: no
GPU"), or ``CUDA_SKIP`` when torch sees a GPU but osft's CUDA backend cannot start; both stay skips
unless ``OSFT_REQUIRE_GPU=1`` (set by scripts/device-check.sh on a machine with a GPU) makes them
failures. Any other skip of the torch tests (``test_torch*.py``) becomes a failure
under ``OSFT_REQUIRE_TORCH=1``, except that a skip of ``test_torch_hf.py`` (or
``test_torch_checkpoint.py``) for want of
transformers is governed by ``OSFT_REQUIRE_TRANSFORMERS=1``, and any skip of
``test_torch_deepspeed.py`` fails under ``OSFT_REQUIRE_DEEPSPEED=1`` (scripts/test.sh sets all
three). Without the switches they stay skips, listed at the end of the run with the reason and
the switch that would make them failures.
"""

import os

import numpy as np
import pytest

import osft

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - the test venv installs ml_dtypes
    ml_dtypes = None
    BF16 = None

DTYPES = [np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16)] + ([BF16] if BF16 is not None else [])
DTYPE_IDS = [d.name for d in DTYPES]
LAYOUTS = ["C", "F", "T", "padded", "strided"]

# Unit roundoff u of each dtype (2^-p for a p-bit significand): rounding to it changes a value
# by at most u of its magnitude, hence a matrix by at most u of its Frobenius norm.
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def unit_roundoff(dt) -> float:
    return UNIT_ROUNDOFF[np.dtype(dt).name]


def u_compute(dt) -> float:
    """Unit roundoff of the default compute type for data ``dt`` (float64 for float64, else float32)."""
    return unit_roundoff(np.float64 if np.dtype(dt) == np.float64 else np.float32)


def project_tol(dt, n, k) -> float:
    """Bound on ``||Y - Y_ref||_F / ||X||_F`` of a projection in ``dt`` (``n`` the projected
    dimension, ``k`` basis vectors), ``Y_ref`` in float64 from the stored values; as in the Rust
    tests: per side the coefficients and the output are rounded to ``dt`` (2u) and two GEMMs
    accumulate ``(n + k) u_compute`` each (doubled for slack)."""
    return (2 * unit_roundoff(dt) + 4 * (n + k) * u_compute(dt))


def svd_tol(n, m, compute, out) -> float:
    """As the Rust SVD tests: backward error ``10 max(n, m) u_compute`` plus the rounding of the
    stored factors to ``out``, ``4 sqrt(R) u_out``."""
    return 10 * max(n, m) * unit_roundoff(compute) + 4 * np.sqrt(min(n, m)) * unit_roundoff(out)


def reconstruct_tol(n, m, compute, out) -> float:
    """Bound on ``||U S V - W||_F / ||W||_F`` for SVD factors stored in ``out``: the backward error
    ``10 max(n, m) u_compute`` plus the factors' rounding, which moves each column of U, each s_i
    and each row of V by at most ``u_out`` of its norm, hence each of ``dU S V``, ``U dS V``,
    ``U S dV`` by at most ``u_out ||W||_F``: ``3 u_out``, doubled for slack."""
    return 10 * max(n, m) * unit_roundoff(compute) + 6 * unit_roundoff(out)


@pytest.fixture
def ctx():
    with osft.Context("cpu") as c:
        yield c


@pytest.fixture
def rng():
    """Seeded for reproducible failures; ``OSFT_TEST_SEED=N`` reruns the tests on other inputs."""
    return np.random.default_rng(int(os.environ.get("OSFT_TEST_SEED", "1234")))


def layout(src: np.ndarray, kind: str, dtype=None) -> np.ndarray:
    """``src`` (float64, 2-D or 3-D) cast to ``dtype`` in the memory layout ``kind``:

    C: C-order. F: Fortran order (for 3-D the batch stride is the smallest). T: a transposed view
    of a C-order array of the swapped shape (column-major matrices). padded: a[..., :r, :c] of a
    larger C-order array. strided: every 2nd row and 3rd column of a larger array.
    """
    dtype = np.dtype(dtype or src.dtype)
    v = src.astype(dtype)
    if kind == "C":
        out = np.ascontiguousarray(v)
    elif kind == "F":
        out = np.asfortranarray(v)
    elif kind == "T":
        out = np.ascontiguousarray(np.swapaxes(v, -1, -2))
        out = np.swapaxes(out, -1, -2)
    elif kind == "padded":
        r, c = v.shape[-2:]
        big = np.full(v.shape[:-2] + (r + 3, c + 5), np.nan, dtype=dtype)
        big[..., :r, :c] = v
        out = big[..., :r, :c]
    elif kind == "strided":
        r, c = v.shape[-2:]
        big = np.full(v.shape[:-2] + (2 * r, 3 * c), np.nan, dtype=dtype)
        big[..., ::2, ::3] = v
        out = big[..., ::2, ::3]
    else:
        raise ValueError(kind)
    assert np.array_equal(out.astype(np.float64), v.astype(np.float64), equal_nan=True)
    return out


def f64(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def random_basis(rng, n, k, batch=None) -> np.ndarray:
    """Orthonormal columns (n x k), float64, or a batch."""
    shape = (batch, n, k) if batch else (n, k)
    q, _ = np.linalg.qr(rng.standard_normal(shape))
    return q


# --- skip policy -------------------------------------------------------------------------------
GPU_SKIP = "not run: no GPU"
CUDA_SKIP = "osft CUDA backend unavailable"
_SWITCHES = {"OSFT_REQUIRE_TORCH": "torch", "OSFT_REQUIRE_TRANSFORMERS": "transformers",
             "OSFT_REQUIRE_DEEPSPEED": "deepspeed"}
_UNREQUIRED_SKIPS = []  # (where, reason, switch) of skips a switch would have turned into failures


def _switches_for(path, reason) -> list:
    """The switches that forbid a skip for ``reason`` of a test in the file ``path``."""
    name = os.path.basename(str(path))
    if name in ("test_torch_hf.py", "test_torch_checkpoint.py") and "transformers" in reason:
        return ["OSFT_REQUIRE_TRANSFORMERS"]
    if name == "test_torch_deepspeed.py":
        if "deepspeed" in reason or "transformers" in reason:
            return ["OSFT_REQUIRE_DEEPSPEED"]
        return ["OSFT_REQUIRE_TORCH", "OSFT_REQUIRE_DEEPSPEED"]
    if name.startswith("test_torch") and name != "test_torch_absent.py":
        return ["OSFT_REQUIRE_TORCH"]
    return []


def _skip_reason(rep) -> str:
    lr = rep.longrepr
    reason = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def _enforce(rep, path):
    if not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = _skip_reason(rep)
    if reason.startswith((GPU_SKIP, CUDA_SKIP)):
        if os.environ.get("OSFT_REQUIRE_GPU") == "1":
            rep.outcome = "failed"
            rep.longrepr = f"skipped, but OSFT_REQUIRE_GPU=1 forbids it: {reason}"
        return
    switches = _switches_for(path, reason)
    required = [s for s in switches if os.environ.get(s) == "1"]
    if required:
        rep.outcome = "failed"
        rep.longrepr = f"skipped, but {required[0]}=1 forbids it: {reason}"
    elif switches:
        _UNREQUIRED_SKIPS.append((rep.nodeid, reason, switches[0]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _enforce(outcome.get_result(), item.path)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    if isinstance(collector, pytest.Module):
        _enforce(outcome.get_result(), collector.path)


def pytest_terminal_summary(terminalreporter):
    if not _UNREQUIRED_SKIPS:
        return
    tr = terminalreporter
    tr.section("not run for a missing dependency")
    for where, reason, switch in _UNREQUIRED_SKIPS:
        whole = "" if "::" in where else " (the whole module: it counts as one skip)"
        tr.line(f"{where}{whole}: {reason} [{switch}=1 makes this a failure]")


def seed_adaptive(importance, full_ranks, min_ratio=0.5, target_ratio=1.0):
    """The reference implementation's auto_generate_target_svd_config rank step (notebooks/finetune_svd.py), with
    mrr = d / 2 and trr = d generalised to min_ratio * d and target_ratio * d."""
    mean_importance = np.mean(importance)
    out = []
    for I_W, d in zip(importance, full_ranks):
        I_n = I_W / (mean_importance + 1e-8)
        mrr = min_ratio * d
        trr = target_ratio * d
        CR = mrr + I_n * (trr - mrr)
        k = int(round(CR))
        out.append(max(1, min(k, d)))
    return out
