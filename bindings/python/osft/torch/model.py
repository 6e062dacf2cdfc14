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
   fraction** ``k = int(R * f)``, exactly PEFT OSF's float ``effective_rank`` (osft's
   ``"fraction"`` rule). ``unfreeze_rank_ratio = u`` is exactly mini_trainer's, the *trainable*
   fraction: ``k = floor(R * (1 - u))`` capped at ``R - 1``. The adaptive rule is the seed's
   (:func:`osft.adaptive_ranks`). docs/ranks.md tables the conventions. Note ``1`` is ``k = 1``
   while ``1.0`` freezes everything; a target left with ``k = R`` (nothing trainable) is named
   in a ``UserWarning``.
3. **Decomposition, batched** — targets with the same matrix shape, ``k``, dtype and device form a
   *group*; the group's weights are stacked into one contiguous ``B x N x M`` tensor on their
   device and dtype and decomposed by **one** :func:`osft.decompose` call, computed in
   ``upcast_dtype`` (default float64: on the CPU its factors are at the rounding of their stored
   dtype, ~150x more accurate than a float32 SVD, for 1.3-2.6x the one-off time; see
   BENCHMARKS.md) and stored in ``output_dtype`` (default: the weights' dtype; the layers still
   compute in the weights' dtype, as mini_trainer's ``upcast_dtype`` / ``output_dtype``).
   With ``torch.distributed`` initialised and more than one rank,
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
   ``s_low (B,R-k)``, ``v_low (B,R-k,M)``. With ``forward="factorised"`` an ``nn.Linear``
   target computes ``x V^T diag(S) U^T`` for each part without forming its weight (autograd
   keeps ``2 T (R-k)`` values for ``T`` input rows instead of ``N M + N (R-k)``); with
   ``forward="auto"`` (default) it does so whenever that keeps less, per call (a short
   sequence: factorised; a long micro-batch on a narrow layer: dense; measured in
   BENCHMARKS.md); with ``forward="dense"``, and for any other module (GPT-2's ``Conv1D``, expert tensors, a subclass
   with its own forward), the layer computes with
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

This module holds the lifecycle (:class:`OSFT`); steps 2-4 are done by :mod:`osft.torch.ranks`
and :mod:`osft.torch.calibration`, :mod:`osft.torch.decompose` and :mod:`osft.torch.surgery`, and
the groups are :class:`osft.torch.group.OSFTGroup`.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import osft as _osft

from . import checkpoint as _checkpoint
from . import ranks as _ranks
from . import surgery as _surgery
from .calibration import layer_importance
from .context import context_for
from .decompose import COMPUTE, build_groups, plan_groups
from .dtensor import full as _full
from .dtensor import local as _local
from .dtensor import local_batch
from .group import OSFTGroup
from .ranks import RankSpec, resolve_rank
from .targets import PatternLike, Target, find_targets
from .zero3 import gathered, is_zero3

# Re-exported for callers that import them from here.
__all__ = ["OSFT", "OSFTGroup", "RankSpec", "context_for", "local_batch", "resolve_rank"]

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
#: The SVD's working precision unless ``upcast_dtype`` says otherwise: float64, measured in
#: ``benches/decompose_precision.py`` (BENCHMARKS.md) as ~150x more accurate than float32 on
#: CPU (factors at float32 rounding) for 1.3-2.6x the decomposition time, a one-off cost.
DEFAULT_UPCAST_DTYPE = torch.float64
#: The target layers' forward: ``"factorised"`` (``x V^T diag(S) U^T``, no dense ``W``),
#: ``"dense"`` (``W`` rebuilt per forward) or ``"auto"``, per call the one that keeps fewer bytes
#: for backward; ``benches/forward_memory.py`` (BENCHMARKS.md) measures each winning somewhere.
DEFAULT_FORWARD = "auto"


