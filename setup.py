"""Build script for the C extension; all metadata lives in pyproject.toml.

The extension ``accelerators._sparse_kernels`` is plain C against the CPython API and the
buffer protocol (no torch or numpy headers), so ``pip install -e .`` needs only setuptools
and a C compiler. Each ISA variant lives in its own translation unit with a
``#pragma GCC target`` line; the variant is picked at import time from the running CPU.
OpenMP is used when the compiler supports ``-fopenmp`` (set SPARSEBENCH_NO_OPENMP=1 to
build without it; the kernels then run single-threaded).
"""
import glob
import os
import sys

from setuptools import Extension, setup

_CSRC = "accelerators/_csrc"
# Every .c file is one translation unit; the headers (declarations, `*.inc.h` templates, inline
# helpers) are dependencies, so editing one rebuilds the extension. accelerators/_csrc/README.md
# maps the files.
_SOURCES = sorted(glob.glob(f"{_CSRC}/*.c"))
_DEPENDS = sorted(glob.glob(f"{_CSRC}/*.h"))

compile_args = ["-O3", "-std=c11", "-fno-math-errno", "-Wall", "-Wno-unknown-pragmas"]
link_args = []
if sys.platform != "win32" and not os.environ.get("SPARSEBENCH_NO_OPENMP"):
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")

setup(
    ext_modules=[
        Extension(
            "accelerators._sparse_kernels",
            sources=_SOURCES,
            depends=_DEPENDS,
            include_dirs=[_CSRC],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            libraries=["m"] if sys.platform != "win32" else [],
        )
    ]
)
