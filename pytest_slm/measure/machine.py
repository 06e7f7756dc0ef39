"""What running a model costs on this machine: latency measured repeatedly, memory, and the
hardware fingerprint those figures belong to (timings mean nothing on other hardware)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, TypeVar

from ..backends import backend
from ..backends.base import LoadedModel, MemoryProfile
from ..provenance import command, version
from ..stats import Spread, spread

T = TypeVar("T")


@dataclass(frozen=True)
class Fingerprint:
    """The hardware a latency figure holds for: any difference is another machine. The software
    (runtime, its version and build) is not part of it: a new release is compared with the old
    one's figures, and named as what changed (provenance.py)."""

    cpu: str
    threads: int
    accelerator: str
    os: str

    @property
    def slug(self) -> str:
        """A directory name: readable where it can be, and a hash of everything."""
        digest = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.os.lower().replace(' ', '-')}-{self.threads}t-{digest}"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        return f"{self.cpu}, {self.threads} threads, {self.accelerator}, {self.os}"


@cache
def fingerprint(device: str, threads: int) -> Fingerprint:
    """Asked before and after each measurement; the machine does not change within a run."""
    name, _, kind = device.partition("-")
    owner = backend(name)
    return Fingerprint(
        cpu=_cpu_name(),
        threads=0 if device in owner.UNTHREADED else threads,
        accelerator="none" if kind == "cpu" else _gpu_name(),
        os=f"{platform.system()} {platform.machine()}",
    )


def runtime_build(device: str) -> str:
    """The runtime package, its version and what else its speed depends on (the BLAS mlx-cpu's
    matmuls run on): provenance, compared across, not a key."""
    owner = backend(device.partition("-")[0])
    runtime = f"{owner.PACKAGE} {version(owner.PACKAGE)}"
    detail = owner.runtime_detail(device)
    return f"{runtime} {detail}" if detail else runtime


def _cpu_name() -> str:
    if sys.platform == "darwin":
        return command(["sysctl", "-n", "machdep.cpu.brand_string"]) or platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("model name", "Hardware", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _gpu_name() -> str:
    """The GPU (its driver is provenance); on Apple Silicon the chip is the GPU."""
    if sys.platform == "darwin":
        return command(["sysctl", "-n", "machdep.cpu.brand_string"]) or "Apple GPU"
    return command(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]).split("\n")[0] or "unknown GPU"


# -- latency ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One metric's repeated measurements, in seconds; `tokens` per repeat turns them into tok/s."""

    metric: str  # "prefill@128", "decode", "ttft@128"; at a depth "prefill@128@d2048", "decode@d2048"
    seconds: tuple[float, ...]
    tokens: int  # 0 for a time to first token, shown in seconds

    @property
    def spread(self) -> Spread:
        return spread(self.seconds)

    @property
    def unit(self) -> str:
        return "tok/s" if self.tokens else "s"

    def shown(self, seconds: float) -> float:
        """What people read: tokens per second, or seconds where there is no token count."""
        return self.tokens / seconds if self.tokens else seconds

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": [round(s, 6) for s in self.seconds], "tokens": self.tokens}


PROBE_SIZE = 256  # one 256 x 256 float32 product in numpy's own loop: about 2 ms on this project's VMs
PROBE_PRODUCTS = 8
PROBE_SAMPLES = 9  # at least, in a round: before the timings, between the repeats, then after them


