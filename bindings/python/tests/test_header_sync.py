"""The Python package's C enums against ``include/osft.h``, exactly and both ways.

The enums are defined once, in Rust (``src/error.rs``, ``src/ffi/types.rs``); cbindgen writes them
into the committed header, and the header check keeps the header equal to what cbindgen generates.
On the Python side they are written once too, in ``osft/_enums.py``, and every other table of the
package (status names, the exception class of each status, dtype and device codes, the string
spellings ``side="left"``, ``backend="cuda"``, ...) is derived from it. This test closes the chain:
the header's enums and ``osft._enums.ENUMS`` must be the same set of enums, each with the same
constant names and values (nothing missing, nothing extra), and the derived tables must map every
name to the value of the header constant of that name.

Why a test and not constants parsed from the header at import time: the installed package
(``pip install ./bindings/python``) ships the library, not the header, and must import anywhere;
parsing C at import would add a failure mode (a missing or reformatted header) to every user's
``import osft`` for no gain, since the values can only change together with the library's ABI.
Literal tables plus this check give the same guarantee in every checkout and CI run. It skips when
the header is absent (the package tested outside a checkout).
"""

import ast
import re
from pathlib import Path

import pytest

import osft
from osft import (
    _context,
    _decompose,
    _diagnostics,
    _enums,
    _errors,
    _lib,
    _marshal,
    _project,
    _ranks,
    _tensor,
)

HEADER = Path(__file__).resolve().parents[3] / "include" / "osft.h"
PACKAGE = Path(osft.__file__).resolve().parent
pytestmark = pytest.mark.skipif(not HEADER.exists(), reason="not in an osft checkout")


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def header_enums():
    """``{C enum name: {constant: value}}`` of every ``enum osft_*`` in the header, in order.
    Every constant must have an explicit value (the header's contract)."""
    text = _strip_comments(HEADER.read_text())
    enums = {}
    # `enum osft_x` [`: int32_t` between preprocessor lines] `{ ... }`
    for m in re.finditer(r"\benum\s+(osft_\w+)[^{};]*\{([^}]*)\}", text):
        name, body = m.group(1), m.group(2)
        assert name not in enums, f"enum {name} defined twice"
        entries = {}
        for item in filter(None, (e.strip() for e in body.split(","))):
            im = re.fullmatch(r"(OSFT_\w+)\s*=\s*(-?(?:0x[0-9a-fA-F]+|\d+))", item)
            assert im, f"{name}: entry without an explicit integer value: {item!r}"
            assert im.group(1) not in entries, f"{name}: {im.group(1)} twice"
            entries[im.group(1)] = int(im.group(2), 0)
        enums[name] = entries
    return enums


def header_define(name):
    m = re.search(rf"^#define {name} (\d+)\s*$", HEADER.read_text(), re.M)
    assert m, f"#define {name} not found in the header"
    return int(m.group(1))


HEADER_ENUMS = header_enums() if HEADER.exists() else {}


def test_header_parsed():
    # Guards the parser: a header reformatting that hides enums must fail here, not pass vacuously.
    assert "osft_status" in HEADER_ENUMS and len(HEADER_ENUMS) >= 9, sorted(HEADER_ENUMS)
    assert HEADER_ENUMS["osft_status"]["OSFT_STATUS_OK"] == 0
    assert all(HEADER_ENUMS.values()), "an enum parsed without constants"


def test_same_enums():
    assert sorted(_enums.ENUMS) == sorted(HEADER_ENUMS), (
        f"only in the header: {sorted(set(HEADER_ENUMS) - set(_enums.ENUMS))}; "
        f"only in osft/_enums.py: {sorted(set(_enums.ENUMS) - set(HEADER_ENUMS))}")


