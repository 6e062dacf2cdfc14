"""Distributed pieces of the OSFT workflow: cost partitioning of the decomposition work, and
projection of row- or column-sharded tensors through osft's two-phase API.

How each setting is handled (see also ``bindings/python/README.md``):

* **DDP** (bases replicated on every rank): projection is linear, so projecting each rank's local
  gradient before the all-reduce equals projecting the reduced gradient. :class:`osft.torch.OSFT`
  projects in autograd hooks on its stacked parameters (one osft call per shape group and factor),
  which run before DDP's reduction hooks; nothing else is needed, and no extra collective.
* **Row/column shards** (FSDP2 ``DTensor`` ``Shard`` placements of a weight and of its basis along
  the same axis): the coefficient ``U_high^T X`` (left) or ``X V_high^T`` (right) is a sum of
  per-shard partials. :func:`project_sharded_` computes this shard's partial with
  :func:`osft.project_partial`, sums it with ``torch.distributed.all_reduce`` and applies it with
  :func:`osft.project_apply`: one small ``k x M`` (or ``N x k``) collective, never an ``M x M``
  Gram matrix. :func:`project_dtensor_` does the same from DTensor placements, and
  :func:`project_dense_row_sharded_` the both-side projection of a row-sharded dense gradient.
* **Decomposition work** is split across ranks by cost (``N * M * min(N, M)``, the SVD's flops up
  to a constant) with :func:`partition_by_cost` (greedy, largest first, onto the least-loaded
  rank), not by matrix count; :class:`osft.torch.OSFT` then all-reduces the zero-filled results
  of each shape group (one collective per group, see its docstring).
"""

from __future__ import annotations

import heapq
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist

import osft as _osft

from .context import context_for


def decomposition_cost(n: int, m: int) -> int:
    """The relative cost of decomposing an ``n x m`` matrix: ``n * m * min(n, m)`` (flops of a
    thin SVD up to a constant factor)."""
    if n < 0 or m < 0:
        raise ValueError(f"matrix shape must be non-negative, got {n} x {m}")
    return int(n) * int(m) * min(int(n), int(m))


