"""Frozen ranks: what ``k`` each target gets from the rank arguments of :class:`osft.torch.OSFT`.

A rank spec is an ``int`` (``k`` itself, ``0 <= k <= R``) or a ``float`` in ``[0, 1]``, the
frozen fraction ``k = floor(f * R)``; ``unfreeze_rank_ratio = u`` is the trainable fraction,
``k = R - floor(u * R)``; ``rank_pattern`` overrides per target (first match wins). The adaptive
rule maps layer importances (:mod:`osft.torch.calibration`) to ranks with
:func:`osft.adaptive_ranks`.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

import osft as _osft

from .targets import PatternLike, Target, matches

RankSpec = Union[int, float]


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


def default_spec(frozen_ratio: Optional[RankSpec], unfreeze_rank_ratio: Optional[float]
                 ) -> Tuple[str, Any]:
    """The spec of targets no ``rank_pattern`` matches: ``("unfreeze", u)`` or ``("spec", s)``
    (``frozen_ratio``, 0.5 when neither is given)."""
    if frozen_ratio is not None and unfreeze_rank_ratio is not None:
        raise ValueError("give frozen_ratio or unfreeze_rank_ratio, not both")
    if unfreeze_rank_ratio is not None:
        u = float(unfreeze_rank_ratio)
        if not 0.0 <= u <= 1.0:
            raise ValueError(f"unfreeze_rank_ratio {u} is outside [0, 1]")
        return ("unfreeze", u)
    return ("spec", 0.5 if frozen_ratio is None else frozen_ratio)


def is_pinned(t: Target, rank_pattern: Optional[Mapping[PatternLike, RankSpec]]) -> bool:
    """Whether a ``rank_pattern`` entry sets ``t``'s spec (it then keeps it under the adaptive
    rule)."""
    return any(matches(t.name, p) or matches(t.module_name, p) for p in (rank_pattern or {}))


def rank_of(t: Target, default: Tuple[str, Any],
            rank_pattern: Optional[Mapping[PatternLike, RankSpec]]) -> int:
    """The frozen rank of ``t``: the first matching ``rank_pattern`` spec, else ``default``."""
    R = t.full_rank
    for pat, spec in (rank_pattern or {}).items():
        if matches(t.name, pat) or matches(t.module_name, pat):
            return resolve_rank(spec, R, t.name)
    kind, v = default
    if kind == "unfreeze":
        return R - min(R, int(math.floor(v * R + 1e-9)))
    return resolve_rank(v, R, t.name)


def check_rank_args(frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks, calibration,
                    min_ratio, max_ratio, max_samples, targets: List[Target]) -> Tuple[str, Any]:
    """Validate everything that does not need a forward pass; returns the default spec."""
    if ranks not in ("ratio", "adaptive"):
        raise ValueError(f"ranks must be 'ratio' or 'adaptive', got {ranks!r}")
    default = default_spec(frozen_ratio, unfreeze_rank_ratio)
    for t in targets:
        rank_of(t, default, rank_pattern)
    if ranks == "adaptive":
        if calibration is None:
            raise ValueError("ranks='adaptive' needs calibration batches")
        if not 0.0 <= min_ratio <= max_ratio <= 1.0:
            raise ValueError(f"need 0 <= min_ratio <= max_ratio <= 1, got {min_ratio}, "
                             f"{max_ratio}")
        if int(max_samples) < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    return default


def adaptive_targets(targets: List[Target],
                     rank_pattern: Optional[Mapping[PatternLike, RankSpec]]) -> List[Target]:
    """The targets whose rank the adaptive rule sets: not expert tensors, not pinned by
    ``rank_pattern``."""
    return [t for t in targets if t.kind != "experts" and not is_pinned(t, rank_pattern)]


def adaptive_ks(targets: List[Target], importance: Mapping[str, float], min_ratio: float,
                max_ratio: float) -> Dict[str, int]:
    """``k`` of each target from its layer importance, by :func:`osft.adaptive_ranks`."""
    ks = _osft.adaptive_ranks([importance[t.name] for t in targets],
                              [t.full_rank for t in targets], min_ratio, max_ratio)
    return {t.name: int(k) for t, k in zip(targets, ks)}


def grow_only(kmap: Dict[str, int], previous: Mapping[str, int]) -> None:
    """Raise each ``k`` in ``kmap`` to at least its previous value, in place (the count never
    shrinks; the subspace may rotate)."""
    for name, k_old in previous.items():
        if name in kmap:
            kmap[name] = max(kmap[name], k_old)
