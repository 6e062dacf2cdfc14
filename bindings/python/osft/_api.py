"""The functional API: one Python function per C function of ``include/osft.h``.

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
import threading
from collections import namedtuple
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from . import torch as _torch_glue
from ._enums import BACKEND, MATH_MODE, RANK_RULE, SIDE, STRATEGY, SVD_ALGORITHM, lower
from ._errors import check, error
from ._lib import has, lib, osft_matrix
from ._tensor import F32, F64, Mat, as_mat, dtype_code, numpy_dtype

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


# ---------------------------------------------------------------------------------------------
# Versions and status helpers.

def version() -> Tuple[int, int, int]:
    """(major, minor, patch) of the loaded libosft."""
    return (lib.osft_version_major(), lib.osft_version_minor(), lib.osft_version_patch())


def abi_version() -> int:
    """ABI version of the loaded libosft (this binding needs :data:`ABI_VERSION`)."""
    return lib.osft_abi_version()


def debug_panic() -> None:
    """Testing only: trigger a panic inside libosft's panic boundary (raises InternalError)."""
    check(lib.osft_debug_panic(), "osft_debug_panic")


# ---------------------------------------------------------------------------------------------
# Context.

class Context:
    """An osft executor (``osft_context``): CPU or CUDA, with its workspace and CUDA stream.

    ``backend`` is ``"cpu"``, ``"cuda"`` (raises :class:`osft.BackendUnavailableError` without a
    usable GPU) or ``"auto"`` (CUDA when usable, else CPU; see :attr:`backend`). Use it as a
    context manager, or call :meth:`close`. A context may be shared between threads (calls are
    serialised inside the library); use one per thread for parallelism.
    """

    def __init__(self, backend: Union[str, int] = "cpu", device: int = 0):
        code = _enum(backend, _BACKENDS, "backend")
        h = ctypes.c_void_p()
        check(lib.osft_context_create(code, int(device), ctypes.byref(h)), "osft_context_create")
        self._h: Optional[int] = h.value
        self.device = int(device)
        self._stream: Optional[int] = None
        self._workspace = None  # kept alive while the library may use it
        b = ctypes.c_int32(-1)
        check(lib.osft_context_backend(self._h, ctypes.byref(b)), "osft_context_backend")
        self._backend = _BACKEND_NAMES.get(b.value, str(b.value))

    # -- lifetime --
    @property
    def handle(self) -> int:
        """The raw ``osft_context*`` (an int); raises if the context is closed."""
        if self._h is None:
            raise error("NULL_POINTER", "the context is closed", "osft.Context")
        return self._h

    @property
    def closed(self) -> bool:
        return self._h is None

    def close(self) -> None:
        """Destroy the context (projectors created from it stay valid). Idempotent."""
        h, self._h = self._h, None
        if h is not None:
            lib.osft_context_destroy(h)
        # self._workspace is deliberately kept: a projector may still run on this context.

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        state = "closed" if self._h is None else f"device={self.device}"
        return f"osft.Context(backend={self._backend!r}, {state})"

    # -- properties --
    @property
    def backend(self) -> str:
        """``"cpu"`` or ``"cuda"`` (what ``"auto"`` resolved to)."""
        return self._backend

    @property
    def is_cuda(self) -> bool:
        return self._backend == "cuda"

    @property
    def stream(self) -> Optional[int]:
        """The ``cudaStream_t`` (an int) osft issues work on; None is the legacy default stream.

        Set it to ``torch.cuda.current_stream().cuda_stream`` (osft does so for you when torch
        tensors are passed), a CuPy stream's ``.ptr``, etc. A CPU context only accepts None.
        """
        s = ctypes.c_void_p()
        check(lib.osft_context_get_stream(self.handle, ctypes.byref(s)), "osft_context_get_stream")
        self._stream = s.value
        return s.value

    @stream.setter
    def stream(self, value: Optional[int]) -> None:
        v = int(value) if value else None
        check(lib.osft_context_set_stream(self.handle, v), "osft_context_set_stream")
        self._stream = v

    # -- SVD algorithm and math mode --
    def _optional(self, name: str):
        if not has(name):
            raise error("INVALID_ARGUMENT", f"the loaded libosft ({__import__('osft').library_path})"
                        f" has no {name}: it predates the SVD diagnostics setting",
                        "osft.Context")
        return getattr(lib, name)

    @property
    def svd_algorithm(self) -> str:
        """The SVD algorithm of later :func:`svd`, :func:`svd_list` and :func:`decompose` calls:
        ``"auto"`` (default), ``"qr"``, ``"jacobi"``, ``"jacobi_batched"`` (``N, M <= 32``),
        ``"approx_batched"`` (approximate), ``"polar"``, ``"randomized"`` (approximate, top-``k``
        only: :func:`decompose` with the low parts None). Each names the cuSOLVER routine a CUDA
        context calls; a CPU context enforces its preconditions and computes an exact SVD. An
        algorithm that cannot serve a call fails it, never falls back silently. Set it with a name
        or the ``osft_svd_algorithm`` int; unknown values raise and keep the old setting."""
        out = ctypes.c_int32(-1)
        check(self._optional("osft_context_get_svd_algorithm")(self.handle, ctypes.byref(out)),
              "osft_context_get_svd_algorithm")
        return _SVD_ALGORITHM_NAMES.get(out.value, str(out.value))

    @svd_algorithm.setter
    def svd_algorithm(self, value: Union[str, int]) -> None:
        code = _enum(value, _SVD_ALGORITHMS, "SVD algorithm")
        check(self._optional("osft_context_set_svd_algorithm")(self.handle, code),
              "osft_context_set_svd_algorithm")

    @property
    def svd_diagnostics(self) -> bool:
        """Whether later :func:`svd`, :func:`svd_list` and :func:`decompose` calls read back what
        the SVD routine measures beyond convergence (gesvda's residual, gesvdp's error bound,
        gesvdj's residual and sweeps). False (default): on CUDA that read-back blocks the host per
        matrix; convergence itself is checked either way."""
        out = ctypes.c_int32(-1)
        check(self._optional("osft_context_get_svd_diagnostics")(self.handle, ctypes.byref(out)),
              "osft_context_get_svd_diagnostics")
        return bool(out.value)

    @svd_diagnostics.setter
    def svd_diagnostics(self, value: bool) -> None:
        check(self._optional("osft_context_set_svd_diagnostics")(self.handle, 1 if value else 0),
              "osft_context_set_svd_diagnostics")

    @property
    def math_mode(self) -> str:
        """The math mode of later projection and reconstruction GEMMs on float32 data:
        ``"exact"`` (default), ``"tf32"`` or ``"bf16"`` (inputs rounded, float32 accumulation;
        CUDA only — a CPU context accepts every mode and computes exactly; float64 data is always
        exact). Set it with a name or the ``osft_math_mode`` int."""
        out = ctypes.c_int32(-1)
        check(self._optional("osft_context_get_math_mode")(self.handle, ctypes.byref(out)),
              "osft_context_get_math_mode")
        return _MATH_MODE_NAMES.get(out.value, str(out.value))

    @math_mode.setter
    def math_mode(self, value: Union[str, int]) -> None:
        code = _enum(value, _MATH_MODES, "math mode")
        check(self._optional("osft_context_set_math_mode")(self.handle, code),
              "osft_context_set_math_mode")

    # -- workspace --
    def set_workspace(self, buffer: ArrayLike) -> None:
        """Use ``buffer`` (a writable array on the context's device, any dtype, contiguous) as
        the workspace, as ``cublasSetWorkspace``. It is kept alive by the context until
        :meth:`release_workspace` or another :meth:`set_workspace`."""
        if isinstance(buffer, np.ndarray):
            if not buffer.flags.writeable:
                raise error("INVALID_ARGUMENT", "workspace: array is read-only", "osft")
            if not (buffer.flags.c_contiguous or buffer.flags.f_contiguous):
                raise error("INVALID_STRIDE", "workspace: array must be contiguous", "osft")
            ptr, nbytes = buffer.__array_interface__["data"][0], buffer.nbytes
        else:
            m = as_mat(buffer.reshape(-1, 1) if hasattr(buffer, "reshape") else buffer,
                       "workspace", "matrix", writable=True, stream=self._stream)
            if m.desc.row_stride != 1:
                raise error("INVALID_STRIDE", "workspace: array must be contiguous", "osft")
            from ._tensor import ITEMSIZE
            ptr, nbytes = m.desc.data, int(m.desc.rows) * ITEMSIZE[m.dtype]
        check(lib.osft_context_set_workspace(self.handle, ptr, nbytes), "osft_context_set_workspace")
        self._workspace = buffer

    def release_workspace(self) -> None:
        """Forget the caller workspace (or free the context's own); ops allocate again."""
        check(lib.osft_context_release_workspace(self.handle), "osft_context_release_workspace")
        self._workspace = None

    @property
    def workspace_bytes(self) -> int:
        """Bytes of workspace the context holds now."""
        n = ctypes.c_size_t()
        check(lib.osft_context_workspace_bytes(self.handle, ctypes.byref(n)),
              "osft_context_workspace_bytes")
        return n.value

    # -- argument conversion --
    def _mats(self, *specs) -> list:
        """Convert ``(obj, name, kind, writable)`` specs (obj may be None) after pointing the
        stream at PyTorch's current one when torch CUDA tensors are among them."""
        if self.is_cuda:
            _torch_glue.sync_stream(self, [s[0] for s in specs if s[0] is not None])
        out = []
        for obj, name, kind, writable in specs:
            out.append(None if obj is None else as_mat(obj, name, kind, writable, self._stream,
                                                       self.device))
        return out


