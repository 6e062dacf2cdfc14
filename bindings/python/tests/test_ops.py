"""Every operation against numpy float64 references, over layouts and dtypes."""

import numpy as np
import pytest
from conftest import (
    BF16,
    DTYPE_IDS,
    DTYPES,
    LAYOUTS,
    f64,
    layout,
    project_tol,
    random_basis,
    reconstruct_tol,
    seed_adaptive,
    svd_tol,
    u_compute,
    unit_roundoff,
)

import osft

SHAPES = [(9, 6), (5, 8), (7, 7)]


def svd_certificate(w, u, s, vt, eps):
    """U, V orthonormal, S descending and non-negative, U diag(S) Vt = W, sign convention."""
    w, u, s, vt = f64(w), f64(u), f64(s), f64(vt)
    r = s.shape[-1]
    eye = np.eye(r)
    scale = max(np.linalg.norm(w), 1e-300)
    assert np.all(s[..., :-1] >= s[..., 1:] - eps * scale), s
    assert np.all(s >= 0)
    assert np.abs(np.swapaxes(u, -1, -2) @ u - eye).max() < eps
    assert np.abs(vt @ np.swapaxes(vt, -1, -2) - eye).max() < eps
    rec = (u * s[..., None, :]) @ vt
    assert np.linalg.norm(rec - w) / scale < eps
    # Singular values agree with LAPACK.
    assert np.abs(np.linalg.svd(w, compute_uv=False) - s).max() < eps * scale
    # Sign convention: the largest-magnitude entry of each column of U is positive. Rounding the
    # factors to a narrow dtype (bf16, f16) is monotonic but can tie that entry with a negative
    # one, so a positive entry of the largest magnitude is required.
    amax = np.abs(u).max(axis=-2, keepdims=True)
    assert np.all(np.any(u == amax, axis=-2)), u


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_svd_into_caller_arrays(ctx, rng, kind, dtype, shape):
    n, m = shape
    r = min(n, m)
    w = layout(rng.standard_normal(shape), kind, dtype)
    # Outputs in float32/64 (upcast), in another layout than W.
    out_dt = np.float64 if dtype == np.float64 else np.float32
    u = layout(np.zeros((n, r)), "F" if kind == "C" else "C", out_dt)
    s = np.zeros(r, out_dt)
    vt = layout(np.zeros((r, m)), "padded", out_dt)
    res = osft.svd(ctx, w, u, s, vt)
    assert res[0] is u and res[1] is s and res[2] is vt
    svd_certificate(w, u, s, vt, svd_tol(n, m, out_dt, out_dt))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_svd_outputs_in_data_dtype(ctx, rng, dtype):
    w = rng.standard_normal((10, 6)).astype(dtype)
    u, s, vt = np.zeros((10, 6), dtype), np.zeros(6, dtype), np.zeros((6, 6), dtype)
    osft.svd(ctx, w, u, s, vt, compute="f64")
    svd_certificate(w, u, s, vt, svd_tol(10, 6, np.float64, dtype))


@pytest.mark.parametrize("kind", LAYOUTS)
def test_svd_batched(ctx, rng, kind):
    b, n, m = 4, 6, 5
    w = layout(rng.standard_normal((b, n, m)), kind, np.float64)
    u, s, vt = osft.svd_np(w)
    assert u.shape == (b, n, m) and s.shape == (b, m) and vt.shape == (b, m, m)
    t = svd_tol(n, m, np.float64, np.float64)
    svd_certificate(w, u, s, vt, t)
    # S only (perhaps another routine: against LAPACK, to the same bound, per matrix).
    _, s2, _ = osft.svd_np(w, compute_uv=False, ctx=ctx)
    s_ref = np.linalg.svd(f64(w), compute_uv=False)
    assert np.all(np.abs(s2 - s_ref).max(-1) < t * np.linalg.norm(f64(w), axis=(-2, -1)))
    # Batch of S given as a strided 2-D view: the same computation, so the same bits.
    sbig = np.zeros((b, 2 * m))
    osft.svd(ctx, w, s=sbig[:, ::2])
    np.testing.assert_array_equal(sbig[:, ::2], s2)
    assert np.all(sbig[:, 1::2] == 0)


