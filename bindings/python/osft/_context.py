"""Versions of the loaded libosft, and :class:`Context` (``osft_context``): the executor, its
settings (stream, SVD algorithm, diagnostics, math mode) and workspace. Conventions of the
functional API: :mod:`osft._marshal`."""

from __future__ import annotations

import ctypes
import threading
from typing import Optional, Tuple, Union

from . import torch as _torch_glue
from ._errors import check, error
from ._lib import has, lib
from ._marshal import (
    _BACKEND_NAMES,
    _BACKENDS,
    _MATH_MODE_NAMES,
    _MATH_MODES,
    _SVD_ALGORITHM_NAMES,
    _SVD_ALGORITHMS,
    ArrayLike,
    _enum,
    _Owned,
)
from ._tensor import CUDA, HOST, as_mat, workspace_region

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

class Context(_Owned):
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
        """Use ``buffer`` (a writable, contiguous array of any dtype in the context's memory: host
        memory for a CPU context, its device's for a CUDA one) as the workspace, as
        ``cublasSetWorkspace``. It is kept alive by the context until :meth:`release_workspace`
        or another :meth:`set_workspace`."""
        ptr, nbytes, device, ordinal = workspace_region(buffer)
        want = CUDA if self.is_cuda else HOST
        if device != want or (ordinal is not None and device == CUDA and ordinal != self.device):
            where = "host memory" if device == HOST else f"CUDA device {ordinal if ordinal is not None else '?'}"
            ours = f"CUDA device {self.device}" if self.is_cuda else "the CPU"
            raise error("DEVICE_MISMATCH", f"workspace: the buffer is in {where}, the context runs on {ours}",
                        "osft")
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
