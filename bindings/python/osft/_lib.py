"""Loading libosft and declaring the C ABI of ``include/osft.h`` with ctypes.

Nothing here is public API; :mod:`osft` re-exports what users need.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import List, Optional, Tuple

#: ``OSFT_ABI_VERSION`` of the header this binding was written against.
ABI_VERSION = 2

_LIBNAME = "libosft.so"


class osft_matrix(ctypes.Structure):
    """``struct osft_matrix`` (72 bytes, no padding): pointer, dtype, device, shape, element
    strides, batch."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("device", ctypes.c_int32),
        ("device_ordinal", ctypes.c_int32),
        ("_reserved", ctypes.c_int32),
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
        ("row_stride", ctypes.c_int64),
        ("col_stride", ctypes.c_int64),
        ("batch", ctypes.c_int64),
        ("batch_stride", ctypes.c_int64),
    ]


assert ctypes.sizeof(osft_matrix) == 72, "osft_matrix must be 72 bytes"

_P = ctypes.POINTER
_M = _P(osft_matrix)
_vp = ctypes.c_void_p
_i32 = ctypes.c_int32
_i64 = ctypes.c_int64
_sz = ctypes.c_size_t
_dp = _P(ctypes.c_double)
_szp = _P(ctypes.c_size_t)

# name: (restype, argtypes). Status-returning functions have restype int32.
_PROTOTYPES = {
    "osft_version_major": (ctypes.c_uint32, []),
    "osft_version_minor": (ctypes.c_uint32, []),
    "osft_version_patch": (ctypes.c_uint32, []),
    "osft_abi_version": (ctypes.c_uint32, []),
    "osft_status_string": (ctypes.c_char_p, [_i32]),
    "osft_last_error_message": (ctypes.c_char_p, []),
    "osft_debug_panic": (_i32, []),
    "osft_context_create": (_i32, [_i32, _i32, _P(_vp)]),
    "osft_context_destroy": (None, [_vp]),
    "osft_context_backend": (_i32, [_vp, _P(_i32)]),
    "osft_context_set_stream": (_i32, [_vp, _vp]),
    "osft_context_get_stream": (_i32, [_vp, _P(_vp)]),
    "osft_context_set_workspace": (_i32, [_vp, _vp, _sz]),
    "osft_context_release_workspace": (_i32, [_vp]),
    "osft_context_workspace_bytes": (_i32, [_vp, _szp]),
    "osft_context_set_svd_algorithm": (_i32, [_vp, _i32]),
    "osft_context_get_svd_algorithm": (_i32, [_vp, _P(_i32)]),
    "osft_context_set_math_mode": (_i32, [_vp, _i32]),
    "osft_context_get_math_mode": (_i32, [_vp, _P(_i32)]),
    "osft_context_set_svd_diagnostics": (_i32, [_vp, _i32]),
    "osft_context_get_svd_diagnostics": (_i32, [_vp, _P(_i32)]),
    "osft_svd_workspace_size": (_i32, [_vp, _M, _i32, _szp]),
    "osft_svd": (_i32, [_vp, _M, _M, _M, _M, _i32]),
    "osft_svd_list_workspace_size": (_i32, [_vp, _sz, _M, _i32, _szp]),
    "osft_svd_list": (_i32, [_vp, _sz, _M, _M, _M, _M, _i32]),
    "osft_decompose_workspace_size": (_i32, [_vp, _M, _i32, _szp]),
    "osft_decompose": (_i32, [_vp, _M, _i64, _M, _M, _M, _M, _M, _M, _i32]),
    "osft_select_rank": (_i32, [_dp, _sz, _i32, ctypes.c_double, _P(_i64)]),
    "osft_adaptive_ranks": (_i32, [_dp, _P(_i64), _sz, ctypes.c_double, ctypes.c_double, _P(_i64)]),
    "osft_layer_importance": (_i32, [_vp, _M, _M, _i32, _dp, _sz]),
    "osft_layer_importance_workspace_size": (_i32, [_vp, _M, _M, _i32, _szp]),
    "osft_read_vector": (_i32, [_vp, _M, _dp, _sz]),
    "osft_read_vector_workspace_size": (_i32, [_vp, _M, _szp]),
    "osft_reconstruct": (_i32, [_vp, _M, _M, _M, _M, _M, _M, _M, _i32]),
    "osft_reconstruct_workspace_size": (_i32, [_vp, _M, _M, _M, _M, _M, _M, _M, _i32, _szp]),
    "osft_project": (_i32, [_vp, _i32, _M, _M, _M, _M]),
    "osft_project_workspace_size": (_i32, [_vp, _i32, _M, _M, _M, _M, _szp]),
    "osft_project_partial": (_i32, [_vp, _i32, _M, _M, _M]),
    "osft_project_apply": (_i32, [_vp, _i32, _M, _M, _M]),
    "osft_project_apply_workspace_size": (_i32, [_vp, _M, _M, _szp]),
    "osft_projector_create": (_i32, [_vp, _i32, _M, _M, _i32, _P(_vp)]),
    "osft_projector_apply": (_i32, [_vp, _M, _M]),
    "osft_projector_strategies": (_i32, [_vp, _P(_i32), _P(_i32)]),
    "osft_projector_destroy": (None, [_vp]),
    "osft_leakage": (_i32, [_vp, _i32, _M, _M, _dp, _sz]),
    "osft_leakage_workspace_size": (_i32, [_vp, _i32, _M, _M, _szp]),
    "osft_orthonormality_error": (_i32, [_vp, _i32, _M, _dp, _sz]),
    "osft_orthonormality_error_workspace_size": (_i32, [_vp, _i32, _M, _szp]),
    "osft_reconstruction_error": (_i32, [_vp, _M, _M, _M, _M, _M, _M, _M, _i32, _dp, _sz]),
    "osft_reconstruction_error_workspace_size": (_i32, [_vp, _M, _M, _M, _M, _M, _M, _M, _i32, _szp]),
}


