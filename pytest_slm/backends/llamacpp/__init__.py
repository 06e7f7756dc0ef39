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