_default_lock = threading.Lock()
_default_ctx: Optional[Context] = None


def default_context() -> Context:
    """A process-wide CPU context, created on first use (used by the ``*_np`` helpers)."""
    global _default_ctx
    with _default_lock:
        if _default_ctx is None or _default_ctx.closed:
            _default_ctx = Context("cpu")
        return _default_ctx


def _out(result: np.ndarray, batch_inputs: bool):
    return result if batch_inputs else float(result[0])


# ---------------------------------------------------------------------------------------------
# SVD and decomposition.

def svd_workspace_size(ctx: Context, w: ArrayLike, compute=None) -> int:
    """Workspace bytes :func:`svd` (and :func:`decompose`) need for ``w``."""
    (mw,) = ctx._mats((w, "W", "matrix", False))
    n = ctypes.c_size_t()
    check(lib.osft_svd_workspace_size(ctx.handle, mw.ref, _compute(compute, mw), ctypes.byref(n)),
          "osft_svd_workspace_size")
    return n.value


def svd(ctx: Context, w: ArrayLike, u: Optional[ArrayLike] = None, s: ArrayLike = None,
        vt: Optional[ArrayLike] = None, compute=None):
    """Thin SVD ``W = U diag(S) Vt`` into caller arrays; returns ``(u, s, vt)``.

    ``w``: ``N x M`` or a batch ``B x N x M``; ``u``: ``N x R`` (or None: not computed); ``s``:
    ``(R,)`` or ``(B, R)`` (required), descending; ``vt``: ``R x M`` (or None). ``R = min(N, M)``.
    Each output in its own dtype and layout. Signs: the largest-magnitude entry of each column of
    ``U`` is positive.
    """
    if s is None:
        raise error("NULL_POINTER", "svd: the singular-value output s is required", "osft")
    mw, mu, ms, mv = ctx._mats((w, "W", "matrix", False), (u, "U", "matrix", True),
                               (s, "S", "vector", True), (vt, "Vt", "matrix", True))
    check(lib.osft_svd(ctx.handle, mw.ref, _ref(mu), ms.ref, _ref(mv), _compute(compute, mw)),
          "osft_svd")
    return u, s, vt


