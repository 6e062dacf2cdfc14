"""PyTorch integration of osft: the tensor glue (always importable) and the model-level OSFT
workflow (imported on first use, needs torch).

Importing ``osft`` (or this subpackage) never imports torch: the glue below looks torch up in
``sys.modules`` (a torch tensor can only exist if torch has been imported), so ``import osft``
works, and the glue functions are no-ops, on machines without torch. The workflow names
(:class:`OSFT`, :class:`OSFTOptimizer`, ...) are loaded lazily from the submodules, one job
each (none imports a module that imports it back):

* :mod:`~osft.torch.targets`: which parameters are targets;
* :mod:`~osft.torch.ranks`: each target's frozen rank from the rank arguments;
* :mod:`~osft.torch.calibration`: layer importance from calibration batches (adaptive ranks);
* :mod:`~osft.torch.group`: :class:`OSFTGroup`, one stacked decomposition and its projection;
* :mod:`~osft.torch.decompose`: grouping, the split across ranks, the batched decomposition;
* :mod:`~osft.torch.surgery`: swapping the groups into the target modules and back;
* :mod:`~osft.torch.checkpoint`: the plain ``model.state_dict()`` under OSFT, and the OSFT-only
  ``save_pretrained`` / ``from_pretrained`` that resume training exactly;
* :mod:`~osft.torch.model`: :class:`OSFT`, the lifecycle (setup, projection, merge, next task);
* :mod:`~osft.torch.optim`: :class:`OSFTOptimizer`;
* :mod:`~osft.torch.deepspeed`: the DeepSpeed hook (fp32 master retraction at ZeRO 0-3);
* :mod:`~osft.torch.distributed`: cost partitioning and two-phase sharded projection;
* :mod:`~osft.torch.zero3`: ZeRO-3-partitioned parameters (:func:`gathered`), a leaf module;
* :mod:`~osft.torch.context` and :mod:`~osft.torch.dtensor`: per-device contexts, DTensor shards.

Accessing a workflow name without torch installed raises ``ImportError``.

The glue:

* :func:`prepare` makes a tensor exportable through DLPack without a copy (``.detach()`` for
  tensors that require grad; the data is shared).
* :func:`sync_stream` points a CUDA :class:`osft.Context` at ``torch.cuda.current_stream()``
  of the tensors' device before each osft call, so osft's kernels are ordered with PyTorch's
  work on that stream without any host synchronisation. Every osft function that receives
  torch tensors calls it for you.

The workflow (see ``bindings/python/README.md`` for a walk-through)::

    import osft.torch as ot
    o = ot.OSFT(model, frozen_ratio=0.5)            # pick targets, decompose (batched per shape)
    opt = ot.OSFTOptimizer(torch.optim.AdamW(o.parameters(), lr=1e-4), o)
    for batch in data:
        loss = model(batch).loss
        loss.backward()                              # gradients projected in autograd hooks
        opt.step(); opt.zero_grad()                  # update projected, U_low retracted
    o.next_task(frozen_ratio=0.6)                    # merge, re-SVD, freeze more
    o.save_pretrained("ckpt")                        # OSFT-only: resume with OSFT.from_pretrained
    o.merge()                                        # plain dense weights again
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Optional


def _torch():
    return sys.modules.get("torch")


def is_tensor(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.Tensor`` (False when torch is not imported)."""
    t = _torch()
    return t is not None and isinstance(obj, t.Tensor)


def prepare(obj: Any) -> Any:
    """A view of ``obj`` that ``__dlpack__`` accepts: detached when it requires grad."""
    if is_tensor(obj) and obj.requires_grad:
        return obj.detach()
    return obj


def current_stream_handle(tensor: Any) -> Optional[int]:
    """``torch.cuda.current_stream(tensor.device).cuda_stream`` for a CUDA tensor, else None."""
    t = _torch()
    if t is None or not isinstance(tensor, t.Tensor) or not tensor.is_cuda:
        return None
    return int(t.cuda.current_stream(tensor.device).cuda_stream)


def sync_stream(ctx: Any, objs: Iterable[Any]) -> None:
    """Set ``ctx``'s stream to PyTorch's current stream of the first CUDA tensor in ``objs``.

    A no-op for CPU contexts, for non-torch objects and when torch is not imported. The legacy
    default stream (handle 0) is passed to osft as NULL.
    """
    if _torch() is None or not ctx.is_cuda:
        return
    for o in objs:
        h = current_stream_handle(o)
        if h is not None:
            if h != (ctx.stream or 0):
                ctx.stream = h or None
            return


# ---------------------------------------------------------------------------------------------
# The model-level workflow, loaded lazily (PEP 562) so that this module stays torch-free.

_LAZY = {
    "DEFAULT_TARGETS": "targets",
    "Target": "targets",
    "default_patterns": "targets",
    "find_targets": "targets",
    "matches": "targets",
    "model_type_of": "targets",
    "OSFT": "model",
    "OSFTGroup": "group",
    "resolve_rank": "ranks",
    "OSFTOptimizer": "optim",
    "attach_deepspeed": "deepspeed",
    "gathered": "zero3",
    "is_zero3": "zero3",
    "decomposition_cost": "distributed",
    "partition_by_cost": "distributed",
    "project_sharded_": "distributed",
    "project_dense_row_sharded_": "distributed",
    "project_dtensor_": "distributed",
}

__all__ = ["is_tensor", "prepare", "current_stream_handle", "sync_stream"] + sorted(_LAZY)


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'osft.torch' has no attribute {name!r}")
    import importlib

    try:
        value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    except ImportError as e:
        if _torch() is None and "torch" in str(e):
            raise ImportError(f"osft.torch.{name} needs PyTorch (pip install torch): {e}") from e
        raise
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
