"""Checkpoints of a model under OSFT: plain ``state_dict()`` / ``save_pretrained()``, and an
OSFT-only save that restores training exactly.

Two kinds of checkpoint, for two purposes:

* **The model** (for inference, evaluation, sharing): ``model.state_dict()`` — and so
  ``torch.save(model.state_dict())`` and transformers' ``model.save_pretrained()``, which calls
  it — gives the *plain* model's entries while OSFT is applied: each target's dense weight under
  its original name (``...q_proj.weight``), no ``osft_*`` group entries, in the plain model's key
  order. It loads into a fresh plain model (``from_pretrained`` / ``load_state_dict``) with the
  same outputs, to the rounding of one reconstruction. A root state-dict post-hook does this
  (``OSFT(plain_state_dict=False)`` or ``o.plain_state_dict = False`` turns it off, giving the raw
  factor entries). A framework that resumes from ``model.state_dict()`` (DeepSpeed's
  ``engine.save_checkpoint``, the Hugging Face ``Trainer``) needs the raw entries for an exact
  resume; :func:`~osft.torch.attach_deepspeed` sets it. Loading a plain state dict back into the
  model *under* OSFT (``model.load_state_dict``) is accepted too: a root load pre-hook
  decomposes the dense weights of each group at its ranks (the same function, but a new frozen
  subspace, and optimizer moments or fp32 masters that no longer belong to the factors): plain
  state dicts are for export only.
* **The OSFT state** (for resuming): :func:`save_pretrained` writes ``osft_config.json`` (the
  targets, their ranks and shapes, the groups and their members, every setting of
  :class:`~osft.torch.OSFT`, the task index, SHA-256 digests of the frozen factors) and
  ``osft_model.pt`` (the trainable factors, every other trainable parameter, the model's
  persistent buffers outside OSFT's groups such as BatchNorm running statistics, and, when asked
  or needed, the frozen factors and the base copies). :func:`from_pretrained` applies OSFT to a
  fresh base model with the saved targets, ranks and grouping, and loads them.

Frozen factors: recomputed or saved? The resumed run must equal the uninterrupted one bit for
bit, so the frozen factors must be the saved ones exactly. osft's CPU SVD is deterministic for
the same input, library build and machine, so by default they are *recomputed* from the base
model (the save stays the size of the trainable state, as PEFT's adapters do) and *checked*
against the saved digests: any difference (other base weights, another machine or library
build) raises ``ValueError`` instead of resuming from a different subspace. ``include_frozen=
True`` saves them (the default after :meth:`~osft.torch.OSFT.next_task`, whose frozen subspace
comes from trained weights that the base model does not hold).

Only the model's state is saved here; save the optimizer's ``state_dict()`` next to it (the
order of :meth:`~osft.torch.OSFT.parameters` is the same after :func:`from_pretrained`); the
data order and random state are the caller's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import OrderedDict
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .decompose import decompose_group
from .dtensor import full as _full
from .group import OSFTGroup
from .targets import model_type_of
from .zero3 import gathered

CONFIG_NAME = "osft_config.json"
WEIGHTS_NAME = "osft_model.pt"
FORMAT = "osft.torch"
FORMAT_VERSION = 1

_DTYPES = {str(d): d for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16)}


def _dtype_name(d: Optional[torch.dtype]) -> Optional[str]:
    return None if d is None else str(d)


def _dtype(name: Optional[str]) -> Optional[torch.dtype]:
    if name is None:
        return None
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r} in the OSFT config")
    return _DTYPES[name]


def group_prefixes(o) -> Dict[str, str]:
    """``{group name: "<owner module>.osft_<group name>"}``, relative to ``o.model``."""
    names = {id(mod): name for name, mod in o.model.named_modules()}
    out = {}
    for owner, attr in o._owners:
        base = names.get(id(owner), "")
        out[attr[len("osft_"):]] = f"{base}.{attr}" if base else attr
    return out


# ---------------------------------------------------------------------------------------------
# model.state_dict() / load_state_dict() under OSFT: the plain model's entries.

def install_state_dict_hooks(o) -> List[Any]:
    """Register the root hooks on ``o.model`` (see the module docstring); returns the handles."""
    model = o.model

    def plain_state_dict(module, sd, prefix, local_metadata):
        if module is not model or not o.plain_state_dict or not o.groups:
            return
        drop = tuple(prefix + p + "." for p in group_prefixes(o).values())
        rest = OrderedDict((k, v) for k, v in sd.items() if not k.startswith(drop))
        for name, w in o.dense_weights().items():
            rest[prefix + name] = w
        sd.clear()
        for k in o._plain_keys:  # the plain model's order, then anything added since
            if prefix + k in rest:
                sd[prefix + k] = rest.pop(prefix + k)
        sd.update(rest)

    def load_plain(module, sd, prefix, local_metadata, strict, missing, unexpected, errors):
        if module is not model or not o.groups:
            return
        for gname, path in group_prefixes(o).items():
            g = o.groups[gname]
            gp = prefix + path + "."
            keys = [prefix + name for name, _, _ in g.members]
            if any(k.startswith(gp) for k in sd) or not all(k in sd for k in keys):
                continue  # factor entries given (loaded as they are), or incomplete (reported)
            with torch.no_grad():
                dev = g.u_high.device
                w = torch.cat([sd.pop(k).reshape(-1, g.n, g.m) for k in keys]).to(
                    device=dev, dtype=g.weight_dtype)
                tmp = OSFTGroup(g.mode, g.batch, g.n, g.m, g.k, g.u_high.dtype, dev,
                                weight_dtype=g.weight_dtype)
                tmp.compute = g.compute
                decompose_group(tmp, w, None)
                if g.mode == "dense":
                    tmp.weight.copy_(w)
            for n, t in tmp.state_dict().items():
                sd[gp + n] = t

    return [model.register_state_dict_post_hook(plain_state_dict),
            model.register_load_state_dict_pre_hook(load_plain)]


# ---------------------------------------------------------------------------------------------
# The OSFT-only checkpoint.

def _digest(t: torch.Tensor) -> str:
    b = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(b.numpy().tobytes()).hexdigest()


def frozen_digests(o) -> Dict[str, str]:
    """SHA-256 of each group's frozen factors (``u_high``, ``s_high``, ``v_high`` bytes)."""
    out = {}
    for name, g in o.groups.items():
        h = hashlib.sha256()
        for t in (g.u_high, g.s_high, g.v_high):
            h.update(_digest(t).encode())
        out[name] = h.hexdigest()
    return out


