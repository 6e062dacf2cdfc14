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
                 device: torch.device, weight_dtype: Optional[torch.dtype] = None):
        super().__init__()
        if mode not in ("factored", "dense"):
            raise ValueError(f"mode must be 'factored' or 'dense', got {mode!r}")
        r = min(n, m)
        self.mode, self.batch, self.n, self.m, self.k, self.r = mode, batch, n, m, k, r
        # The targets' own dtype when the factors are kept in another (output_dtype): the
        # layers compute in it. None: the factors' dtype, whatever .to() makes it later.
        self._weight_dtype = weight_dtype if weight_dtype not in (None, dtype) else None
        # disable_adapter(): the layers use the base copies (keep_base_()) instead.
        self.use_base = False
        # The SVD's working precision (osft's compute argument), set by build_groups.
        self.compute = "f64" if dtype == torch.float64 else "f32"
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

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype the target layers compute in (their original dtype)."""
        return self._weight_dtype or self.u_high.dtype

    def keep_base_(self) -> None:
        """Keep copies of the trainable tensors as they are now (non-persistent buffers, not in
        ``state_dict``) so that :attr:`use_base` can give the weights back as they were."""
        with torch.no_grad():
            for name in self.trainable_names():
                self.register_buffer(f"{name}_base", getattr(self, name).detach().clone(),
                                     persistent=False)

    def trainable_names(self) -> Tuple[str, ...]:
        return ("u_low", "s_low", "v_low") if self.mode == "factored" else ("weight",)

    def _trainable(self, name: str) -> torch.Tensor:
        if self.use_base:
            return getattr(self, f"{name}_base")
        return getattr(self, name)

    def matrices(self, offset: int, count: int) -> torch.Tensor:
        """The ``count x N x M`` weights of entries ``offset:offset+count`` (with autograd), in
        the targets' dtype."""
        sl = slice(offset, offset + count)
        if self.mode == "dense":
            w = self._trainable("weight")[sl]
        else:
            w = torch.matmul(self.u_high[sl] * self.s_high[sl].unsqueeze(-2), self.v_high[sl])
            if self.r > self.k:
                u, s, v = (self._trainable(n)[sl] for n in ("u_low", "s_low", "v_low"))
                w = w + torch.matmul(u * s.unsqueeze(-2), v)
        return w if w.dtype == self.weight_dtype else w.to(self.weight_dtype)

    def factorised_saves_memory(self, x: torch.Tensor) -> bool:
        """Whether :meth:`linear` keeps fewer bytes for backward than the dense forward for an
        input of ``T = x.numel() / M`` rows: the factorised one keeps ``x V_low^T`` and its
        scaled copy, ``2 T (R-k)`` values (the frozen part needs only the frozen buffers); the
        dense one ``W`` and ``U_low diag(S_low)``, ``N M + N (R-k)``."""
        low = self.r - self.k
        rows = x.numel() // max(x.shape[-1], 1)
        return low == 0 or 2 * rows * low < self.n * self.m + self.n * low

    def linear(self, x: torch.Tensor, index: int, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``nn.Linear``'s forward with matrix ``index`` applied through its factors,
        ``x V^T diag(S) U^T`` per part, without forming the ``N x M`` weight (the factorised
        forward): autograd keeps ``x V^T`` (``T x r``) for backward instead of ``W``."""
        if self.mode == "dense":
            return nn.functional.linear(x, self.matrices(index, 1)[0], bias)
        dt = self.weight_dtype
        parts = []
        if self.k > 0:
            parts.append((self.u_high[index], self.s_high[index], self.v_high[index]))
        if self.r > self.k:
            parts.append(tuple(self._trainable(n)[index] for n in ("u_low", "s_low", "v_low")))
        y = None
        for u, s, v in parts:
            if u.dtype != dt:
                u, s, v = u.to(dt), s.to(dt), v.to(dt)
            p = torch.matmul(torch.matmul(x, v.t()) * s, u.t())
            y = p if y is None else y + p
        if y is None:  # an empty matrix (R = 0)
            y = x.new_zeros(x.shape[:-1] + (self.n,))
        return y if bias is None else y + bias

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
