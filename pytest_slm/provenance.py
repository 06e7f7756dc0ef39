"""What a figure was measured with besides the hardware: the runtime and its build, pytest-slm,
lm-eval, the model file, the OS. Recorded with every baseline and run, and compared across: a
change here is what a regression is explained by ("changed since then: llama-cpp-python 0.3.36 →
0.3.40"), never a reason to skip the comparison."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any, Mapping

NOT_COMPARED = frozenset({"date"})  # differs on every refresh and explains nothing
DIGESTS = ("model_sha256",)  # shown shortened
SHOWN_NAMES = {
    "llama_cpp_python": "llama-cpp-python",
    "mlx_lm": "mlx-lm",
    "lm_eval": "lm-eval",
    "pytest_slm": "pytest-slm",
    "model_sha256": "model file",
    "os_release": "OS release",
    "gpu_driver": "GPU driver",
    "runtime_build": "runtime build",
}


@dataclass(frozen=True)
class Change:
    name: str  # the provenance key
    before: Any
    now: Any

    def __str__(self) -> str:
        name = SHOWN_NAMES.get(self.name, self.name)
        return f"{name} {_shown(self.name, self.before)} → {_shown(self.name, self.now)}"


def changes(before: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[Change]:
    """What differs between two provenances, in a stable order; a key only one side records (a
    baseline written before it was recorded) is a change only where the older side had it."""
    if not before:
        return []
    return [
        Change(key, before[key], now.get(key, "absent"))
        for key in sorted(before)
        if key not in NOT_COMPARED and before[key] != now.get(key, "absent")
    ]


def described(found: list[Change]) -> str:
    return "; ".join(map(str, found))


def _shown(name: str, value: Any) -> str:
    text = str(value)
    return text[:12] if name in DIGESTS and len(text) > 12 else text


def version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


@cache
def system() -> dict[str, str]:
    """The OS and kernel, and a GPU driver where nvidia-smi answers: they change under a pinned
    stack, so the nightly run names them."""
    found = {"os_release": f"{platform.system()} {platform.release()}"}
    if driver := command(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]):
        found["gpu_driver"] = driver.splitlines()[0]
    return found


def command(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