def _desc_array(mats):
    arr = (osft_matrix * len(mats))()
    for i, m in enumerate(mats):
        arr[i] = m.desc
    return arr


def svd_list_workspace_size(ctx: Context, ws: Sequence[ArrayLike], compute=None) -> int:
    """Workspace bytes for :func:`svd_list`."""
    mws = ctx._mats(*[(w, f"W[{i}]", "matrix", False) for i, w in enumerate(ws)])
    n = ctypes.c_size_t()
    c = _compute(compute, mws[0] if mws else None)
    check(lib.osft_svd_list_workspace_size(ctx.handle, len(mws), _desc_array(mws) if mws else None,
                                           c, ctypes.byref(n)), "osft_svd_list_workspace_size")
    return n.value


def svd_list(ctx: Context, ws: Sequence[ArrayLike], ss: Sequence[ArrayLike],
             us: Optional[Sequence[ArrayLike]] = None, vts: Optional[Sequence[ArrayLike]] = None,
             compute=None) -> None:
    """SVDs of matrices of different shapes (a model's layers) in one call: problem ``i`` is
    ``ws[i] = us[i] diag(ss[i]) vts[i]``. ``us`` / ``vts`` are lists of the same length or None
    (no problem writes that factor). Everything is validated before anything is written."""
    n = len(ws)
    if len(ss) != n or (us is not None and len(us) != n) or (vts is not None and len(vts) != n):
        raise error("INVALID_SHAPE", "svd_list: ws, ss, us and vts must have the same length", "osft")
    specs = [(w, f"W[{i}]", "matrix", False) for i, w in enumerate(ws)]
    specs += [(s, f"S[{i}]", "vector", True) for i, s in enumerate(ss)]
    if us is not None:
        specs += [(u, f"U[{i}]", "matrix", True) for i, u in enumerate(us)]
    if vts is not None:
        specs += [(v, f"Vt[{i}]", "matrix", True) for i, v in enumerate(vts)]
    mats = ctx._mats(*specs)
    mw, ms, rest = mats[:n], mats[n:2 * n], mats[2 * n:]
    mu = mv = None
    if us is not None:
        mu, rest = rest[:n], rest[n:]
    if vts is not None:
        mv = rest[:n]
    if any(m is None for m in (mu or []) + (mv or [])):
        raise error("NULL_POINTER", "svd_list: us / vts entries may not be None", "osft")
    c = _compute(compute, mw[0] if mw else None)
    check(lib.osft_svd_list(ctx.handle, n, _desc_array(mw) if n else None,
                            _desc_array(mu) if mu else None, _desc_array(ms) if n else None,
                            _desc_array(mv) if mv else None, c), "osft_svd_list")


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


