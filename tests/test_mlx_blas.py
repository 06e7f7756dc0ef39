"""MLX's float32 matmuls on OpenBLAS: routed in a fresh process, reported honestly when it is too late."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the BLAS shim is built on Linux only")

ROUTE = "from pytest_slm.backends.mlx.blas import route_to_openblas; print(route_to_openblas())"
MATMUL = """
import numpy as np, mlx.core as mx
a = np.random.default_rng(0).standard_normal((300, 200), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((200, 100), dtype=np.float32)
assert np.allclose(np.array(mx.array(a) @ mx.array(b)), a @ b, atol=1e-4)
"""


def run(code: str, **env: str) -> str:
    pytest.importorskip("mlx.core")
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_routed_before_mlx_is_imported_mlx_matmuls_run_on_openblas_and_agree_with_numpy():
    assert run(ROUTE + MATMUL).startswith("OpenBLAS 0.3")


def test_routing_after_mlx_was_imported_reports_the_reference_blas():
    assert run("import mlx.core\n" + ROUTE + MATMUL) == (
        "reference (mlx.core was imported before pytest-slm could route its BLAS)"
    )


def test_the_environment_can_keep_the_reference_blas():
    assert run(ROUTE + MATMUL, PYTEST_SLM_MLX_BLAS="reference") == "reference"