@pytest.mark.parametrize("enum", sorted(_enums.ENUMS))
def test_enum_matches_header(enum):
    prefix, table = _enums.ENUMS[enum]
    header = HEADER_ENUMS.get(enum, {})
    # Every constant of the enum carries the prefix, so "name without prefix" is well defined.
    assert all(c.startswith(prefix) for c in header), (enum, prefix, sorted(header))
    python = {prefix + k: v for k, v in table.items()}
    assert python == header, (
        f"{enum}: missing in Python {sorted(set(header) - set(python))}, "
        f"extra in Python {sorted(set(python) - set(header))}, "
        f"different values {sorted(c for c in set(python) & set(header) if python[c] != header[c])}")
    # Values are unique: the reverse tables (value -> name) depend on it.
    assert len(set(table.values())) == len(table), f"{enum}: duplicate values"


def test_abi_version():
    assert header_define("OSFT_ABI_VERSION") == _lib.ABI_VERSION == osft.ABI_VERSION


# ------------------------------------------------------------------ tables derived from _enums


def test_status_tables():
    assert osft.STATUS is _enums.STATUS and _errors.STATUS is _enums.STATUS
    assert _errors.STATUS_NAME == {v: k for k, v in _enums.STATUS.items()}
    failures = set(_enums.STATUS) - {"OK"}
    assert set(_errors.ERROR_CLASSES) == failures
    assert _errors._BY_CODE == {_enums.STATUS[n]: c for n, c in _errors.ERROR_CLASSES.items()}
    for name, cls in _errors.ERROR_CLASSES.items():
        code = _enums.STATUS[name]
        # The class documents its C constant, and errors built by name or by code agree.
        assert f"``OSFT_STATUS_{name}``" in (cls.__doc__ or ""), (name, cls)
        for status in (name, code):
            err = _errors.error(status, "m")
            assert type(err) is cls and err.status == name and err.code == code
        assert getattr(osft, cls.__name__) is cls


def test_library_knows_every_status():
    # The loaded library names exactly the codes of the table: no more, no fewer.
    unknown = osft.status_string(-1)
    for name, code in _enums.STATUS.items():
        assert osft.status_string(code) != unknown, name
    assert osft.status_string(max(_enums.STATUS.values()) + 1) == unknown


def test_dtype_and_device_codes():
    assert {"F32": _tensor.F32, "F64": _tensor.F64, "F16": _tensor.F16,
            "BF16": _tensor.BF16} == _enums.DTYPE
    assert {"HOST": _tensor.HOST, "CUDA": _tensor.CUDA} == _enums.DEVICE
    codes = set(_enums.DTYPE.values())
    assert set(_tensor.DTYPE_NAMES) == codes and set(_tensor.ITEMSIZE) == codes
    for name, code in _enums.DTYPE.items():
        bits = int(re.sub(r"\D", "", name))               # F32 -> 32, BF16 -> 16
        assert _tensor.ITEMSIZE[code] * 8 == bits, name
        assert _tensor.DTYPE_NAMES[code].endswith(str(bits)), name
        assert _tensor.DTYPE_NAMES[code].startswith("b") == name.startswith("B"), name


# (table in osft._marshal, its enum, aliases: extra spelling -> the constant name it stands for)
ARGUMENT_TABLES = [
    ("_BACKENDS", "BACKEND", {}),
    ("_SIDES", "SIDE", {"u": "LEFT", "v": "RIGHT"}),
    ("_STRATEGIES", "STRATEGY", {"cached": "CACHED_PROJECTOR"}),
    ("_SVD_ALGORITHMS", "SVD_ALGORITHM", {}),
    ("_MATH_MODES", "MATH_MODE", {}),
    ("_RULES", "RANK_RULE", {"entropy": "ENTROPY_EFFECTIVE"}),
]
# (table in osft._marshal, its enum, constants it leaves out and why)
NAME_TABLES = [
    ("_BACKEND_NAMES", "BACKEND", {"AUTO"}),        # a context's resolved backend is never AUTO
    ("_STRATEGY_NAMES", "STRATEGY", {"AUTO"}),      # a projector's resolved strategy is never AUTO
    ("_SVD_ALGORITHM_NAMES", "SVD_ALGORITHM", set()),
    ("_MATH_MODE_NAMES", "MATH_MODE", set()),
]


