"""Zero-copy conversion: descriptors of numpy layouts, DLPack (numpy's own exporter and the
legacy unversioned capsule), __array_interface__ / __cuda_array_interface__ objects."""

import ctypes
import sys

import numpy as np
import pytest
from conftest import BF16, DTYPE_IDS, DTYPES, LAYOUTS, f64, layout, project_tol, random_basis, svd_tol

import osft
import osft.torch as ot


class DLPackOnly:
    """Exposes only the DLPack protocol of a numpy array (optionally the legacy capsule)."""

    def __init__(self, a, legacy=False):
        self.a = a
        self.legacy = legacy

    def __dlpack__(self, **kw):
        if self.legacy:
            if "max_version" in kw:
                raise TypeError("no max_version")  # a pre-1.0 producer
            return self.a.__dlpack__()
        return self.a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


class InterfaceOnly:
    def __init__(self, a, cuda=False, dtype=None):
        self.a = a
        key = "__cuda_array_interface__" if cuda else "__array_interface__"
        setattr(self, key, dict(a.__array_interface__, version=3))
        if dtype is not None:
            self.dtype = dtype


def addr(a):
    return a.__array_interface__["data"][0]


@pytest.mark.parametrize("via", ["numpy", "dlpack", "dlpack-legacy", "interface"])
def test_descriptor_layouts(via):
    base = np.zeros((6, 10))

    def conv(a):
        obj = {"numpy": a, "dlpack": DLPackOnly(a), "dlpack-legacy": DLPackOnly(a, True),
               "interface": InterfaceOnly(a)}[via]
        return osft.as_mat(obj, "x").desc

    d = conv(base)
    assert (d.rows, d.cols, d.row_stride, d.col_stride, d.batch) == (6, 10, 10, 1, 1)
    assert d.data == addr(base) and d.dtype == 1 and d.device == 0
    d = conv(base.T)
    assert (d.rows, d.cols, d.row_stride, d.col_stride) == (10, 6, 1, 10)
    d = conv(base[1:, 2:5])
    assert (d.rows, d.cols, d.row_stride, d.col_stride) == (5, 3, 10, 1)
    assert d.data == addr(base) + (10 + 2) * 8
    d = conv(np.asfortranarray(base))
    assert (d.row_stride, d.col_stride) == (1, 6)
    d = conv(base[::2, ::3])
    assert (d.rows, d.cols, d.row_stride, d.col_stride) == (3, 4, 20, 3)
    b3 = np.zeros((4, 5, 3), np.float32)
    d = conv(b3)
    assert (d.batch, d.rows, d.cols, d.batch_stride, d.row_stride, d.col_stride, d.dtype) == (4, 5, 3, 15, 3, 1, 0)
    # Extent-1 axes: strides normalised to BLAS-friendly values.
    d = conv(base[:, :1])
    assert (d.rows, d.cols, d.row_stride, d.col_stride) == (6, 1, 10, 1)
    d = conv(base[:1, :])
    assert (d.rows, d.cols, d.row_stride, d.col_stride) == (1, 10, 10, 1)
    d = conv(base[:1, :].T)
    assert (d.rows, d.cols, d.row_stride, d.col_stride) == (10, 1, 1, 10)
    d = conv(b3[:1])
    assert (d.batch, d.batch_stride) == (1, 0)


def test_vectors():
    s = np.zeros(8)
    d = osft.as_mat(s, "s", "vector").desc
    assert (d.rows, d.cols, d.row_stride, d.batch) == (8, 1, 1, 1)
    d = osft.as_mat(s[::2], "s", "vector").desc
    assert (d.rows, d.row_stride) == (4, 2)
    d = osft.as_mat(np.zeros((3, 5)), "s", "vector").desc
    assert (d.batch, d.rows, d.cols, d.batch_stride, d.row_stride) == (3, 5, 1, 5, 1)
    with pytest.raises(osft.InvalidShapeError, match="1-D"):
        osft.as_mat(np.zeros((2, 2, 2)), "s", "vector")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dtypes(dtype):
    want = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}[np.dtype(dtype).name]
    a = np.zeros((2, 3), dtype)
    assert osft.as_mat(a, "a").desc.dtype == want
    assert osft.as_mat(InterfaceOnly(a, dtype=a.dtype), "a").desc.dtype == want
    if np.dtype(dtype).name != "bfloat16":  # numpy cannot export bfloat16 through DLPack
        assert osft.as_mat(DLPackOnly(a), "a").desc.dtype == want


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("legacy", [False, True])
def test_dlpack_from_numpy_end_to_end(ctx, rng, kind, legacy):
    """numpy arrays passed only through __dlpack__: results written into the caller's memory."""
    n, m, k = 8, 6, 2
    u = random_basis(rng, n, k)
    x = layout(rng.standard_normal((n, m)), kind)
    want = x - u @ (u.T @ x)
    scale = np.linalg.norm(x)
    osft.project(ctx, "left", DLPackOnly(x, legacy), DLPackOnly(u, legacy))
    assert np.linalg.norm(x - want) < project_tol(np.float64, n, k) * scale
    w = layout(rng.standard_normal((n, m)), kind)
    s = np.zeros(m)
    osft.svd(ctx, DLPackOnly(w, legacy), s=DLPackOnly(s, legacy))
    s_err = np.abs(s - np.linalg.svd(w, compute_uv=False)).max()
    assert s_err < svd_tol(n, m, np.float64, np.float64) * np.linalg.norm(w)


