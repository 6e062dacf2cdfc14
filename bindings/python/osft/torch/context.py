"""The :class:`osft.Context` that serves a torch device, created once per device and cached."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

import osft as _osft

_CONTEXTS: Dict[Tuple[str, int], Any] = {}


def context_for(device: torch.device):
    """A cached :class:`osft.Context` for a torch device (``"cpu"`` or ``"cuda"``, by index)."""
    device = torch.device(device)
    if device.type == "cpu":
        key = ("cpu", 0)
    elif device.type == "cuda":
        key = ("cuda", device.index if device.index is not None else torch.cuda.current_device())
    else:
        raise ValueError(f"osft runs on CPU or CUDA tensors, not on {device}")
    ctx = _CONTEXTS.get(key)
    if ctx is None or ctx.closed:
        ctx = _osft.Context(key[0], key[1])
        _CONTEXTS[key] = ctx
    return ctx