class LibraryNotFoundError(ImportError):
    """No libosft could be loaded; ``tried`` lists ``(candidate, reason)`` pairs in search order."""

    def __init__(self, tried: List[Tuple[str, str]]):
        self.tried = tried
        lines = "\n".join(f"  - {c}: {r}" for c, r in tried)
        super().__init__(
            "osft: could not load the native library libosft.\n"
            f"Tried, in order:\n{lines}\n"
            "Install the package with `pip install ./bindings/python` from a checkout of the osft "
            "repository (it builds libosft with cargo and bundles it), or build it with "
            "`cargo build --release` and point OSFT_LIBRARY at target/release/libosft.so."
        )


def _checkout_root(package_dir: Path):
    """The osft repository root when this package is imported from its checkout's
    ``bindings/python/osft`` (an editable install, or ``PYTHONPATH=bindings/python``), else None:
    an installed copy of the package says nothing about where a checkout is."""
    root = package_dir.parent.parent.parent
    if (package_dir.parent.name, package_dir.parent.parent.name) == ("python", "bindings") and (
            root / "Cargo.toml").is_file():
        return root
    return None


def _candidates():
    """(label, path-or-name, why-not) in search order, lazily (find_library runs subprocesses,
    so it is only asked when everything before it failed); a None path means 'not applicable'."""
    here = Path(__file__).resolve().parent
    env = os.environ.get("OSFT_LIBRARY")
    yield "OSFT_LIBRARY", (env if env else None), "not set"
    # Put there by the package build (setup.py: cargo via setuptools-rust).
    yield "bundled", str(here / _LIBNAME), ""
    root = _checkout_root(here)
    yield ("development checkout", str(root / "target" / "release" / _LIBNAME) if root else None,
           "not imported from a checkout's bindings/python")
    yield "find_library('osft')", ctypes.util.find_library("osft"), "nothing found"


#: Functions added while ABI version 2 was current (an addition keeps the version,
#: docs/abi-policy.md): a libosft of ABI 2 built before them still loads, and the Python calls
#: that need them raise :class:`osft.OsftError` (see :func:`has`).
_OPTIONAL = frozenset({
    "osft_context_set_svd_diagnostics", "osft_context_get_svd_diagnostics",
})


def _declare(lib: ctypes.CDLL) -> None:
    for name, (res, args) in _PROTOTYPES.items():
        if name in _OPTIONAL and not hasattr(lib, name):
            continue
        fn = getattr(lib, name)  # AttributeError when the library lacks a symbol
        fn.restype = res
        fn.argtypes = args


def _incompatible(lib: ctypes.CDLL) -> Optional[str]:
    """Why ``lib`` is not a libosft this binding can use, or None. The ABI version is checked
    before the symbols, so a libosft of another ABI is named as such rather than by the first
    function it lacks."""
    try:
        abi_version = lib.osft_abi_version
    except AttributeError:
        return "not a libosft (no osft_abi_version)"
    abi_version.restype, abi_version.argtypes = ctypes.c_uint32, []
    abi = abi_version()
    if abi != ABI_VERSION:
        return f"ABI version {abi}, this binding needs {ABI_VERSION}"
    try:
        _declare(lib)
    except AttributeError as e:
        return f"not a compatible libosft (missing symbol: {e})"
    return None


def load() -> Tuple[ctypes.CDLL, str]:
    """Load libosft following the documented search order; raise LibraryNotFoundError."""
    tried: List[Tuple[str, str]] = []
    for label, path, why_not in _candidates():
        if path is None:
            tried.append((label, why_not))
            continue
        where = f"{label} ({path})"
        if label != "find_library('osft')" and not os.path.exists(path):
            tried.append((where, "no such file"))
            if label == "OSFT_LIBRARY":
                # An explicit path that does not exist is a mistake worth stopping on.
                raise LibraryNotFoundError(tried)
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append((where, f"dlopen failed: {e}"))
            if label == "OSFT_LIBRARY":
                raise LibraryNotFoundError(tried) from e
            continue
        why = _incompatible(lib)
        if why is not None:
            if label == "OSFT_LIBRARY":
                # As for a missing file: the explicit choice is wrong, the others are not tried.
                tried.append((where, why + "; OSFT_LIBRARY must name a compatible libosft "
                              "(unset it to search the other places)"))
                raise LibraryNotFoundError(tried)
            tried.append((where, why))
            continue
        return lib, path
    raise LibraryNotFoundError(tried)


lib, library_path = load()


def has(name: str) -> bool:
    """Whether the loaded libosft exports ``name`` (for the optional functions)."""
    return hasattr(lib, name)
