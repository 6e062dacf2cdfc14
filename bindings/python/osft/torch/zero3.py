"""DeepSpeed ZeRO-3 partitioned parameters: recognising them and reading their full values.

A leaf module (imports nothing of osft.torch) shared by :mod:`~osft.torch.model`,
:mod:`~osft.torch.checkpoint` and :mod:`~osft.torch.deepspeed`. deepspeed is imported only when
a partitioned parameter is actually gathered.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence


def is_zero3(p: Any) -> bool:
    """Whether ``p`` is a parameter partitioned by DeepSpeed ZeRO stage 3."""
    return hasattr(p, "ds_id") and hasattr(p, "ds_tensor")


def gathered(params: Sequence[Any]):
    """A context in which ZeRO-3-partitioned ``params`` hold their full values
    (``deepspeed.zero.GatheredParameters``, read-only: a collective, call it on every rank);
    a no-op context when none is partitioned. Parameters already gathered (DeepSpeed's
    persistent small ones, or an enclosing ``gathered``) are left to their owner, so nesting
    is safe and nothing DeepSpeed keeps resident is released."""
    part = [p for p in params
            if is_zero3(p) and getattr(getattr(p, "ds_status", None), "name", "") == "NOT_AVAILABLE"]
    if not part:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(part, modifier_rank=None)