class SpeedProbe:
    """How fast this machine computes while the timings are taken, apart from the runtime under
    test: a fixed workload timed once after each timed repeat (`repeated`), so that its samples
    span the round, and before and after the timings (`around`) up to PROBE_SAMPLES: a round of
    a few repeats would otherwise rest on a few samples, which one descheduling moves by a third
    (seen on this project's VM, 7 Dec 2026). A shared VM's speed moves by a quarter from one minute
    to the next with nothing to see (docs/notes/latency.md, "The speed probe"); a baseline is
    compared as this speed scales it. einsum without `optimize` is numpy's own loop on one thread,
    where a BLAS product may take several."""

    def __init__(self) -> None:
        import numpy as np

        self._einsum = np.einsum
        self._matrix = np.linspace(-1.0, 1.0, PROBE_SIZE**2, dtype=np.float32).reshape(PROBE_SIZE, PROBE_SIZE)
        self.samples: list[float] = []
        self.sample()  # a warm-up: the matrix's first pass through the caches
        self.samples.clear()

    def sample(self) -> None:
        started = time.perf_counter()
        for _ in range(PROBE_PRODUCTS):
            self._einsum("ij,jk->ik", self._matrix, self._matrix, optimize=False)
        self.samples.append(time.perf_counter() - started)

    def around(self, measure: Callable[[], T]) -> T:
        """`measure()`, with half of PROBE_SAMPLES before it and the rest after, less the samples
        its repeats took."""
        for _ in range(PROBE_SAMPLES // 2):
            self.sample()
        result = measure()
        while len(self.samples) < PROBE_SAMPLES:
            self.sample()
        return result

    @property
    def seconds(self) -> float | None:
        """The samples' median, robust to a sample a descheduling hit; None before any."""
        return statistics.median(self.samples) if self.samples else None


def prompt_tokens(text_tokens: Sequence[int], length: int) -> list[int]:
    """The first `length` tokens of the evaluation text, repeated if it is shorter: real text, so
    that no runtime takes a shortcut on degenerate input."""
    if not text_tokens:
        raise ValueError("the evaluation text has no tokens")
    repeats = -(-length // len(text_tokens))
    return (list(text_tokens) * repeats)[:length]


def at_depth(text_tokens: Sequence[int], depth: int, length: int) -> tuple[list[int], list[int]]:
    """(the context already in the cache, the prompt after it): the evaluation text's first `depth`
    tokens, then its next `length`, so the prompt continues the text as an app's would."""
    tokens = prompt_tokens(text_tokens, depth + length)
    return tokens[:depth], tokens[depth:]


def depth_metric(metric: str, depth: int) -> str:
    """`prefill@128` at depth 2048 is `prefill@128@d2048`, `decode` is `decode@d2048` (as the
    llama-bench import names them); at depth 0 the name is today's, so older baselines match."""
    return f"{metric}@d{depth}" if depth else metric


def metric_depth(metric: str) -> int:
    """The depth a metric was measured at (0 for a name without `@d<depth>`)."""
    last = metric.rsplit("@", 1)[-1]
    return int(last[1:]) if "@" in metric and last[:1] == "d" and last[1:].isdigit() else 0


def repeated(run: Callable[[], T], repeats: int, cooldown: float = 0.0, probe: SpeedProbe | None = None) -> list[T]:
    """`repeats` runs, each after `cooldown` seconds of rest (mlx-lm's benchmark --delay): a device
    that throttles when hot is timed as cool each time, not slower run after run. The probe, if
    any, samples after each run."""
    results = []
    for _ in range(repeats):
        results.append(_rested(run, cooldown))
        if probe is not None:
            probe.sample()
    return results


def _rested(run: Callable[[], T], cooldown: float) -> T:
    """`run()` after `cooldown` seconds of rest."""
    if cooldown:
        time.sleep(cooldown)
    return run()


def _in_turn(runs: Sequence[Callable[[], T]], cooldown: float) -> list[T]:
    """Each of `runs` once, each after its rest."""
    return [_rested(run, cooldown) for run in runs]


def measure_prefill(
    model: LoadedModel,
    text_tokens: Sequence[int],
    lengths: Sequence[int],
    repeats: int,
    depths: Sequence[int] = (0,),
    cooldown: float = 0.0,
    probe: SpeedProbe | None = None,
) -> list[Timing]:
    """Prompt evaluation at each length after each depth of context: one warm-up each, then
    `repeats` timed runs with the lengths taken in turn. In turn, not one length's runs after the
    other's: a shared VM's speed moves over seconds, and a block of 128-token runs (6 s) timed in a
    fast spell made a baseline every later run failed against (docs/notes/latency.md, "The speed
    probe"); taken in turn, each length's median spans the whole round."""
    timings = []
    for depth in depths:
        prompts = [at_depth(text_tokens, depth, length) for length in lengths]
        timed = [partial(model.timed_prefill, prompt, context) for context, prompt in prompts]
        for run in timed:
            run()  # a warm-up; the context (the same for every length) stays in the cache
        runs = repeated(partial(_in_turn, timed, cooldown), repeats, probe=probe)
        timings += [
            Timing(depth_metric(f"prefill@{length}", depth), tuple(run[i] for run in runs), length)
            for i, length in enumerate(lengths)
        ]
    return timings


def measure_decode(
    model: LoadedModel,
    text_tokens: Sequence[int],
    prompt_length: int,
    new_tokens: int,
    repeats: int,
    depths: Sequence[int] = (0,),
    cooldown: float = 0.0,
    probe: SpeedProbe | None = None,
) -> list[Timing]:
    """Generation after a fixed prompt, itself after each depth of context: tokens per second of
    decoding, and time to first token."""
    timings = []
    for depth in depths:
        context, prompt = at_depth(text_tokens, depth, prompt_length)
        model.timed_decode(prompt, min(new_tokens, 8), context)
        runs = repeated(partial(model.timed_decode, prompt, new_tokens, context), repeats, cooldown, probe)
        timings += [
            Timing(depth_metric("decode", depth), tuple(decode for _, decode in runs), new_tokens),
            Timing(depth_metric(f"ttft@{prompt_length}", depth), tuple(first for first, _ in runs), 0),
        ]
    return timings


def load_average() -> float | None:
    """The machine's 1-minute load: a noisy neighbour shows here, next to the timing it spoiled."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


# -- memory -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryUse:
    profile: MemoryProfile
    contexts: tuple[int, ...]
    peak_rss_bytes: int | None  # of the whole process, while generating

    def kv_cache(self) -> list[dict[str, Any]]:
        """The KV cache at each context length, and its share of weights + cache, as the survey shows
        it: by the per-layer rule where the runtime gave one (a sliding-window layer stops growing),
        else every layer keeping every token."""
        rows = []
        layout = self.profile.kv_layout
        for context in self.contexts:
            kv = layout.at(context) if layout else self.profile.kv_bytes_per_token * context
            total = self.profile.weights_bytes + kv
            rows.append({"context": context, "kv_bytes": kv, "total_bytes": total, "share": round(kv / total, 4)})
        return rows


def measure_memory(
    model: LoadedModel, text_tokens: Sequence[int], contexts: Sequence[int], generate: Callable[[], object]
) -> MemoryUse:
    """Weights and KV cache from the runtime; the process's peak resident memory while `generate` runs."""
    profile = model.memory_profile(prompt_tokens(text_tokens, 64))
    reset = _reset_peak_rss()
    generate()
    return MemoryUse(profile, tuple(contexts), _peak_rss() if reset else None)


def _reset_peak_rss() -> bool:
    """Linux can restart the peak-RSS count (VmHWM), so the peak is this measurement's own."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int | None:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None