def svd_np(w: ArrayLike, compute=None, dtype=None, ctx: Optional[Context] = None,
           compute_uv: bool = True):
    """SVD with newly allocated numpy outputs: ``(u, s, vt)`` (``u``, ``vt`` None when
    ``compute_uv`` is False). Outputs are ``dtype`` (default: ``w``'s for float32/64, float32
    otherwise); batches (3-D ``w``) give 3-D ``u``, ``vt`` and 2-D ``s``. Host memory only."""
    ctx = ctx or default_context()
    _check_host(ctx, "svd_np")
    (mw,) = ctx._mats((w, "W", "matrix", False))
    dt = _np_out_dtype(mw, dtype)
    b = mw.shape[:-2]
    n, m = mw.shape[-2:]
    r = min(n, m)
    u = _host_array(b + (n, r), dt) if compute_uv else None
    s = _host_array(b + (r,), dt)
    vt = _host_array(b + (r, m), dt) if compute_uv else None
    svd(ctx, mw.obj, u, s, vt, compute)
    return u, s, vt


Decomposition = namedtuple("Decomposition", "u_high s_high v_high u_low s_low v_low")
Decomposition.__doc__ = """Frozen top-k part (``u_high: N x k``, ``s_high: k``, ``v_high: k x M``)
and trainable rest (``u_low: N x (R-k)``, ``s_low``, ``v_low: (R-k) x M``) of a decomposition."""


def decompose_workspace_size(ctx: Context, w: ArrayLike, compute=None) -> int:
    """Workspace bytes :func:`decompose` needs (those of the SVD)."""
    (mw,) = ctx._mats((w, "W", "matrix", False))
    n = ctypes.c_size_t()
    check(lib.osft_decompose_workspace_size(ctx.handle, mw.ref, _compute(compute, mw),
                                            ctypes.byref(n)), "osft_decompose_workspace_size")
    return n.value


def decompose(ctx: Context, w: ArrayLike, k: int, u_high=None, s_high=None, v_high=None,
              u_low=None, s_low=None, v_low=None, compute=None) -> Decomposition:
    """Decompose ``W`` (``N x M`` or a batch) and split at rank ``k`` (``0 <= k <= min(N, M)``)
    into caller arrays; any part may be None (not wanted). Returns the parts as a
    :class:`Decomposition` of the arrays passed."""
    mats = ctx._mats((w, "W", "matrix", False), (u_high, "U_high", "matrix", True),
                     (s_high, "S_high", "vector", True), (v_high, "V_high", "matrix", True),
                     (u_low, "U_low", "matrix", True), (s_low, "S_low", "vector", True),
                     (v_low, "V_low", "matrix", True))
    mw = mats[0]
    check(lib.osft_decompose(ctx.handle, mw.ref, int(k), *[_ref(m) for m in mats[1:]],
                             _compute(compute, mw)), "osft_decompose")
    return Decomposition(u_high, s_high, v_high, u_low, s_low, v_low)


def decompose_np(w: ArrayLike, k: int, compute=None, dtype=None, ctx: Optional[Context] = None,
                 order: str = "C") -> Decomposition:
    """:func:`decompose` into newly allocated numpy arrays (``dtype`` as in :func:`svd_np`,
    ``order`` "C" or "F"). Host memory only."""
    ctx = ctx or default_context()
    _check_host(ctx, "decompose_np")
    (mw,) = ctx._mats((w, "W", "matrix", False))
    dt = _np_out_dtype(mw, dtype)
    b = mw.shape[:-2]
    n, m = mw.shape[-2:]
    r = min(n, m)
    k = int(k)
    if not 0 <= k <= r:
        # Same status as the library, before allocating negative shapes.
        raise error("RANK_OUT_OF_RANGE", f"k = {k} is outside [0, {r}] for a {n} x {m} matrix",
                    "osft.decompose_np")

    def mk(shape):
        a = np.empty(b + shape, dtype=dt, order="C")
        if order.upper() == "F" and len(shape) == 2:
            a = np.swapaxes(np.empty(b + shape[::-1], dtype=dt), -1, -2)
        return a

    parts = (mk((n, k)), mk((k,)), mk((k, m)), mk((n, r - k)), mk((r - k,)), mk((r - k, m)))
    return decompose(ctx, mw.obj, k, *parts, compute=compute)


# ---------------------------------------------------------------------------------------------
# Rank selection and layer importance (host values).

def _host_f64(values, name: str) -> np.ndarray:
    if hasattr(values, "__cuda_array_interface__"):
        raise error("DEVICE_MISMATCH", f"{name}: device memory; read it with osft.read_vector "
                    "first", "osft")
    return np.ascontiguousarray(np.asarray(values, dtype=np.float64).reshape(-1))


