"""llama.cpp, through llama-cpp-python: the backend's declaration, importable without llama.cpp.

`backend.py` drives the runtime; `quantize.py` derives the other quants with llama.cpp's own
quantizer. Both are imported only when a device is probed or a model loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .quantize import LLAMA_FTYPES

if TYPE_CHECKING:
    from ..base import DeviceStatus, LoadedModel, LoadRequest

NAME = "llamacpp"
DEVICES = ("llamacpp-cpu", "llamacpp-cuda", "llamacpp-metal")
QUANTS = ("native", *LLAMA_FTYPES)  # the GGUF as shipped, and what llama.cpp's quantizer derives from it
# The KV cache types it runs, for keys and values alike (as llama-bench's -ctk/-ctv sweep them), and
# bytes per cached value: ggml's q8_0/q4_0 blocks hold 32 values and one f16 scale (34 and 18 bytes).
KV_BYTES_PER_VALUE = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
KV_TYPES = tuple(KV_BYTES_PER_VALUE)
PACKAGE = "llama-cpp-python"
SOURCES = ("gguf",)  # the model sources it loads, preferred first
UNTHREADED: frozenset[str] = frozenset()  # llama.cpp is given --slm-threads on every device


def device_statuses() -> list[DeviceStatus]:
    from .backend import device_statuses

    return device_statuses()


def load(request: LoadRequest) -> LoadedModel:
    from .backend import load

    return load(request)


def runtime_detail(device: str) -> str:
    return ""