def test_svd_np_dtypes(rng):
    w = rng.standard_normal((5, 4))
    for dt, want in [(np.float64, np.float64), (np.float32, np.float32), (np.float16, np.float32)]:
        u, s, vt = osft.svd_np(w.astype(dt))
        assert u.dtype == want and s.dtype == want and vt.dtype == want
    u, s, vt = osft.svd_np(w, dtype="f32", compute="f64")
    assert u.dtype == np.float32
    svd_certificate(w, u, s, vt, svd_tol(5, 4, np.float64, np.float32))


def test_svd_list(ctx, rng):
    ws = [rng.standard_normal((6, 4)), np.asfortranarray(rng.standard_normal((3, 7))),
          rng.standard_normal((2, 5, 5))]
    ss = [np.zeros(4), np.zeros(3), np.zeros((2, 5))]
    us = [np.zeros((6, 4)), np.zeros((3, 3)), np.zeros((2, 5, 5))]
    vts = [np.zeros((4, 4)), np.zeros((3, 7)), np.zeros((2, 5, 5))]
    assert osft.svd_list_workspace_size(ctx, ws) > 0
    osft.svd_list(ctx, ws, ss, us, vts)
    for w, u, s, vt in zip(ws, us, ss, vts):
        svd_certificate(w, u, s, vt, svd_tol(*w.shape[-2:], np.float64, np.float64))
    # S only, against LAPACK per matrix.
    ss2 = [np.zeros_like(s) for s in ss]
    osft.svd_list(ctx, ws, ss2)
    for w, s2 in zip(ws, ss2):
        t = svd_tol(*w.shape[-2:], np.float64, np.float64)
        err = np.abs(s2 - np.linalg.svd(w, compute_uv=False)).max(-1)
        assert np.all(err < t * np.linalg.norm(w, axis=(-2, -1))), (w.shape, err)
    osft.svd_list(ctx, [], [])


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape,k", [((9, 6), 2), ((5, 8), 3), ((6, 4), 0), ((6, 4), 4)])
def test_decompose_and_reconstruct(ctx, rng, kind, dtype, shape, k):
    n, m = shape
    r = min(n, m)
    w = layout(rng.standard_normal(shape), kind, dtype)
    out_dt = np.float64 if dtype == np.float64 else np.float32
    parts = [layout(np.zeros(sh), kd, out_dt) if len(sh) == 2 else np.zeros(sh, out_dt)
             for sh, kd in [((n, k), "F"), ((k,), None), ((k, m), "C"), ((n, r - k), "T"),
                            ((r - k,), None), ((r - k, m), "padded")]]
    d = osft.decompose(ctx, w, k, *parts)
    assert isinstance(d, osft.Decomposition) and d.u_high is parts[0]
    u = np.concatenate([f64(d.u_high), f64(d.u_low)], axis=1)
    s = np.concatenate([f64(d.s_high), f64(d.s_low)])
    vt = np.concatenate([f64(d.v_high), f64(d.v_low)], axis=0)
    eps = svd_tol(n, m, out_dt, out_dt)
    svd_certificate(w, u, s, vt, eps)
    # Reconstruction into every layout and dtype, and the library's own error measure.
    for out_kind in ["C", "F", "padded"]:
        for odt in [np.float64, np.float32, np.float16]:
            out = layout(np.full(shape, np.nan), out_kind, odt)
            res = osft.reconstruct(ctx, out, *d, compute="f64")
            assert res is out
            err = np.linalg.norm(f64(out) - f64(w)) / np.linalg.norm(f64(w))
            # The factors' error plus the output's own rounding to odt (at most u of each entry).
            assert err < eps + 2 * unit_roundoff(odt), (out_kind, odt, err)
    e = osft.reconstruction_error(ctx, w, *d, compute="f32")
    assert isinstance(e, float)
    # Against float64 from the stored values: f32 accumulation over n + m + R terms per entry.
    e_ref = np.linalg.norm(f64(w) - (u * s) @ vt) / np.linalg.norm(f64(w))
    assert abs(e - e_ref) < 4 * (n + m + r) * unit_roundoff(np.float32), (e, e_ref)
    if k > 0:
        assert osft.orthonormality_error(ctx, "left", d.u_high) < eps
        assert osft.orthonormality_error(ctx, "right", d.v_high) < eps
        np.testing.assert_array_equal(osft.read_vector(ctx, d.s_high), f64(d.s_high))
    # High part only, low part only.
    hi = osft.reconstruct_np(d.u_high, d.s_high, d.v_high, dtype="f64") if k else None
    lo = osft.reconstruct_np(None, None, None, d.u_low, d.s_low, d.v_low, dtype="f64") if k < r else None
    total = (hi if hi is not None else 0) + (lo if lo is not None else 0)
    assert np.linalg.norm(total - f64(w)) / np.linalg.norm(f64(w)) < eps


