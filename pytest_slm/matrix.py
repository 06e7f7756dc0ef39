"""What items exist: the model × device × quant (× task) cases and their stable ids."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import product
from typing import TYPE_CHECKING

from .backends import all_devices, backend, kv_types
from .backends.base import DEFAULT_KV_TYPE

if TYPE_CHECKING:
    from .backends.base import DeviceStatus
    from .models.registry import ModelEntry
    from .options import SlmConfig
    from .tasks.catalog import TaskCatalog


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


@dataclass
class Matrix:
    """The run's cases (model x device x quant x task x KV type) and why this machine cannot run some."""

    config: SlmConfig
    models: dict[str, ModelEntry]
    catalog: TaskCatalog

    @cached_property
    def device_statuses(self) -> dict[str, DeviceStatus]:
        """Probing imports a runtime: only the backends this run needs (a fidelity reference may be on another)."""
        devices = self.config.devices or all_devices()
        needed = [*devices, *(self.reference_of(Case(m, d, "native")).device for m in self.models for d in devices)]
        statuses = {}
        for name in dict.fromkeys(d.split("-")[0] for d in needed):
            statuses.update({s.name: s for s in backend(name).device_statuses()})
        return statuses

    def devices(self) -> tuple[str, ...]:
        if self.config.devices is not None:
            return self.config.devices
        return tuple(d for d in all_devices() if self.device_statuses[d].available)

    def tasks(self) -> tuple[TaskSpec, ...]:
        return self.config.tasks or tuple(TaskSpec(name) for name in sorted(self.catalog.shipped))

    def cases(self, with_tasks: bool) -> list[tuple[Case, str | None]]:
        """Every case, with a skip reason for those this machine cannot run."""
        config = self.config
        cases = build_cases(
            self.models, self.devices(), config.quants, self.tasks() if with_tasks else None, config.kv_types
        )
        return [(case, self.skip_reason(case)) for case in cases]

    def parity_cases(self) -> list[tuple[ParityCase, str | None]]:
        cases = build_parity_cases(self.models, self.devices())
        return [(case, self.skip_reason(case.sides[0]) or self.skip_reason(case.sides[1])) for case in cases]

    def empty_reason(self, with_tasks: bool = False, parity: bool = False) -> str:
        """Why the matrix of a test has no case at all."""
        if not self.models:
            return "no model selected: name one with --slm-models (a registry name, a .gguf file or an MLX directory)"
        if not self.devices():
            reasons = "; ".join(f"{name}: {status.reason}" for name, status in self.device_statuses.items())
            return f"no device available here ({reasons})"
        if parity:
            return f"parity needs a llama.cpp and an MLX device on the same hardware; selected: {', '.join(self.devices())}"
        if with_tasks and not self.tasks():
            return "no task selected: name one with --slm-tasks"
        return "every case of this test is excluded (the fidelity reference is not compared with itself)"

    def skip_reason(self, case: Case) -> str | None:
        status = self.device_statuses[case.device]
        quants = backend(case.backend).QUANTS
        if not status.available:
            return f"{case.device} unavailable: {status.reason}"
        if case.quant not in quants:
            return f"{case.backend} cannot make quant {case.quant!r} (its quants: {', '.join(quants)})"
        if case.kv not in (types := kv_types(case.backend)):
            return (
                f"{case.model} on {case.backend}: no {case.kv} KV cache (its KV types: {', '.join(types)};"
                " a runtime's own KV quantization, as mlx-lm's kv_bits, is not driven by --slm-kv-types)"
            )
        return None

    def reference_of(self, case: Case) -> Case:
        """The case a fidelity item of `case` is measured against (see fidelity_reference)."""
        return fidelity_reference(case, self.models[case.model].mlx is not None)
