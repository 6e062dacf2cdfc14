"""The binding against include/osft.h: every exported function declared with ctypes, every status
and enum value the same. Fails when the header grows and the binding has not followed."""

import re
from pathlib import Path

import pytest

import osft
from osft import _lib, _marshal, _tensor

HEADER = Path(__file__).resolve().parents[3] / "include" / "osft.h"
pytestmark = pytest.mark.skipif(not HEADER.exists(), reason="not in an osft checkout")


def header_text():
    return HEADER.read_text()


def enum_values(prefix):
    return {m.group(1): int(m.group(2))
            for m in re.finditer(rf"\b{prefix}([A-Z0-9_]+) = (-?\d+)", header_text())}


def test_every_function_is_declared():
    # Declarations start a line: `osft_status osft_svd(`, `const char *osft_status_string(`.
    declared = set(re.findall(r"^[A-Za-z_][\w ]*?[\s*]+(osft_[a-z0-9_]+)\(", header_text(), re.M))
    assert len(declared) >= 44, f"too few functions parsed from the header: {sorted(declared)}"
    missing = declared - set(_lib._PROTOTYPES)
    assert not missing, f"functions in osft.h without a ctypes prototype: {sorted(missing)}"


def test_status_values():
    assert enum_values("OSFT_STATUS_") == osft.STATUS


def test_other_enums():
    assert enum_values("OSFT_DTYPE_") == {"F32": _tensor.F32, "F64": _tensor.F64,
                                          "F16": _tensor.F16, "BF16": _tensor.BF16}
    assert enum_values("OSFT_DEVICE_") == {"HOST": _tensor.HOST, "CUDA": _tensor.CUDA}
    assert enum_values("OSFT_SIDE_") == {"LEFT": _marshal._SIDES["left"], "RIGHT": _marshal._SIDES["right"],
                                         "BOTH": _marshal._SIDES["both"]}
    assert enum_values("OSFT_BACKEND_") == {k.upper(): v for k, v in _marshal._BACKENDS.items()}
    assert enum_values("OSFT_STRATEGY_") == {"AUTO": 0, "COEFFICIENT": 1, "CACHED_PROJECTOR": 2}
    assert enum_values("OSFT_STRATEGY_") == {k.upper(): v for k, v in _marshal._STRATEGIES.items()
                                             if k != "cached"}
    assert enum_values("OSFT_SVD_") == {k.upper(): v for k, v in _marshal._SVD_ALGORITHMS.items()}
    assert enum_values("OSFT_MATH_") == {k.upper(): v for k, v in _marshal._MATH_MODES.items()}
    rules = enum_values("OSFT_RANK_")
    assert rules == {"FIXED": 0, "FRACTION": 1, "ENERGY": 2, "ENTROPY_EFFECTIVE": 3}
    assert all(_marshal._RULES[k.lower()] == v for k, v in rules.items())


def test_abi_and_matrix_layout():
    m = re.search(r"#define OSFT_ABI_VERSION (\d+)", header_text())
    assert int(m.group(1)) == osft.ABI_VERSION == osft.abi_version()
    body = re.search(r"typedef struct osft_matrix \{(.*?)\} osft_matrix;", header_text(), re.S).group(1)
    fields = re.findall(r"^\s*(?:void \*|int32_t |int64_t )(\w+);", body, re.M)
    assert fields == [f for f, _ in osft.osft_matrix._fields_]


def c_to_ctypes(param):
    """The ctypes type a header parameter needs (by its C spelling)."""
    import ctypes

    p = " ".join(param.replace("const ", "").split())
    ptr = p.count("*")
    base = p.replace("*", " ").split()[:-1] if ptr or len(p.split()) > 1 else p.split()
    base = " ".join(w for w in base if w != "struct")
    scalars = {"int32_t": ctypes.c_int32, "int64_t": ctypes.c_int64, "size_t": ctypes.c_size_t,
               "double": ctypes.c_double, "uint32_t": ctypes.c_uint32}
    if ptr == 0:
        return scalars[base]
    if base in ("void", "osft_context", "osft_projector") and ptr == 1:
        return ctypes.c_void_p
    if base in ("osft_context", "osft_projector", "void") and ptr == 2:
        return ctypes.POINTER(ctypes.c_void_p)
    if base == "osft_matrix":
        return ctypes.POINTER(osft.osft_matrix)
    return ctypes.POINTER(scalars[base])


def test_signatures_match():
    """Every prototype's parameter types equal the header's, parameter by parameter."""
    sigs = re.findall(r"^[A-Za-z_][\w ]*?[\s*]+(osft_[a-z0-9_]+)\(([^)]*)\);", header_text(), re.M)
    assert len(sigs) >= 44
    for name, params in sigs:
        params = [] if params.strip() in ("", "void") else [p.strip() for p in params.split(",")]
        want = [c_to_ctypes(p) for p in params]
        got = _lib._PROTOTYPES[name][1]
        assert got == want, f"{name}: header {params} vs ctypes {got}"
