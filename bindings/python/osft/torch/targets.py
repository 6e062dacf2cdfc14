"""Choosing which weights OSFT decomposes: name patterns, per-architecture defaults, exclusions.

A *target* is one floating-point parameter of a module: a 2-D weight matrix, or a 3-D stack of
``E`` expert matrices (``E x N x M``, a strided batch of ``E`` matrices for osft). Targets are
found by matching patterns against module names and parameter names as
``model.named_modules()`` spells them (e.g. ``model.layers.0.self_attn.q_proj``).

Pattern syntax (:func:`matches`):

* a plain string is a *glob* (``fnmatch``, case-sensitive) matched against the whole name, or
  against any dotted suffix of it: ``"self_attn.q_proj"`` matches
  ``model.layers.3.self_attn.q_proj``; ``"mlp.*_proj"`` matches every ``mlp.gate_proj`` /
  ``up_proj`` / ``down_proj``; ``"layers.1[0-9].*"`` a range of layers;
* a string starting with ``"re:"`` is a regular expression searched (``re.search``) in the name;
* a compiled ``re.Pattern`` is searched likewise.

A module pattern selects the module's ``weight``; a pattern naming a parameter
(``"experts.gate_up_proj"``) selects that parameter. Exclusions use the same syntax and win over
inclusions. Only parameters with 2 or 3 dimensions and a floating dtype are selected (a module
matched by name whose ``weight`` is 1-D, e.g. a norm caught by a broad glob, is skipped); a
parameter named explicitly (a pattern without wildcards) that is not 2-D/3-D floating raises
``ValueError``, and so does a pattern list that selects nothing (a typo must not silently train
nothing). A parameter shared by two modules (tied weights) raises ``ValueError``: exclude one of
the names.

Defaults (:data:`DEFAULT_TARGETS`) follow Hugging Face ``transformers`` module names per
``config.model_type``: Llama-style ``self_attn`` / ``mlp`` projections, GPT-Neo's
``attn.attention.*_proj``, the linear-attention (Gated DeltaNet) projections of Qwen3.5 and
Qwen3-Next (``linear_attn.in_proj_*``, ``linear_attn.out_proj``) next to their full-attention
layers, and, for vision-language models (``llava``, ``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_5``,
``mllama``, ``gemma3``, ...), the linear layers of the **text backbone only**
(``*.language_model.*``; the vision tower and the multi-modal projector are not targets). A model
without a ``model_type`` (a plain ``nn.Module``) gets the union of all defaults. An *unknown*
``model_type`` gets the union too, with a ``UserWarning`` that names the type and the modules
the union matched, so a new architecture is never decomposed silently by guesswork; pass
``targets=[...]`` (or ``model_type=`` a known layout) to choose. Layouts:

* ``nn.Linear`` (and anything else 2-D): the stored weight is ``out x in`` and the layer computes
  ``y = x W^T``;
* GPT-2's ``Conv1D`` (class name ``Conv1D``): the stored weight is ``in x out`` and the layer
  computes ``y = x W``. osft decomposes the stored matrix as it is (the SVD of ``W^T`` is the SVD
  of ``W`` with ``U`` and ``V`` swapped, and both sides are projected the same way), so the only
  place the layout matters is layer importance, which uses the operator ``W^T``;
* 3-D expert parameters (``E x N x M``): kind ``"experts"``, decomposed and projected as ``E``
  matrices of one batch.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Pattern, Sequence, Tuple, Union

import torch
from torch import nn

PatternLike = Union[str, Pattern]

_LLAMA = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
_MOE = ["block_sparse_moe.experts.*.w1", "block_sparse_moe.experts.*.w2",
        "block_sparse_moe.experts.*.w3", "mlp.experts.*.gate_proj", "mlp.experts.*.up_proj",
        "mlp.experts.*.down_proj", "experts.gate_up_proj", "experts.down_proj",
        "shared_expert.gate_proj", "shared_expert.up_proj", "shared_expert.down_proj"]

# Qwen3.5's Gated DeltaNet (linear attention) layers: ``linear_attn`` in place of ``self_attn``.
_GATED_DELTANET = ["linear_attn.in_proj_qkv", "linear_attn.in_proj_z", "linear_attn.in_proj_b",
                   "linear_attn.in_proj_a", "linear_attn.out_proj"]


def _text_backbone(patterns: List[str]) -> List[str]:
    """Patterns restricted to a vision-language model's ``language_model`` submodule."""
    return [f"language_model.*.{p}" for p in patterns]


