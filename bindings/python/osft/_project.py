"""Projection away from the frozen subspace: one call (:func:`project`), the two phases of
sharded projection, and :class:`Projector` for repeated projection against the same bases.
Conventions: :mod:`osft._marshal`."""

from __future__ import annotations

import ctypes
from typing import Optional, Tuple, Union

import numpy as np

from ._context import Context, default_context
from ._errors import check, error
from ._lib import lib
from ._marshal import _SIDES, _STRATEGIES, _STRATEGY_NAMES, ArrayLike, _check_host, _enum, _Owned, _ref
from ._tensor import as_mat, numpy_dtype

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


class Projector(_Owned):
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