def select_rank(s: ArrayLike, rule: Union[str, int] = "fraction", param: float = 0.5) -> int:
    """The rank ``k`` a rule selects for host singular values ``s`` (descending, ``R = len(s)``).

    Rules: ``"fixed"`` (``k = param``), ``"fraction"`` (PEFT OSF's ``int(R * param)``: the float
    product truncated, so ``0.29`` of 100 is 28), ``"energy"``
    (smallest ``k`` holding ``param`` of ``sum s^2``), ``"entropy"`` (entropy effective rank;
    ``param`` ignored). Device vectors: :func:`read_vector` first.
    """
    sv = _host_f64(s, "s")
    k = ctypes.c_int64(-1)
    ptr = sv.ctypes.data_as(ctypes.POINTER(ctypes.c_double)) if sv.size else None
    check(lib.osft_select_rank(ptr, sv.size, _enum(rule, _RULES, "rank rule"), float(param),
                               ctypes.byref(k)), "osft_select_rank")
    return int(k.value)


def adaptive_ranks(importance: Sequence[float], full_ranks: Sequence[int], min_ratio: float = 0.5,
                   target_ratio: float = 1.0) -> np.ndarray:
    """The seed's adaptive rule (``auto_generate_target_svd_config``): per-layer ``k`` (int64
    array) from layer importances (see :func:`layer_importance`) and full ranks
    ``d_i = min(N_i, M_i)``. ``I_n = I_i / (mean(I) + 1e-8)``, ``CR = mrr + I_n * (trr - mrr)``
    with ``mrr = min_ratio * d``, ``trr = target_ratio * d`` (the seed: 0.5 and 1.0), and
    ``k = clamp(round(CR), 1, d)`` with Python's ``round`` (half to even); ``d = 0`` gives 0.
    A layer of average importance keeps ``trr``, more important ones more (up to ``d``).
    Raises ``INVALID_ARGUMENT`` for a non-finite importance or a mean importance that is not
    positive."""
    imp = _host_f64(importance, "importance")
    full = np.ascontiguousarray(np.asarray(full_ranks, dtype=np.int64).reshape(-1))
    if full.size != imp.size:
        raise error("INVALID_SHAPE", f"adaptive_ranks: {imp.size} importances but {full.size} "
                    "full ranks", "osft")
    out = np.full(imp.size, -1, dtype=np.int64)
    if imp.size == 0:
        return out
    check(lib.osft_adaptive_ranks(imp.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                                  full.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), imp.size,
                                  float(min_ratio), float(target_ratio),
                                  out.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))),
          "osft_adaptive_ranks")
    return out


def _results(n: int) -> Tuple[np.ndarray, Any]:
    out = np.full(max(n, 1), np.nan, dtype=np.float64)
    return out, out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))


def layer_importance_workspace_size(ctx: Context, w: ArrayLike, activations: ArrayLike,
                                    compute=None) -> int:
    """Workspace bytes for :func:`layer_importance`."""
    mw, ma = ctx._mats((w, "W", "matrix", False), (activations, "activations", "matrix", False))
    n = ctypes.c_size_t()
    check(lib.osft_layer_importance_workspace_size(ctx.handle, mw.ref, ma.ref,
                                                   _compute(compute, mw), ctypes.byref(n)),
          "osft_layer_importance_workspace_size")
    return n.value


def layer_importance(ctx: Context, w: ArrayLike, activations: ArrayLike, compute=None):
    """Layer importance ``mean over samples of cos(x[:R], (W x)[:R])``; ``activations`` holds one
    sample per row (``S x M``), ``w`` is ``N x M``. A float, or an array per batch entry."""
    mw, ma = ctx._mats((w, "W", "matrix", False), (activations, "activations", "matrix", False))
    batch = max(mw.batch, ma.batch)
    out, p = _results(batch)
    check(lib.osft_layer_importance(ctx.handle, mw.ref, ma.ref, _compute(compute, mw), p, batch),
          "osft_layer_importance")
    return _out(out[:batch], len(mw.shape) == 3 or len(ma.shape) == 3)


def read_vector_workspace_size(ctx: Context, v: ArrayLike) -> int:
    """Workspace bytes for :func:`read_vector`."""
    (mv,) = ctx._mats((v, "v", "vector", False))
    n = ctypes.c_size_t()
    check(lib.osft_read_vector_workspace_size(ctx.handle, mv.ref, ctypes.byref(n)),
          "osft_read_vector_workspace_size")
    return n.value


def read_vector(ctx: Context, v: ArrayLike) -> np.ndarray:
    """A vector (e.g. singular values on any device, any dtype) as host float64: shape
    ``(len,)``, or ``(batch, len)`` for a 2-D batch of vectors."""
    (mv,) = ctx._mats((v, "v", "vector", False))
    n = int(mv.desc.rows) * int(mv.desc.cols)
    total = n * mv.batch
    out = np.full(max(total, 1), np.nan, dtype=np.float64)
    check(lib.osft_read_vector(ctx.handle, mv.ref,
                               out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), total),
          "osft_read_vector")
    out = out[:total]
    return out.reshape(mv.batch, n) if len(mv.shape) == 2 else out