#: Default target patterns per Hugging Face ``config.model_type``.
DEFAULT_TARGETS: Dict[str, List[str]] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _LLAMA,
    "gemma3_text": _LLAMA,
    "granite": _LLAMA,
    "mixtral": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
    + _MOE,
    "qwen2_moe": _LLAMA + _MOE,
    "qwen3_moe": _LLAMA + _MOE,
    "granitemoe": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                   "block_sparse_moe.input_linear", "block_sparse_moe.output_linear"],
    "phi3": ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"],
    "gpt2": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
    "opt": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
            "fc1", "fc2"],
    "gptj": ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj", "mlp.fc_in",
             "mlp.fc_out"],
    "gpt_neo": ["attn.attention.q_proj", "attn.attention.k_proj", "attn.attention.v_proj",
                "attn.attention.out_proj", "mlp.c_fc", "mlp.c_proj"],
    "qwen3_5_text": _LLAMA + _GATED_DELTANET,
    "qwen3_5_moe_text": _LLAMA + _GATED_DELTANET + _MOE,
    "qwen3_next": _LLAMA + ["linear_attn.in_proj_qkvz", "linear_attn.in_proj_ba",
                            "linear_attn.out_proj"] + _MOE,
    "t5": ["SelfAttention.q", "SelfAttention.k", "SelfAttention.v", "SelfAttention.o",
           "EncDecAttention.q", "EncDecAttention.k", "EncDecAttention.v", "EncDecAttention.o",
           "DenseReluDense.wi", "DenseReluDense.wo", "DenseReluDense.wi_0",
           "DenseReluDense.wi_1"],
}
# Aliases that share a layout.
for _alias, _base in (("qwen2_5", "qwen2"), ("qwen2.5", "qwen2"), ("mt5", "t5"),
                      ("gpt_j", "gptj"), ("phi-3", "phi3"), ("gptneo", "gpt_neo"),
                      ("qwen2_vl_text", "qwen2"), ("qwen2_5_vl_text", "qwen2"),
                      ("mllama_text_model", "llama")):
    DEFAULT_TARGETS[_alias] = DEFAULT_TARGETS[_base]
# Vision-language models: the text backbone's layers (Mllama's text layers add cross_attn).
_VLM = {"llava": _LLAMA, "llava_next": _LLAMA, "llava_onevision": _LLAMA, "qwen2_vl": _LLAMA,
        "qwen2_5_vl": _LLAMA, "gemma3": _LLAMA, "mistral3": _LLAMA,
        "qwen3_5": _LLAMA + _GATED_DELTANET, "qwen3_5_moe": _LLAMA + _GATED_DELTANET + _MOE,
        "mllama": _LLAMA + ["cross_attn.q_proj", "cross_attn.k_proj", "cross_attn.v_proj",
                            "cross_attn.o_proj"]}
for _vlm, _text in _VLM.items():
    DEFAULT_TARGETS[_vlm] = _text_backbone(_text)


def is_known_model_type(model_type: Optional[str]) -> bool:
    """Whether ``model_type`` (case-insensitive) has its own entry in :data:`DEFAULT_TARGETS`."""
    return model_type is not None and model_type.lower() in DEFAULT_TARGETS


def default_patterns(model_type: Optional[str]) -> List[str]:
    """The default patterns for ``model_type`` (case-insensitive), or the union of every
    text architecture's defaults (order kept, duplicates dropped; the vision-language entries
    are the same names under ``language_model``) when it is None or unknown."""
    if is_known_model_type(model_type):
        return list(DEFAULT_TARGETS[model_type.lower()])  # type: ignore[union-attr]
    seen: Dict[str, None] = {}
    for mt, pats in DEFAULT_TARGETS.items():
        if mt in _VLM:
            continue
        for p in pats:
            seen.setdefault(p, None)
    return list(seen)


def model_type_of(model: nn.Module) -> Optional[str]:
    """``model.config.model_type`` (Hugging Face models), else None."""
    cfg = getattr(model, "config", None)
    mt = getattr(cfg, "model_type", None)
    return mt if isinstance(mt, str) else None


def _compile(p: PatternLike):
    if isinstance(p, re.Pattern):
        return ("re", p)
    if not isinstance(p, str) or not p:
        raise TypeError(f"target pattern must be a non-empty str or re.Pattern, got {p!r}")
    if p.startswith("re:"):
        try:
            return ("re", re.compile(p[3:]))
        except re.error as e:
            raise ValueError(f"bad regular expression in target pattern {p!r}: {e}") from e
    return ("glob", p)


def _literal(p: PatternLike) -> bool:
    """A plain name (no glob characters, not a regex): naming a parameter explicitly."""
    return isinstance(p, str) and not p.startswith("re:") and not any(c in p for c in "*?[")


