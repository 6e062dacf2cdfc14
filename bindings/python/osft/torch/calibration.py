"""Layer importance from calibration batches, for ``ranks="adaptive"``.

Forward pre-hooks keep up to ``max_samples`` input rows per target while the batches run (model in
eval mode, no grad); then one :func:`osft.layer_importance` call per group of same kind, operator
shape, dtype and device computes ``I = mean cos(x, W x)``. With ``world > 1`` the importances are
averaged across ranks, so that every rank picks the same ranks (and so the same groups).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import osft as _osft

from .context import context_for
from .targets import Target


def layer_importance(model: nn.Module, targets: List[Target], batches: Iterable[Any],
                     forward_fn: Optional[Callable[[nn.Module, Any], Any]], max_samples: int,
                     world: int = 1, process_group: Optional[Any] = None) -> Dict[str, float]:
    """Layer importance of each target from calibration inputs (one osft call per group of
    same kind, operator shape, dtype and device). ``forward_fn(model, batch)`` runs one batch
    (default: ``model(**batch)`` for mappings, ``model(*batch)`` for tuples and lists, else
    ``model(batch)``). With ``world > 1`` (``torch.distributed`` initialised) the result is the
    mean over the ranks of ``process_group``."""
    if max_samples < 1:
        raise ValueError("max_samples must be >= 1")
    acts: Dict[str, List[torch.Tensor]] = {t.name: [] for t in targets}
    counts = {t.name: 0 for t in targets}
    hooks = []

    def make(t: Target):
        def hook(module, args):
            if not args or not torch.is_tensor(args[0]):
                raise ValueError(f"{t.name}: calibration needs the layer input as the first "
                                 "positional argument")
            need = max_samples - counts[t.name]
            if need <= 0:
                return
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1])[:need]
            acts[t.name].append(x)
            counts[t.name] += x.shape[0]
        return hook

    for t in targets:
        hooks.append(t.module.register_forward_pre_hook(make(t)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for b in batches:
                if forward_fn is not None:
                    forward_fn(model, b)
                elif isinstance(b, Mapping):
                    model(**b)
                elif isinstance(b, (tuple, list)):
                    model(*b)
                else:
                    model(b)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    missing = [t.name for t in targets if counts[t.name] == 0]
    if missing:
        raise ValueError(f"calibration batches never reached {missing[:4]}"
                         f"{'...' if len(missing) > 4 else ''}")
    # Group by (kind, shape, dtype, device); one batched osft.layer_importance per group.
    groups: OrderedDict[tuple, List[Target]] = OrderedDict()
    for t in targets:
        w = getattr(t.module, t.attr)
        groups.setdefault((t.kind, t.matrix_shape, w.dtype, w.device), []).append(t)
    out: Dict[str, float] = {}
    for (kind, _, dtype, device), ts in groups.items():
        s = min(counts[t.name] for t in ts)
        w = torch.stack([getattr(t.module, t.attr).detach() for t in ts])
        op = w if kind == "linear" else w.transpose(-1, -2)  # operator: y = op @ x
        a = torch.stack([torch.cat(acts[t.name])[:s] for t in ts]).to(dtype)
        if a.shape[-1] != op.shape[-1]:
            raise ValueError(f"{ts[0].name}: layer input width {a.shape[-1]} does not match "
                             f"the weight ({tuple(op.shape[-2:])} operator)")
        compute = "f64" if dtype == torch.float64 else "f32"
        vals = _osft.layer_importance(context_for(device), op, a, compute)
        for t, v in zip(ts, np.atleast_1d(vals)):
            out[t.name] = float(v)
    if world > 1:
        # Each rank saw its own calibration batches: average the importances so that every
        # rank picks the same ranks (and so the same groups).
        vec = torch.tensor([out[t.name] for t in targets], dtype=torch.float64)
        backend = dist.get_backend(process_group)
        if backend == "nccl":
            vec = vec.cuda()
        dist.all_reduce(vec, op=dist.ReduceOp.SUM, group=process_group)
        for t, v in zip(targets, (vec / world).tolist()):
            out[t.name] = v
    return out
