"""The C enums of ``include/osft.h``, the one place the Python package states their values.

Each table maps the constant's name without its prefix (``OSFT_STATUS_OVERLAP`` is
``STATUS["OVERLAP"]``) to its value. Every other table of the package (status names, error
classes, dtype codes, the string arguments ``side="left"``, ``backend="cuda"``, ...) is derived
from these. ``tests/test_header_sync.py`` checks them against the header, both ways.
"""

from __future__ import annotations

from typing import Dict, Tuple

#: ``osft_status`` (``OSFT_STATUS_*``).
STATUS: Dict[str, int] = {
    "OK": 0,
    "NULL_POINTER": 1,
    "INVALID_SHAPE": 2,
    "INVALID_STRIDE": 3,
    "OVERLAP": 4,
    "OVERFLOW": 5,
    "MISALIGNED": 6,
    "DTYPE_UNSUPPORTED": 7,
    "RANK_OUT_OF_RANGE": 8,
    "INVALID_ARGUMENT": 9,
    "PRECONDITION": 10,
    "NOT_CONVERGED": 11,
    "WORKSPACE_TOO_SMALL": 12,
    "DEVICE_MISMATCH": 13,
    "BACKEND_UNAVAILABLE": 14,
    "ALLOCATION_FAILED": 15,
    "INTERNAL": 16,
    "NON_FINITE": 17,
}

#: ``osft_dtype`` (``OSFT_DTYPE_*``).
DTYPE: Dict[str, int] = {"F32": 0, "F64": 1, "F16": 2, "BF16": 3}

#: ``osft_device`` (``OSFT_DEVICE_*``).
DEVICE: Dict[str, int] = {"HOST": 0, "CUDA": 1}

#: ``osft_side`` (``OSFT_SIDE_*``).
SIDE: Dict[str, int] = {"LEFT": 0, "RIGHT": 1, "BOTH": 2}

#: ``osft_backend`` (``OSFT_BACKEND_*``).
BACKEND: Dict[str, int] = {"CPU": 0, "CUDA": 1, "AUTO": 2}

#: ``osft_strategy`` (``OSFT_STRATEGY_*``).
STRATEGY: Dict[str, int] = {"AUTO": 0, "COEFFICIENT": 1, "CACHED_PROJECTOR": 2}

#: ``osft_rank_rule`` (``OSFT_RANK_*``).
RANK_RULE: Dict[str, int] = {"FIXED": 0, "FRACTION": 1, "ENERGY": 2, "ENTROPY_EFFECTIVE": 3}

#: ``osft_svd_algorithm`` (``OSFT_SVD_*``).
SVD_ALGORITHM: Dict[str, int] = {
    "AUTO": 0,
    "QR": 1,
    "JACOBI": 2,
    "JACOBI_BATCHED": 3,
    "APPROX_BATCHED": 4,
    "POLAR": 5,
    "RANDOMIZED": 6,
}

#: ``osft_math_mode`` (``OSFT_MATH_*``).
MATH_MODE: Dict[str, int] = {"EXACT": 0, "TF32": 1, "BF16": 2}

#: Every table above by its C enum: ``{C enum name: (constant prefix, table)}``.
ENUMS: Dict[str, Tuple[str, Dict[str, int]]] = {
    "osft_status": ("OSFT_STATUS_", STATUS),
    "osft_dtype": ("OSFT_DTYPE_", DTYPE),
    "osft_device": ("OSFT_DEVICE_", DEVICE),
    "osft_side": ("OSFT_SIDE_", SIDE),
    "osft_backend": ("OSFT_BACKEND_", BACKEND),
    "osft_strategy": ("OSFT_STRATEGY_", STRATEGY),
    "osft_rank_rule": ("OSFT_RANK_", RANK_RULE),
    "osft_svd_algorithm": ("OSFT_SVD_", SVD_ALGORITHM),
    "osft_math_mode": ("OSFT_MATH_", MATH_MODE),
}


def lower(table: Dict[str, int]) -> Dict[str, int]:
    """``table`` keyed by lower-case names: the spelling of the string arguments."""
    return {k.lower(): v for k, v in table.items()}