# ---------------------------------------------------------------------------------------------
# Reconstruction.

def _parts(ctx: Context, out_spec, u_high, s_high, v_high, u_low, s_low, v_low):
    return ctx._mats(out_spec, (u_high, "U_high", "matrix", False),
                     (s_high, "S_high", "vector", False), (v_high, "V_high", "matrix", False),
                     (u_low, "U_low", "matrix", False), (s_low, "S_low", "vector", False),
                     (v_low, "V_low", "matrix", False))


def reconstruct_workspace_size(ctx: Context, out: ArrayLike, u_high=None, s_high=None,
                               v_high=None, u_low=None, s_low=None, v_low=None,
                               compute=None) -> int:
    """Workspace bytes for :func:`reconstruct`."""
    mats = _parts(ctx, (out, "out", "matrix", False), u_high, s_high, v_high, u_low, s_low, v_low)
    n = ctypes.c_size_t()
    c = _compute(compute, next((m for m in mats[1:] if m is not None), None))
    check(lib.osft_reconstruct_workspace_size(ctx.handle, *[_ref(m) for m in mats[1:]],
                                              mats[0].ref, c, ctypes.byref(n)),
          "osft_reconstruct_workspace_size")
    return n.value


def reconstruct(ctx: Context, out: ArrayLike, u_high=None, s_high=None, v_high=None, u_low=None,
                s_low=None, v_low=None, compute=None):
    """``out = U_high diag(S_high) V_high + U_low diag(S_low) V_low`` (``N x M``, any dtype and
    layout); each part is given by all three arrays or omitted (three Nones); at least one part.
    Parts may be batches or single matrices broadcast over ``out``'s batch. Returns ``out``."""
    mats = _parts(ctx, (out, "out", "matrix", True), u_high, s_high, v_high, u_low, s_low, v_low)
    c = _compute(compute, next((m for m in mats[1:] if m is not None), None))
    check(lib.osft_reconstruct(ctx.handle, *[_ref(m) for m in mats[1:]], mats[0].ref, c),
          "osft_reconstruct")
    return out


def reconstruct_np(u_high=None, s_high=None, v_high=None, u_low=None, s_low=None, v_low=None,
                   compute=None, dtype=None, ctx: Optional[Context] = None) -> np.ndarray:
    """:func:`reconstruct` into a new C-order numpy array (``dtype`` default: the first part's
    for float32/64, else float32). Also accepts a :class:`Decomposition` as first argument."""
    if isinstance(u_high, Decomposition):
        u_high, s_high, v_high, u_low, s_low, v_low = u_high
    ctx = ctx or default_context()
    _check_host(ctx, "reconstruct_np")
    us = [(u_high, v_high), (u_low, v_low)]
    first = None
    for u, v in us:
        if u is not None and v is not None:
            mu, mv = ctx._mats((u, "U", "matrix", False), (v, "V", "matrix", False))
            first = first or mu
            b = mu.shape[:-2] if len(mu.shape) == 3 else mv.shape[:-2]
            shape = b + (mu.shape[-2], mv.shape[-1])
            break
    else:
        raise error("INVALID_ARGUMENT", "reconstruct_np: no part given", "osft")
    out = np.empty(shape, dtype=_np_out_dtype(first, dtype))
    return reconstruct(ctx, out, u_high, s_high, v_high, u_low, s_low, v_low, compute)


# ---------------------------------------------------------------------------------------------
# Projection.

def project_workspace_size(ctx: Context, side, x: ArrayLike, u_high=None, v_high=None,
                           out=None) -> int:
    """Workspace bytes for :func:`project` (same arguments)."""
    mu, mv, mx, mo = ctx._mats((u_high, "U_high", "matrix", False),
                               (v_high, "V_high", "matrix", False), (x, "X", "matrix", False),
                               (out, "out", "matrix", False))
    n = ctypes.c_size_t()
    check(lib.osft_project_workspace_size(ctx.handle, _enum(side, _SIDES, "side"), _ref(mu),
                                          _ref(mv), mx.ref, _ref(mo), ctypes.byref(n)),
          "osft_project_workspace_size")
    return n.value


def project(ctx: Context, side, x: ArrayLike, u_high: Optional[ArrayLike] = None,
            v_high: Optional[ArrayLike] = None, out: Optional[ArrayLike] = None):
    """Project ``x`` away from the frozen subspace; returns ``out`` (or ``x`` when in place).

    * ``"left"``: ``X - U_high (U_high^T X)`` (needs ``u_high``, ``N x k``)
    * ``"right"``: ``X - (X V_high^T) V_high`` (needs ``v_high``, ``k x M``)
    * ``"both"``: ``(I - U_h U_h^T) X (I - V_h^T V_h)``

    ``x`` may be a gradient, an optimizer update or a trainable factor, one matrix or a batch
    (with one basis broadcast or one per entry); bases must have ``x``'s dtype and orthonormal
    columns / rows. ``out`` (same shape and dtype, not overlapping ``x``) or in place when None.
    """
    mu, mv, mx, mo = ctx._mats((u_high, "U_high", "matrix", False),
                               (v_high, "V_high", "matrix", False),
                               (x, "X", "matrix", out is None), (out, "out", "matrix", True))
    check(lib.osft_project(ctx.handle, _enum(side, _SIDES, "side"), _ref(mu), _ref(mv), mx.ref,
                           _ref(mo)), "osft_project")
    return x if out is None else out


