"""PyTorch glue for osft: small, optional, and torch-free until a tensor shows up.

This module never imports torch at module import time: it looks torch up in ``sys.modules``
(a torch tensor can only exist if torch has been imported), so ``import osft`` works, and every
function here is a no-op, on machines without torch.

What it does:

* :func:`prepare` makes a tensor exportable through DLPack without a copy (``.detach()`` for
  tensors that require grad; the data is shared).
* :func:`sync_stream` points a CUDA :class:`osft.Context` at ``torch.cuda.current_stream()``
  of the tensors' device before each osft call, so osft's kernels are ordered with PyTorch's
  work on that stream without any host synchronisation. Every osft function that receives
  torch tensors calls it for you.

What it does not do (not implemented yet): a model-level workflow (walking an ``nn.Module``,
decomposing its weights into buffers and parameters, registering gradient hooks), DDP / FSDP2 /
DeepSpeed integration. The functional API (:func:`osft.project`, :func:`osft.project_partial`,
:func:`osft.project_apply` ...) is the seam such a workflow would call.
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
