"""Frozen ranks: what ``k`` each target gets from the rank arguments of :class:`osft.torch.OSFT`.

Each convention is its peer's, exactly (docs/ranks.md has the table):

* a rank spec is an ``int`` (``k`` itself, ``0 <= k <= R``) or a ``float`` in ``[0, 1]``, the
  frozen fraction ``k = int(R * f)`` (PEFT OSF's float ``effective_rank``);
* ``unfreeze_rank_ratio = u`` is mini_trainer's trainable fraction: ``k = floor(R * (1 - u))``,
  capped at ``R - 1`` (so ``u = 0`` still trains one direction per target);
* ``rank_pattern`` overrides per target (first match wins);
* ``ranks="adaptive"`` maps layer importances (:mod:`osft.torch.calibration`) to ranks with the
  seed's rule, :func:`osft.adaptive_ranks` (``min_ratio``, ``target_ratio``).

A target left with ``k = R`` has nothing trainable; :func:`warn_rank_choices` names such targets.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

import osft as _osft

from .targets import PatternLike, Target, matches

RankSpec = Union[int, float]


def resolve_rank(spec: RankSpec, full_rank: int, name: str = "target") -> int:
    """The frozen rank ``k`` of a rank spec for a matrix of full rank ``R``: an ``int`` is ``k``
    (``0 <= k <= R``), a ``float`` in ``[0, 1]`` the frozen fraction, ``k = int(R * f)`` as
    PEFT OSF's float ``effective_rank`` (the float product truncated: ``0.29`` of 100 is 28)."""
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
    return min(full_rank, int(full_rank * f))


def unfreeze_rank(u: float, full_rank: int) -> int:
    """mini_trainer's ``unfreeze_rank_ratio = u`` as a frozen rank: its ``rank_ratio = 1 - u``
    and ``top_k = int(np.floor(min(shape) * rank_ratio))``, set to ``R - 1`` when it reaches
    ``R`` (0 for an empty matrix)."""
    k = int(math.floor(full_rank * (1.0 - u)))
    return max(0, full_rank - 1) if k >= full_rank else k


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
        return unfreeze_rank(v, R)
    return resolve_rank(v, R, t.name)


def check_rank_args(frozen_ratio, unfreeze_rank_ratio, rank_pattern, ranks, calibration,
                    min_ratio, target_ratio, max_samples, targets: List[Target]) -> Tuple[str, Any]:
    """Validate everything that does not need a forward pass; returns the default spec."""
    if ranks not in ("ratio", "adaptive"):
        raise ValueError(f"ranks must be 'ratio' or 'adaptive', got {ranks!r}")
    default = default_spec(frozen_ratio, unfreeze_rank_ratio)
    for t in targets:
        rank_of(t, default, rank_pattern)
    if ranks == "adaptive":
        if calibration is None:
            raise ValueError("ranks='adaptive' needs calibration batches")
        if not 0.0 <= min_ratio <= target_ratio <= 1.0:
            raise ValueError(f"need 0 <= min_ratio <= target_ratio <= 1, got {min_ratio}, "
                             f"{target_ratio}")
        if int(max_samples) < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    return default


def adaptive_targets(targets: List[Target],
                     rank_pattern: Optional[Mapping[PatternLike, RankSpec]]) -> List[Target]:
    """The targets whose rank the adaptive rule sets: not expert tensors, not pinned by
    ``rank_pattern``."""
    return [t for t in targets if t.kind != "experts" and not is_pinned(t, rank_pattern)]


def adaptive_ks(targets: List[Target], importance: Mapping[str, float], min_ratio: float,
                target_ratio: float) -> Dict[str, int]:
    """``k`` of each target from its layer importance, by the seed's rule
    (:func:`osft.adaptive_ranks`). A mean importance that is not positive and finite is a ``ValueError``
    naming the lowest importances (the rule normalises by the mean)."""
    values = [importance[t.name] for t in targets]
    mean = float(np.mean(values)) if values else 1.0
    if not (mean > 0.0 and math.isfinite(mean)):
        low = sorted(zip(values, (t.name for t in targets)))[:3]
        raise ValueError(f"ranks='adaptive': the mean layer importance over {len(values)} targets "
                         f"is {mean!r}, not positive and finite; the seed's rule divides by it (lowest: "
                         + ", ".join(f"{n} = {v:.3g}" for v, n in low)
                         + "). Check that the calibration batches are real inputs of the model.")
    ks = _osft.adaptive_ranks(values, [t.full_rank for t in targets], min_ratio, target_ratio)
    return {t.name: int(k) for t, k in zip(targets, ks)}


def untrainable(targets: List[Target], kmap: Mapping[str, int]) -> List[str]:
    """The targets whose ``k`` is their full rank ``R > 0``: every direction frozen, nothing to
    train."""
    return [t.name for t in targets if t.full_rank > 0 and kmap[t.name] >= t.full_rank]


def warn_rank_choices(targets: List[Target], kmap: Mapping[str, int],
                      default: Tuple[str, Any]) -> List[str]:
    """Say what a rank choice leaves trainable when it may surprise (``UserWarning``, once per
    :class:`~osft.torch.OSFT` setup): targets with ``k = R`` have nothing trainable (named, and
    said plainly when that is every target); ``unfreeze_rank_ratio=0`` still trains one
    direction per target, as in mini_trainer. Returns the names of the untrainable targets."""
    if default == ("unfreeze", 0.0):
        warnings.warn("osft.torch: unfreeze_rank_ratio=0 follows mini_trainer: k = floor(R) is "
                      "capped at R - 1, so every target still trains its smallest singular "
                      "direction (frozen_ratio=1.0 freezes everything)", UserWarning, stacklevel=4)
    names = untrainable(targets, kmap)
    if names:
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        every = len(names) == len(targets)
        warnings.warn(
            f"osft.torch: {'every target' if every else f'{len(names)} of {len(targets)} targets'}"
            f" freeze their full rank (k = R) and have nothing trainable: {shown}. Lower "
            "frozen_ratio / raise unfreeze_rank_ratio (or target_ratio with ranks='adaptive'), "
            "or leave these layers out of the targets.", UserWarning, stacklevel=4)
    return names


def grow_only(kmap: Dict[str, int], previous: Mapping[str, int]) -> None:
    """Raise each ``k`` in ``kmap`` to at least its previous value, in place (the count never
    shrinks; the subspace may rotate)."""
    for name, k_old in previous.items():
        if name in kmap:
            kmap[name] = max(kmap[name], k_old)
