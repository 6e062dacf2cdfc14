"""Bad inputs raise OsftError subclasses with the library's (or the binding's) message, and a
rejected call writes nothing."""

import threading

import numpy as np
import pytest
from conftest import BF16, project_tol, random_basis

import osft

POISON = -12345.0


def poisoned(*shape, dtype=np.float64):
    return np.full(shape, POISON, dtype=dtype)


def untouched(*arrays):
    return all(np.all(a.astype(np.float64) == POISON) for a in arrays)


def test_error_object(ctx):
    with pytest.raises(osft.OsftError) as e:
        osft.decompose(ctx, np.zeros((6, 4)), 5, poisoned(6, 5), poisoned(5), poisoned(5, 4))
    err = e.value
    assert isinstance(err, osft.RankOutOfRangeError) and isinstance(err, ValueError)
    assert err.status == "RANK_OUT_OF_RANGE" and err.code == 8
    assert err.function == "osft_decompose"
    assert "5" in err.message and err.message in str(err)
    assert "RANK_OUT_OF_RANGE" in str(err)
    # The library's last-error message is thread-local and cleared by a successful call.
    assert osft.last_error_message() == err.message
    seen = []
    t = threading.Thread(target=lambda: seen.append(osft.last_error_message()))
    t.start()
    t.join()
    assert seen == [""]
    osft.select_rank([1.0], "fixed", 1)
    assert osft.last_error_message() == ""
    assert osft.status_string(8) and osft.status_string(99) == "unknown status"
    # Constructed by hand, by name or by code; pickles.
    import pickle

    e2 = pickle.loads(pickle.dumps(osft.InvalidShapeError(2, "msg", "f")))
    assert (type(e2), e2.status, e2.message, e2.function) == (osft.InvalidShapeError, "INVALID_SHAPE", "msg", "f")
    assert osft.OsftError("OVERLAP", "x").code == 4
    assert set(osft.STATUS) >= {"OK", "INTERNAL"}


def test_panic_boundary():
    with pytest.raises(osft.InternalError, match="panic: "):
        osft.debug_panic()
    # The library keeps working afterwards.
    assert osft.select_rank([2.0, 1.0], "fraction", 0.5) == 1


def test_wrong_shapes(ctx, rng):
    w = rng.standard_normal((6, 4))
    uh, sh, vh = poisoned(3, 2), poisoned(2), poisoned(2, 4)
    with pytest.raises(osft.InvalidShapeError, match="U_high") as e:
        osft.decompose(ctx, w, 2, uh, sh, vh)
    assert "expected 6 x 2" in e.value.message
    assert untouched(uh, sh, vh)
    x = poisoned(5, 4)
    with pytest.raises(osft.InvalidShapeError):
        osft.project(ctx, "left", x, random_basis(rng, 6, 2))
    assert untouched(x)
    with pytest.raises(osft.InvalidShapeError, match="2-D"):
        osft.project(ctx, "left", np.zeros(6), random_basis(rng, 6, 2))
    with pytest.raises(osft.InvalidShapeError, match="2-D"):
        osft.project(ctx, "left", np.zeros((1, 2, 6, 4)), random_basis(rng, 6, 2))
    s = poisoned(3)
    with pytest.raises(osft.InvalidShapeError):
        osft.svd(ctx, w, s=s)
    assert untouched(s)
    with pytest.raises(osft.NullPointerError, match="s is required"):
        osft.svd(ctx, w)
    with pytest.raises(osft.InvalidShapeError, match="same length"):
        osft.svd_list(ctx, [w], [])
    with pytest.raises(osft.InvalidShapeError):
        osft.adaptive_ranks([1.0, 2.0], [3], 0.1, 0.9)


def test_dtype_errors(ctx, rng):
    u = random_basis(rng, 6, 2)
    x = poisoned(6, 4, dtype=np.float32)
    with pytest.raises(osft.DtypeError) as e:
        osft.project(ctx, "left", x, u)  # f64 basis, f32 data
    assert isinstance(e.value, TypeError) and e.value.status == "DTYPE_UNSUPPORTED"
    assert untouched(x)
    for bad in [np.int32, np.complex128, np.int64, np.uint8, np.bool_]:
        with pytest.raises(osft.DtypeError, match="not supported"):
            osft.project(ctx, "left", np.zeros((6, 4), bad), u)
    with pytest.raises(osft.DtypeError, match="byte order"):
        osft.project(ctx, "left", np.zeros((6, 4), ">f8"), u)
    with pytest.raises(osft.DtypeError):
        osft.svd(ctx, rng.standard_normal((3, 3)), s=poisoned(3), compute="f16")
    with pytest.raises(osft.DtypeError, match="unknown dtype"):
        osft.svd(ctx, rng.standard_normal((3, 3)), s=poisoned(3), compute="f8")


