"""Targets to decomposed :class:`~osft.torch.group.OSFTGroup`\\ s: grouping, the split of the work
across ranks, and the batched decomposition.

Targets with the same matrix shape, ``k``, dtype, device (and ``group_by`` key) form a group, in
model order. Alone, a process decomposes each group's stacked weights with one
:func:`osft.decompose` call. With ``world > 1`` every matrix is assigned an owner rank by cost
(:func:`~osft.torch.distributed.partition_by_cost`, deterministic on every rank); each rank
decomposes its share of a group (one call) into a zero-filled flat buffer of the group's results,
and one ``all_reduce`` (sum) per group gives every rank all of them: the sum of zeros and one
owner's values is exact.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

import osft as _osft

from .context import context_for
from .distributed import decomposition_cost, partition_by_cost
from .group import OSFTGroup
from .targets import Target


def plan_groups(targets: List[Target], kmap: Dict[str, int],
                group_by: Optional[Callable[[Target], Any]], rank: int, world: int
                ) -> Tuple[OrderedDict, Dict[int, List[int]], Dict[str, Any]]:
    """Group the targets and split the matrices across ranks: ``(keyed, own, partition)`` —
    ``keyed`` maps each group key to its targets, ``own`` each group index to the batch entries
    this rank decomposes, ``partition`` is ``{"world_size", "owners", "items"}`` with ``items``
    the ``(group index, entry)`` of every matrix and ``owners`` its rank."""
    keyed: OrderedDict[tuple, List[Target]] = OrderedDict()
    for t in targets:
        w = getattr(t.module, t.attr)
        extra = group_by(t) if group_by is not None else None
        keyed.setdefault((t.matrix_shape, kmap[t.name], w.dtype, w.device, extra),
                         []).append(t)
    # Cost partition over every matrix of every group (deterministic on every rank).
    items = [(gi, j) for gi, (key, ts) in enumerate(keyed.items())
             for j in range(sum(t.count for t in ts))]
    shapes = [key[0] for key in keyed]
    owners = partition_by_cost([decomposition_cost(*shapes[gi]) for gi, _ in items], world) \
        if world > 1 else [0] * len(items)
    own: Dict[int, List[int]] = {}
    for (gi, j), o in zip(items, owners):
        if o == rank:
            own.setdefault(gi, []).append(j)
    return keyed, own, {"world_size": world, "owners": owners, "items": items}


#: torch dtype -> osft's ``compute`` argument (the SVD's working precision).
COMPUTE = {torch.float32: "f32", torch.float64: "f64"}


def build_groups(keyed: OrderedDict, own: Dict[int, List[int]], mode: str, world: int,
                 process_group: Optional[Any] = None, upcast_dtype: torch.dtype = torch.float64,
                 output_dtype: Optional[torch.dtype] = None) -> OrderedDict:
    """One decomposed :class:`OSFTGroup` per entry of ``keyed`` (from :func:`plan_groups`), named
    ``g<i>_<N>x<M>_k<k>``; in ``mode="dense"`` its ``weight`` holds the stacked weights. The SVD
    runs in ``upcast_dtype`` (float32 or float64) and the factors are stored in
    ``output_dtype`` (default: the targets' dtype). The targets' modules are not modified."""
    groups: OrderedDict[str, OSFTGroup] = OrderedDict()
    for gi, ((shape, k, dtype, device, _), ts) in enumerate(keyed.items()):
        n, m = shape
        batch = sum(t.count for t in ts)
        g = OSFTGroup(mode, batch, n, m, k, output_dtype or dtype, device, weight_dtype=dtype)
        g.compute = COMPUTE[upcast_dtype]
        off = 0
        for t in ts:
            g.members.append((t.name, off, t.count))
            off += t.count
        with torch.no_grad():
            w = torch.cat([getattr(t.module, t.attr).detach().reshape(-1, n, m) for t in ts])
            decompose_group(g, w, own.get(gi, []) if world > 1 else None, process_group)
            if mode == "dense":
                g.weight.copy_(w)
            del w
        groups[f"g{gi}_{n}x{m}_k{k}"] = g
    return groups


def decompose_group(g: OSFTGroup, w: torch.Tensor, owned: Optional[List[int]],
                    process_group: Optional[Any] = None) -> None:
    """One osft.decompose of the stacked ``w`` into the group (``owned=None``), or of the entries
    ``owned`` by this rank, then one all_reduce of the zero-filled results over
    ``process_group``."""
    compute = g.compute
    ctx = context_for(w.device)
    low = g.mode == "factored"
    outs = [g.u_high, g.s_high, g.v_high] + ([g.u_low, g.s_low, g.v_low] if low else [])
    if owned is None:
        _osft.decompose(ctx, w, g.k, *outs[:3], *(outs[3:] if low else [None] * 3),
                        compute=compute)
        return
    # The buffer holds the factors in their own dtype (output_dtype), not the weights': a cast
    # would round float32/float64 factors of bfloat16 weights, and index_copy_ needs them equal.
    flat = torch.zeros(sum(o.numel() for o in outs), dtype=outs[0].dtype, device=w.device)
    views, pos = [], 0
    for o in outs:
        views.append(flat[pos:pos + o.numel()].view(o.shape))
        pos += o.numel()
    if owned:
        idx = torch.tensor(owned, device=w.device)
        sub = [torch.empty((len(owned),) + tuple(o.shape[1:]), dtype=o.dtype, device=o.device)
               for o in outs]
        _osft.decompose(ctx, w.index_select(0, idx).contiguous(), g.k, *sub[:3],
                        *(sub[3:] if low else [None] * 3), compute=compute)
        for v, s in zip(views, sub):
            v.index_copy_(0, idx, s)
    if dist.get_backend(process_group) == "nccl" and flat.device.type != "cuda":
        # NCCL reduces CUDA tensors only: weights still on the CPU (before FSDP2 moves them)
        # go through the rank's current CUDA device, as the calibration importances do.
        red = flat.cuda()
        dist.all_reduce(red, op=dist.ReduceOp.SUM, group=process_group)
        flat.copy_(red)
    else:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=process_group)
    for o, v in zip(outs, views):
        o.data.copy_(v)