def test_dlpack_bf16_capsule(ctx, rng):
    """A hand-built DLPack capsule with dtype (code 4, bits 16): bfloat16 without ml_dtypes."""
    if BF16 is None:
        pytest.skip("ml_dtypes needed to build reference data")
    from osft._tensor import DLManagedTensor

    x = rng.standard_normal((5, 4)).astype(BF16)
    shape = (ctypes.c_int64 * 2)(5, 4)
    strides = (ctypes.c_int64 * 2)(4, 1)
    mt = DLManagedTensor()
    mt.dl_tensor.data = addr(x)
    mt.dl_tensor.device.device_type = 1
    mt.dl_tensor.ndim = 2
    mt.dl_tensor.dtype.code, mt.dl_tensor.dtype.bits, mt.dl_tensor.dtype.lanes = 4, 16, 1
    mt.dl_tensor.shape = shape
    mt.dl_tensor.strides = strides
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

    class Producer:
        def __dlpack__(self, **kw):
            if "max_version" in kw:
                raise TypeError
            return new(ctypes.addressof(mt), b"dltensor", None)

        def __dlpack_device__(self):
            return (1, 0)

    m = osft.as_mat(Producer(), "x")
    assert m.desc.dtype == 3 and m.desc.data == addr(x)
    s = np.zeros(4, np.float32)
    osft.svd(ctx, Producer(), s=s)
    np.testing.assert_allclose(s, np.linalg.svd(f64(x), compute_uv=False), rtol=1e-5)
    # Unsupported DLPack dtypes.
    mt.dl_tensor.dtype.code, mt.dl_tensor.dtype.bits = 0, 32  # int32
    with pytest.raises(osft.DtypeError, match="DLPack dtype"):
        osft.as_mat(Producer(), "x")
    mt.dl_tensor.dtype.code, mt.dl_tensor.dtype.bits, mt.dl_tensor.dtype.lanes = 2, 32, 4
    with pytest.raises(osft.DtypeError, match="lanes"):
        osft.as_mat(Producer(), "x")


def test_dlpack_devices():
    a = np.zeros((2, 2))

    class Dev(DLPackOnly):
        def __init__(self, a, dev):
            super().__init__(a)
            self.dev = dev

        def __dlpack_device__(self):
            return self.dev

        def __dlpack__(self, **kw):
            self.kw = kw
            return self.a.__dlpack__(max_version=(1, 0))

    with pytest.raises(osft.DeviceMismatchError, match="rocm"):
        osft.as_mat(Dev(a, (10, 0)), "x")
    # A (pretend) CUDA tensor: described as CUDA memory of its device, stream passed along.
    obj = Dev(a, (2, 3))
    m = osft.as_mat(obj, "x", stream=0x1234)
    assert (m.desc.device, m.desc.device_ordinal) == (1, 3)
    assert obj.kw["stream"] == 0x1234
    obj = Dev(a, (2, 0))
    osft.as_mat(obj, "x")
    assert obj.kw["stream"] == 1  # the legacy default stream when the context has none
    with osft.Context() as ctx, pytest.raises(osft.DeviceMismatchError):
        osft.project(ctx, "left", Dev(np.zeros((4, 3)), (2, 0)), np.eye(4, 2))


def test_cuda_array_interface_on_cpu_context(ctx):
    x = InterfaceOnly(np.zeros((4, 3)), cuda=True)
    m = osft.as_mat(x, "x", cuda_ordinal=0)
    assert m.desc.device == 1
    with pytest.raises(osft.DeviceMismatchError) as e:
        osft.project(ctx, "left", x, np.eye(4, 2))
    assert e.value.status == "DEVICE_MISMATCH" and e.value.message


def test_read_only_inputs_and_outputs(ctx, rng):
    u = random_basis(rng, 6, 2)
    u.flags.writeable = False
    x = rng.standard_normal((6, 4))
    osft.project(ctx, "left", x, u)  # a read-only basis is fine
    ro = x.copy()
    ro.flags.writeable = False
    with pytest.raises(osft.InvalidArgumentError, match="read-only"):
        osft.project(ctx, "left", ro, u)
    out = np.zeros((6, 4))
    osft.project(ctx, "left", ro, u, out=out)  # read-only X out of place is fine
    # Read-only through DLPack (numpy 2 exports it with the READ_ONLY flag).
    with pytest.raises(osft.InvalidArgumentError, match="read-only"):
        osft.project(ctx, "left", DLPackOnly(ro), u)
    with pytest.raises(osft.InvalidArgumentError, match="read-only"):
        osft.project(ctx, "left", InterfaceOnly(ro), u)


def test_not_an_array(ctx):
    with pytest.raises(osft.InvalidArgumentError, match="expected an array"):
        osft.project(ctx, "left", [[1.0, 2.0]], np.eye(1))


def test_glue_without_torch_tensors():
    """osft.torch imports nothing and is a no-op for non-torch objects (runs without torch)."""
    a = np.zeros((2, 2))
    assert ot.prepare(a) is a
    assert not ot.is_tensor(a)
    assert ot.current_stream_handle(a) is None
    with osft.Context() as ctx:
        ot.sync_stream(ctx, [a])
        assert ctx.stream is None
    if "torch" not in sys.modules:
        # Importing osft and using it did not import torch.
        assert "torch" not in sys.modules


def test_dlpack_refusal_is_reported():
    class Refuses:
        def __dlpack__(self, **kw):
            raise BufferError("cannot export a conjugated tensor")

        def __dlpack_device__(self):
            return (1, 0)

    with pytest.raises(osft.InvalidArgumentError, match="conjugated"):
        osft.as_mat(Refuses(), "x")
