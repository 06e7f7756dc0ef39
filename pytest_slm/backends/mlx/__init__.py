"""MLX, through mlx-lm: the backend's declaration, importable without MLX.

`backend.py` loads and runs models, `gguf_import.py` builds one from a GGUF, `vocab.py` gives it
llama.cpp's token ids, `blas.py` puts its CPU matmuls on OpenBLAS, `quantize.py` derives the mlx-q*
quants of a checkpoint with mlx-lm's converter, `export.py` writes a GGUF as a checkpoint. MLX
itself is imported only when a device is probed or a model loaded (after blas.py has routed its BLAS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..base import DeviceStatus, LoadedModel, LoadRequest

NAME = "mlx"
DEVICES = ("mlx-cpu", "mlx-gpu")
QUANTS = ("native", "f16", "mlx-q8", "mlx-q6", "mlx-q4", "mlx-q3", "mlx-q2")
# Its unquantized cache only: mlx-lm's own quantized KV cache (kv_bits, affine groups) is another
# format than llama.cpp's q8_0/q4_0 blocks and is not driven here, so other KV types skip.
KV_TYPES = ("f16",)
PACKAGE = "mlx"
SOURCES = ("mlx", "gguf")  # a checkpoint in its own format first, else the GGUF imported
UNTHREADED = frozenset({"mlx-gpu"})  # MLX schedules its GPU itself


def device_statuses() -> list[DeviceStatus]:
    from .backend import device_statuses

    return device_statuses()


def load(request: LoadRequest) -> LoadedModel:
    from .backend import load

    return load(request)


def runtime_detail(device: str) -> str:
    """On CPU its matmuls' speed is the BLAS's."""
    if device != "mlx-cpu":
        return ""
    from .blas import route_to_openblas

    return f"on {route_to_openblas()}"
