"""What items exist: the model × device × quant (× task) cases and their stable ids."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Iterable


@dataclass(frozen=True, order=True)
class TaskSpec:
    """An lm-eval task and its few-shot count, written `name:shots` (shots default to 0)."""

    name: str
    shots: int = 0

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        name, _, shots = text.strip().partition(":")
        if not name:
            raise ValueError(f"empty task name in {text!r}")
        if shots and not (shots.isdigit() and int(shots) <= 100):
            raise ValueError(f"few-shot count must be a whole number 0-100, got {text!r}")
        return cls(name, int(shots or 0))

    def __str__(self) -> str:
        return f"{self.name}:{self.shots}"


@dataclass(frozen=True)
class Case:
    """One combination; the task is None for tests that only need the model."""

    model: str
    device: str
    quant: str
    task: TaskSpec | None = None

    @property
    def backend(self) -> str:
        return self.device.split("-", 1)[0]

    @property
    def model_id(self) -> str:
        """The part a model load is shared across: model, device, quant."""
        return f"{self.model}-{self.device}-{self.quant}"

    @property
    def id(self) -> str:
        return self.model_id if self.task is None else f"{self.model_id}-{self.task}"


def build_cases(
    models: Iterable[str], devices: Iterable[str], quants: Iterable[str], tasks: Iterable[TaskSpec] | None
) -> list[Case]:
    """Cases in model, device, quant, task order, so items of one load sit together."""
    task_axis: list[TaskSpec | None] = list(tasks) if tasks is not None else [None]
    return [Case(m, d, q, t) for m, d, q, t in product(models, devices, quants, task_axis)]


# llama.cpp's device and MLX's device on the same hardware: what a parity item puts side by side.
PARITY_PAIRS = (("llamacpp-cpu", "mlx-cpu"), ("llamacpp-metal", "mlx-gpu"), ("llamacpp-cuda", "mlx-gpu"))


# The reference runs the GGUF's exact float32 copy: llama.cpp's kernels for quantized weights also
# quantize the activations (to 8 bits), which moves next-token distributions by far more than a
# runtime's float32 arithmetic does; against f32 only a real difference shows.
REFERENCE_QUANT = "f32"


def fidelity_reference(model: str) -> Case:
    """What every quant of a model is measured against: its exact float32 values on llama.cpp's
    CPU runtime, the one available wherever llama.cpp is."""
    return Case(model, "llamacpp-cpu", REFERENCE_QUANT)


@dataclass(frozen=True)
class ParityCase:
    """The GGUF's own weights in MLX (`native`: its blocks, mapped exactly) against llama.cpp
    running the same values unquantized."""

    model: str
    reference: str  # llama.cpp's device
    candidate: str  # MLX's device

    @property
    def sides(self) -> tuple[Case, Case]:
        return Case(self.model, self.reference, REFERENCE_QUANT), Case(self.model, self.candidate, "native")

    @property
    def id(self) -> str:
        return f"{self.model}-{self.candidate}-native-vs-{self.reference}-{REFERENCE_QUANT}"


def build_parity_cases(models: Iterable[str], devices: Iterable[str]) -> list[ParityCase]:
    """A case per model for each pair of runtimes on the same hardware among the selected devices."""
    selected = set(devices)
    return [ParityCase(m, r, c) for m in models for r, c in PARITY_PAIRS if {r, c} <= selected]