class OSFT:
    """Apply OSFT to ``model`` (in place) and manage it: projection, merging, task sequence.

    Args:
        model: the ``nn.Module`` (apply before wrapping it in DDP / DeepSpeed).
        targets, exclude, model_type: target selection (:func:`osft.torch.find_targets`).
        frozen_ratio: frozen fraction of each matrix's rank (default 0.5 when neither this nor
            ``unfreeze_rank_ratio`` is given), or an ``int`` frozen rank.
        unfreeze_rank_ratio: mini_trainer's convention, the trainable fraction ``u``
            (``k = floor(R (1 - u))``, at most ``R - 1``); exclusive with ``frozen_ratio``.
        rank_pattern: ``{pattern: spec}``; the first pattern matching a target's parameter or
            module name sets its spec (int ``k`` or frozen fraction).
        ranks: ``"ratio"`` (the above) or ``"adaptive"``: run ``calibration`` batches, collect
            every target layer's inputs, compute layer importance ``mean cos(x, W x)`` with
            :func:`osft.layer_importance` (one batched call per shape group) and map it to ranks
            with the seed's rule, :func:`osft.adaptive_ranks`: ``k = clamp(round(CR), 1, R)``,
            ``CR = mrr + I_n (trr - mrr)``, ``I_n = I / (mean(I) + 1e-8)``, ``mrr = min_ratio R``
            (default 0.5), ``trr = target_ratio R`` (default 1.0, the seed's: a layer of average
            importance freezes its full rank). A mean importance that is not positive is a
            ``ValueError``. Expert (3-D) targets and targets matched by ``rank_pattern`` keep
            their ratio spec.
        calibration: iterable of batches for ``ranks="adaptive"``; ``forward_fn(model, batch)``
            runs one (default: ``model(**batch)`` for mappings, ``model(*batch)`` for tuples,
            else ``model(batch)``). ``max_samples``: rows (tokens) kept per layer.
        mode: ``"factored"`` or ``"dense"`` (see the module docstring).
        project_in_backward: project gradients in autograd hooks (default) — else call
            :meth:`project_gradients` after backward.
        distribute: split decomposition work across ``torch.distributed`` ranks when initialised
            with ``world_size > 1`` (``process_group``: the group, default WORLD).
        freeze_others: set ``requires_grad=False`` on every non-target parameter.
        upcast_dtype: the SVD's working precision, ``torch.float64`` (default) or
            ``torch.float32``; output_dtype: the factors' dtype (default: the weights').
        forward: ``"auto"`` (default), ``"factorised"`` or ``"dense"`` (see the module
            docstring).
        keep_base: keep copies of the trainable tensors as decomposed, for
            :meth:`disable_adapter` (the memory of the trainable factors again).
        plain_state_dict: ``model.state_dict()`` gives the plain model's entries (default; see
            :mod:`osft.torch.checkpoint`), for export; ``False`` gives the raw ``osft_*`` factor
            entries, which a framework resuming from ``model.state_dict()`` (DeepSpeed's
            ``engine.save_checkpoint``, the Hugging Face ``Trainer``) needs for an exact resume
            (:func:`~osft.torch.attach_deepspeed` sets it).
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
                 min_ratio: float = 0.5, target_ratio: float = 1.0, max_samples: int = 256,
                 mode: str = "factored", project_in_backward: bool = True,
                 upcast_dtype: torch.dtype = DEFAULT_UPCAST_DTYPE,
                 output_dtype: Optional[torch.dtype] = None,
                 forward: str = DEFAULT_FORWARD, keep_base: bool = False,
                 plain_state_dict: bool = True,
                 distribute: bool = True, process_group: Optional[Any] = None,
                 freeze_others: bool = False,
                 group_by: Optional[Callable[[Target], Any]] = None):
        if mode not in ("factored", "dense"):
            raise ValueError(f"mode must be 'factored' or 'dense', got {mode!r}")
        if ranks not in ("ratio", "adaptive"):
            raise ValueError(f"ranks must be 'ratio' or 'adaptive', got {ranks!r}")
        if _surgery.is_applied(model):
            raise ValueError("OSFT is already applied to this model")
        if upcast_dtype not in COMPUTE:
            raise ValueError(f"upcast_dtype must be torch.float32 or torch.float64, got "
                             f"{upcast_dtype!r}")
        if output_dtype is not None and output_dtype not in _FLOAT_DTYPES:
            raise ValueError(f"output_dtype must be None or one of {_FLOAT_DTYPES}, got "
                             f"{output_dtype!r}")
        if forward not in ("dense", "factorised", "auto"):
            raise ValueError(f"forward must be 'dense', 'factorised' or 'auto', got {forward!r}")
        self.model = model
        self.mode = mode
        self.upcast_dtype, self.output_dtype, self.forward = upcast_dtype, output_dtype, forward
        self.keep_base = bool(keep_base)
        #: Whether ``model.state_dict()`` gives the plain model's entries (see the docstring).
        self.plain_state_dict = bool(plain_state_dict)
        self._plain_keys: List[str] = []
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
                    forward_fn, min_ratio, target_ratio, max_samples, previous=None)
        # Only after a successful setup (invalid arguments leave the model as it was); kept apart
        # from _handles, which merge() removes: they serve every task.
        self._state_dict_handles = _checkpoint.install_state_dict_hooks(self)

    # ------------------------------------------------------------------ setup

    def _check_args(self, frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks, calibration,
                    min_ratio, target_ratio, max_samples, targets: List[Target]):
        """Validate everything that does not need a forward pass; returns the default spec."""
        return _ranks.check_rank_args(frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks,
                                      calibration, min_ratio, target_ratio, max_samples, targets)

    def _setup(self, frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks, calibration,
               forward_fn, min_ratio, target_ratio, max_samples, previous):
        targets = find_targets(self.model, **self._target_args)
        self.rank_args = dict(frozen_ratio=frozen_ratio, unfreeze_rank_ratio=unfreeze_rank_ratio,
                              rank_pattern=rank_pattern, ranks=ranks, min_ratio=min_ratio,
                              target_ratio=target_ratio, max_samples=max_samples)
        default = self._check_args(frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks,
                                   calibration, min_ratio, target_ratio, max_samples, targets)
        for t in targets:
            p = getattr(t.module, t.attr)
            if p.device.type not in ("cpu", "cuda"):
                raise ValueError(f"{t.name}: osft runs on CPU or CUDA tensors, not {p.device}")
            if p.dtype not in _FLOAT_DTYPES:
                raise ValueError(f"{t.name}: dtype {p.dtype} is not supported")
        kmap = {t.name: _ranks.rank_of(t, default, rank_pattern) for t in targets}
        if ranks == "adaptive":
            adapt = _ranks.adaptive_targets(targets, rank_pattern)
            if adapt:
                _, world = self._world()
                imp = layer_importance(self.model, adapt, calibration, forward_fn, max_samples,
                                       world, self.process_group)
                kmap.update(_ranks.adaptive_ks(adapt, imp, min_ratio, target_ratio))
        if previous is not None:  # grow_only: k never shrinks (the subspace may rotate)
            _ranks.grow_only(kmap, previous)
        _ranks.warn_rank_choices(targets, kmap, default)
        self._build(targets, kmap)
        if self._freeze_others:  # after a successful build: invalid input leaves the model as is
            mine = {id(p) for g in self.groups.values() for p in g.parameters()}
            for p in self.model.parameters():
                if id(p) not in mine:
                    p.requires_grad_(False)

    def _world(self) -> Tuple[int, int]:
        if (self.distribute and dist.is_available() and dist.is_initialized()):
            return dist.get_rank(self.process_group), dist.get_world_size(self.process_group)
        return 0, 1

    def _build(self, targets: List[Target], kmap: Dict[str, int]) -> None:
        rank, world = self._world()
        keyed, own, self.partition = plan_groups(targets, kmap, self.group_by, rank, world)
        groups = build_groups(keyed, own, self.mode, world, self.process_group,
                              self.upcast_dtype, self.output_dtype)
        if self.keep_base:
            for g in groups.values():
                g.keep_base_()
        # Install (only now: every decomposition succeeded).
        self._plain_keys = list(self.model.state_dict(keep_vars=True))  # before: no hook work
        self.targets, self.ranks, self.groups = targets, dict(kmap), groups
        handles, owners = _surgery.install(targets, groups, self.forward)
        self._handles += handles
        self._owners += owners
        self._hooked = {}
        if self.project_in_backward:
            for g in groups.values():
                for p, side in g.projected():
                    state = {"fired": False}
                    self._handles.append(p.register_hook(self._grad_hook(g, side, state)))
                    self._hooked[id(p)] = state

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
        each rank reports the matrices of its own shard; under DeepSpeed ZeRO-3 the factors are
        gathered (a collective: call it on every rank)."""
        with gathered(self.parameters()):
            return self._leakage()

    def _leakage(self) -> Dict[str, float]:
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
        gathered first (``full_tensor()``), under DeepSpeed ZeRO-3 the partitioned ones
        (``GatheredParameters``): collectives, call it on every rank."""
        with gathered(self.parameters()):
            return self._dense_weights()

    def _dense_weights(self) -> Dict[str, torch.Tensor]:
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
                    _osft.reconstruct(context_for(w.device), w, *parts, compute=g.compute)
            if w.dtype != g.weight_dtype:  # factors kept in another output_dtype
                w = w.to(g.weight_dtype)
            for name, off, cnt in g.members:
                out[name] = w[off:off + cnt].reshape(shapes[name]).clone()
        return out

    @torch.no_grad()
    def merged_state_dict(self) -> Dict[str, torch.Tensor]:
        """``model.state_dict()`` as the plain model would have it: the groups' entries replaced
        by every target's dense weight under its original name (what ``model.state_dict()``
        gives anyway unless ``plain_state_dict`` is off). Keys of modules wrapped by DDP-style
        containers keep whatever prefix ``model`` itself has. Under DeepSpeed ZeRO-3 every
        partitioned parameter is gathered for it (a collective: call it on every rank)."""
        params = list(self.model.parameters())
        plain, self.plain_state_dict = self.plain_state_dict, True
        try:
            with gathered(params):
                sd = dict(self.model.state_dict())
                if any(is_zero3(p) for p in params):  # the gathered storage is released after
                    sd = {k: v.clone() for k, v in sd.items()}
                return sd
        finally:
            self.plain_state_dict = plain

    # ------------------------------------------------------------------ checkpoints, base model

    def osft_state_dict(self, include_frozen: bool = False) -> Dict[str, torch.Tensor]:
        """The OSFT-only state (trainable factors, other trainable parameters; the frozen
        factors with ``include_frozen``): see :mod:`osft.torch.checkpoint`."""
        return _checkpoint.osft_state_dict(self, include_frozen)

    def save_pretrained(self, directory: str, include_frozen: Optional[bool] = None) -> None:
        """Save the OSFT state and a serialised configuration into ``directory``
        (``osft_config.json``, ``osft_model.pt``), to resume with :meth:`from_pretrained`.
        ``include_frozen`` (default: after :meth:`next_task` only) also saves the frozen
        factors; otherwise they are recomputed at load and checked against saved digests."""
        _checkpoint.save_pretrained(self, directory, include_frozen)

    @classmethod
    def from_pretrained(cls, model: nn.Module, directory: str, **overrides) -> OSFT:
        """Apply OSFT to ``model`` (the fresh base model the saved run started from) with the
        saved targets, ranks, groups and settings, and load the saved state: training then
        continues exactly as the saved run would have (see :mod:`osft.torch.checkpoint`)."""
        return _checkpoint.from_pretrained(cls, model, directory, **overrides)

    @contextlib.contextmanager
    def disable_adapter(self):
        """Within the block the targets compute with their *base* weights, the dense weights
        as they were when OSFT was applied (for :meth:`from_pretrained`: the saved base copies,
        else the loaded base model's), as PEFT's ``disable_adapter()``; OSFT stays applied and
        the trained factors are untouched. Needs ``OSFT(keep_base=True)`` (copies of the
        trainable tensors, the same memory again). Non-target parameters that were trained
        (``freeze_others=False``) keep their trained values."""
        if not self.keep_base:
            raise RuntimeError("disable_adapter() needs OSFT(..., keep_base=True): the base "
                               "weights are not kept otherwise")
        for g in self.groups.values():
            g.use_base = True
        try:
            yield self.model
        finally:
            for g in self.groups.values():
                g.use_base = False

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
        _surgery.uninstall(self.targets, dense, self._owners)
        self._owners = []
        self.groups = OrderedDict()
        return self.model

    def next_task(self, frozen_ratio: Optional[RankSpec] = None, *,
                  unfreeze_rank_ratio: Optional[float] = None,
                  rank_pattern: Optional[Mapping[PatternLike, RankSpec]] = None,
                  ranks: str = "ratio", calibration: Optional[Iterable[Any]] = None,
                  forward_fn: Optional[Callable[[nn.Module, Any], Any]] = None,
                  min_ratio: float = 0.5, target_ratio: float = 1.0, max_samples: int = 256,
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
                         min_ratio, target_ratio, max_samples, self.targets)
        previous = dict(self.ranks) if grow_only else None
        self.merge()
        self._setup(frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks, calibration,
                    forward_fn, min_ratio, target_ratio, max_samples, previous=previous)
        self.task += 1
        return dict(self.ranks)

    def __repr__(self) -> str:
        gs = ", ".join(f"{n}(B={g.batch})" for n, g in self.groups.items())
        return f"OSFT(mode={self.mode}, targets={len(self.targets)}, task={self.task}, groups=[{gs}])"
