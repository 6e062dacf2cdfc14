"""One shape group of OSFT targets: :class:`OSFTGroup`, the stacked decomposition of ``B``
same-shape matrices, and its projection (one osft call per factor, shards included)."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch import nn

import osft as _osft

from .context import context_for
from .dtensor import local_batch


class OSFTGroup(nn.Module):
    """The stacked decomposition of ``B`` same-shape matrices (``N x M``, frozen rank ``k``).

    Buffers ``u_high (B,N,k)``, ``s_high (B,k)``, ``v_high (B,k,M)``; parameters ``u_low``,
    ``s_low``, ``v_low`` (``mode="factored"``) or ``weight (B,N,M)`` (``mode="dense"``).
    ``members`` lists ``(target name, offset, count)``: entries ``offset:offset+count`` belong to
    that target.
    """

    def __init__(self, mode: str, batch: int, n: int, m: int, k: int, dtype: torch.dtype,
                 device: torch.device):
        super().__init__()
        if mode not in ("factored", "dense"):
            raise ValueError(f"mode must be 'factored' or 'dense', got {mode!r}")
        r = min(n, m)
        self.mode, self.batch, self.n, self.m, self.k, self.r = mode, batch, n, m, k, r
        kw = dict(dtype=dtype, device=device)
        self.register_buffer("u_high", torch.zeros(batch, n, k, **kw))
        self.register_buffer("s_high", torch.zeros(batch, k, **kw))
        self.register_buffer("v_high", torch.zeros(batch, k, m, **kw))
        if mode == "factored":
            self.u_low = nn.Parameter(torch.zeros(batch, n, r - k, **kw))
            self.s_low = nn.Parameter(torch.zeros(batch, r - k, **kw))
            self.v_low = nn.Parameter(torch.zeros(batch, r - k, m, **kw))
        else:
            self.weight = nn.Parameter(torch.zeros(batch, n, m, **kw))
        self.members: List[Tuple[str, int, int]] = []

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, batch={self.batch}, shape={self.n}x{self.m}, k={self.k}, "
                f"trainable_rank={self.r - self.k}")

    def matrices(self, offset: int, count: int) -> torch.Tensor:
        """The ``count x N x M`` weights of entries ``offset:offset+count`` (with autograd)."""
        sl = slice(offset, offset + count)
        if self.mode == "dense":
            return self.weight[sl]
        w = torch.matmul(self.u_high[sl] * self.s_high[sl].unsqueeze(-2), self.v_high[sl])
        if self.r > self.k:
            w = w + torch.matmul(self.u_low[sl] * self.s_low[sl].unsqueeze(-2), self.v_low[sl])
        return w

    def projected(self) -> List[Tuple[nn.Parameter, str]]:
        """The parameters OSFT projects, with their side: ``[(u_low, "left"), (v_low, "right")]``
        or ``[(weight, "both")]``; empty when nothing is frozen (``k = 0``) or nothing is
        trainable (``k = R``)."""
        if self.k == 0:
            return []
        if self.mode == "dense":
            return [(self.weight, "both")]
        if self.r == self.k:
            return []
        return [(self.u_low, "left"), (self.v_low, "right")]

    def project_(self, x: Any, side: str, out: Optional[torch.Tensor] = None):
        """Project a ``B x ...`` tensor shaped like the parameter of ``side``: one osft call.

        ``x`` may be a ``DTensor`` sharded along the batch axis (FSDP2's ``Shard(0)`` of the
        stacked parameter: each rank holds whole matrices ``start:start+len``) or replicated; its
        local shard is projected against the matching slice of the bases, with no collective.
        Returns ``out`` (or ``x``)."""
        local, start = local_batch(x, self.batch)
        if out is not None:
            out_local, _ = local_batch(out, self.batch)
        else:
            out_local = None
        if local.shape[0] == 0:
            return x if out is None else out
        if any(st == 0 and sz > 1 for st, sz in zip(local.stride(), local.shape)):
            if out_local is None:
                raise ValueError("cannot project an expanded (zero-stride) tensor in place")
            local = local.contiguous()  # an expanded gradient: osft refuses overlapping inputs
        self.project_local_(local, side, start, out_local)
        return x if out is None else out

    def project_local_(self, local: torch.Tensor, side: str, start: int,
                       out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Projection of entries ``start:start+len`` given as a plain local tensor, into ``out``
        or in place; one osft call. Returns ``out`` (or ``local``)."""
        n = local.shape[0]
        if n:
            sl = slice(start, start + n)
            _osft.project(context_for(local.device), side, local,
                          self.u_high[sl] if side in ("left", "both") else None,
                          self.v_high[sl] if side in ("right", "both") else None, out)
        return local if out is None else out
