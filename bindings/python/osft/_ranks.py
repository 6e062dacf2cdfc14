"""Rank selection on host singular values (the fixed, fraction, energy and entropy rules; the
seed's adaptive per-layer rule) and its inputs: layer importance, and vectors read back to the
host. Conventions: :mod:`osft._marshal`."""

from __future__ import annotations

import ctypes
from typing import Sequence, Union

import numpy as np

from ._context import Context
from ._errors import check, error
from ._lib import lib
from ._marshal import _RULES, ArrayLike, _compute, _enum, _host_f64, _out, _results

# ---------------------------------------------------------------------------------------------
# Rank selection and layer importance (host values).

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
