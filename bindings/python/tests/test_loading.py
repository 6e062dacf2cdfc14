"""Library search order (OSFT_LIBRARY, bundled copy, development checkout, find_library) and the
ImportError when nothing loads; run in subprocesses so each import starts fresh."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import osft

PKG = Path(osft.__file__).resolve().parent


def run(code, env_extra=None, unset=(), pythonpath=None):
    env = dict(os.environ)
    for k in unset:
        env.pop(k, None)
    env.update(env_extra or {})
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd="/")


def test_versions():
    assert len(osft.version()) == 3 and all(isinstance(v, int) for v in osft.version())
    assert osft.abi_version() == osft.ABI_VERSION == 2
    assert os.path.exists(osft.library_path)


def test_osft_library_env_wins():
    r = run("import osft; print(osft.library_path)", {"OSFT_LIBRARY": osft.library_path})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == osft.library_path


def test_osft_library_missing_file_is_an_import_error():
    r = run("import osft", {"OSFT_LIBRARY": "/nonexistent/libosft.so"})
    assert r.returncode != 0
    assert "LibraryNotFoundError" in r.stderr and "/nonexistent/libosft.so" in r.stderr
    assert "no such file" in r.stderr
    r = run("import osft\n", {"OSFT_LIBRARY": __file__})  # not a shared library
    assert "dlopen failed" in r.stderr
    r = run("try:\n import osft\nexcept ImportError as e:\n print(type(e).__name__, len(e.tried))",
            {"OSFT_LIBRARY": "/nonexistent/libosft.so"})
    assert r.stdout.split() == ["LibraryNotFoundError", "1"]


def test_osft_library_incompatible_is_an_import_error():
    # The checkout's own library would load next: OSFT_LIBRARY must not fall through to it.
    import _ctypes  # a shared library that is not libosft

    assert os.path.isfile(_ctypes.__file__)
    r = run("import osft", {"OSFT_LIBRARY": _ctypes.__file__})
    assert r.returncode != 0
    assert "LibraryNotFoundError" in r.stderr and "no osft_abi_version" in r.stderr
    assert "development checkout" not in r.stderr and "bundled" not in r.stderr
    # A libosft of another ABI version (the real library, its osft_abi_version answering 1).
    fake_abi = (
        "import ctypes\n"
        "class OtherAbi(ctypes.CDLL):\n"
        "    def __getattr__(self, name):\n"
        "        if name == 'osft_abi_version':\n"
        "            f = lambda: 1\n"
        "            return f\n"
        "        return super().__getattr__(name)\n"
        "ctypes.CDLL = OtherAbi\n"
        "import osft\n")
    r = run(fake_abi, {"OSFT_LIBRARY": osft.library_path})
    assert r.returncode != 0
    assert "LibraryNotFoundError" in r.stderr and "ABI version 1, this binding needs 2" in r.stderr
    assert "OSFT_LIBRARY must name a compatible libosft" in r.stderr
    assert "development checkout" not in r.stderr
    # Unset, the same library of another ABI is skipped and the search goes on (to nothing here).
    r = run(fake_abi, unset=["OSFT_LIBRARY"])
    assert r.returncode != 0 and "ABI version 1" in r.stderr and "find_library" in r.stderr


def test_bundled_copy_then_nothing(tmp_path):
    # A copy of the package outside the checkout: no development-checkout candidate.
    dst = tmp_path / "site" / "osft"
    shutil.copytree(PKG, dst, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (dst / "libosft.so").symlink_to(osft.library_path)
    r = run("import osft; print(osft.library_path)", unset=["OSFT_LIBRARY"],
            pythonpath=tmp_path / "site")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(dst / "libosft.so")
    (dst / "libosft.so").unlink()
    r = run("import osft; print(osft.library_path)", unset=["OSFT_LIBRARY"],
            pythonpath=tmp_path / "site")
    if r.returncode == 0:  # libosft installed system-wide: found by find_library
        assert "libosft" in r.stdout
    else:
        for label in ["OSFT_LIBRARY: not set", "bundled", "development checkout",
                      "find_library('osft')", "cargo build --release"]:
            assert label in r.stderr, (label, r.stderr)


def test_development_checkout_path():
    r = run("import osft; print(osft.library_path)", unset=["OSFT_LIBRARY"],
            pythonpath=PKG.parent)
    assert r.returncode == 0, r.stderr
    want = PKG.parent.parent.parent / "target" / "release" / "libosft.so"
    if not (PKG / "libosft.so").exists() and want.exists():
        assert r.stdout.strip() == str(want)