@pytest.mark.parametrize("table,enum,aliases", ARGUMENT_TABLES, ids=[t[0] for t in ARGUMENT_TABLES])
def test_argument_spellings(table, enum, aliases):
    """Each string argument spelling is the lower-case constant name (every constant has one),
    plus the listed aliases."""
    values = getattr(_marshal, table)
    consts = getattr(_enums, enum)
    assert {k: v for k, v in values.items() if k not in aliases} == {k.lower(): v for k, v in consts.items()}
    assert {k: values.get(k) for k in aliases} == {k: consts[c] for k, c in aliases.items()}


@pytest.mark.parametrize("table,enum,left_out", NAME_TABLES, ids=[t[0] for t in NAME_TABLES])
def test_reported_names(table, enum, left_out):
    names = getattr(_marshal, table)
    consts = getattr(_enums, enum)
    assert names == {v: k.lower() for k, v in consts.items() if k not in left_out}


# Module-level dicts of the package that are not mirrors of osft.h enums.
NOT_ENUM_TABLES = {
    ("_lib", "_PROTOTYPES"),           # ctypes prototypes (test_header.py checks them)
    ("_tensor", "_DL_DEVICE_NAMES"),   # DLPack's DLDeviceType, not an osft enum
}
# Every module of the package but _enums, in import order (the functional API's op modules import
# _marshal's tables).
CORE_MODULES = (_errors, _lib, _tensor, _marshal, _context, _decompose, _project, _ranks, _diagnostics)
CHECKED_TABLES = (
    {("_enums", n) for n in ("ENUMS", "STATUS", "DTYPE", "DEVICE", "SIDE", "BACKEND", "STRATEGY",
                             "RANK_RULE", "SVD_ALGORITHM", "MATH_MODE")}
    | {("_errors", n) for n in ("STATUS_NAME", "ERROR_CLASSES", "_BY_CODE")}
    | {("_tensor", n) for n in ("DTYPE_NAMES", "ITEMSIZE")}
    | {("_marshal", t[0]) for t in ARGUMENT_TABLES + NAME_TABLES}
)


def test_no_unchecked_enum_table():
    """Every module-level dict of the package's core modules is checked above or listed as not an
    enum mirror, so a new hand-written copy of an enum cannot slip in unchecked."""
    def tables(mod):
        return {n: v for n, v in vars(mod).items() if isinstance(v, dict) and not n.startswith("__")}

    modules = {f"osft.{p.stem}" for p in PACKAGE.glob("_*.py") if p.stem != "__init__"}
    assert {m.__name__ for m in CORE_MODULES} | {"osft._enums"} == modules
    found = {("_enums", n) for n in tables(_enums)}
    imported = {id(v) for v in tables(_enums).values()}
    # Defining modules before the ones that import from them: a table counts once, where defined.
    for mod in CORE_MODULES:
        short = mod.__name__.rsplit(".", 1)[1]
        found |= {(short, n) for n, v in tables(mod).items() if id(v) not in imported}
        imported |= {id(v) for v in tables(mod).values()}
    assert found - CHECKED_TABLES - NOT_ENUM_TABLES == set()
    assert (CHECKED_TABLES | NOT_ENUM_TABLES) - found == set()


def test_status_names_in_source_exist():
    """``error("NAME", ...)`` / ``OsftError("NAME", ...)`` anywhere in the package names a real
    status (a typo would only surface as a KeyError on that error path)."""
    used = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and getattr(node.func, "id", getattr(node.func, "attr", None))
                    in ("error", "OsftError")):
                used.add((path.name, node.args[0].value))
    assert used, "no error(...) calls found: the scan is broken"
    assert {(f, s) for f, s in used if s not in _enums.STATUS} == set()