def project_np(side, x: ArrayLike, u_high=None, v_high=None,
               ctx: Optional[Context] = None) -> np.ndarray:
    """Out-of-place :func:`project` into a new C-order numpy array of ``x``'s dtype."""
    ctx = ctx or default_context()
    _check_host(ctx, "project_np")
    (mx,) = ctx._mats((x, "X", "matrix", False))
    out = np.empty(mx.shape, dtype=numpy_dtype(mx.dtype))
    return project(ctx, side, mx.obj, u_high, v_high, out)


def project_partial(ctx: Context, side, basis: ArrayLike, x: ArrayLike, coef: ArrayLike):
    """Sharded projection, phase 1 (``side`` left or right): this shard's partial coefficients
    ``coef = U_r^T X_r`` (left, ``k x M``) or ``X_r V_r^T`` (right, ``N x k``), overwriting
    ``coef`` (``x``'s dtype, or float32 for float16/bfloat16 data). All-reduce (sum) ``coef``
    over the shards, then call :func:`project_apply`. Returns ``coef``."""
    mb, mx, mc = ctx._mats((basis, "basis", "matrix", False), (x, "X", "matrix", False),
                           (coef, "coef", "matrix", True))
    check(lib.osft_project_partial(ctx.handle, _enum(side, _SIDES, "side"), mb.ref, mx.ref,
                                   mc.ref), "osft_project_partial")
    return coef


def project_apply_workspace_size(ctx: Context, coef: ArrayLike, x: ArrayLike) -> int:
    """Workspace bytes for :func:`project_apply`."""
    mc, mx = ctx._mats((coef, "coef", "matrix", False), (x, "X", "matrix", False))
    n = ctypes.c_size_t()
    check(lib.osft_project_apply_workspace_size(ctx.handle, mc.ref, mx.ref, ctypes.byref(n)),
          "osft_project_apply_workspace_size")
    return n.value


def project_apply(ctx: Context, side, basis: ArrayLike, coef: ArrayLike, x: ArrayLike):
    """Sharded projection, phase 2: with the all-reduced ``coef``, ``X_r <- X_r - U_r coef``
    (left) or ``X_r <- X_r - coef V_r`` (right), in place. Returns ``x``."""
    mb, mc, mx = ctx._mats((basis, "basis", "matrix", False), (coef, "coef", "matrix", False),
                           (x, "X", "matrix", True))
    check(lib.osft_project_apply(ctx.handle, _enum(side, _SIDES, "side"), mb.ref, mc.ref, mx.ref),
          "osft_project_apply")
    return x


class Projector:
    """Repeated projection against the same frozen bases (``osft_projector``).

    ``strategy``: ``"auto"``, ``"coefficient"`` (``B (B^T X)``) or ``"cached_projector"``
    (``P = I - B B^T`` cached, float32/64 bases). The bases' memory is read on every apply: the
    projector keeps references to them, and they must not change while it exists.
    """

    def __init__(self, ctx: Context, side, u_high: Optional[ArrayLike] = None,
                 v_high: Optional[ArrayLike] = None, strategy: Union[str, int] = "auto"):
        mu, mv = ctx._mats((u_high, "U_high", "matrix", False), (v_high, "V_high", "matrix", False))
        h = ctypes.c_void_p()
        check(lib.osft_projector_create(ctx.handle, _enum(side, _SIDES, "side"), _ref(mu), _ref(mv),
                                        _enum(strategy, _STRATEGIES, "strategy"), ctypes.byref(h)),
              "osft_projector_create")
        self._h: Optional[int] = h.value
        # Keep the context object (its caller workspace) and the bases (and any DLPack
        # capsules) alive for as long as the projector may read them.
        self._ctx = ctx
        self._keep = (mu, mv)

    @property
    def handle(self) -> int:
        if self._h is None:
            raise error("NULL_POINTER", "the projector is closed", "osft.Projector")
        return self._h

    def apply(self, x: ArrayLike, out: Optional[ArrayLike] = None):
        """Project ``x`` into ``out``, or in place when None; returns the result array."""
        mx, mo = self._ctx._mats((x, "X", "matrix", out is None), (out, "out", "matrix", True)) \
            if not self._ctx.closed else self._mats_closed(x, out)
        check(lib.osft_projector_apply(self.handle, mx.ref, _ref(mo)), "osft_projector_apply")
        return x if out is None else out

    __call__ = apply

    def _mats_closed(self, x, out):
        # The Python context was closed; the library keeps it alive for this projector.
        c = self._ctx
        return (as_mat(x, "X", "matrix", out is None, c._stream, c.device),
                None if out is None else as_mat(out, "out", "matrix", True, c._stream, c.device))

    @property
    def strategies(self) -> Tuple[Optional[str], Optional[str]]:
        """(left, right) strategy in use: ``"coefficient"``, ``"cached_projector"`` or None for
        a side not projected."""
        left, right = ctypes.c_int32(-1), ctypes.c_int32(-1)
        check(lib.osft_projector_strategies(self.handle, ctypes.byref(left), ctypes.byref(right)),
              "osft_projector_strategies")
        return (_STRATEGY_NAMES.get(left.value), _STRATEGY_NAMES.get(right.value))

    def close(self) -> None:
        h, self._h = self._h, None
        if h is not None:
            lib.osft_projector_destroy(h)

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover
            pass


