"""Diagnostics: leakage of a matrix into the frozen subspace, orthonormality error of a basis,
and relative reconstruction error of a decomposition. Conventions: :mod:`osft._marshal`."""

from __future__ import annotations

import ctypes

from ._context import Context
from ._errors import check
from ._lib import lib
from ._marshal import _SIDES, ArrayLike, _compute, _enum, _out, _parts, _ref, _results

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
