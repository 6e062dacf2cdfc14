"""SVD diagnostics setting: off by default, set / get, invalid values refused, results unchanged."""

import numpy as np
import pytest
from conftest import svd_tol

import osft
from osft import _lib
from osft._errors import STATUS

pytestmark = pytest.mark.skipif(not _lib.has("osft_context_set_svd_diagnostics"),
                                reason="the loaded libosft predates the SVD diagnostics setting")


def test_off_by_default_and_round_trip(ctx):
    assert ctx.svd_diagnostics is False
    ctx.svd_diagnostics = True
    assert ctx.svd_diagnostics is True
    ctx.svd_diagnostics = False
    assert ctx.svd_diagnostics is False


def test_values_other_than_0_and_1_are_refused_and_keep_the_setting(ctx):
    ctx.svd_diagnostics = True
    status = _lib.lib.osft_context_set_svd_diagnostics(ctx.handle, 2)
    assert status == STATUS["INVALID_ARGUMENT"]
    assert ctx.svd_diagnostics is True


@pytest.mark.parametrize("algorithm", ["qr", "jacobi", "polar", "approx_batched", "jacobi_batched"])
def test_results_agree_with_numpy_with_diagnostics_on(ctx, rng, algorithm):
    ctx.svd_algorithm = algorithm
    ctx.svd_diagnostics = True
    w = rng.standard_normal((3, 20, 12))
    u, s, vt = osft.svd_np(w, ctx=ctx)
    # The float64 SVD bound (Weyl: each singular value within the backward error), per matrix.
    t = svd_tol(20, 12, np.float64, np.float64)
    norms = np.linalg.norm(w, axis=(-2, -1))
    s_err = np.abs(s - np.linalg.svd(w, compute_uv=False)).max(-1) / norms
    rec_err = np.linalg.norm(u @ (s[..., None] * vt) - w, axis=(-2, -1)) / norms
    assert s_err.max() < t and rec_err.max() < t, (s_err, rec_err, t)