# ---------------------------------------------------------------------------------------------
# Diagnostics.

def leakage_workspace_size(ctx: Context, side, basis: ArrayLike, x: ArrayLike) -> int:
    """Workspace bytes for :func:`leakage`."""
    mb, mx = ctx._mats((basis, "basis", "matrix", False), (x, "X", "matrix", False))
    n = ctypes.c_size_t()
    check(lib.osft_leakage_workspace_size(ctx.handle, _enum(side, _SIDES, "side"), mb.ref, mx.ref,
                                          ctypes.byref(n)), "osft_leakage_workspace_size")
    return n.value


def leakage(ctx: Context, side, basis: ArrayLike, x: ArrayLike):
    """``||U_high^T X||_F / ||X||_F`` (left; basis ``U_high``) or ``||X V_high^T||_F / ||X||_F``
    (right; basis ``V_high``); 0 for a perfectly projected (or zero) ``x``."""
    mb, mx = ctx._mats((basis, "basis", "matrix", False), (x, "X", "matrix", False))
    out, p = _results(mx.batch)
    check(lib.osft_leakage(ctx.handle, _enum(side, _SIDES, "side"), mb.ref, mx.ref, p, mx.batch),
          "osft_leakage")
    return _out(out[:mx.batch], len(mx.shape) == 3)


def orthonormality_error_workspace_size(ctx: Context, side, basis: ArrayLike) -> int:
    """Workspace bytes for :func:`orthonormality_error`."""
    (mb,) = ctx._mats((basis, "basis", "matrix", False))
    n = ctypes.c_size_t()
    check(lib.osft_orthonormality_error_workspace_size(ctx.handle, _enum(side, _SIDES, "side"),
                                                       mb.ref, ctypes.byref(n)),
          "osft_orthonormality_error_workspace_size")
    return n.value


def orthonormality_error(ctx: Context, side, basis: ArrayLike):
    """``||B^T B - I||_F`` of a U-side basis's columns (``"left"``) or ``||B B^T - I||_F`` of a
    V-side basis's rows (``"right"``)."""
    (mb,) = ctx._mats((basis, "basis", "matrix", False))
    out, p = _results(mb.batch)
    check(lib.osft_orthonormality_error(ctx.handle, _enum(side, _SIDES, "side"), mb.ref, p,
                                        mb.batch), "osft_orthonormality_error")
    return _out(out[:mb.batch], len(mb.shape) == 3)


def reconstruction_error_workspace_size(ctx: Context, w: ArrayLike, u_high=None, s_high=None,
                                        v_high=None, u_low=None, s_low=None, v_low=None,
                                        compute=None) -> int:
    """Workspace bytes for :func:`reconstruction_error`."""
    mats = _parts(ctx, (w, "W", "matrix", False), u_high, s_high, v_high, u_low, s_low, v_low)
    n = ctypes.c_size_t()
    check(lib.osft_reconstruction_error_workspace_size(ctx.handle, *[_ref(m) for m in mats],
                                                       _compute(compute, mats[0]),
                                                       ctypes.byref(n)),
          "osft_reconstruction_error_workspace_size")
    return n.value


def reconstruction_error(ctx: Context, w: ArrayLike, u_high=None, s_high=None, v_high=None,
                         u_low=None, s_low=None, v_low=None, compute=None):
    """``||W - U_h S_h V_h - U_l S_l V_l||_F / ||W||_F`` (absolute when ``W = 0``), per batch
    entry of ``w``; parts as for :func:`reconstruct`."""
    mats = _parts(ctx, (w, "W", "matrix", False), u_high, s_high, v_high, u_low, s_low, v_low)
    mw = mats[0]
    out, p = _results(mw.batch)
    check(lib.osft_reconstruction_error(ctx.handle, *[_ref(m) for m in mats],
                                        _compute(compute, mw), p, mw.batch),
          "osft_reconstruction_error")
    return _out(out[:mw.batch], len(mw.shape) == 3)