def test_rank_out_of_range(ctx, rng):
    w = rng.standard_normal((6, 4))
    for k in [-1, 5, 100]:
        parts = [poisoned(6, max(k, 0)), poisoned(max(k, 0)), poisoned(max(k, 0), 4)]
        with pytest.raises(osft.RankOutOfRangeError):
            osft.decompose(ctx, w, k, *parts)
        assert untouched(*parts)
        with pytest.raises(osft.RankOutOfRangeError, match=str(k)):
            osft.decompose_np(w, k, ctx=ctx)
    with pytest.raises(osft.RankOutOfRangeError):
        osft.select_rank([3.0, 2.0, 1.0], "fixed", 4)
    with pytest.raises(osft.InvalidArgumentError):
        osft.select_rank([3.0, 2.0, 1.0], "fraction", 1.5)
    with pytest.raises(osft.InvalidArgumentError):
        osft.select_rank([1.0, 2.0], "fraction", 0.5)  # not descending
    with pytest.raises(osft.InvalidArgumentError, match="unknown rank rule"):
        osft.select_rank([1.0], "median", 0.5)
    with pytest.raises(osft.InvalidArgumentError):
        osft.adaptive_ranks([1.0], [4], 0.9, 0.1)


def test_negative_strides_rejected(ctx, rng):
    """Decision: views with negative strides (a[::-1]) are rejected before the call, with a
    message saying to pass a contiguous copy; osft never copies implicitly."""
    u = random_basis(rng, 6, 2)
    x = rng.standard_normal((6, 4))
    before = x.copy()
    for view in [x[::-1], x[:, ::-1], x[::-1, ::-1]]:
        with pytest.raises(osft.InvalidStrideError, match="negative stride") as e:
            osft.project(ctx, "left", view, u)
        assert "ascontiguousarray" in e.value.message
    with pytest.raises(osft.InvalidStrideError, match="negative stride"):
        osft.project(ctx, "left", x, u[::-1])
    np.testing.assert_array_equal(x, before)
    # The documented remedy works.
    out = osft.project_np("left", np.ascontiguousarray(x[::-1]), u)
    err = np.linalg.norm(out - (x[::-1] - u @ (u.T @ x[::-1])))
    assert err < project_tol(np.float64, 6, 2) * np.linalg.norm(x)
    # A single reversed element addresses nothing: fine.
    osft.project(ctx, "left", x[:, :1][:, ::-1], u)


def test_unsupported_strides(ctx, rng):
    u = random_basis(rng, 3, 1)
    buf = np.zeros(64, np.uint8)
    # Byte strides that are not a multiple of the element size.
    odd = np.ndarray(shape=(3, 3), dtype=np.float32, buffer=buf, offset=0, strides=(13, 4))
    with pytest.raises(osft.InvalidStrideError, match="multiple of the element size"):
        osft.project(ctx, "left", odd, u.astype(np.float32))
    # A misaligned pointer: rejected by the library.
    mis = np.ndarray(shape=(3, 3), dtype=np.float32, buffer=buf, offset=2, strides=(12, 4))
    with pytest.raises(osft.MisalignedError):
        osft.project(ctx, "left", mis, u.astype(np.float32))
    # Zero strides over a real extent (broadcast): elements overlap.
    b = np.broadcast_to(np.arange(3.0), (3, 3))
    with pytest.raises(osft.OverlapError):
        osft.project(ctx, "left", b, u, out=np.zeros((3, 3)))
    # Overlapping rows and columns (as_strided).
    base = np.zeros(16)
    lap = np.lib.stride_tricks.as_strided(base, shape=(3, 3), strides=(8, 8))
    with pytest.raises(osft.OverlapError):
        osft.project(ctx, "left", lap, u)