def test_decompose_np_batched_and_reconstruct(rng):
    w = rng.standard_normal((3, 8, 5))
    d = osft.decompose_np(w, 2)
    assert d.u_high.shape == (3, 8, 2) and d.s_high.shape == (3, 2) and d.v_high.shape == (3, 2, 5)
    assert d.u_low.shape == (3, 8, 3) and d.s_low.shape == (3, 3) and d.v_low.shape == (3, 3, 5)
    t = svd_tol(8, 5, np.float64, np.float64)
    norms = np.linalg.norm(w, axis=(-2, -1))
    rec_err = np.linalg.norm(osft.reconstruct_np(d) - w, axis=(-2, -1)) / norms
    assert rec_err.max() < t, rec_err
    with osft.Context() as ctx:
        e = osft.reconstruction_error(ctx, w, *d, compute="f64")
        assert isinstance(e, np.ndarray) and e.shape == (3,) and e.max() < t
        # Frobenius norm of U^T U - I over k = 2 columns: at most k times the entry bound.
        o = osft.orthonormality_error(ctx, "left", d.u_high)
        assert o.shape == (3,) and o.max() < 2 * t
        np.testing.assert_array_equal(osft.read_vector(ctx, d.s_low), d.s_low)
    f = osft.decompose_np(w[0], 2, order="F")
    assert f.u_high.flags.f_contiguous and not f.u_high.flags.c_contiguous
    s_ref = np.linalg.svd(w[0], compute_uv=False)[:2]
    assert np.abs(f64(f.s_high) - s_ref).max() < t * norms[0]
    assert np.abs(d.s_high[0] - s_ref).max() < t * norms[0]


def test_decompose_bf16_parts(ctx, rng):
    if BF16 is None:
        pytest.skip("ml_dtypes not installed")
    w = rng.standard_normal((12, 8)).astype(BF16)
    d = osft.decompose_np(w, 3, dtype=BF16)
    assert d.u_high.dtype == BF16
    rec = osft.reconstruct_np(d, dtype="f64")
    # Float32 compute (the default for bf16 data), factors rounded to bf16.
    err = np.linalg.norm(rec - f64(w)) / np.linalg.norm(f64(w))
    assert err < reconstruct_tol(12, 8, np.float32, BF16), err


def project_ref(side, x, u=None, v=None):
    x, = [f64(x)]
    if side in ("left", "both"):
        u = f64(u)
        x = x - u @ (np.swapaxes(u, -1, -2) @ x)
    if side in ("right", "both"):
        v = f64(v)
        x = x - (x @ np.swapaxes(v, -1, -2)) @ v
    return x


def leakage_bound(basis_cols, y_ref, t, x_norm, n, k, dt):
    """Bound on ``leakage = ||B^T Y|| / ||Y||`` of an output ``Y`` within ``t ||X||`` of ``Y_ref``:
    ``(||B^T Y_ref|| + ||B||_2 t ||X||) / (||Y_ref|| - t ||X||)``, plus the leakage's own
    accumulation, ``4 (n + k) u_compute``."""
    b = f64(basis_cols)
    num = np.linalg.norm(b.T @ y_ref) + np.linalg.norm(b, 2) * t * x_norm
    return num / (np.linalg.norm(y_ref) - t * x_norm) + 4 * (n + k) * u_compute(dt)


# (n, m, k_u, k_v): a general case, k = R on both sides, 1 x N (k = R = 1 on the left), k = 0.
PROJECT_SHAPES = [(10, 7, 3, 3), (6, 6, 6, 6), (1, 16, 1, 5), (9, 5, 0, 0)]


