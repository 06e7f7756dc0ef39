"""The one compiled piece: on Linux, the BLAS shim that puts MLX's CPU matmuls on OpenBLAS.

Everything else is declared in pyproject.toml; see pytest_slm/backends/mlx/blas.py for why.
"""

import sys

from setuptools import Extension, setup

shim = Extension("pytest_slm._mlx_blas", ["pytest_slm/_mlx_blas.c"])
setup(ext_modules=[shim] if sys.platform == "linux" else [])
