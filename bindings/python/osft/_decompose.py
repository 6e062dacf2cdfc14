"""SVD (single, batched, a list of shapes), the decomposition split at rank ``k`` into frozen
and trainable parts, and reconstruction from those parts; with the ``*_np`` forms that allocate
numpy outputs. Conventions: :mod:`osft._marshal`."""

from __future__ import annotations

import ctypes
from collections import namedtuple
from typing import Optional, Sequence

import numpy as np

from ._context import Context, default_context
from ._errors import check, error
from ._lib import lib
from ._marshal import (
    ArrayLike,
    _check_host,
    _compute,
    _desc_array,
    _host_array,
    _np_out_dtype,
    _parts,
    _ref,
)

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
# Reconstruction.

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
