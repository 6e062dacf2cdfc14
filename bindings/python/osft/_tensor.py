"""Zero-copy conversion of framework tensors to ``osft_matrix`` descriptors.

Accepted objects, in this order of preference:

1. ``numpy.ndarray`` (and subclasses): read directly from the array's ``dtype``, ``strides`` and
   data pointer. This also covers ``ml_dtypes.bfloat16`` arrays and read-only arrays.
2. Objects with ``__dlpack__`` (PyTorch, JAX, CuPy, numpy >= 1.22 ...): the DLPack capsule is
   parsed with ctypes (``DLManagedTensorVersioned`` when the producer supports
   ``max_version=(1, 0)``, else the legacy ``DLManagedTensor``). The capsule is kept alive for the
   duration of the call and is *not* consumed (not renamed ``used_dltensor``), so the producer's
   capsule destructor frees it afterwards: no copy, no leak.
3. Objects with ``__cuda_array_interface__``: device memory, assumed to be on the context's
   device ordinal (the interface does not say which device). The interface's ``stream`` entry is
   not waited on: produce the data on the context's stream (:attr:`osft.Context.stream`) or
   synchronise first. PyTorch tensors never take this path (they go through DLPack, which is
   given the context's stream).
4. Objects with ``__array_interface__`` (host memory).

Layouts: a matrix argument is 2-D ``(rows, cols)`` or 3-D ``(batch, rows, cols)``; a vector
argument (singular values) is 1-D ``(len,)`` or 2-D ``(batch, len)``. Any non-negative strides
that are whole multiples of the element size are passed through as element strides (C-order,
Fortran-order, transposed views, padded slices such as ``a[:, :k]``). Rejected, with
:class:`osft.InvalidStrideError`, before calling the library:

* negative strides (views such as ``a[::-1]``): osft does not copy behind the caller's back;
  pass ``numpy.ascontiguousarray(a)`` (or ``a.copy()``) instead;
* byte strides that are not a multiple of the element size.

Strides of axes of extent 0 or 1 never address anything and are normalised. Zero strides on
larger axes (``numpy.broadcast_to``) are passed through and rejected by the library
(``OVERLAP``).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any, List, Optional, Tuple

import numpy as np

from ._enums import DEVICE, DTYPE
from ._errors import error
from ._lib import osft_matrix

# osft_dtype values.
F32, F64, F16, BF16 = DTYPE["F32"], DTYPE["F64"], DTYPE["F16"], DTYPE["BF16"]
DTYPE_NAMES = {F32: "float32", F64: "float64", F16: "float16", BF16: "bfloat16"}
ITEMSIZE = {F32: 4, F64: 8, F16: 2, BF16: 2}
# osft_device values.
HOST, CUDA = DEVICE["HOST"], DEVICE["CUDA"]

# DLPack device types (dlpack.h DLDeviceType).
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_DL_DEVICE_NAMES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal",
                    9: "vpi", 10: "rocm", 11: "rocm_host", 12: "ext_dev", 13: "cuda_managed",
                    14: "oneapi", 15: "webgpu", 16: "hexagon", 17: "maia"}
# DLPack dtype codes (DLDataTypeCode).
_DL_FLOAT, _DL_BFLOAT = 2, 4
_DL_FLAG_READ_ONLY = 1 << 0
_DL_FLAG_IS_COPIED = 1 << 1


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [
        ("version", DLPackVersion),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
        ("flags", ctypes.c_uint64),
        ("dl_tensor", DLTensor),
    ]


_capsule_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_get_pointer.restype = ctypes.c_void_p
_capsule_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_is_valid = ctypes.pythonapi.PyCapsule_IsValid
_capsule_is_valid.restype = ctypes.c_int
_capsule_is_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _fail(status: str, name: str, msg: str):
    return error(status, f"{name}: {msg}", "osft (argument conversion)")


def numpy_dtype_code(dt: np.dtype, name: str = "array") -> int:
    """The osft_dtype of a numpy dtype (float32/64/16, ml_dtypes.bfloat16)."""
    if dt.name == "bfloat16" and dt.itemsize == 2:
        return BF16
    if dt.kind == "f":
        if not dt.isnative:
            raise _fail("DTYPE_UNSUPPORTED", name, f"non-native byte order {dt.str}")
        code = {4: F32, 8: F64, 2: F16}.get(dt.itemsize)
        if code is not None:
            return code
    raise _fail("DTYPE_UNSUPPORTED", name,
                f"dtype {dt} is not supported (float32, float64, float16, bfloat16)")


def numpy_dtype(code: int) -> np.dtype:
    """The numpy dtype of an osft_dtype (bfloat16 needs ml_dtypes)."""
    if code == BF16:
        try:
            import ml_dtypes  # noqa: WPS433
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise _fail("DTYPE_UNSUPPORTED", "dtype", "bfloat16 numpy arrays need ml_dtypes") from e
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(DTYPE_NAMES[code])


def dtype_code(dtype: Any, name: str = "dtype") -> int:
    """An osft_dtype from a name ("f32", "float32", "bf16"...), a numpy dtype or an int."""
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        return int(dtype)
    if isinstance(dtype, str):
        key = dtype.lower()
        aliases = {"f32": F32, "float32": F32, "fp32": F32, "f64": F64, "float64": F64,
                   "fp64": F64, "double": F64, "f16": F16, "float16": F16, "fp16": F16,
                   "half": F16, "bf16": BF16, "bfloat16": BF16}
        if key in aliases:
            return aliases[key]
        raise _fail("DTYPE_UNSUPPORTED", name, f"unknown dtype {dtype!r}")
    mod = type(dtype).__module__
    if mod.startswith("torch"):
        return dtype_code(str(dtype).replace("torch.", ""), name)
    return numpy_dtype_code(np.dtype(dtype), name)


class Mat:
    """A converted argument: the descriptor plus what must stay alive while it is used."""

    __slots__ = ("desc", "obj", "keep", "shape", "dtype", "device", "ordinal")

    def __init__(self, desc: osft_matrix, obj: Any, keep: Any, shape: Tuple[int, ...], dtype: int,
                 device: int, ordinal: int):
        self.desc = desc
        self.obj = obj
        self.keep = keep
        self.shape = shape
        self.dtype = dtype
        self.device = device
        self.ordinal = ordinal

    @property
    def batch(self) -> int:
        return int(self.desc.batch)

    @property
    def ref(self):
        return ctypes.byref(self.desc)


def _elem_strides(name: str, shape, byte_strides, itemsize: int) -> List[int]:
    out = []
    for ax, (n, bs) in enumerate(zip(shape, byte_strides)):
        if n <= 1:
            out.append(None)  # normalised below
            continue
        if bs < 0:
            raise _fail("INVALID_STRIDE", name,
                        f"negative stride on axis {ax} (e.g. a[::-1] view); osft does not copy "
                        "implicitly: pass numpy.ascontiguousarray(a) or a.copy()")
        if bs % itemsize:
            raise _fail("INVALID_STRIDE", name,
                        f"byte stride {bs} on axis {ax} is not a multiple of the element size "
                        f"{itemsize}")
        out.append(bs // itemsize)
    return out


def _build(name: str, kind: str, ptr: int, shape: Tuple[int, ...], strides: List[Optional[int]],
           dtype: int, device: int, ordinal: int) -> osft_matrix:
    nd = len(shape)
    if kind == "matrix":
        if nd == 2:
            batch, bs = 1, 0
            rows, cols = shape
            rs, cs = strides
        elif nd == 3:
            batch, rows, cols = shape
            bs, rs, cs = strides
        else:
            raise _fail("INVALID_SHAPE", name,
                        f"expected a 2-D (rows, cols) or 3-D (batch, rows, cols) array, got shape "
                        f"{tuple(shape)}")
    else:  # vector
        if nd == 1:
            batch, bs = 1, 0
            (rows,) = shape
            (rs,) = strides
        elif nd == 2:
            batch, rows = shape
            bs, rs = strides
        else:
            raise _fail("INVALID_SHAPE", name,
                        f"expected a 1-D (len,) or 2-D (batch, len) vector array, got shape "
                        f"{tuple(shape)}")
        cols, cs = 1, 1
    # Normalise strides of axes that address nothing (extent 0 or 1), keeping BLAS-friendly
    # leading dimensions: row-major when the other axis has unit stride, else column-major.
    if rows == 0 or cols == 0:
        rs, cs = max(cols, 1), 1
    else:
        if rs is None and cs is None:
            rs, cs = 1, 1
        elif rs is None:
            rs = max(cols, 1) if cs == 1 else 1
        elif cs is None:
            cs = max(rows, 1) if rs == 1 else 1
    if bs is None or batch <= 1:
        bs = 0 if batch <= 1 else rows * cols
    d = osft_matrix()
    d.data = ptr or None
    d.dtype = dtype
    d.device = device
    d.device_ordinal = ordinal
    d._reserved = 0
    d.rows, d.cols, d.row_stride, d.col_stride, d.batch, d.batch_stride = rows, cols, rs, cs, batch, bs
    return d


def _from_numpy(a: np.ndarray, name: str, kind: str, writable: bool) -> Mat:
    code = numpy_dtype_code(a.dtype, name)
    if writable and not a.flags.writeable:
        raise _fail("INVALID_ARGUMENT", name, "output array is read-only")
    item = a.dtype.itemsize
    strides = _elem_strides(name, a.shape, a.strides, item)
    ptr = a.__array_interface__["data"][0]
    desc = _build(name, kind, ptr, a.shape, strides, code, HOST, 0)
    return Mat(desc, a, None, tuple(a.shape), code, HOST, 0)


def _dl_dtype(name: str, dt: DLDataType) -> int:
    if dt.lanes != 1:
        raise _fail("DTYPE_UNSUPPORTED", name, f"vector dtype with {dt.lanes} lanes")
    if dt.code == _DL_FLOAT and dt.bits in (16, 32, 64):
        return {32: F32, 64: F64, 16: F16}[dt.bits]
    if dt.code == _DL_BFLOAT and dt.bits == 16:
        return BF16
    raise _fail("DTYPE_UNSUPPORTED", name,
                f"DLPack dtype (code {dt.code}, bits {dt.bits}) is not supported "
                "(float32, float64, float16, bfloat16)")


def _dl_device(name: str, dev_type: int, dev_id: int) -> Tuple[int, int]:
    if dev_type in (_DL_CPU, _DL_CUDA_HOST):
        return HOST, 0
    if dev_type in (_DL_CUDA, _DL_CUDA_MANAGED):
        return CUDA, int(dev_id)
    raise _fail("DEVICE_MISMATCH", name,
                f"DLPack device {_DL_DEVICE_NAMES.get(dev_type, dev_type)} is not supported "
                "(host or CUDA memory only)")


def _from_dlpack(obj: Any, name: str, kind: str, writable: bool, stream: Optional[int]) -> Mat:
    dev_type, dev_id = _DL_CPU, 0
    if hasattr(obj, "__dlpack_device__"):
        dev_type, dev_id = (int(v) for v in obj.__dlpack_device__())
    device, ordinal = _dl_device(name, dev_type, dev_id)
    kwargs = {}
    if dev_type in (_DL_CUDA, _DL_CUDA_MANAGED):
        # Array API: 1 is the legacy default stream; otherwise the cudaStream_t the data will be
        # used on, so that the producer can order its pending work before ours.
        kwargs["stream"] = stream if stream else 1
    try:
        capsule = obj.__dlpack__(max_version=(1, 0), **kwargs)
    except TypeError:  # a producer older than DLPack 1.0 (no max_version keyword)
        capsule = obj.__dlpack__(**kwargs)
    if _capsule_is_valid(capsule, b"dltensor_versioned"):
        raw = _capsule_get_pointer(capsule, b"dltensor_versioned")
        mt = DLManagedTensorVersioned.from_address(raw)
        if mt.version.major != 1:
            raise _fail("INVALID_ARGUMENT", name, f"unsupported DLPack version {mt.version.major}")
        if writable and mt.flags & _DL_FLAG_READ_ONLY:
            raise _fail("INVALID_ARGUMENT", name, "output tensor is read-only (DLPack flag)")
        if writable and mt.flags & _DL_FLAG_IS_COPIED:
            raise _fail("INVALID_ARGUMENT", name,
                        "the producer exported a copy (DLPack IS_COPIED): results would be lost")
        t = mt.dl_tensor
    elif _capsule_is_valid(capsule, b"dltensor"):
        raw = _capsule_get_pointer(capsule, b"dltensor")
        t = DLManagedTensor.from_address(raw).dl_tensor
    else:
        raise _fail("INVALID_ARGUMENT", name, "__dlpack__ did not return a DLPack capsule")
    code = _dl_dtype(name, t.dtype)
    nd = int(t.ndim)
    shape = tuple(int(t.shape[i]) for i in range(nd))
    if t.strides:
        elem = [int(t.strides[i]) for i in range(nd)]
    else:  # NULL strides: compact row-major
        elem, acc = [0] * nd, 1
        for i in reversed(range(nd)):
            elem[i] = acc
            acc *= max(shape[i], 1)
    item = ITEMSIZE[code]
    # DLPack strides are in elements already; reuse the byte-stride checks for the sign.
    strides = _elem_strides(name, shape, [s * item for s in elem], item)
    ptr = (t.data or 0) + int(t.byte_offset)
    desc = _build(name, kind, ptr, shape, strides, code, device, ordinal)
    return Mat(desc, obj, capsule, shape, code, device, ordinal)


def _typestr_code(name: str, obj: Any, typestr: str) -> int:
    dt = getattr(obj, "dtype", None)
    if dt is not None and getattr(dt, "name", str(dt)) == "bfloat16":
        return BF16
    return numpy_dtype_code(np.dtype(typestr), name)


def _from_interface(obj: Any, iface: dict, name: str, kind: str, writable: bool, device: int,
                    ordinal: int) -> Mat:
    code = _typestr_code(name, obj, iface["typestr"])
    item = ITEMSIZE[code]
    shape = tuple(int(n) for n in iface["shape"])
    ptr, readonly = iface["data"]
    if writable and readonly:
        raise _fail("INVALID_ARGUMENT", name, "output array is read-only")
    if iface.get("mask") is not None:
        raise _fail("INVALID_ARGUMENT", name, "masked arrays are not supported")
    if iface.get("strides") is None:
        bstr, acc = [0] * len(shape), item
        for i in reversed(range(len(shape))):
            bstr[i] = acc
            acc *= max(shape[i], 1)
    else:
        bstr = [int(s) for s in iface["strides"]]
    strides = _elem_strides(name, shape, bstr, item)
    ptr = (ptr or 0) + int(iface.get("offset", 0) or 0)
    desc = _build(name, kind, ptr, shape, strides, code, device, ordinal)
    return Mat(desc, obj, None, shape, code, device, ordinal)


def as_mat(obj: Any, name: str, kind: str = "matrix", writable: bool = False,
           stream: Optional[int] = None, cuda_ordinal: int = 0) -> Mat:
    """Describe ``obj`` (see the module docstring) as an ``osft_matrix`` without copying.

    ``stream`` is the context's CUDA stream (for DLPack producers on CUDA); ``cuda_ordinal`` is
    the device ordinal assumed for ``__cuda_array_interface__`` objects (which do not carry one).
    """
    if isinstance(obj, np.ndarray):
        return _from_numpy(obj, name, kind, writable)
    mod = type(obj).__module__ or ""
    if mod.startswith("torch") and "torch" in sys.modules:
        from . import torch as _t  # noqa: WPS433 - small, imports nothing heavy itself

        obj = _t.prepare(obj)
    refused = None
    if hasattr(obj, "__dlpack__"):
        try:
            return _from_dlpack(obj, name, kind, writable, stream)
        except BufferError as e:
            # The producer refused to export (e.g. numpy < 2 and a read-only array): try the
            # array interfaces, and report this refusal if there is none.
            refused = e
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        return _from_interface(obj, cai, name, kind, writable, CUDA, cuda_ordinal)
    ai = getattr(obj, "__array_interface__", None)
    if ai is not None:
        return _from_interface(obj, ai, name, kind, writable, HOST, 0)
    if refused is not None:
        raise _fail("INVALID_ARGUMENT", name, f"__dlpack__ refused to export: {refused}") from refused
    raise _fail("INVALID_ARGUMENT", name,
                f"expected an array (numpy, DLPack, __cuda_array_interface__ or "
                f"__array_interface__), got {type(obj).__name__}")


def _is_contiguous(shape: Tuple[int, ...], byte_strides, item: int) -> bool:
    """Whether ``byte_strides`` lay ``shape`` out densely in C or Fortran order (axes of extent 1
    address nothing and are ignored)."""
    dims = [(n, s) for n, s in zip(shape, byte_strides) if n != 1]
    for order in (dims[::-1], dims):
        acc = item
        ok = True
        for n, s in order:
            ok &= s == acc
            acc *= n
        if ok:
            return True
    return False


def workspace_region(obj: Any, name: str = "workspace") -> Tuple[int, int, int, Optional[int]]:
    """``(address, bytes, device, CUDA ordinal or None)`` of a writable, contiguous buffer of any
    dtype, described in place: the library keeps using the memory after the call that hands it
    over, so a converted copy would be freed under it."""
    if isinstance(obj, np.ndarray):
        if not obj.flags.writeable:
            raise _fail("INVALID_ARGUMENT", name, "array is read-only")
        if not (obj.flags.c_contiguous or obj.flags.f_contiguous):
            raise _fail("INVALID_STRIDE", name, "array must be contiguous")
        return obj.__array_interface__["data"][0], obj.nbytes, HOST, None
    if (type(obj).__module__ or "").startswith("torch") and hasattr(obj, "data_ptr"):
        if not obj.is_contiguous():
            raise _fail("INVALID_STRIDE", name, "tensor must be contiguous (a view such as t.T or "
                                                "t[:, :k] would be copied)")
        kind = obj.device.type
        if kind not in ("cpu", "cuda"):
            raise _fail("DEVICE_MISMATCH", name, f"tensor on {obj.device}: osft uses CPU or CUDA memory")
        device = CUDA if kind == "cuda" else HOST
        return obj.data_ptr(), obj.numel() * obj.element_size(), device, obj.device.index
    for attr, device in (("__cuda_array_interface__", CUDA), ("__array_interface__", HOST)):
        iface = getattr(obj, attr, None)
        if iface is None:
            continue
        ptr, readonly = iface["data"]
        if readonly:
            raise _fail("INVALID_ARGUMENT", name, "array is read-only")
        item = np.dtype(iface["typestr"]).itemsize
        shape = tuple(int(n) for n in iface["shape"])
        strides = iface.get("strides")
        if strides is not None and not _is_contiguous(shape, [int(s) for s in strides], item):
            raise _fail("INVALID_STRIDE", name, "array must be contiguous")
        ptr = (ptr or 0) + int(iface.get("offset", 0) or 0)
        return ptr, int(np.prod(shape, dtype=np.int64)) * item, device, None
    raise _fail("INVALID_ARGUMENT", name, f"expected a numpy array, a torch tensor or an object with "
                                          f"__cuda_array_interface__ / __array_interface__, got "
                                          f"{type(obj).__name__}")
