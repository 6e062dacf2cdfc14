"""osft: Python binding (ctypes) of libosft, the numerical core of orthogonal subspace
fine-tuning — SVD, decompose, rank selection, reconstruct, projection of gradients away from a
frozen subspace, two-phase sharded projection, diagnostics — on caller-owned arrays of any
framework, without copies.

Finding libosft
---------------
The native library is loaded at import time from the first of:

1. ``$OSFT_LIBRARY`` — an explicit path to ``libosft.so``. When it is set, it must load: a
   missing or broken file raises instead of falling through to the other candidates.
2. ``libosft.so`` bundled inside the installed package directory (``osft/libosft.so``), which
   ``pip install ./bindings/python`` builds with cargo and puts there.
3. Only when the package is imported from a checkout's ``bindings/python/osft`` (an editable
   install, or ``PYTHONPATH=bindings/python``): that checkout's ``target/release/libosft.so``
   (``cargo build --release``).
4. ``ctypes.util.find_library("osft")`` (the system's library search path).

If none loads, ``import osft`` raises :class:`osft.LibraryNotFoundError` (an ``ImportError``)
that lists every candidate and why it failed. The library's ABI version must be
:data:`ABI_VERSION`. :data:`library_path` says which file was loaded.

Arrays
------
numpy arrays (float32, float64, float16, and ``ml_dtypes.bfloat16``), any object with
``__dlpack__`` (PyTorch, JAX, CuPy, numpy), ``__cuda_array_interface__`` or
``__array_interface__``. 2-D ``(rows, cols)`` or 3-D ``(batch, rows, cols)`` matrices; 1-D or
2-D ``(batch, len)`` vectors for singular values. Strides in any non-negative layout (C, Fortran,
transposed views, padded slices); negative strides (``a[::-1]``) are rejected with
:class:`InvalidStrideError` — osft never copies implicitly. See :mod:`osft._tensor`.

PyTorch
-------
:mod:`osft.torch` is the model-level workflow (targets by name, batched decomposition, gradient
and update projection, task sequence, DDP / FSDP2 / DeepSpeed); it is imported on first use and
needs torch. ``import osft`` itself never imports torch.

Errors
------
Every failure raises :class:`OsftError` (``.status`` name, ``.code``, ``.message`` — the
library's thread-local last-error message), as the subclass for its status, e.g.
:class:`InvalidShapeError`, :class:`DtypeError`, :class:`RankOutOfRangeError`.

Example
-------
>>> import numpy as np, osft
>>> w = np.random.default_rng(0).standard_normal((64, 32))
>>> with osft.Context("cpu") as ctx:
...     d = osft.decompose_np(w, k=8, ctx=ctx)
...     g = np.random.default_rng(1).standard_normal((64, 32))
...     _ = osft.project(ctx, "both", g, d.u_high, d.v_high)    # in place
...     round(osft.leakage(ctx, "left", d.u_high, g), 12)
0.0
"""

from ._context import (
    Context,
    abi_version,
    debug_panic,
    default_context,
    version,
)
from ._decompose import (
    Decomposition,
    decompose,
    decompose_np,
    decompose_workspace_size,
    reconstruct,
    reconstruct_np,
    reconstruct_workspace_size,
    svd,
    svd_list,
    svd_list_workspace_size,
    svd_np,
    svd_workspace_size,
)
from ._diagnostics import (
    leakage,
    leakage_workspace_size,
    orthonormality_error,
    orthonormality_error_workspace_size,
    reconstruction_error,
    reconstruction_error_workspace_size,
)
from ._errors import (
    STATUS,
    AllocationFailedError,
    BackendUnavailableError,
    DeviceMismatchError,
    DtypeError,
    InternalError,
    InvalidArgumentError,
    InvalidShapeError,
    InvalidStrideError,
    MisalignedError,
    NonFiniteError,
    NotConvergedError,
    NullPointerError,
    OsftError,
    OverlapError,
    PreconditionError,
    RankOutOfRangeError,
    SizeOverflowError,
    WorkspaceTooSmallError,
    last_error_message,
    status_string,
)
from ._lib import ABI_VERSION, LibraryNotFoundError, library_path, osft_matrix
from ._project import (
    Projector,
    project,
    project_apply,
    project_apply_workspace_size,
    project_np,
    project_partial,
    project_workspace_size,
)
from ._ranks import (
    adaptive_ranks,
    layer_importance,
    layer_importance_workspace_size,
    read_vector,
    read_vector_workspace_size,
    select_rank,
)
from ._tensor import as_mat

__version__ = "0.2.0"

__all__ = [
    "ABI_VERSION", "LibraryNotFoundError", "library_path", "osft_matrix", "STATUS",
    "OsftError", "NullPointerError", "InvalidShapeError", "InvalidStrideError", "OverlapError",
    "SizeOverflowError", "MisalignedError", "DtypeError", "RankOutOfRangeError",
    "InvalidArgumentError", "PreconditionError", "NotConvergedError", "NonFiniteError", "WorkspaceTooSmallError",
    "DeviceMismatchError", "BackendUnavailableError", "AllocationFailedError", "InternalError",
    "last_error_message", "status_string", "as_mat",
    "Context", "Decomposition", "Projector", "version", "abi_version", "debug_panic",
    "default_context",
    "svd", "svd_np", "svd_list", "svd_workspace_size", "svd_list_workspace_size",
    "decompose", "decompose_np", "decompose_workspace_size",
    "select_rank", "adaptive_ranks", "layer_importance", "layer_importance_workspace_size",
    "read_vector", "read_vector_workspace_size",
    "reconstruct", "reconstruct_np", "reconstruct_workspace_size",
    "project", "project_np", "project_workspace_size", "project_partial", "project_apply",
    "project_apply_workspace_size", "Projector",
    "leakage", "leakage_workspace_size", "orthonormality_error",
    "orthonormality_error_workspace_size", "reconstruction_error",
    "reconstruction_error_workspace_size",
]