def _pattern(p) -> str:
    return "re:" + p.pattern if isinstance(p, re.Pattern) else str(p)


def _jsonable(v):
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, re.Pattern):
        return _pattern(v)
    if isinstance(v, dict):
        return {_pattern(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)  # e.g. calibration batches: recorded by name only


def _other_trainables(o) -> Dict[str, nn.Parameter]:
    mine = {id(p) for g in o.groups.values() for p in g.parameters(recurse=False)}
    return {n: p for n, p in o.model.named_parameters()
            if p.requires_grad and id(p) not in mine}


def _persistent_buffers(o) -> Dict[str, torch.Tensor]:
    """The model's persistent buffers outside OSFT's groups (e.g. BatchNorm running
    statistics), by their ``named_buffers()`` names."""
    out: Dict[str, torch.Tensor] = {}
    for mname, mod in o.model.named_modules():
        if isinstance(mod, OSFTGroup):
            continue
        for bname, b in mod._buffers.items():
            if b is not None and bname not in mod._non_persistent_buffers_set:
                out.setdefault(f"{mname}.{bname}" if mname else bname, b)
    return out


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    """A full CPU copy of ``t``: a DTensor's ``full_tensor()`` (a collective); a ZeRO-3
    parameter must be gathered by the caller, and one that is not is refused rather than saved
    empty."""
    full = _full(t.detach())
    want = getattr(t, "ds_shape", None)
    if want is not None and tuple(full.shape) != tuple(want):
        raise ValueError(f"a ZeRO-3-partitioned parameter of shape {tuple(want)} is not gathered "
                         f"(holds {tuple(full.shape)}); it cannot be saved")
    return full.to("cpu", copy=True)


def osft_config(o, include_frozen: bool) -> Dict[str, Any]:
    """The serialised configuration of ``o`` (what :func:`save_pretrained` writes as JSON)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_type": model_type_of(o.model),
        "task": o.task,
        "settings": {
            "mode": o.mode, "upcast_dtype": _dtype_name(o.upcast_dtype),
            "output_dtype": _dtype_name(o.output_dtype), "forward": o.forward,
            "keep_base": o.keep_base, "project_in_backward": o.project_in_backward,
            "freeze_others": o._freeze_others, "plain_state_dict": o.plain_state_dict,
            "distribute": o.distribute,
        },
        "target_args": _jsonable(o._target_args),
        "rank_args": _jsonable(o.rank_args),
        "targets": [{"name": t.name, "kind": t.kind, "shape": list(t.shape),
                     "k": o.ranks[t.name]} for t in o.targets],
        "groups": [{"name": name, "n": g.n, "m": g.m, "k": g.k, "batch": g.batch,
                    "dtype": _dtype_name(g.u_high.dtype),
                    "weight_dtype": _dtype_name(g.weight_dtype),
                    "members": [list(m) for m in g.members]} for name, g in o.groups.items()],
        "trainable_others": sorted(_other_trainables(o)),
        "persistent_buffers": sorted(_persistent_buffers(o)),
        "frozen_included": bool(include_frozen),
        "frozen_sha256": frozen_digests(o),
    }


def osft_state_dict(o, include_frozen: bool = False) -> Dict[str, torch.Tensor]:
    """The OSFT-only tensors: ``groups.<g>.<u_low|s_low|v_low|weight>``, ``others.<parameter>``
    (every other trainable parameter), ``buffers.<name>`` (the model's persistent buffers
    outside the groups, e.g. BatchNorm statistics), and with ``include_frozen``
    ``frozen.<g>.<u_high|...>``; with ``keep_base`` the base copies ``base.<g>.<name>``. Full
    CPU copies: DeepSpeed ZeRO-3-partitioned parameters are gathered and FSDP2 ``DTensor``
    parameters read with ``full_tensor()`` (collectives: call it on every rank)."""
    with gathered(o.parameters() + list(_other_trainables(o).values())):  # only what is saved
        return _osft_state_dict(o, include_frozen)


def _osft_state_dict(o, include_frozen: bool) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    for gname, g in o.groups.items():
        for n in g.trainable_names():
            out[f"groups.{gname}.{n}"] = _cpu_copy(getattr(g, n))
            if o.keep_base:
                out[f"base.{gname}.{n}"] = _cpu_copy(getattr(g, f"{n}_base"))
        if include_frozen:
            for n in ("u_high", "s_high", "v_high"):
                out[f"frozen.{gname}.{n}"] = _cpu_copy(getattr(g, n))
    for name, p in _other_trainables(o).items():
        out[f"others.{name}"] = _cpu_copy(p)
    for name, b in _persistent_buffers(o).items():
        out[f"buffers.{name}"] = _cpu_copy(b)
    return out


def save_pretrained(o, directory: str, include_frozen: Optional[bool] = None) -> None:
    """Write ``osft_config.json`` and ``osft_model.pt`` into ``directory`` (created if needed).
    ``include_frozen`` defaults to ``o.task > 0`` (see the module docstring). Under DeepSpeed
    ZeRO-3 or FSDP2 the tensors are gathered first (collectives: call it on every rank)."""
    if not o.groups:
        raise ValueError("save_pretrained: OSFT is not applied (merged); save the model instead")
    if include_frozen is None:
        include_frozen = o.task > 0
    os.makedirs(directory, exist_ok=True)
    torch.save(osft_state_dict(o, include_frozen), os.path.join(directory, WEIGHTS_NAME))
    with open(os.path.join(directory, CONFIG_NAME), "w") as f:
        json.dump(osft_config(o, include_frozen), f, indent=1)


def load_config(directory: str) -> Dict[str, Any]:
    path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory!r} (written by "
                                "OSFT.save_pretrained)")
    with open(path) as f:
        cfg = json.load(f)
    if cfg.get("format") != FORMAT or cfg.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not an {FORMAT} config of version {FORMAT_VERSION}")
    return cfg


def from_pretrained(cls, model: nn.Module, directory: str, **overrides):
    """Apply OSFT to ``model`` (a fresh base model) as saved in ``directory`` and load the saved
    state; returns the :class:`~osft.torch.OSFT`. ``overrides`` replace settings that do not
    change the state (``project_in_backward``, ``forward``, ``plain_state_dict``,
    ``distribute``, ``process_group``)."""
    allowed = {"project_in_backward", "forward", "plain_state_dict", "distribute",
               "process_group"}
    bad = set(overrides) - allowed
    if bad:
        raise ValueError(f"from_pretrained: cannot override {sorted(bad)} (allowed: "
                         f"{sorted(allowed)})")
    cfg = load_config(directory)
    state = torch.load(os.path.join(directory, WEIGHTS_NAME), map_location="cpu",
                       weights_only=True)
    st = cfg["settings"]
    names = [t["name"] for t in cfg["targets"]]
    have = {n for n, _ in model.named_parameters()}
    missing = [n for n in names if n not in have]
    if missing:
        raise ValueError(f"from_pretrained: the model has no parameter {missing[0]!r} "
                         f"({len(missing)} of the saved targets are missing)")
    exact = {n: "re:^" + re.escape(n) + "$" for n in names}
    group_of = {m[0]: gi for gi, g in enumerate(cfg["groups"]) for m in g["members"]}
    kwargs = dict(targets=list(exact.values()),
                  rank_pattern={exact[t["name"]]: int(t["k"]) for t in cfg["targets"]},
                  group_by=lambda t: group_of[t.name], mode=st["mode"],
                  upcast_dtype=_dtype(st["upcast_dtype"]),
                  output_dtype=_dtype(st["output_dtype"]), forward=st["forward"],
                  keep_base=st["keep_base"], project_in_backward=st["project_in_backward"],
                  freeze_others=st["freeze_others"], plain_state_dict=st["plain_state_dict"],
                  distribute=st["distribute"])
    kwargs.update(overrides)
    o = cls(model, **kwargs)
    saved = [(g["name"], [list(m) for m in g["members"]]) for g in cfg["groups"]]
    built = [(name, [list(m) for m in g.members]) for name, g in o.groups.items()]
    if saved != built:
        raise ValueError("from_pretrained: the groups built on this model differ from the saved "
                         f"ones ({[n for n, _ in built]} vs {[n for n, _ in saved]})")
    with torch.no_grad():
        if cfg["frozen_included"]:
            for gname, g in o.groups.items():
                for n in ("u_high", "s_high", "v_high"):
                    getattr(g, n).copy_(state[f"frozen.{gname}.{n}"])
        else:
            got = frozen_digests(o)
            bad = [g for g, h in cfg["frozen_sha256"].items() if got.get(g) != h]
            if bad:
                raise ValueError(
                    f"from_pretrained: the frozen factors recomputed from this model differ from "
                    f"the saved ones in group(s) {bad} (other base weights, another machine or "
                    "osft build): resuming would not be exact. Save with "
                    "save_pretrained(..., include_frozen=True)")
        for gname, g in o.groups.items():
            for n in g.trainable_names():
                getattr(g, n).copy_(state[f"groups.{gname}.{n}"])
                key = f"base.{gname}.{n}"
                if o.keep_base and key in state:
                    getattr(g, f"{n}_base").copy_(state[key])
        bufs = _persistent_buffers(o)
        for name in cfg.get("persistent_buffers", []):
            if name not in bufs:
                raise ValueError(f"from_pretrained: the model has no persistent buffer {name!r}")
            bufs[name].copy_(state[f"buffers.{name}"])
        others = set(cfg["trainable_others"])
        params = dict(model.named_parameters())
        mine = {id(p) for g in o.groups.values() for p in g.parameters(recurse=False)}
        for name, p in params.items():
            if id(p) in mine:
                continue
            p.requires_grad_(name in others)  # the saved run's trainable set
            if name in others:
                p.copy_(state[f"others.{name}"])
    o.task = int(cfg["task"])
    return o
