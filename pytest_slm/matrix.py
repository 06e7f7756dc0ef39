"""What items exist: the model × device × quant (× task) cases and their stable ids."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from itertools import product
from typing import TYPE_CHECKING

from .backends.base import DEFAULT_KV_TYPE

if TYPE_CHECKING:
    from .models.registry import ModelEntry


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
    """One combination; the task is None for tests that only need the model. `source` None: the
    backend's own choice among the model's sources; "gguf": the GGUF even where the model also has
    an MLX checkpoint (the MLX side of a same-weights parity item). `kv`: the KV cache type of keys
    and values; the default (f16) is left out of ids and baseline paths, so they read as before."""

    model: str
    device: str
    quant: str
    task: TaskSpec | None = None
    source: str | None = None
    kv: str = DEFAULT_KV_TYPE

    @property
    def backend(self) -> str:
        return self.device.split("-", 1)[0]

    @property
    def variant(self) -> str:
        """The quant, and the KV cache type where it is not the default: `native`, `native-kv-q8_0`;
        the `quant` of rows and records, and the directory of the baselines."""
        return self.quant if self.kv == DEFAULT_KV_TYPE else f"{self.quant}-kv-{self.kv}"

    @property
    def model_id(self) -> str:
        """The part a model load is shared across: model, device, quant, KV cache type."""
        return f"{self.model}-{self.device}-{self.variant}" + (f"-from-{self.source}" if self.source else "")

    @property
    def id(self) -> str:
        return self.model_id if self.task is None else f"{self.model_id}-{self.task}"


def build_cases(
    models: Iterable[str],
    devices: Iterable[str],
    quants: Iterable[str],
    tasks: Iterable[TaskSpec] | None,
    kv_types: Iterable[str] = (DEFAULT_KV_TYPE,),
) -> list[Case]:
    """Cases in model, device, quant, KV type, task order, so items of one load sit together."""
    task_axis: list[TaskSpec | None] = list(tasks) if tasks is not None else [None]
    axes = product(models, devices, quants, kv_types, task_axis)
    return [Case(m, d, q, t, kv=kv) for m, d, q, kv, t in axes]


# llama.cpp's device and MLX's device on the same hardware: what a parity item puts side by side.
PARITY_PAIRS = (("llamacpp-cpu", "mlx-cpu"), ("llamacpp-metal", "mlx-gpu"), ("llamacpp-cuda", "mlx-gpu"))


# The reference runs the GGUF's exact float32 copy: llama.cpp's kernels for quantized weights also
# quantize the activations (to 8 bits), which moves next-token distributions by far more than a
# runtime's float32 arithmetic does; against f32 only a real difference shows.
REFERENCE_QUANT = "f32"


def fidelity_reference(case: Case, has_checkpoint: bool) -> Case:
    """What a quant is measured against: its own format's exact values. MLX quants of a model with
    an MLX checkpoint: the checkpoint as shipped, on mlx-cpu (computed in float32 there); every
    other quant: the GGUF's exact float32 copy on llama.cpp's CPU runtime, the one available
    wherever llama.cpp is. A quantized KV cache: the same model, device and quant with the default
    cache, so only the cache's own damage shows."""
    if case.kv != DEFAULT_KV_TYPE:
        return replace(case, task=None, kv=DEFAULT_KV_TYPE)
    if has_checkpoint and case.backend == "mlx":
        return Case(case.model, "mlx-cpu", "native")
    return Case(case.model, "llamacpp-cpu", REFERENCE_QUANT)


SAME_WEIGHTS = "same-weights"  # the GGUF's own blocks in MLX against llama.cpp's exact float32 copy
FORMATS = "formats"  # each runtime on its own format: the MLX checkpoint against the GGUF as shipped


@dataclass(frozen=True)
class ParityCase:
    """Two runtimes side by side on one model. `same-weights`: the GGUF's own weights in MLX
    (`native`: its blocks, mapped exactly) against llama.cpp running the same values unquantized.
    `formats`: a model registered with both a GGUF and an MLX checkpoint, each runtime on its own
    (two quantizations of one model, so looser thresholds)."""

    model: str
    reference: str  # llama.cpp's device
    candidate: str  # MLX's device
    kind: str = SAME_WEIGHTS
    candidate_source: str | None = None  # "gguf" where the model's MLX items run its checkpoint

    @property
    def sides(self) -> tuple[Case, Case]:
        if self.kind == FORMATS:
            return Case(self.model, self.reference, "native"), Case(self.model, self.candidate, "native")
        return (
            Case(self.model, self.reference, REFERENCE_QUANT),
            Case(self.model, self.candidate, "native", source=self.candidate_source),
        )

    @property
    def id(self) -> str:
        reference = self.sides[0]
        return f"{self.model}-{self.candidate}-native-vs-{self.reference}-{reference.quant}"


def build_parity_cases(models: Mapping[str, ModelEntry], devices: Iterable[str]) -> list[ParityCase]:
    """Per model with a GGUF, a same-weights case for each pair of runtimes on the same hardware
    among the selected devices; and a formats case where it has an MLX checkpoint too."""
    selected = set(devices)
    cases = []
    for name, entry in models.items():
        if entry.gguf is None:
            continue
        for reference, candidate in PARITY_PAIRS:
            if {reference, candidate} <= selected:
                cases.append(ParityCase(name, reference, candidate, SAME_WEIGHTS, "gguf" if entry.mlx else None))
                if entry.mlx is not None:
                    cases.append(ParityCase(name, reference, candidate, FORMATS))
    return cases
