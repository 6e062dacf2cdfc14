"""Argument marshalling shared by the functional API, which has one Python function per C
function of ``include/osft.h``: :mod:`osft._context` (versions, :class:`~osft.Context`),
:mod:`osft._decompose` (SVD, decomposition, reconstruction), :mod:`osft._ranks` (rank selection,
layer importance), :mod:`osft._project` (projection, :class:`~osft.Projector`) and
:mod:`osft._diagnostics`. Here: the string spellings of the enum arguments, the compute dtype
default, descriptor arrays, result buffers and the host-output helpers of the ``*_np`` functions.

Conventions:

* Arrays are any of numpy, DLPack, ``__cuda_array_interface__`` or ``__array_interface__``
  objects (see :mod:`osft._tensor`); they are described, never copied. Outputs are written in
  place, in their own dtype and layout, and returned.
* ``compute`` is ``"f32"`` or ``"f64"`` (or a numpy dtype); ``None`` picks ``"f64"`` when the
  main input is float64, else ``"f32"``.
* ``side`` is ``"left"`` (U side), ``"right"`` (V side) or ``"both"``, or the ``osft_side`` int.
* Diagnostics (leakage, errors, importance) return a Python ``float`` for single matrices and a
  float64 numpy array of per-entry values for batches (3-D inputs).
* Every failure raises :class:`osft.OsftError` (a subclass per status) with the library's
  message; the library validates every argument before writing anything.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any, Optional, Tuple, TypeVar

import numpy as np

from ._enums import BACKEND, MATH_MODE, RANK_RULE, SIDE, STRATEGY, SVD_ALGORITHM, lower
from ._errors import error
from ._lib import osft_matrix
from ._tensor import F32, F64, Mat, dtype_code, numpy_dtype

if TYPE_CHECKING:  # annotations only: _context imports this module
    from ._context import Context

ArrayLike = Any

# The string spellings of the enum arguments (lower-case C names, plus a few aliases), and the
# names of the values the library reports back. A resolved backend or strategy is never AUTO.
_BACKENDS = lower(BACKEND)
_BACKEND_NAMES = {v: k for k, v in _BACKENDS.items() if k != "auto"}
_SIDES = {**lower(SIDE), "u": SIDE["LEFT"], "v": SIDE["RIGHT"]}
_STRATEGIES = {**lower(STRATEGY), "cached": STRATEGY["CACHED_PROJECTOR"]}
_STRATEGY_NAMES = {v: k.lower() for k, v in STRATEGY.items() if k != "AUTO"}
_SVD_ALGORITHMS = lower(SVD_ALGORITHM)
_SVD_ALGORITHM_NAMES = {v: k for k, v in _SVD_ALGORITHMS.items()}
_MATH_MODES = lower(MATH_MODE)
_MATH_MODE_NAMES = {v: k for k, v in _MATH_MODES.items()}
_RULES = {**lower(RANK_RULE), "entropy": RANK_RULE["ENTROPY_EFFECTIVE"]}


def _enum(value, table, what: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    raise error("INVALID_ARGUMENT", f"unknown {what} {value!r} (one of {sorted(table)})", "osft")


def _compute(compute, first: Optional[Mat]) -> int:
    if compute is None:
        return F64 if first is not None and first.dtype == F64 else F32
    return dtype_code(compute, "compute")


def _ref(m: Optional[Mat]):
    return None if m is None else m.ref


def _desc_array(mats):
    arr = (osft_matrix * len(mats))()
    for i, m in enumerate(mats):
        arr[i] = m.desc
    return arr


def _results(n: int) -> Tuple[np.ndarray, Any]:
    out = np.full(max(n, 1), np.nan, dtype=np.float64)
    return out, out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))


def _out(result: np.ndarray, batch_inputs: bool):
    return result if batch_inputs else float(result[0])


# ---------------------------------------------------------------------------------------------
# Host values and the ``*_np`` helpers' outputs.

def _host_f64(values, name: str) -> np.ndarray:
    # torch's __cuda_array_interface__ raises RuntimeError (not AttributeError) for a tensor
    # that requires grad, so hasattr would not answer: ask torch first.
    if getattr(values, "is_cuda", False) is True or hasattr(values, "__cuda_array_interface__"):
        raise error("DEVICE_MISMATCH", f"{name}: device memory; read it with osft.read_vector "
                    "first", "osft")
    return np.ascontiguousarray(np.asarray(values, dtype=np.float64).reshape(-1))


def _host_array(shape, dtype) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


def _np_out_dtype(m: Mat, dtype) -> np.dtype:
    if dtype is not None:
        return numpy_dtype(dtype_code(dtype))
    return numpy_dtype(m.dtype if m.dtype in (F32, F64) else F32)


def _check_host(ctx: Context, what: str) -> None:
    if ctx.is_cuda:
        raise error("DEVICE_MISMATCH",
                    f"{what} allocates numpy (host) outputs: use a CPU context, or the in-place "
                    "function with device arrays", "osft")


def _parts(ctx: Context, out_spec, u_high, s_high, v_high, u_low, s_low, v_low):
    return ctx._mats(out_spec, (u_high, "U_high", "matrix", False),
                     (s_high, "S_high", "vector", False), (v_high, "V_high", "matrix", False),
                     (u_low, "U_low", "matrix", False), (s_low, "S_low", "vector", False),
                     (v_low, "V_low", "matrix", False))


_O = TypeVar("_O", bound="_Owned")


class _Owned:
    """A native handle released by ``close()``: also at the end of a ``with`` block and when
    garbage-collected."""

    def close(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self: _O) -> _O:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown, or a failed __init__
            pass
