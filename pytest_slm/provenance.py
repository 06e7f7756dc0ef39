"""What a figure was measured with besides the hardware: the runtime and its build, pytest-slm,
lm-eval, the model file, the OS. Recorded with every baseline and run, and compared across: a
change here is what a regression is explained by ("changed since then: llama-cpp-python 0.3.36 →
0.3.40"), never a reason to skip the comparison."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any

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


def described(found: Sequence[Change]) -> str:
    return "; ".join(map(str, found))


def counted(per_item: Mapping[str, Sequence[Sequence[str]]]) -> list[str]:
    """What changed for a run as a whole, from each item's changes since its baseline ([name, before,
    now]): each change once, with how many items saw it ("llama-cpp-python 0.3.36 → 0.3.40 (12 items)")."""
    seen: dict[str, int] = {}
    for found in per_item.values():
        for name, before, now in found:
            shown = str(Change(name, before, now))
            seen[shown] = seen.get(shown, 0) + 1
    return [f"{shown} ({count} item{'s' if count > 1 else ''})" for shown, count in seen.items()]


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
