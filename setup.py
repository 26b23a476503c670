"""The build's one compiled part: the probe's C kernels as an optional extension module.

Everything else about the package is in pyproject.toml. `pip install .` (or `-e .`) compiles
backend/depthscope/probe/backends/{kernels,module}.c with the system's C compiler into
depthscope.probe.backends._kernels; where there is no compiler, or the build fails, the install
goes on without it (optional=True) and the probe computes the same numbers with tensor ops.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
KERNELS = Path("backend/depthscope/probe/backends")
SOURCES = [KERNELS / "kernels.c", KERNELS / "module.c"]
# The built module carries the SHA-256 of its sources, so a loader that finds the sources
# beside it (an editable install) can tell when they changed since the build.
SHA = hashlib.sha256(b"".join((HERE / p).read_bytes() for p in [*SOURCES, KERNELS / "kernels.h"]))

setup(
    ext_modules=[
        Extension(
            "depthscope.probe.backends._kernels",
            sources=[str(p) for p in SOURCES],
            depends=[str(KERNELS / "kernels.h")],
            define_macros=[("DS_SOURCE_SHA", f'"{SHA.hexdigest()}"')],
            # -ffp-contract=off: no fused multiply-adds, so each float op rounds as torch's does
            # (the histograms' bin edges agree); -fopenmp-simd: vectorise the marked loops, no
            # OpenMP runtime; nothing reassociated (no -ffast-math), so NaN and inf propagate.
            extra_compile_args=[
                "-O3",
                "-fopenmp-simd",
                "-ffp-contract=off",
                "-fno-math-errno",
                "-fvisibility=hidden",
            ],
            libraries=["m"],
            optional=True,
        )
    ]
)
