"""Stacked ``B x ...`` tensors that may be ``DTensor``\\ s: their local shard and where it starts.

FSDP2 shards OSFT's stacked parameters along the batch axis (``Shard(0)``, whole matrices per
rank) or replicates them; these helpers find the local part without importing
``torch.distributed.tensor`` (a ``DTensor`` is recognised by its attributes).
"""

from __future__ import annotations

from typing import Any, Tuple

import torch


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` looks like a ``DTensor`` (``to_local``, ``placements``, ``device_mesh``)."""
    return hasattr(t, "to_local") and hasattr(t, "placements") and hasattr(t, "device_mesh")


def local_batch(t: Any, batch: int) -> Tuple[torch.Tensor, int]:
    """``(local tensor, first batch index)`` of a stacked ``B x ...`` tensor: ``(t, 0)`` for a
    plain tensor; for a ``DTensor`` on a 1-D mesh, its local shard and offset — ``Shard(0)`` uses
    ``torch.chunk`` semantics (chunks of ``ceil(B / world)``), ``Replicate()`` holds everything.
    Other placements raise ``ValueError``."""
    if not is_dtensor(t):
        return t, 0
    pl = t.placements
    if len(pl) != 1:
        raise ValueError("OSFT supports DTensors on 1-D device meshes only")
    local = t.to_local()
    p = pl[0]
    if p.is_replicate():
        return local, 0
    if p.is_shard() and getattr(p, "dim", None) in (0, -t.dim()):
        world = t.device_mesh.size()
        chunk = -(-batch // world)
        start = min(batch, t.device_mesh.get_local_rank() * chunk)
        if local.shape[0] != min(chunk, batch - start):
            raise ValueError(f"unexpected Shard(0) layout: local {local.shape[0]} rows at {start} "
                             f"of {batch}")
        return local, start
    raise ValueError(f"OSFT projects stacked parameters sharded along the batch axis (Shard(0)) "
                     f"or replicated, not {p}")


def local(t: Any) -> torch.Tensor:
    """The local shard of a ``DTensor``; a plain tensor as it is."""
    return t.to_local() if is_dtensor(t) else t


def full(t: Any) -> torch.Tensor:
    """The whole tensor (``full_tensor()`` of a DTensor: a collective)."""
    return t.full_tensor() if is_dtensor(t) else t
