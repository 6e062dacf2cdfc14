"""Module surgery: putting OSFT groups in place of the target parameters, and taking them out.

:func:`install` removes each target's parameter from its module, swaps the module's class for a
subclass whose ``weight`` (or expert attribute) is a property rebuilt from the module's slice of
its group (cached for the duration of a forward), and registers each group as a child
``osft_<group name>`` of its first member's module. :func:`uninstall` writes dense weights back
as ordinary parameters, in their original order, and restores the classes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import nn

from .group import OSFTGroup
from .targets import Target

_SUBCLASSES: Dict[Tuple[type, Tuple[str, ...]], type] = {}


def is_applied(model: nn.Module) -> bool:
    """Whether OSFT's surgery is in place in any module of ``model``."""
    return any("_osft_slots" in mod.__dict__ for mod in model.modules())


def factorisable(module: nn.Module, attrs: Tuple[str, ...]) -> bool:
    """Whether the factorised forward can serve ``module``: an ``nn.Linear`` (or a subclass that
    keeps its forward) whose only target is ``weight``."""
    return (isinstance(module, nn.Linear) and attrs == ("weight",)
            and type(module).forward is nn.Linear.forward)


def _factorised_forward(self, input):
    group, offset, _, _ = self.__dict__["_osft_slots"]["weight"]
    if self.__dict__.get("_osft_auto") and not group.factorised_saves_memory(input):
        return nn.functional.linear(input, group.matrices(offset, 1)[0], self.bias)
    return group.linear(input, offset, self.bias)


def _osft_subclass(cls: type, attrs: Tuple[str, ...], factorised: bool = False) -> type:
    """A subclass of ``cls`` whose ``attrs`` are properties reading the module's OSFT groups
    (a module may hold several targets, e.g. an MoE experts module's ``gate_up_proj`` and
    ``down_proj``); with ``factorised``, an ``nn.Linear`` whose forward applies the factors."""
    key = (cls, attrs, factorised)
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
        if factorised:
            ns["forward"] = _factorised_forward
        sub = type(f"OSFT{cls.__name__}", (cls,), ns)
        _SUBCLASSES[key] = sub
    return sub


def _slot_matrix(module, attr: str) -> torch.Tensor:
    group, offset, count, squeeze = module.__dict__["_osft_slots"][attr]
    w = group.matrices(offset, count)
    return w[0] if squeeze else w


def _pre_forward(module, args):
    # Rebuild each weight once per forward call (the property returns the cached tensor);
    # a factorised forward never forms it.
    if module.__dict__.get("_osft_factorised"):
        return
    module.__dict__["_osft_cache"] = {a: _slot_matrix(module, a)
                                      for a in module.__dict__["_osft_slots"]}


def _post_forward(module, args, output):
    module.__dict__.pop("_osft_cache", None)


def install(targets: List[Target], groups: Mapping[str, OSFTGroup], forward: str = "dense"
            ) -> Tuple[List[Any], List[Tuple[nn.Module, str]]]:
    """Replace every target's parameter by its slice of ``groups`` and register the groups.
    ``forward="factorised"`` gives the ``nn.Linear`` targets of factored groups a forward
    through the factors (:meth:`OSFTGroup.linear`), ``"auto"`` one that chooses per call
    (:meth:`OSFTGroup.factorised_saves_memory`); other modules rebuild their weight.
    Returns the forward hook handles and the ``(owner module, child name)`` of each group."""
    handles: List[Any] = []
    owners: List[Tuple[nn.Module, str]] = []
    by_name = {}
    for g in groups.values():
        for name, off, cnt in g.members:
            by_name[name] = (g, off, cnt)
    modules: Dict[int, Tuple[nn.Module, List[Target]]] = {}
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
        attrs = tuple(sorted(slots))
        fact = (forward in ("factorised", "auto") and factorisable(mod, attrs)
                and slots["weight"][0].mode == "factored")
        mod.__class__ = _osft_subclass(type(mod), attrs, fact)
        mod.__dict__["_osft_slots"] = slots
        if fact:
            mod.__dict__["_osft_factorised"] = True
            if forward == "auto":
                mod.__dict__["_osft_auto"] = True
        handles.append(mod.register_forward_pre_hook(_pre_forward))
        handles.append(mod.register_forward_hook(_post_forward, always_call=True))
    for name, g in groups.items():
        # Registered on the module of the group's first member (a leaf layer, which does not
        # iterate its children), so that model.parameters(), state_dict(), .to() and DDP see
        # the group, without adding a child that nn.Sequential & co. would try to call.
        owner = next(t.module for t in targets if t.name == g.members[0][0])
        owner.add_module(f"osft_{name}", g)
        owners.append((owner, f"osft_{name}"))
    return handles, owners


def uninstall(targets: List[Target], dense: Mapping[str, torch.Tensor],
              owners: List[Tuple[nn.Module, str]]) -> None:
    """Undo :func:`install` (its forward hooks must be removed already): each target gets
    ``dense[name]`` as an ordinary ``nn.Parameter`` in its original place and ``requires_grad``,
    the modules their classes back, and the owners lose the group children."""
    for t in targets:
        mod = t.module
        if "_osft_slots" in mod.__dict__:  # once per module (it may hold several targets)
            del mod.__dict__["_osft_slots"]
            mod.__dict__.pop("_osft_cache", None)
            mod.__dict__.pop("_osft_factorised", None)
            mod.__dict__.pop("_osft_auto", None)
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
    for owner, name in owners:
        delattr(owner, name)