def partition_by_cost(costs: Sequence[float], world_size: int) -> List[int]:
    """Owner rank of each work item: greedy longest-processing-time scheduling — items in
    decreasing cost (ties: lower index first) each go to the rank with the least load so far
    (ties: lower rank). Deterministic, so every rank computes the same answer. Its makespan is at
    most ``4/3`` of the optimum (Graham's bound)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    costs = [float(c) for c in costs]
    if any(c < 0 or c != c for c in costs):
        raise ValueError("costs must be non-negative numbers")
    owners = [0] * len(costs)
    heap = [(0.0, r) for r in range(world_size)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, r = heapq.heappop(heap)
        owners[i] = r
        heapq.heappush(heap, (load + costs[i], r))
    return owners


def _coef_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _ctx(ctx: Optional[Any], x: torch.Tensor):
    return ctx if ctx is not None else context_for(x.device)


def project_sharded_(side: str, basis_local: torch.Tensor, x_local: torch.Tensor,
                     group: Optional[Any] = None, ctx: Optional[Any] = None) -> torch.Tensor:
    """Project a sharded ``X`` away from a basis sharded the same way, in place; returns ``x_local``.

    * ``side="left"``: ``X`` (``N x M``) and ``U_high`` (``N x k``) are split by **rows** across the
      ranks of ``group`` (each rank holds rows ``X_r``, ``U_r``): ``X_r <- X_r - U_r (sum_r U_r^T X_r)``.
    * ``side="right"``: ``X`` and ``V_high`` (``k x M``) are split by **columns**:
      ``X_r <- X_r - (sum_r X_r V_r^T) V_r``.

    Phase 1 is :func:`osft.project_partial` (this shard's ``k x M`` / ``N x k`` coefficient),
    then ``torch.distributed.all_reduce`` (sum) of that small matrix, then
    :func:`osft.project_apply`. Batches (3-D) work the same way. Every rank must call it (it is a
    collective). The result equals the unsharded projection to rounding.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right' for a sharded projection, got {side!r}")
    ctx = _ctx(ctx, x_local)
    if side == "left":
        shape = x_local.shape[:-2] + (basis_local.shape[-1], x_local.shape[-1])
    else:
        shape = x_local.shape[:-2] + (x_local.shape[-2], basis_local.shape[-2])
    coef = torch.empty(shape, dtype=_coef_dtype(x_local), device=x_local.device)
    _osft.project_partial(ctx, side, basis_local, x_local, coef)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(coef, op=dist.ReduceOp.SUM, group=group)
    _osft.project_apply(ctx, side, basis_local, coef, x_local)
    return x_local


def project_dense_row_sharded_(g_local: torch.Tensor, u_high_local: torch.Tensor,
                               v_high: torch.Tensor, group: Optional[Any] = None,
                               ctx: Optional[Any] = None) -> torch.Tensor:
    """Both-side projection ``(I - U U^T) G (I - V^T V)`` of a dense gradient whose rows are
    sharded (FSDP ``Shard(0)`` of an ``N x M`` weight): the left side through the two-phase API
    with ``U_high``'s matching row shard, the right side locally with the replicated ``V_high``
    (rows of ``G`` are independent on that side). In place; returns ``g_local``."""
    ctx = _ctx(ctx, g_local)
    project_sharded_("left", u_high_local, g_local, group, ctx)
    _osft.project(ctx, "right", g_local, None, v_high)
    return g_local


def project_dtensor_(x: Any, basis: Any, side: str, ctx: Optional[Any] = None) -> Any:
    """Project a ``DTensor`` (or plain tensor) ``x`` in place against ``basis`` (``U_high`` for
    ``"left"``, ``V_high`` for ``"right"``), choosing the path from their placements on a 1-D
    device mesh:

    * both sharded along the contracted axis (left: rows, ``Shard(0)`` / ``Shard(-2)``; right:
      columns of ``x`` and of ``V_high``): two-phase, via :func:`project_sharded_` over the
      mesh's process group;
    * ``x`` sharded along the other axis and ``basis`` replicated (or a plain tensor), or both
      replicated: a local :func:`osft.project` on ``x``'s local shard;
    * anything else raises ``ValueError`` (say so, rather than compute a wrong projection).

    Returns ``x``.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")

    def info(t):
        pl = getattr(t, "placements", None)
        if pl is None:
            return t, None, None
        if len(pl) != 1:
            raise ValueError("project_dtensor_ supports 1-D device meshes only")
        p = pl[0]
        dim = getattr(p, "dim", None) if p.is_shard() else None
        if dim is not None and dim < 0:
            dim += t.dim()
        return t.to_local(), dim, t.device_mesh

    xl, xd, mesh = info(x)
    bl, bd, bmesh = info(basis)
    nd = xl.dim()
    contracted_x = nd - 2 if side == "left" else nd - 1           # axis summed over
    contracted_b = bl.dim() - 2 if side == "left" else bl.dim() - 1
    ctx = _ctx(ctx, xl)
    if xd is not None and xd == contracted_x:
        if bd != contracted_b:
            raise ValueError(f"{side} projection: x is sharded along the contracted axis {xd}, so "
                             f"the basis must be sharded along its axis {contracted_b} too "
                             f"(got {bd})")
        project_sharded_(side, bl, xl, mesh.get_group(), ctx)
        return x
    if bd is not None:
        raise ValueError(f"{side} projection: the basis is sharded (axis {bd}) but x is not "
                         f"sharded along the contracted axis {contracted_x} (got {xd})")
    if xd is not None and xd < nd - 2:
        # Sharded along a batch axis: the basis must be sharded the same way (not supported).
        raise ValueError("x is sharded along a batch axis; shard the basis identically and "
                         "project the local shards with osft.project")
    if side == "left":
        _osft.project(ctx, "left", xl, bl, None)
    else:
        _osft.project(ctx, "right", xl, None, bl)
    return x
