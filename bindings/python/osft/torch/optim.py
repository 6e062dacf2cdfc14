"""Keeping the *update* out of the frozen subspace: :class:`OSFTOptimizer`, and a DeepSpeed
engine hook, :func:`attach_deepspeed`.

Why: gradient projection makes ``dU_low`` orthogonal to ``U_high``, but Adam(W) divides each
element by its own ``sqrt(v)``; that element-wise rescaling re-introduces components in the frozen
subspace, step after step (mini_trainer issue #90). :class:`OSFTOptimizer` wraps any optimizer:

0. before ``step()``, it projects any gradient OSFT's backward hooks did not cover
   (``project_in_backward=False``, or parameters FSDP2 replaced with ``DTensor`` shards);
1. it snapshots the projected parameters (one copy of the trainable factors);
2. after the inner ``step()``, it projects the actual update ``delta = new - old`` (one osft call
   per group and factor) and sets ``param = old + P(delta)``;
3. then it *retracts*: ``U_low <- U_low - U_high U_high^T U_low`` (and ``V_low`` on the right),
   which removes rounding drift, so ``U_low`` stays orthogonal to ``U_high`` over any number of
   steps.

The optimizer's state (Adam's moments) is untouched: only the parameters are corrected.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch

from .model import OSFT


class OSFTOptimizer(torch.optim.Optimizer):
    """Wrap ``optimizer`` so that every step's update of ``osft``'s projected parameters is
    projected (``project_update``) and ``U_low`` / ``V_low`` are retracted (``retract``).

    It *is* a ``torch.optim.Optimizer`` (LR schedulers, ``zero_grad``, ``state_dict`` and
    DeepSpeed's client-optimizer check work) sharing ``param_groups`` and ``state`` with the
    wrapped optimizer. Parameters that are not OSFT's are stepped as the inner optimizer does.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, osft: OSFT, project_update: bool = True,
                 retract: bool = True):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer)}")
        if not isinstance(osft, OSFT):
            raise TypeError(f"osft must be an osft.torch.OSFT, got {type(osft)}")
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if not params:
            raise ValueError("the wrapped optimizer has no parameters")
        super().__init__(params, dict(optimizer.defaults))
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups
        self.state = optimizer.state
        self.defaults = optimizer.defaults
        self.osft = osft
        self.project_update = bool(project_update)
        self.retract = bool(retract)
        mine = {id(p) for p in params}
        projected = {id(p) for p, _, _ in osft.projected_parameters()}
        self._mine = mine & projected
        if projected and not self._mine:
            warnings.warn("OSFTOptimizer: the wrapped optimizer holds none of OSFT's projected "
                          "parameters (built before OSFT was applied, or before next_task?)",
                          stacklevel=2)

    def step(self, closure: Optional[Callable[[], Any]] = None):  # type: ignore[override]
        self.osft.project_unhooked_gradients()
        inner_closure: Optional[Callable[[], Any]] = None
        if closure is not None:
            def projected_closure():
                with torch.enable_grad():
                    loss = closure()
                self.osft.project_unhooked_gradients()   # gradients the closure recomputed
                return loss
            inner_closure = projected_closure
        before = self.osft.snapshot(self._mine) if self.project_update else None
        loss = self.optimizer.step(inner_closure) if inner_closure else self.optimizer.step()
        if before:
            self.osft.project_update(before)
        if self.retract:
            self.osft.retract()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.optimizer.load_state_dict(state_dict)
        self.state = self.optimizer.state
        self.param_groups = self.optimizer.param_groups

    def add_param_group(self, param_group) -> None:
        if "optimizer" not in self.__dict__:  # during torch.optim.Optimizer.__init__
            super().add_param_group(param_group)
            return
        self.optimizer.add_param_group(param_group)

    def __repr__(self) -> str:
        return (f"OSFTOptimizer({self.optimizer.__class__.__name__}, project_update="
                f"{self.project_update}, retract={self.retract})")


