"""Keeping the *update* out of the frozen subspace: :class:`OSFTOptimizer` (for DeepSpeed see
:func:`osft.torch.deepspeed.attach_deepspeed`).

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
    As DeepSpeed's client optimizer it works at ZeRO stage 0 in fp32 only; elsewhere DeepSpeed
    gives it flat fp32 partitions to step, and :meth:`step` raises (use
    :func:`osft.torch.attach_deepspeed` with the plain optimizer).
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

    def _check_params(self) -> None:
        # DeepSpeed's ZeRO (stage >= 1) and mixed-precision wrappers replace the params of a
        # client optimizer's groups by flat fp32 master partitions: stepping those, this wrapper
        # would project nothing. Say so instead of silently doing nothing.
        if self._mine and not any(id(p) in self._mine for g in self.param_groups
                                  for p in g["params"]):
            raise RuntimeError(
                "OSFTOptimizer: the parameters it steps are no longer OSFT's (a DeepSpeed ZeRO "
                "stage >= 1 or bf16/fp16 engine replaced them with flat fp32 partitions); pass "
                "the wrapped optimizer to deepspeed.initialize and call "
                "osft.torch.attach_deepspeed(engine, osft), which retracts the fp32 masters")

    def step(self, closure: Optional[Callable[[], Any]] = None):  # type: ignore[override]
        self._check_params()
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

