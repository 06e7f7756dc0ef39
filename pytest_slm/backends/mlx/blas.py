"""MLX's float32 matmuls on OpenBLAS instead of the reference BLAS that its Linux wheel bundles.

mlx-cpu's Linux wheel links netlib's reference BLAS: one thread, unblocked loops, about 3 GFLOP/s
here, so a 135M model prefilled 13 tokens/s. pytest-slm's C shim (`pytest_slm/_mlx_blas.c`, built
on Linux) defines `cblas_sgemm` and forwards it to scipy-openblas32's (prefixed) one. Loaded with
RTLD_GLOBAL before `mlx.core` is imported, it is the `cblas_sgemm` MLX binds to; a probe matmul
then confirms the binding, so what is reported is what MLX actually runs.

Set PYTEST_SLM_MLX_BLAS=reference to keep the bundled BLAS (the speed benchmark compares both).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import sys

REFERENCE = "reference"


@functools.cache
def route_to_openblas() -> str:
    """Point MLX's cblas_sgemm at OpenBLAS where possible; returns which BLAS MLX's matmuls run on.

    Must run before the process first imports `mlx.core`: Python loads extension modules with
    RTLD_NOW, which binds every symbol of MLX's library on import. Cached: one routing per process.
    """
    if sys.platform != "linux":
        return "MLX's own (Accelerate on macOS)"
    if os.environ.get("PYTEST_SLM_MLX_BLAS") == REFERENCE:
        return REFERENCE
    if importlib.util.find_spec("mlx") is None:
        return f"{REFERENCE} (MLX is not installed)"
    shim_spec = importlib.util.find_spec("pytest_slm._mlx_blas")
    if shim_spec is None or shim_spec.origin is None or importlib.util.find_spec("scipy_openblas32") is None:
        return f"{REFERENCE} (pytest-slm's BLAS shim or scipy-openblas32 is not installed)"
    shim = ctypes.CDLL(shim_spec.origin, mode=ctypes.RTLD_GLOBAL)
    shim.pytest_slm_set_sgemm(ctypes.cast(_openblas().scipy_cblas_sgemm, ctypes.c_void_p))
    shim.pytest_slm_sgemm_calls.restype = ctypes.c_long
    if not _matmul_reaches(shim):
        return f"{REFERENCE} (mlx.core was imported before pytest-slm could route its BLAS)"
    _openblas().scipy_openblas_get_config.restype = ctypes.c_char_p
    return " ".join(_openblas().scipy_openblas_get_config().decode().split()[:2])  # "OpenBLAS 0.3.x"


def set_threads(threads: int) -> None:
    """OpenBLAS's thread count, when MLX's matmuls run on it (MLX's own CPU work is one thread)."""
    if route_to_openblas().startswith("OpenBLAS"):
        _openblas().scipy_openblas_set_num_threads(threads)


@functools.cache
def _openblas() -> ctypes.CDLL:
    import scipy_openblas32

    return ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True)))


def _matmul_reaches(shim: ctypes.CDLL) -> bool:
    """Whether a float32 matmul on MLX's CPU goes through the shim."""
    import mlx.core as mx

    before = shim.pytest_slm_sgemm_calls()
    mx.eval(mx.matmul(mx.ones((8, 8), dtype=mx.float32), mx.ones((8, 8), dtype=mx.float32), stream=mx.cpu))
    reaches: bool = shim.pytest_slm_sgemm_calls() > before  # a ctypes call: an int, typed Any
    return reaches
