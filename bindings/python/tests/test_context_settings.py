"""Context settings: SVD algorithm and math mode (set / get, validation, effect on the CPU)."""

import numpy as np
import pytest
from conftest import svd_tol

import osft
from osft import _lib

pytestmark = pytest.mark.skipif(not _lib.has("osft_context_set_svd_algorithm"),
                                reason="the loaded libosft predates these settings")

ALGORITHMS = ["auto", "qr", "jacobi", "jacobi_batched", "approx_batched", "polar", "randomized"]


def test_defaults_and_round_trip(ctx):
    assert ctx.svd_algorithm == "auto" and ctx.math_mode == "exact"
    for a in ALGORITHMS:
        ctx.svd_algorithm = a
        assert ctx.svd_algorithm == a
    ctx.svd_algorithm = 2
    assert ctx.svd_algorithm == "jacobi"
    for mm in ("tf32", "bf16", "exact"):
        ctx.math_mode = mm
        assert ctx.math_mode == mm


def test_unknown_values_keep_the_setting(ctx):
    ctx.svd_algorithm = "qr"
    with pytest.raises(osft.InvalidArgumentError):
        ctx.svd_algorithm = 99            # rejected by the library
    with pytest.raises(osft.InvalidArgumentError, match="unknown SVD algorithm"):
        ctx.svd_algorithm = "lanczos"     # rejected by the binding
    assert ctx.svd_algorithm == "qr"
    ctx.math_mode = "tf32"
    with pytest.raises(osft.InvalidArgumentError):
        ctx.math_mode = 7
    assert ctx.math_mode == "tf32"


@pytest.mark.parametrize("algorithm", ["qr", "jacobi", "polar"])
def test_exact_algorithms_agree_with_numpy(ctx, rng, algorithm):
    w = rng.standard_normal((40, 24))
    ctx.svd_algorithm = algorithm
    u, s, vt = osft.svd_np(w, ctx=ctx)
    # The float64 SVD bound (Weyl: each singular value within the backward error).
    t = svd_tol(40, 24, np.float64, np.float64) * np.linalg.norm(w)
    assert np.abs(s - np.linalg.svd(w, compute_uv=False)).max() < t
    assert np.linalg.norm(u @ np.diag(s) @ vt - w) < t


def test_jacobi_batched_precondition(ctx, rng):
    ctx.svd_algorithm = "jacobi_batched"
    small = rng.standard_normal((3, 20, 12))
    _, s, _ = osft.svd_np(small, ctx=ctx)
    err = np.abs(s - np.linalg.svd(small, compute_uv=False)).max(-1)
    assert np.all(err < svd_tol(20, 12, np.float64, np.float64) * np.linalg.norm(small, axis=(-2, -1)))
    with pytest.raises(osft.PreconditionError):
        osft.svd_np(rng.standard_normal((40, 24)), ctx=ctx)   # N > 32: refused, no fallback


def test_randomized_is_top_k_decompose_only(ctx, rng):
    ctx.svd_algorithm = "randomized"
    w = rng.standard_normal((30, 20))
    with pytest.raises(osft.InvalidArgumentError):
        osft.decompose_np(w, 5, ctx=ctx)      # low parts requested: refused
    k = 5
    uh, sh, vh = np.empty((30, k)), np.empty(k), np.empty((k, 20))
    osft.decompose(ctx, w, k, uh, sh, vh)
    np.testing.assert_allclose(sh, np.linalg.svd(w, compute_uv=False)[:k], rtol=1e-6)


def test_cpu_math_modes_are_exact(ctx, rng):
    u, _ = np.linalg.qr(rng.standard_normal((30, 6)))
    x = rng.standard_normal((30, 10)).astype(np.float32)
    u32 = u.astype(np.float32)
    want = osft.project_np("left", x, u32, ctx=ctx)
    ctx.math_mode = "bf16"
    got = osft.project_np("left", x, u32, ctx=ctx)
    np.testing.assert_array_equal(got, want)