def attach_deepspeed(engine: Any, osft: OSFT, retract: bool = True) -> Callable[[], None]:
    """Hook OSFT into a DeepSpeed engine's training loop (``engine.backward(loss)``,
    ``engine.step()``); returns a function that detaches the hook.

    deepspeed is not imported: this is written against the engine's documented API, duck-typed —
    ``engine.module`` (the wrapped model), ``engine.step()`` and, if present,
    ``engine.zero_optimization_stage()``.

    * Gradients: with ``OSFT(project_in_backward=True)`` (the default) the projection happens in
      autograd tensor hooks while the gradient is produced, before DeepSpeed's gradient
      reduction hooks (ZeRO 0-2) fire; ZeRO stage 3 is refused (``ValueError``); by linearity
      this equals projecting the reduced gradient.
      Otherwise the hook calls :meth:`OSFT.project_gradients` before each ``engine.step()``,
      which only sees gradients at ZeRO stage 0 (at stages >= 1 DeepSpeed moves them into
      partitioned buffers: use ``project_in_backward=True``).
    * Update projection / retraction: at ZeRO stage 0 in fp32 the engine steps the module's own
      parameters, so either pass an :class:`OSFTOptimizer` to ``deepspeed.initialize(optimizer=
      ...)`` or let this hook retract after each ``engine.step()`` (``retract=True``). At stages
      >= 1, or with fp16 / bf16 enabled (``engine.fp16_enabled()``, ``engine.bfloat16_enabled()``),
      the optimizer steps fp32 master weights that DeepSpeed copies over the module's parameters,
      so neither can be applied from outside: this function warns, and only the gradient
      projection is in effect (Adam may then leak slowly into the frozen subspace;
      :meth:`OSFT.leakage` measures it).
    """
    module = getattr(engine, "module", None)
    step = getattr(engine, "step", None)
    if module is None or not callable(step):
        raise TypeError("attach_deepspeed: expected a DeepSpeed engine (with .module and .step())")
    if not any(m is osft.model for m in module.modules()):
        raise ValueError("attach_deepspeed: the OSFT model is not inside engine.module")
    stage_fn = getattr(engine, "zero_optimization_stage", None)
    stage = int(stage_fn()) if callable(stage_fn) else 0
    mixed = [name for name in ("fp16_enabled", "bfloat16_enabled")
             if callable(getattr(engine, name, None)) and getattr(engine, name)()]
    do_retract = retract and stage == 0 and not mixed
    if stage >= 3:
        # ZeRO-3 partitions parameters and gathers them around each submodule's forward; the
        # stacked group parameters live in OSFT's own modules, whose forward never runs, so
        # they would never be gathered. Refuse rather than train on empty partitions.
        raise ValueError("attach_deepspeed: ZeRO stage 3 is not supported (OSFT's stacked "
                         "factors would not be gathered); use ZeRO stage 0-2")
    if stage > 0 and not osft.project_in_backward:
        raise ValueError(f"attach_deepspeed: at ZeRO stage {stage} gradients must be projected "
                         "in backward hooks (OSFT(project_in_backward=True))")
    if retract and (stage > 0 or mixed):
        why = f"ZeRO stage {stage}" if stage > 0 else f"{mixed[0].replace('_enabled', '')} mixed precision"
        warnings.warn(f"attach_deepspeed: with {why} DeepSpeed steps fp32 master weights that it "
                      "copies over the module's parameters; update projection and retraction "
                      "are not applied (gradient projection is)", stacklevel=2)

    original = engine.step

    def osft_step(*args, **kwargs):
        osft.project_unhooked_gradients()
        out = original(*args, **kwargs)
        if do_retract:
            osft.retract()
        return out

    engine.step = osft_step

    def detach() -> None:
        if engine.step is osft_step:
            engine.step = original

    return detach