def matches(name: str, pattern: PatternLike) -> bool:
    """Whether ``name`` matches ``pattern`` (see the module docstring for the syntax)."""
    kind, p = _compile(pattern)
    if kind == "re":
        return p.search(name) is not None
    return fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, "*." + p)


@dataclass
class Target:
    """One selected parameter: ``module.<attr>`` of shape ``(N, M)`` or ``(E, N, M)``.

    ``kind`` is ``"linear"`` (stored ``out x in``, ``y = x W^T``), ``"conv1d"`` (GPT-2 Conv1D,
    stored ``in x out``, ``y = x W``) or ``"experts"`` (3-D, ``E`` matrices). ``name`` is the full
    parameter name, ``module_name`` the module's.
    """

    name: str
    module_name: str
    module: nn.Module = field(repr=False)
    attr: str
    kind: str
    shape: Tuple[int, ...]

    @property
    def count(self) -> int:
        """How many matrices the parameter holds (``E`` for experts, else 1)."""
        return self.shape[0] if len(self.shape) == 3 else 1

    @property
    def matrix_shape(self) -> Tuple[int, int]:
        """``(N, M)`` of each stored matrix."""
        return (self.shape[-2], self.shape[-1])

    @property
    def full_rank(self) -> int:
        return min(self.matrix_shape)


def _kind(module: nn.Module, param: torch.Tensor) -> str:
    if param.dim() == 3:
        return "experts"
    if type(module).__name__ == "Conv1D":
        return "conv1d"
    return "linear"


def find_targets(model: nn.Module, targets: Optional[Sequence[PatternLike]] = None,
                 exclude: Optional[Sequence[PatternLike]] = None,
                 model_type: Optional[str] = None) -> List[Target]:
    """The parameters of ``model`` that OSFT should decompose, in ``named_modules()`` order.

    ``targets``: patterns (default: :func:`default_patterns` of ``model_type``, itself defaulting
    to ``model.config.model_type``). ``exclude``: patterns removed afterwards. Raises
    ``ValueError`` when nothing is selected, when a parameter named without wildcards is not a
    2-D/3-D floating tensor, or for tied targets.
    """
    if isinstance(targets, (str, re.Pattern)):
        targets = [targets]
    if isinstance(exclude, (str, re.Pattern)):
        exclude = [exclude]
    mtype = model_type or model_type_of(model)
    pats = list(targets) if targets is not None else default_patterns(mtype)
    excl = list(exclude or [])
    for p in pats + excl:
        _compile(p)  # validate early, with a clear message
    owners: Dict[int, set] = {}
    for module in model.modules():
        for pname, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), set()).add((id(module), pname))
    out: List[Target] = []
    seen = set()
    for mname, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            by_module = pname == "weight" and any(matches(mname, p) for p in pats) if mname else False
            by_param = any(matches(full, p) for p in pats)
            if not (by_module or by_param):
                continue
            if any(matches(full, p) for p in excl) or (mname and any(matches(mname, p) for p in excl)):
                continue
            if param.dim() not in (2, 3) or not param.is_floating_point():
                if any(_literal(p) and matches(full, p) for p in pats):
                    raise ValueError(f"target {full!r} has shape {tuple(param.shape)} and dtype "
                                     f"{param.dtype}: only 2-D or 3-D floating parameters can be "
                                     "decomposed")
                continue
            if id(param) in seen or len(owners.get(id(param), ())) > 1:
                raise ValueError(f"target {full!r} is tied to (the same tensor as) another target;"
                                 " exclude one of them")
            seen.add(id(param))
            out.append(Target(full, mname, module, pname, _kind(module, param),
                              tuple(param.shape)))
    if out and targets is None and mtype is not None and not is_known_model_type(mtype):
        kinds = sorted({t.module_name.split(".")[-1] if t.attr == "weight" else t.attr
                        for t in out})
        warnings.warn(f"osft.torch: model_type {mtype!r} has no default targets; the union of "
                      f"all architectures' defaults matched {len(out)} parameters "
                      f"({', '.join(kinds)}; first {out[0].name!r}). Pass targets=[...] (or "
                      "model_type=<a known layout>) to choose them explicitly", stacklevel=3)
    if not out:
        raise ValueError(
            "no OSFT target matched: patterns "
            f"{pats[:8]}{'...' if len(pats) > 8 else ''} (exclusions {excl}) select no 2-D/3-D "
            "floating parameter; pass targets=[...] with names from model.named_modules()")
    return out
