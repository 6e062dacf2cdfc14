"""The model-level OSFT workflow for PyTorch: :class:`OSFT`.

What it does to a model
-----------------------
1. **Targets** — :func:`osft.torch.targets.find_targets` picks parameters by name patterns
   (per-architecture defaults, user globs/regexes, exclusions); 3-D expert tensors count as
   ``E`` matrices.
2. **Ranks** — each target's frozen rank ``k`` (``0 <= k <= R = min(N, M)``) comes from, in order
   of precedence: the first pattern of ``rank_pattern`` that matches it, else ``frozen_ratio`` /
   ``unfreeze_rank_ratio``, or, with ``ranks="adaptive"``, from layer importance on calibration
   batches. A rank spec is an ``int`` (``k`` itself) or a ``float`` in ``[0, 1]``: the **frozen
   fraction** ``k = floor(f * R)`` (PEFT OSF's float ``effective_rank``; osft's ``"fraction"``
   rule). ``unfreeze_rank_ratio = u`` has mini_trainer's meaning, the *trainable* fraction; here
   ``k = R - floor(u * R)`` (``floor(u * R)`` trainable directions; mini_trainer's own rounding
   may differ by one). Note ``1`` is ``k = 1``
   while ``1.0`` freezes everything.
3. **Decomposition, batched** — targets with the same matrix shape, ``k``, dtype and device form a
   *group*; the group's weights are stacked into one contiguous ``B x N x M`` tensor on their
   device and dtype and decomposed by **one** :func:`osft.decompose` call (computed in float32, or
   float64 for float64 weights). With ``torch.distributed`` initialised and more than one rank,
   the matrices are partitioned across ranks by cost (:func:`~osft.torch.distributed.partition_by_cost`);
   each rank decomposes its share (one call per group it owns part of) into a zero-filled flat
   buffer of the group's results, and one ``all_reduce`` (sum) per group gives every rank all of
   them (the sum of zeros and one owner's values is exact; this is one collective per group
   whatever the world size, where a broadcast per owner would be up to ``world_size``).
4. **Storage** — each group is an :class:`OSFTGroup` module, registered as a child
   ``osft_<group name>`` of its first member's module (a leaf layer, so containers such as
   ``nn.Sequential`` are not disturbed; ``model.parameters()``, ``state_dict()``, ``.to()`` and
   DDP see it): frozen buffers ``u_high (B,N,k)``, ``s_high (B,k)``,
   ``v_high (B,k,M)`` and, in ``mode="factored"``, trainable parameters ``u_low (B,N,R-k)``,
   ``s_low (B,R-k)``, ``v_low (B,R-k,M)``; the layer computes with
   ``W = U_high diag(S_high) V_high + U_low diag(S_low) V_low`` rebuilt from its slice of the
   group in its forward. In ``mode="dense"`` (constrained full fine-tuning) the group holds one
   trainable ``weight (B,N,M)`` and its gradient is projected on both sides,
   ``G <- (I - U_h U_h^T) G (I - V_h^T V_h)``. Each target module's original parameter is
   removed and its class is swapped for a subclass whose ``weight`` (or expert attribute) is a
   property reading the group, so ``module.weight`` still works anywhere (T5 reads
   ``wo.weight.dtype`` from the parent module, for instance); :meth:`OSFT.merge` undoes all of it.
5. **Projection, one call per group and factor** — the trainable tensors of a group *are* the
   stacked parameters (the layers use views of them), so their gradients are stacked too: no
   gather/scatter copies. With ``project_in_backward=True`` (default) a tensor hook on each
   stacked parameter projects the gradient while autograd produces it, once per backward (the
   layers' slice gradients are summed before the hook), **before** DDP's / DeepSpeed's reduction
   hooks see it: ``U_low``'s gradient on the left against ``U_high``, ``V_low``'s on the right
   against ``V_high`` (``S_low`` needs none), a dense ``weight``'s on both sides. That is 2 osft
   calls per factored group and 1 per dense group per backward, whatever the number of layers.
   :meth:`OSFT.project_gradients` does the same on ``.grad`` after backward, for callers who
   prefer an explicit step. Gradient *projection* alone does not keep ``U_low`` orthogonal to
   ``U_high`` under Adam (its element-wise scaling leaks); :class:`osft.torch.OSFTOptimizer`
   projects the optimizer's actual update and retracts.
6. **Task sequence** — :meth:`OSFT.next_task` merges the factors back into dense weights, re-runs
   the SVD and freezes more (``k`` never shrinks unless ``grow_only=False``), as the paper's
   continual runs do. Create a new optimizer (and DDP wrapper) afterwards: the parameters are new.
   The new frozen subspace is the top-``k'`` singular subspace of the merged weight. With the
   trained part ``U_low S_low V_low`` kept orthogonal to the frozen part (:class:`OSFTOptimizer`),
   it contains the previous one (to rounding) as long as at most ``k' - k`` singular values of the
   trained part exceed the smallest frozen one; otherwise trained directions displace old frozen
   ones, which then become trainable. ``grow_only`` keeps the *count* ``k``, not the subspace.

Parameters that are not targets (biases, norms, embeddings, heads) are left as they are
(trainable if they were); pass ``freeze_others=True`` to freeze them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import osft as _osft

from .distributed import decomposition_cost, partition_by_cost
from .targets import PatternLike, Target, find_targets, matches

RankSpec = Union[int, float]

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


def resolve_rank(spec: RankSpec, full_rank: int, name: str = "target") -> int:
    """The frozen rank ``k`` of a rank spec for a matrix of full rank ``R``: an ``int`` is ``k``
    (``0 <= k <= R``), a ``float`` in ``[0, 1]`` the frozen fraction, ``k = floor(f * R)``."""
    if isinstance(spec, bool) or not isinstance(spec, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: rank spec must be an int (k) or a float in [0, 1] (frozen "
                        f"fraction), got {spec!r}")
    if isinstance(spec, (int, np.integer)):
        k = int(spec)
        if not 0 <= k <= full_rank:
            raise ValueError(f"{name}: frozen rank k = {k} is outside [0, {full_rank}]")
        return k
    f = float(spec)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"{name}: frozen fraction {f} is outside [0, 1]")
    return min(full_rank, int(math.floor(f * full_rank + 1e-9)))


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


def _is_dtensor(t: Any) -> bool:
    return hasattr(t, "to_local") and hasattr(t, "placements") and hasattr(t, "device_mesh")


def local_batch(t: Any, batch: int) -> Tuple[torch.Tensor, int]:
    """``(local tensor, first batch index)`` of a stacked ``B x ...`` tensor: ``(t, 0)`` for a
    plain tensor; for a ``DTensor`` on a 1-D mesh, its local shard and offset — ``Shard(0)`` uses
    ``torch.chunk`` semantics (chunks of ``ceil(B / world)``), ``Replicate()`` holds everything.
    Other placements raise ``ValueError``."""
    if not _is_dtensor(t):
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


def _local(t: Any) -> torch.Tensor:
    return t.to_local() if _is_dtensor(t) else t


def _full(t: Any) -> torch.Tensor:
    """The whole tensor (``full_tensor()`` of a DTensor: a collective)."""
    return t.full_tensor() if _is_dtensor(t) else t


_SUBCLASSES: Dict[Tuple[type, Tuple[str, ...]], type] = {}


def _osft_subclass(cls: type, attrs: Tuple[str, ...]) -> type:
    """A subclass of ``cls`` whose ``attrs`` are properties reading the module's OSFT groups
    (a module may hold several targets, e.g. an MoE experts module's ``gate_up_proj`` and
    ``down_proj``)."""
    key = (cls, attrs)
    sub = _SUBCLASSES.get(key)
    if sub is None:
        def make(attr):
            def getter(self):
                cached = self.__dict__.get("_osft_cache")
                if cached is not None and attr in cached:
                    return cached[attr]
                return _slot_matrix(self, attr)
            return property(getter, doc=f"{attr} rebuilt from the module's OSFT group")

        ns = {attr: make(attr) for attr in attrs}
        ns["_osft_original_class"] = cls
        sub = type(f"OSFT{cls.__name__}", (cls,), ns)
        _SUBCLASSES[key] = sub
    return sub


def _slot_matrix(module, attr: str) -> torch.Tensor:
    group, offset, count, squeeze = module.__dict__["_osft_slots"][attr]
    w = group.matrices(offset, count)
    return w[0] if squeeze else w


def _pre_forward(module, args):
    # Rebuild each weight once per forward call (the property returns the cached tensor).
    module.__dict__["_osft_cache"] = {a: _slot_matrix(module, a)
                                      for a in module.__dict__["_osft_slots"]}


def _post_forward(module, args, output):
    module.__dict__.pop("_osft_cache", None)


class OSFT:
    """Apply OSFT to ``model`` (in place) and manage it: projection, merging, task sequence.

    Args:
        model: the ``nn.Module`` (apply before wrapping it in DDP / DeepSpeed).
        targets, exclude, model_type: target selection (:func:`osft.torch.find_targets`).
        frozen_ratio: frozen fraction of each matrix's rank (default 0.5 when neither this nor
            ``unfreeze_rank_ratio`` is given), or an ``int`` frozen rank.
        unfreeze_rank_ratio: mini_trainer's convention, the trainable fraction ``u``
            (``k = R - floor(u R)``); exclusive with ``frozen_ratio``.
        rank_pattern: ``{pattern: spec}``; the first pattern matching a target's parameter or
            module name sets its spec (int ``k`` or frozen fraction).
        ranks: ``"ratio"`` (the above) or ``"adaptive"``: run ``calibration`` batches, collect
            every target layer's inputs, compute layer importance ``mean cos(x, W x)`` with
            :func:`osft.layer_importance` (one batched call per shape group) and map it to ranks
            with :func:`osft.adaptive_ranks` between ``min_ratio`` and ``max_ratio``. Expert
            (3-D) targets and targets matched by ``rank_pattern`` keep their ratio spec.
        calibration: iterable of batches for ``ranks="adaptive"``; ``forward_fn(model, batch)``
            runs one (default: ``model(**batch)`` for mappings, ``model(*batch)`` for tuples,
            else ``model(batch)``). ``max_samples``: rows (tokens) kept per layer.
        mode: ``"factored"`` or ``"dense"`` (see the module docstring).
        project_in_backward: project gradients in autograd hooks (default) — else call
            :meth:`project_gradients` after backward.
        distribute: split decomposition work across ``torch.distributed`` ranks when initialised
            with ``world_size > 1`` (``process_group``: the group, default WORLD).
        freeze_others: set ``requires_grad=False`` on every non-target parameter.
        group_by: an extra grouping key per :class:`~osft.torch.targets.Target` (default: one
            group per shape and rank across the whole model). FSDP2 with one ``fully_shard`` per
            transformer block needs the groups inside the blocks, e.g.
            ``group_by=lambda t: t.name.split(".")[2]`` for ``model.layers.<i>....``: a group
            is registered on its first member's module and must be unsharded whenever any
            member runs.

    Raises ``ValueError`` / ``TypeError`` for invalid arguments (before modifying the model).
    """

    def __init__(self, model: nn.Module, frozen_ratio: Optional[RankSpec] = None, *,
                 unfreeze_rank_ratio: Optional[float] = None,
                 targets: Optional[Sequence[PatternLike]] = None,
                 exclude: Optional[Sequence[PatternLike]] = None,
                 model_type: Optional[str] = None,
                 rank_pattern: Optional[Mapping[PatternLike, RankSpec]] = None,
                 ranks: str = "ratio",
                 calibration: Optional[Iterable[Any]] = None,
                 forward_fn: Optional[Callable[[nn.Module, Any], Any]] = None,
                 min_ratio: float = 0.1, max_ratio: float = 0.9, max_samples: int = 256,
                 mode: str = "factored", project_in_backward: bool = True,
                 distribute: bool = True, process_group: Optional[Any] = None,
                 freeze_others: bool = False,
                 group_by: Optional[Callable[[Target], Any]] = None):
        if mode not in ("factored", "dense"):
            raise ValueError(f"mode must be 'factored' or 'dense', got {mode!r}")
        if ranks not in ("ratio", "adaptive"):
            raise ValueError(f"ranks must be 'ratio' or 'adaptive', got {ranks!r}")
        if any("_osft_slots" in mod.__dict__ for mod in model.modules()):
            raise ValueError("OSFT is already applied to this model")
        self.model = model
        self.mode = mode
        self.project_in_backward = bool(project_in_backward)
        self.distribute = bool(distribute)
        self.process_group = process_group
        self._target_args = dict(targets=targets, exclude=exclude, model_type=model_type)
        self.group_by = group_by
        self.groups: OrderedDict[str, OSFTGroup] = OrderedDict()
        self.targets: List[Target] = []
        self.ranks: Dict[str, int] = {}
        self.task = 0
        self._handles: List[Any] = []
        # id(parameter) -> its hook's state {"fired": bool}. A gradient counts as projected only
        # if the hook actually ran since the last project_unhooked_gradients(): a parameter that
        # a wrapper replaced (fully_shard; the new object may even reuse the freed one's id) or
        # swapped (swap_tensors conversion drops the autograd hook) is projected there instead.
        # (No weakref to the parameter: swap_tensors refuses tensors that have one.)
        self._hooked: Dict[int, Dict[str, bool]] = {}
        self._owners: List[Tuple[nn.Module, str]] = []
        self._freeze_others = bool(freeze_others)
        self._setup(frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks, calibration,
                    forward_fn, min_ratio, max_ratio, max_samples, previous=None)

    # ------------------------------------------------------------------ setup

    @staticmethod
    def _default_spec(frozen_ratio, unfreeze_rank_ratio):
        if frozen_ratio is not None and unfreeze_rank_ratio is not None:
            raise ValueError("give frozen_ratio or unfreeze_rank_ratio, not both")
        if unfreeze_rank_ratio is not None:
            u = float(unfreeze_rank_ratio)
            if not 0.0 <= u <= 1.0:
                raise ValueError(f"unfreeze_rank_ratio {u} is outside [0, 1]")
            return ("unfreeze", u)
        return ("spec", 0.5 if frozen_ratio is None else frozen_ratio)

    def _rank_of(self, t: Target, default, rank_pattern) -> int:
        R = t.full_rank
        for pat, spec in (rank_pattern or {}).items():
            if matches(t.name, pat) or matches(t.module_name, pat):
                return resolve_rank(spec, R, t.name)
        kind, v = default
        if kind == "unfreeze":
            return R - min(R, int(math.floor(v * R + 1e-9)))
        return resolve_rank(v, R, t.name)

    def _check_args(self, frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks, calibration,
                    min_ratio, max_ratio, max_samples, targets: List[Target]):
        """Validate everything that does not need a forward pass; returns the default spec."""
        if ranks not in ("ratio", "adaptive"):
            raise ValueError(f"ranks must be 'ratio' or 'adaptive', got {ranks!r}")
        default = self._default_spec(frozen_ratio, unfreeze_rank_ratio)
        for t in targets:
            self._rank_of(t, default, rank_pattern)
        if ranks == "adaptive":
            if calibration is None:
                raise ValueError("ranks='adaptive' needs calibration batches")
            if not 0.0 <= min_ratio <= max_ratio <= 1.0:
                raise ValueError(f"need 0 <= min_ratio <= max_ratio <= 1, got {min_ratio}, "
                                 f"{max_ratio}")
            if int(max_samples) < 1:
                raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        return default

    def _setup(self, frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks, calibration,
               forward_fn, min_ratio, max_ratio, max_samples, previous):
        targets = find_targets(self.model, **self._target_args)
        default = self._check_args(frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks,
                                   calibration, min_ratio, max_ratio, max_samples, targets)
        for t in targets:
            p = getattr(t.module, t.attr)
            if p.device.type not in ("cpu", "cuda"):
                raise ValueError(f"{t.name}: osft runs on CPU or CUDA tensors, not {p.device}")
            if p.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                raise ValueError(f"{t.name}: dtype {p.dtype} is not supported")
        kmap = {t.name: self._rank_of(t, default, rank_pattern) for t in targets}
        if ranks == "adaptive":
            pinned = {t.name for t in targets
                      if any(matches(t.name, p) or matches(t.module_name, p)
                             for p in (rank_pattern or {}))}
            adapt = [t for t in targets if t.kind != "experts" and t.name not in pinned]
            if adapt:
                imp = self._importance(adapt, calibration, forward_fn, max_samples)
                ks = _osft.adaptive_ranks([imp[t.name] for t in adapt],
                                          [t.full_rank for t in adapt], min_ratio, max_ratio)
                for t, k in zip(adapt, ks):
                    kmap[t.name] = int(k)
        if previous is not None:  # grow_only: k never shrinks (the subspace may rotate)
            for name, k_old in previous.items():
                if name in kmap:
                    kmap[name] = max(kmap[name], k_old)
        self._build(targets, kmap)
        if self._freeze_others:  # after a successful build: invalid input leaves the model as is
            mine = {id(p) for g in self.groups.values() for p in g.parameters()}
            for p in self.model.parameters():
                if id(p) not in mine:
                    p.requires_grad_(False)

    def _importance(self, targets: List[Target], batches, forward_fn, max_samples: int
                    ) -> Dict[str, float]:
        """Layer importance of each target from calibration inputs (one osft call per group of
        same kind, operator shape, dtype and device)."""
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
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.no_grad():
                for b in batches:
                    if forward_fn is not None:
                        forward_fn(self.model, b)
                    elif isinstance(b, Mapping):
                        self.model(**b)
                    elif isinstance(b, (tuple, list)):
                        self.model(*b)
                    else:
                        self.model(b)
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)
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
        rank, world = self._world()
        if world > 1:
            # Each rank saw its own calibration batches: average the importances so that every
            # rank picks the same ranks (and so the same groups).
            vec = torch.tensor([out[t.name] for t in targets], dtype=torch.float64)
            backend = dist.get_backend(self.process_group)
            if backend == "nccl":
                vec = vec.cuda()
            dist.all_reduce(vec, op=dist.ReduceOp.SUM, group=self.process_group)
            for t, v in zip(targets, (vec / world).tolist()):
                out[t.name] = v
        return out

    def _world(self) -> Tuple[int, int]:
        if (self.distribute and dist.is_available() and dist.is_initialized()):
            return dist.get_rank(self.process_group), dist.get_world_size(self.process_group)
        return 0, 1

    def _build(self, targets: List[Target], kmap: Dict[str, int]) -> None:
        # Group by (matrix shape, k, dtype, device), in model order.
        keyed: OrderedDict[tuple, List[Target]] = OrderedDict()
        for t in targets:
            w = getattr(t.module, t.attr)
            extra = self.group_by(t) if self.group_by is not None else None
            keyed.setdefault((t.matrix_shape, kmap[t.name], w.dtype, w.device, extra),
                             []).append(t)
        rank, world = self._world()
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
        self.partition = {"world_size": world, "owners": owners, "items": items}
        groups: OrderedDict[str, OSFTGroup] = OrderedDict()
        for gi, ((shape, k, dtype, device, _), ts) in enumerate(keyed.items()):
            n, m = shape
            batch = sum(t.count for t in ts)
            g = OSFTGroup(self.mode, batch, n, m, k, dtype, device)
            off = 0
            for t in ts:
                g.members.append((t.name, off, t.count))
                off += t.count
            with torch.no_grad():
                w = torch.cat([getattr(t.module, t.attr).detach().reshape(-1, n, m) for t in ts])
                self._decompose(g, w, own.get(gi, []) if world > 1 else None)
                if self.mode == "dense":
                    g.weight.copy_(w)
                del w
            groups[f"g{gi}_{n}x{m}_k{k}"] = g
        # Install (only now: every decomposition succeeded).
        self.targets, self.ranks, self.groups = targets, dict(kmap), groups
        by_name = {}
        for g in groups.values():
            for name, off, cnt in g.members:
                by_name[name] = (g, off, cnt)
        modules: OrderedDict[int, Tuple[nn.Module, List[Target]]] = OrderedDict()
        for t in targets:
            modules.setdefault(id(t.module), (t.module, []))[1].append(t)
        for mod, ts in modules.values():
            slots = {}
            order = list(mod._parameters)
            for t in ts:
                g, off, cnt = by_name[t.name]
                t._order = order  # type: ignore[attr-defined]
                param = mod._parameters.pop(t.attr)
                t._requires_grad = param.requires_grad  # type: ignore[attr-defined]
                del param
                slots[t.attr] = (g, off, cnt, len(t.shape) == 2)
            mod.__class__ = _osft_subclass(type(mod), tuple(sorted(slots)))
            mod.__dict__["_osft_slots"] = slots
            self._handles.append(mod.register_forward_pre_hook(_pre_forward))
            self._handles.append(mod.register_forward_hook(_post_forward, always_call=True))
        for name, g in groups.items():
            # Registered on the module of the group's first member (a leaf layer, which does not
            # iterate its children), so that model.parameters(), state_dict(), .to() and DDP see
            # the group, without adding a child that nn.Sequential & co. would try to call.
            owner = next(t.module for t in targets if t.name == g.members[0][0])
            owner.add_module(f"osft_{name}", g)
            self._owners.append((owner, f"osft_{name}"))
        self._hooked = {}
        if self.project_in_backward:
            for g in groups.values():
                for p, side in g.projected():
                    state = {"fired": False}
                    self._handles.append(p.register_hook(self._grad_hook(g, side, state)))
                    self._hooked[id(p)] = state

    def _decompose(self, g: OSFTGroup, w: torch.Tensor, owned: Optional[List[int]]) -> None:
        """One osft.decompose of the stacked ``w`` into the group (or of this rank's share, then
        one all_reduce of the zero-filled results)."""
        compute = "f64" if w.dtype == torch.float64 else "f32"
        ctx = context_for(w.device)
        low = g.mode == "factored"
        outs = [g.u_high, g.s_high, g.v_high] + ([g.u_low, g.s_low, g.v_low] if low else [])
        if owned is None:
            _osft.decompose(ctx, w, g.k, *outs[:3], *(outs[3:] if low else [None] * 3),
                            compute=compute)
            return
        flat = torch.zeros(sum(o.numel() for o in outs), dtype=w.dtype, device=w.device)
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
        if dist.get_backend(self.process_group) == "nccl" and flat.device.type != "cuda":
            # NCCL reduces CUDA tensors only: weights still on the CPU (before FSDP2 moves them)
            # go through the rank's current CUDA device, as the importances do above.
            red = flat.cuda()
            dist.all_reduce(red, op=dist.ReduceOp.SUM, group=self.process_group)
            flat.copy_(red)
        else:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.process_group)
        for o, v in zip(outs, views):
            o.data.copy_(v)

    def _grad_hook(self, g: OSFTGroup, side: str, state: Dict[str, bool]):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            out = torch.empty_like(grad, memory_format=torch.contiguous_format)
            g.project_(grad, side, out)
            state["fired"] = True
            return out
        return hook

    # ------------------------------------------------------------------ training-time API

    def parameters(self) -> List[nn.Parameter]:
        """The trainable OSFT parameters (every group's ``u_low, s_low, v_low`` or ``weight``).
        Pass ``model.parameters()`` instead to also train non-target parameters."""
        out: List[nn.Parameter] = []
        for g in self.groups.values():
            out += [p for p in g.parameters(recurse=False)]
        return out

    def projected_parameters(self) -> List[Tuple[nn.Parameter, str, OSFTGroup]]:
        """``(parameter, side, group)`` for every tensor OSFT keeps out of the frozen subspace."""
        return [(p, side, g) for g in self.groups.values() for p, side in g.projected()]

    @torch.no_grad()
    def project_gradients(self) -> int:
        """Project every ``.grad`` of the projected parameters in place (one osft call per group
        and factor); returns the number of calls. Idempotent (projection is), so it is harmless
        with ``project_in_backward=True`` too."""
        calls = 0
        for p, side, g in self.projected_parameters():
            if p.grad is not None:
                g.project_(p.grad, side)
                calls += 1
        return calls

    @torch.no_grad()
    def project_unhooked_gradients(self) -> int:
        """Project the ``.grad`` of projected parameters that no backward hook covers: all of
        them with ``project_in_backward=False``, and parameters a wrapper replaced after OSFT
        installed its hooks (FSDP2's ``fully_shard`` swaps in new ``DTensor`` parameters; the
        hooks stay on the old ones), i.e. every gradient whose hook has not run since the last
        call. :class:`OSFTOptimizer` calls this before every step, so a gradient is never left
        unprojected. Returns the number of osft calls."""
        calls = 0
        for p, side, g in self.projected_parameters():
            state = self._hooked.get(id(p))
            if (state is None or not state["fired"]) and p.grad is not None:
                g.project_(p.grad, side)
                calls += 1
        for state in self._hooked.values():
            state["fired"] = False
        return calls

    @torch.no_grad()
    def retract(self) -> int:
        """Project the trainable factors themselves: ``U_low <- U_low - U_high U_high^T U_low``
        and ``V_low <- V_low - V_low V_high^T V_high`` (one call each per group), removing any
        drift into the frozen subspace. Dense groups are not retracted (a dense ``W`` legitimately
        holds ``U_high S_high V_high``). Returns the number of calls."""
        calls = 0
        for p, side, g in self.projected_parameters():
            if side != "both":
                g.project_(p.data, side)
                calls += 1
        return calls

    @torch.no_grad()
    def snapshot(self, only: Optional[set] = None) -> Dict[int, torch.Tensor]:
        """Copies of the projected parameters (by ``id``), for :meth:`project_update`."""
        return {id(p): _local(p.detach()).clone() for p, _, _ in self.projected_parameters()
                if only is None or id(p) in only}

    @torch.no_grad()
    def project_update(self, before: Dict[int, torch.Tensor]) -> int:
        """Project the update every projected parameter received since ``before`` (from
        :meth:`snapshot`): ``p <- old + P(p - old)``; one osft call per group and factor."""
        calls = 0
        for p, side, g in self.projected_parameters():
            old = before.get(id(p))
            if old is None:
                continue
            cur = _local(p.detach())
            delta = cur - old
            _, start = local_batch(p.detach(), g.batch)
            g.project_local_(delta, side, start)
            cur.copy_(old.add_(delta))
            calls += 1
        return calls

    @torch.no_grad()
    def leakage(self) -> Dict[str, float]:
        """Largest relative leakage per group, ``max_b ||U_high^T U_low||/||U_low||`` and
        ``max_b ||V_low V_high^T||/||V_low||`` (factored groups), by osft.leakage. Under FSDP2
        each rank reports the matrices of its own shard."""
        out = {}
        for name, g in self.groups.items():
            if g.mode != "factored" or g.k == 0 or g.r == g.k:
                continue
            ctx = context_for(g.u_high.device)
            ul, start = local_batch(g.u_low.detach(), g.batch)
            vl, _ = local_batch(g.v_low.detach(), g.batch)
            if ul.shape[0] == 0:
                continue
            sl = slice(start, start + ul.shape[0])
            lu = np.atleast_1d(_osft.leakage(ctx, "left", g.u_high[sl], ul))
            lv = np.atleast_1d(_osft.leakage(ctx, "right", g.v_high[sl], vl))
            out[name] = float(max(lu.max(), lv.max()))
        return out

    # ------------------------------------------------------------------ merging, task sequence

    @torch.no_grad()
    def dense_weights(self) -> Dict[str, torch.Tensor]:
        """The current dense weight of every target (its original shape and dtype), rebuilt with
        one :func:`osft.reconstruct` call per factored group. Under FSDP2 the sharded factors are
        gathered first (``full_tensor()``, a collective: call it on every rank)."""
        out: Dict[str, torch.Tensor] = {}
        shapes = {t.name: t.shape for t in self.targets}
        for g in self.groups.values():
            if g.mode == "dense":
                w = _full(g.weight.detach())
            else:
                w = torch.empty(g.batch, g.n, g.m, dtype=g.u_high.dtype, device=g.u_high.device)
                parts = [g.u_high, g.s_high, g.v_high] if g.k > 0 else [None] * 3
                parts += ([_full(g.u_low.detach()), _full(g.s_low.detach()),
                           _full(g.v_low.detach())] if g.r > g.k else [None] * 3)
                if g.k == 0 and g.r == g.k:  # an empty matrix
                    w.zero_()
                else:
                    compute = "f64" if w.dtype == torch.float64 else "f32"
                    _osft.reconstruct(context_for(w.device), w, *parts, compute=compute)
            for name, off, cnt in g.members:
                out[name] = w[off:off + cnt].reshape(shapes[name]).clone()
        return out

    @torch.no_grad()
    def merged_state_dict(self) -> Dict[str, torch.Tensor]:
        """``model.state_dict()`` as the plain model would have it: the groups' entries replaced
        by every target's dense weight under its original name (for ``save_pretrained`` /
        ``torch.save`` without unwrapping). Keys of modules wrapped by DDP-style containers keep
        whatever prefix ``model`` itself has."""
        prefixes = []
        names = {id(mod): name for name, mod in self.model.named_modules()}
        for owner, attr in self._owners:
            base = names.get(id(owner), "")
            prefixes.append(f"{base}.{attr}." if base else f"{attr}.")
        sd = {k: v for k, v in self.model.state_dict().items()
              if not any(k.startswith(p) for p in prefixes)}
        sd.update(self.dense_weights())
        return sd

    @torch.no_grad()
    def merge(self) -> nn.Module:
        """Write dense weights back into the target modules as ordinary ``nn.Parameter``\\ s,
        restore their classes, remove the hooks and the group modules. Returns the model, which
        is then a plain model again (for checkpoints, evaluation, or another task)."""
        if not self.groups:
            return self.model
        dense = self.dense_weights()
        for h in self._handles:
            h.remove()
        self._handles = []
        self._hooked = {}
        for t in self.targets:
            mod = t.module
            if "_osft_slots" in mod.__dict__:  # once per module (it may hold several targets)
                del mod.__dict__["_osft_slots"]
                mod.__dict__.pop("_osft_cache", None)
                mod.__class__ = mod._osft_original_class
            mod._parameters[t.attr] = nn.Parameter(
                dense[t.name], requires_grad=getattr(t, "_requires_grad", True))
            order = getattr(t, "_order", None)
            if order:  # the original parameter order (state_dict keys, optimizer order)
                params = mod._parameters
                keys = [k for k in order if k in params] + [k for k in params if k not in order]
                items = [(k, params[k]) for k in keys]
                params.clear()
                params.update(items)
        for owner, name in self._owners:
            delattr(owner, name)
        self._owners = []
        self.groups = OrderedDict()
        return self.model

    def next_task(self, frozen_ratio: Optional[RankSpec] = None, *,
                  unfreeze_rank_ratio: Optional[float] = None,
                  rank_pattern: Optional[Mapping[PatternLike, RankSpec]] = None,
                  ranks: str = "ratio", calibration: Optional[Iterable[Any]] = None,
                  forward_fn: Optional[Callable[[nn.Module, Any], Any]] = None,
                  min_ratio: float = 0.1, max_ratio: float = 0.9, max_samples: int = 256,
                  grow_only: bool = True) -> Dict[str, int]:
        """Finish a task and prepare the next: merge the factors into dense weights, re-decompose
        them with new ranks (arguments as for the constructor) and freeze the new top-``k``.
        With ``grow_only`` (default) each target's ``k`` is at least its previous one (the count:
        the new top-``k`` subspace contains the previous frozen one only while at most
        ``k_new - k_old`` trained singular values exceed the smallest frozen one, see the module
        docstring). Returns the
        new ranks. Recreate the optimizer (and any DDP / DeepSpeed wrapper) afterwards."""
        # Validate before merging, so that a bad argument leaves the current task in place.
        self._check_args(frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks, calibration,
                         min_ratio, max_ratio, max_samples, self.targets)
        previous = dict(self.ranks) if grow_only else None
        self.merge()
        self._setup(frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks, calibration,
                    forward_fn, min_ratio, max_ratio, max_samples, previous=previous)
        self.task += 1
        return dict(self.ranks)

    def __repr__(self) -> str:
        gs = ", ".join(f"{n}(B={g.batch})" for n, g in self.groups.items())
        return f"OSFT(mode={self.mode}, targets={len(self.targets)}, task={self.task}, groups=[{gs}])"
