"""Build of the osft Python package: libosft, the Rust crate at the root of the osft repository
(two levels up), is built by cargo through setuptools-rust and bundled as ``osft/libosft.so``.

It is a plain C-ABI cdylib loaded with ctypes (``Binding.NoBinding``), so the wheel is tagged
``py3-none-<platform>``: any Python 3, one platform. The crate is outside this directory, so the
package builds only from a checkout (``pip install ./bindings/python`` or ``pip wheel``); an sdist
of this directory alone cannot build (it stops with a message saying so).
``OSFT_BUILD_LIBOSFT=0`` skips the Rust build (the editable install of the test suite does, and
then loads the checkout's target/release/libosft.so instead).
"""

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
CARGO_TOML = HERE.parent.parent / "Cargo.toml"
LIB_TARGET = "osft.libosft"  # the RustExtension's name; installed as osft/libosft.so

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel


class BuildExt(build_ext):
    def get_ext_filename(self, fullname):
        # The file name _lib.py loads, not a CPython extension-module name (get_ext_fullpath asks
        # with the last component of the name and adds the package directory itself).
        if fullname in (LIB_TARGET, LIB_TARGET.rsplit(".", 1)[1]):
            return "libosft.so"
        return super().get_ext_filename(fullname)


class BdistWheel(bdist_wheel):
    def get_tag(self):
        # libosft uses no Python API: any Python 3, but only the platform it was built for.
        _, _, plat = super().get_tag()
        return "py3", "none", plat


def rust_extensions():
    if os.environ.get("OSFT_BUILD_LIBOSFT", "1") == "0":
        return []
    if not CARGO_TOML.is_file():
        raise SystemExit(
            f"osft: {CARGO_TOML} not found. The Python package builds libosft from the osft "
            "repository it sits in: run `pip install ./bindings/python` (or `pip wheel`) from a "
            "checkout; an sdist or a copy of bindings/python alone cannot build it."
        )
    from setuptools_rust import Binding, RustExtension

    return [
        RustExtension(
            LIB_TARGET,
            path=os.path.relpath(CARGO_TOML, HERE),
            binding=Binding.NoBinding,
            # A profile of its own (Cargo.toml): `cargo rustc --crate-type cdylib` would otherwise
            # rebuild target/release's library (other crate types) and the next `cargo build
            # --release` rebuild it back.
            args=["--profile", "wheel"],
            py_limited_api=False,
        )
    ]


setup(
    rust_extensions=rust_extensions(),
    cmdclass={"build_ext": BuildExt, "bdist_wheel": BdistWheel},
    zip_safe=False,
)