@pytest.mark.parametrize("seed", [1234, 99])
@pytest.mark.parametrize("shape", PROJECT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("side", ["left", "right", "both"])
def test_project(ctx, kind, dtype, side, shape, seed):
    rng = np.random.default_rng(seed)
    n, m, ku, kv = shape
    u = layout(random_basis(rng, n, ku), "F" if kind == "C" else "C", dtype)
    v = layout(random_basis(rng, m, kv).T, "padded", dtype)
    x = layout(rng.standard_normal((n, m)), kind, dtype)
    ub = u if side != "right" else None
    vb = v if side != "left" else None
    want = project_ref(side, x, ub, vb)
    scale = np.linalg.norm(f64(x))
    # The sides' bounds add up: each side's projector has norm 1 up to the basis' rounding.
    t = (project_tol(dtype, n, ku) if ub is not None else 0) + (project_tol(dtype, m, kv) if vb is not None else 0)
    # Out of place, into another layout; X untouched.
    before = f64(x).copy()
    out = layout(np.full((n, m), np.nan), "C" if kind != "C" else "F", dtype)
    assert osft.project(ctx, side, x, ub, vb, out=out) is out
    np.testing.assert_array_equal(f64(x), before)
    assert np.linalg.norm(f64(out) - want) / scale < t
    if (ub is None or ku == 0) and (vb is None or kv == 0):
        np.testing.assert_array_equal(f64(out), before)  # an empty basis leaves X as it is
    # In place.
    assert osft.project(ctx, side, x, ub, vb) is x
    assert np.linalg.norm(f64(x) - want) / scale < t
    # Leakage of the projected X, where there is something left to measure it on.
    if np.linalg.norm(want) > 4 * t * scale:
        if ub is not None and ku:
            assert osft.leakage(ctx, "left", u, x) < leakage_bound(u, want, t, scale, n, ku, dtype)
        if vb is not None and kv:
            assert osft.leakage(ctx, "right", v, x) < leakage_bound(f64(v).T, want.T, t, scale, m, kv, dtype)
    # project_np allocates a C-order result.
    y = osft.project_np(side, out, ub, vb, ctx=ctx)
    assert y.dtype == out.dtype and y.flags.c_contiguous


@pytest.mark.parametrize("kind", ["C", "F", "padded", "strided"])
@pytest.mark.parametrize("per_entry", [False, True])
def test_project_batched(ctx, rng, kind, per_entry):
    b, n, m, k = 3, 8, 6, 2
    u = random_basis(rng, n, k, batch=b if per_entry else None)
    v = np.swapaxes(random_basis(rng, m, k, batch=b if per_entry else None), -1, -2).copy()
    x = layout(rng.standard_normal((b, n, m)), kind, np.float64)
    want = project_ref("both", x, u, v)
    scale = np.linalg.norm(f64(x), axis=(-2, -1))
    t = project_tol(np.float64, n, k) + project_tol(np.float64, m, k)
    osft.project(ctx, "both", x, u, v)
    err = np.linalg.norm(x - want, axis=(-2, -1)) / scale
    assert err.max() < t, err
    leak = osft.leakage(ctx, "left", u, x)
    assert isinstance(leak, np.ndarray) and leak.shape == (b,)
    for i in range(b):
        ui = u[i] if per_entry else u
        assert leak[i] < leakage_bound(ui, want[i], t, scale[i], n, k, np.float64), (i, leak[i])


def test_leakage_reference(ctx, rng):
    u = random_basis(rng, 9, 3)
    x = rng.standard_normal((9, 4))
    # float64 accumulation of n + k terms (as in leakage_bound): 4 (n + k) u, absolute.
    want = np.linalg.norm(u.T @ x) / np.linalg.norm(x)
    assert abs(osft.leakage(ctx, "left", u, x) - want) < 4 * (9 + 3) * unit_roundoff(np.float64)
    v = random_basis(rng, 4, 2).T
    want = np.linalg.norm(x @ v.T) / np.linalg.norm(x)
    assert abs(osft.leakage(ctx, "right", v, x) - want) < 4 * (4 + 2) * unit_roundoff(np.float64)
    assert osft.leakage(ctx, "left", u, np.zeros((9, 4))) == 0.0
    assert osft.leakage_workspace_size(ctx, "left", u, x) >= 0


def test_orthonormality_error_reference(ctx, rng):
    b = rng.standard_normal((7, 3))
    want = np.linalg.norm(b.T @ b - np.eye(3))
    # Each entry of B^T B sums n = 7 products: error <= n u |b_i| |b_j|, in Frobenius norm
    # <= n u ||B||_F^2 (and the same again for the reference), doubled.
    tol = 4 * 7 * unit_roundoff(np.float64) * np.linalg.norm(b) ** 2
    assert abs(osft.orthonormality_error(ctx, "left", b) - want) < tol
    assert abs(osft.orthonormality_error(ctx, "right", b.T) - want) < tol
    assert osft.orthonormality_error_workspace_size(ctx, "left", b) >= 0


def test_reconstruction_error_reference(ctx, rng):
    w = rng.standard_normal((6, 5))
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    s2 = s.copy()
    s2[-1] = 0.0  # drop the last component
    want = s[-1] / np.linalg.norm(w)
    e = osft.reconstruction_error(ctx, w, u, s2, vt, compute="f64")
    # float64 accumulation over n + m + R terms per entry (and LAPACK's own backward error).
    f64_tol = 4 * (6 + 5 + 5) * unit_roundoff(np.float64) + svd_tol(6, 5, np.float64, np.float64)
    assert abs(e - want) < f64_tol
    assert osft.reconstruction_error_workspace_size(ctx, w, u, s2, vt) >= 0
    # Every data dtype with either compute type (also the ones that differ from the data's), on
    # stored values, against float64: f32 accumulation over n + m + R terms per entry.
    for dt in DTYPES:
        wd = w.astype(dt)
        uu, ss, vv = np.linalg.svd(f64(wd), full_matrices=False)
        ss[-2:] = 0.0
        uu, ss, vv = uu.astype(dt), ss.astype(dt), vv.astype(dt)
        want = np.linalg.norm(f64(wd) - (f64(uu) * f64(ss)) @ f64(vv)) / np.linalg.norm(f64(wd))
        for compute in ["f32", "f64"]:
            got = osft.reconstruction_error(ctx, wd, uu, ss, vv, compute=compute)
            assert abs(got - want) < 4 * (6 + 5 + 5) * unit_roundoff(np.float32), (dt, compute, got, want)
    # Absolute when W = 0.
    z = np.zeros((6, 5))
    got = osft.reconstruction_error(ctx, z, u, s, vt, compute="f64")
    assert abs(got - np.linalg.norm(w)) < f64_tol * np.linalg.norm(w)


@pytest.mark.parametrize("strategy", ["auto", "coefficient", "cached_projector"])
@pytest.mark.parametrize("side", ["left", "right", "both"])
def test_projector(ctx, rng, strategy, side):
    n, m, k = 9, 7, 5
    u = random_basis(rng, n, k)
    v = random_basis(rng, m, k).T.copy()
    ub = u if side != "right" else None
    vb = v if side != "left" else None
    t = (project_tol(np.float64, n, k) if ub is not None else 0) + (
        project_tol(np.float64, m, k) if vb is not None else 0)
    with osft.Projector(ctx, side, ub, vb, strategy=strategy) as p:
        left, right = p.strategies
        if strategy != "auto":
            assert left == (strategy if side != "right" else None)
            assert right == (strategy if side != "left" else None)
        for kind in ["C", "F", "padded"]:
            x = layout(rng.standard_normal((n, m)), kind, np.float64)
            want = project_ref(side, x, ub, vb)
            scale = np.linalg.norm(x)
            out = np.empty((n, m))
            p.apply(x, out)
            assert np.linalg.norm(out - want) / scale < t, (kind, np.linalg.norm(out - want) / scale)
            p(x)
            assert np.linalg.norm(x - want) / scale < t, (kind, np.linalg.norm(x - want) / scale)
    with pytest.raises(osft.NullPointerError):
        p.apply(np.zeros((n, m)))


def test_projector_outlives_context(rng):
    u = random_basis(rng, 6, 2)
    ctx = osft.Context()
    p = osft.Projector(ctx, "left", u, strategy="coefficient")
    ctx.close()
    x = rng.standard_normal((6, 3))
    want = project_ref("left", x, u)
    scale = np.linalg.norm(x)
    p.apply(x)
    assert np.linalg.norm(x - want) / scale < project_tol(np.float64, 6, 2)
    p.close()
    p.close()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_two_phase_sharded_equals_unsharded(ctx, rng, dtype, side):
    n, m, k = 11, 9, 3
    u = random_basis(rng, n, k).astype(dtype)
    v = random_basis(rng, m, k).T.astype(dtype)
    x = rng.standard_normal((n, m)).astype(dtype)
    x0 = x.copy()
    basis = u if side == "left" else v
    want = project_ref(side, x, u, v)
    coef_dt = np.float32 if dtype.itemsize == 2 else dtype
    # Shards: rows of U and X (left), columns of V and X (right).
    cuts = [0, 4, 7, n] if side == "left" else [0, 2, 6, m]
    shards = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if side == "left":
            bs, xs = basis[a:b], x[a:b]
            coef = np.full((k, m), np.nan, dtype=coef_dt)
        else:
            bs, xs = basis[:, a:b], x[:, a:b]
            coef = np.full((n, k), np.nan, dtype=coef_dt)
        assert osft.project_partial(ctx, side, bs, xs, coef) is coef
        shards.append((bs, xs, coef))
    total = sum(f64(c) for _, _, c in shards).astype(coef_dt)  # the caller's all-reduce
    for bs, xs, _ in shards:
        assert osft.project_apply_workspace_size(ctx, total, xs) >= 0
        assert osft.project_apply(ctx, side, bs, total, xs) is xs  # views of x: in place
    # One side's bound (the coefficients are summed in float64 and rounded once, to coef_dt).
    assert np.linalg.norm(f64(x) - want) / np.linalg.norm(f64(x0)) < project_tol(dtype, max(n, m), k)


class _GradCudaTensor:
    """Stands for a CUDA torch tensor that requires grad: torch's ``__cuda_array_interface__``
    raises RuntimeError for it rather than AttributeError."""

    is_cuda = True

    @property
    def __cuda_array_interface__(self):
        raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad")


def test_device_values_for_host_functions_are_a_device_mismatch():
    with pytest.raises(osft.DeviceMismatchError, match="read_vector"):
        osft.select_rank(_GradCudaTensor(), "fixed", 1)


def test_select_rank_rules():
    s = [4.0, 3.0, 2.0, 1.0]
    assert osft.select_rank(s, "fixed", 3) == 3
    assert osft.select_rank(s, "fraction", 0.5) == 2
    assert osft.select_rank(np.array(s, np.float32), "energy", 0.6) == 2  # 16/30 < 0.6 <= 25/30
    p = np.array(s) / sum(s)
    assert osft.select_rank(s, "entropy") == round(np.exp(-(p * np.log(p)).sum()))
    assert osft.select_rank([], "fraction", 0.5) == 0
    # Energy, exactly: the smallest k whose leading energy reaches t, against a direct
    # computation on random spectra of several lengths (1 included). Only where t lies within
    # rounding of a cumulative fraction (r-term float64 sums, here and in the library: 4 r u) may
    # k be either neighbour; random t never does.
    rng = np.random.default_rng(0)
    for r in [1, 2, 7, 30]:
        for _ in range(20):
            sv = np.sort(rng.random(r))[::-1]
            t = rng.random()
            e = np.cumsum(sv**2) / (sv**2).sum()
            want = int(np.argmax(e >= t)) + 1
            got = osft.select_rank(sv, "energy", t)
            near = np.abs(e - t) < 4 * r * unit_roundoff(np.float64)
            assert got == want or (near[got - 1] if got else False), (r, t, got, want, e)
    # The ends: t = 0 keeps nothing, t = 1 everything up to the last non-zero value, and a t
    # exactly at a cumulative fraction stops there.
    assert osft.select_rank(s, "energy", 0.0) == 0
    assert osft.select_rank(s, "energy", 1.0) == 4
    assert osft.select_rank([2.0, 1.0, 0.0], "energy", 1.0) == 2
    assert osft.select_rank([1.0, 1.0, 1.0, 1.0], "energy", 0.5) == 2


def test_fraction_rank_is_pefts_int_of_r_times_f():
    # PEFT OSF (tuners/osf/model.py, _resolve_rank): a float in (0, 1] gives int(min_dim * value).
    def peft(value, min_dim):
        return max(min(min_dim, int(min_dim * value)), 0)

    # By hand: 100 * 0.29 = 28.999999999999996 -> 28; 100 * 0.57 = 56.99999999999999 -> 56;
    # 10 * 0.7 is 7 - 2**-51 exactly, rounded to 7.0 by the multiply -> 7; 4 * 0.3 = 1.2 -> 1.
    for f, r, k in [(0.29, 100, 28), (0.57, 100, 56), (0.58, 100, 57), (0.7, 10, 7), (0.3, 4, 1),
                    (0.5, 4, 2), (1.0, 7, 7), (0.0, 7, 0), (0.999, 1, 0)]:
        assert osft.select_rank(np.ones(r), "fraction", f) == k == peft(f, r), (f, r)
    rng = np.random.default_rng(1)
    for r in (1, 3, 10, 100, 768):
        fs = [i / 100 for i in range(101)] + list(rng.random(50))
        for f in fs:
            assert osft.select_rank(np.ones(r), "fraction", f) == peft(f, r), (f, r)


def test_adaptive_ranks_follow_the_seed():
    # By hand (defaults mrr = d/2, trr = d), mean 2: I_n = I / 2.00000001, CR = 5 + 5 I_n =
    # 7.4999999875 -> 7, 9.999999975 -> 10 (average keeps trr), 12.4999999625 -> clamped to 10.
    r = osft.adaptive_ranks([1.0, 2.0, 3.0], [10, 10, 10])
    assert r.dtype == np.int64 and r.tolist() == [7, 10, 10]
    # min_ratio 0.2, target_ratio 0.8: CR = 2 + 6 I_n = 4.99999999 -> 5, 7.99999997 -> 8, 10.99.. -> 10.
    assert osft.adaptive_ranks([1.0, 2.0, 3.0], [10, 10, 10], 0.2, 0.8).tolist() == [5, 8, 10]
    # Negative importance, mean 0.5: CR = 5 - 4.9999999 = 1e-7 -> 0 -> k = 1, never 0.
    assert osft.adaptive_ranks([-0.5, 0.5, 1.5], [10, 10, 10]).tolist() == [1, 10, 10]
    # Half to even, as Python's round: importance 0 gives CR = d/2: 2.5 -> 2, 3.5 -> 4.
    assert osft.adaptive_ranks([0.0, 0.0, 1.0], [5, 7, 9]).tolist() == [2, 4, 9]
    # Mean 0.4, d = 64: CR = 47.9999996 -> 48, and 79.9999988, past trr, clamped to d = 64.
    assert osft.adaptive_ranks([0.2, 0.6], [64, 64]).tolist() == [48, 64]
    assert osft.adaptive_ranks([1.0, 1.0], [0, 4]).tolist() == [0, 4]
    assert osft.adaptive_ranks([], []).size == 0
    # Against the seed's code on random importances (positive mean) and shapes.
    rng = np.random.default_rng(2)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        imp = rng.uniform(-0.3, 1.0, n)
        if imp.mean() <= 0:
            continue
        full = rng.integers(1, 300, n)
        lo = float(rng.uniform(0, 1))
        hi = float(rng.uniform(lo, 1))
        for a, b in ((0.5, 1.0), (lo, hi)):
            assert osft.adaptive_ranks(imp, full, a, b).tolist() == seed_adaptive(imp, full, a, b)
    # Not positive mean importance, non-finite importance, ratios out of order: refused.
    for bad in ([0.0, 0.0], [-1.0, 0.5], [1.0, -1.0], [np.nan, 1.0], [np.inf, 1.0]):
        with pytest.raises(osft.InvalidArgumentError):
            osft.adaptive_ranks(bad, [10, 10])
    with pytest.raises(osft.InvalidArgumentError, match="not positive"):
        osft.adaptive_ranks([-0.2, 0.1], [10, 10])
    with pytest.raises(osft.InvalidArgumentError):
        osft.adaptive_ranks([1.0], [10], 0.8, 0.2)


@pytest.mark.parametrize("kind", ["C", "F", "padded"])
def test_layer_importance(ctx, rng, kind):
    n, m, samples = 5, 7, 9
    w = layout(rng.standard_normal((n, m)), kind)
    x = layout(rng.standard_normal((samples, m)), kind)
    r = min(n, m)
    y = x @ w.T
    a, b = x[:, :r], y[:, :r]
    want = np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
    # Cosines (at most 1) of r-term sums of m-term products, in float64: 4 (m + r) u, absolute.
    tol = 4 * (m + r) * unit_roundoff(np.float64)
    got = osft.layer_importance(ctx, w, x, compute="f64")
    assert isinstance(got, float) and abs(got - want) < tol
    assert osft.layer_importance_workspace_size(ctx, w, x) >= 0
    # A batch of weights shares the activations.
    wb = np.stack([w, -w])
    got = osft.layer_importance(ctx, wb, x, compute="f64")
    assert np.abs(got - [want, -want]).max() < tol


def test_read_vector(ctx):
    v = np.arange(12, dtype=np.float32)
    np.testing.assert_array_equal(osft.read_vector(ctx, v[::3]), [0, 3, 6, 9])
    vb = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(osft.read_vector(ctx, vb), vb)
    assert osft.read_vector_workspace_size(ctx, v) >= 0
    np.testing.assert_array_equal(osft.read_vector(ctx, v.astype(np.float16)), v)



class _Interface:
    """An array known only through an array interface (``attr``) over ``base``'s memory."""

    def __init__(self, attr, base, strides=None):
        self._base = base
        iface = dict(base.__array_interface__)
        iface["strides"] = strides
        setattr(self, attr, iface)


def test_caller_workspace_buffers(ctx):
    # numpy: read-only and non-contiguous arrays are refused, nothing is kept.
    ro = np.zeros(64)
    ro.setflags(write=False)
    with pytest.raises(osft.InvalidArgumentError):
        ctx.set_workspace(ro)
    with pytest.raises(osft.InvalidStrideError):
        ctx.set_workspace(np.zeros((8, 8))[:, :4])
    assert ctx.workspace_bytes == 0
    # Host memory through __array_interface__: Fortran order is contiguous, a padded slice is not.
    f = np.zeros((6, 4), order="F")
    ctx.set_workspace(_Interface("__array_interface__", f, strides=f.strides))
    assert ctx.workspace_bytes == f.nbytes
    ctx.release_workspace()
    with pytest.raises(osft.InvalidStrideError):
        padded = np.zeros((8, 8))[:, :4]
        ctx.set_workspace(_Interface("__array_interface__", padded, strides=padded.strides))
    # Device memory for a CPU context: refused before the library sees the address.
    with pytest.raises(osft.DeviceMismatchError):
        ctx.set_workspace(_Interface("__cuda_array_interface__", np.zeros(64)))
    assert ctx.workspace_bytes == 0

def test_workspace_sizes_and_caller_workspace(ctx, rng):
    w = rng.standard_normal((12, 8))
    need = osft.svd_workspace_size(ctx, w)
    assert need > 0 and osft.decompose_workspace_size(ctx, w) == need
    assert osft.svd_workspace_size(ctx, w, compute="f32") > 0
    buf = np.zeros(need // 8 + 1)
    ctx.set_workspace(buf)
    assert ctx.workspace_bytes == buf.nbytes
    s = np.zeros(8)
    osft.svd(ctx, w, s=s)
    s_err = np.abs(s - np.linalg.svd(w, compute_uv=False)).max()
    assert s_err < svd_tol(12, 8, np.float64, np.float64) * np.linalg.norm(w), s_err
    # Too small a workspace: an error, nothing written.
    ctx.set_workspace(np.zeros(2))
    s2 = np.full(8, -1.0)
    with pytest.raises(osft.WorkspaceTooSmallError):
        osft.svd(ctx, w, s=s2)
    assert np.all(s2 == -1.0)
    ctx.release_workspace()
    assert ctx.workspace_bytes == 0
    osft.svd(ctx, w, s=s2)
    assert ctx.workspace_bytes >= need
    u = random_basis(rng, 12, 3)
    x = rng.standard_normal((12, 8))
    assert osft.project_workspace_size(ctx, "left", x, u) >= 0
    d = osft.decompose_np(w, 3, ctx=ctx)
    assert osft.reconstruct_workspace_size(ctx, np.empty((12, 8)), *d) >= 0


def test_context_properties():
    with osft.Context("cpu") as ctx:
        assert ctx.backend == "cpu" and not ctx.is_cuda
        assert ctx.stream is None
        ctx.stream = None
        with pytest.raises(osft.InvalidArgumentError, match="CPU"):
            ctx.stream = 0x1000
        assert "cpu" in repr(ctx)
    assert ctx.closed
    with pytest.raises(osft.NullPointerError, match="closed"):
        osft.svd_np(np.eye(3), ctx=ctx)
    ctx.close()
    with osft.Context("auto") as a:
        assert a.backend in ("cpu", "cuda")
    assert osft.default_context() is osft.default_context()