def test_aliasing_outputs(ctx, rng):
    w = rng.standard_normal((6, 4))
    buf = poisoned(6 * 2 + 2 + 2 * 4)
    uh = buf[:12].reshape(6, 2)
    vh_alias = buf[:8].reshape(2, 4)  # overlaps uh
    sh = buf[12:14]
    with pytest.raises(osft.OverlapError):
        osft.decompose(ctx, w, 2, uh, sh, vh_alias)
    assert untouched(buf)
    big = rng.standard_normal((7, 4))
    x, shifted = big[:6], big[1:]
    with pytest.raises(osft.OverlapError):
        osft.project(ctx, "left", x, random_basis(rng, 6, 2), out=shifted)
    # out given as the very same descriptor as X is taken as in place (the core's rule; the
    # header only says "not overlapping it").
    u = random_basis(rng, 6, 2)
    want = x - u @ (u.T @ x)
    scale = np.linalg.norm(x)
    osft.project(ctx, "left", x, u, out=x)
    assert np.linalg.norm(x - want) < project_tol(np.float64, 6, 2) * scale
    with pytest.raises(osft.OverlapError):
        osft.decompose(ctx, w, 2, w[:, :2], None, None)


def test_bad_enums_and_missing_bases(ctx, rng):
    x = poisoned(6, 4)
    u = random_basis(rng, 6, 2)
    with pytest.raises(osft.InvalidArgumentError, match="unknown side"):
        osft.project(ctx, "up", x, u)
    with pytest.raises(osft.InvalidArgumentError):
        osft.project(ctx, 7, x, u)
    with pytest.raises(osft.NullPointerError):
        osft.project(ctx, "right", x, u)  # no V_high
    with pytest.raises(osft.InvalidArgumentError):
        osft.orthonormality_error(ctx, "both", u)
    with pytest.raises(osft.InvalidArgumentError):
        osft.project_partial(ctx, "both", u, x, poisoned(2, 4))
    with pytest.raises(osft.InvalidArgumentError, match="unknown strategy"):
        osft.Projector(ctx, "left", u, strategy="fast")
    with pytest.raises(osft.InvalidArgumentError):
        osft.Projector(ctx, "left", u, strategy=9)
    with pytest.raises(osft.InvalidArgumentError, match="unknown backend"):
        osft.Context("tpu")
    with pytest.raises(osft.InvalidArgumentError):
        osft.Context("cpu", device=1)
    with pytest.raises(osft.NullPointerError):
        osft.reconstruct(ctx, x, np.eye(6, 2), None, np.eye(2, 4))  # partial triple
    with pytest.raises(osft.InvalidArgumentError):
        osft.reconstruct(ctx, x)  # no part
    assert untouched(x)


def test_cuda_backend_without_gpu():
    try:
        c = osft.Context("cuda")
    except osft.BackendUnavailableError as e:
        assert e.status == "BACKEND_UNAVAILABLE" and "OSFT_BACKEND_AUTO" in e.message
    else:
        with c:
            assert c.backend == "cuda"
            with pytest.raises(osft.DeviceMismatchError):
                osft.decompose_np(np.eye(3), 1, ctx=c)


def test_bf16_dtype_mismatch(ctx, rng):
    if BF16 is None:
        pytest.skip("ml_dtypes not installed")
    x = np.full((6, 4), POISON, np.float32).astype(BF16)
    with pytest.raises(osft.DtypeError):
        osft.project(ctx, "left", x, random_basis(rng, 6, 2).astype(np.float16))


def test_non_finite_input(ctx):
    """NaN/Inf in a matrix to factor: NON_FINITE (status 17) from libraries that check first,
    NOT_CONVERGED from older builds; nothing written either way."""
    for bad in [np.nan, np.inf]:
        w = np.eye(4)
        w[1, 2] = bad
        s = poisoned(4)
        with pytest.raises((osft.NonFiniteError, osft.NotConvergedError)) as e:
            osft.svd(ctx, w, s=s)
        assert e.value.status in ("NON_FINITE", "NOT_CONVERGED") and e.value.message
        if e.value.status == "NON_FINITE":
            assert untouched(s)


def test_every_status_has_a_class():
    for name, code in osft.STATUS.items():
        if code == 0:
            continue
        err = osft._errors.error(code, "m")
        assert type(err) is not osft.OsftError and err.status == name
        # NON_FINITE is newer than some builds of the library.
        assert osft.status_string(code) != "unknown status" or name == "NON_FINITE"
    future = osft._errors.error(99, "m")
    assert type(future) is osft.OsftError and future.status == "UNKNOWN(99)"
