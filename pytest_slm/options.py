"""Command-line and ini options, parsed and validated once into a typed `SlmConfig`."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .backends import all_devices, all_kv_types, all_quants
from .backends.base import CONTEXT_LENGTH, DEFAULT_KV_TYPE, default_cache_dir
from .matrix import TaskSpec

# From the registered backends' declarations, without importing any runtime.
DEVICES = all_devices()
QUANTS = all_quants()  # `native` (the file as shipped), then what each backend derives from it
KV_TYPES = all_kv_types()  # the default cache first, then the quantized ones a backend runs

# What a project may keep under its rootdir; without them the built-ins (package data) serve alone.
DEFAULT_REGISTRY = "suites/models.toml"
DEFAULT_TASK_PATHS = ("suites/tasks",)
DEFAULT_EVAL_TEXT = "suites/eval/text.txt"
BUILTIN_EVAL_TEXT = Path(__file__).resolve().parent / "data" / "eval" / "text.txt"
DEFAULT_DEPTH_TEXT = "suites/eval/depth.txt"
BUILTIN_DEPTH_TEXT = BUILTIN_EVAL_TEXT.with_name("depth.txt")

LATENCY_FAMILIES = ("prefill", "decode", "ttft")
DEFAULT_LATENCY_TOLERANCE = 0.10

# name: (help, ini type, default); every option is also an ini key `slm_<name>`.
OPTIONS: dict[str, tuple[str, str, str | None]] = {
    "models": ("comma-separated model names from the registry, or paths to .gguf files", "args", None),
    "devices": ("comma-separated backend-device pairs (default: every pair available here)", "args", None),
    "quants": ("comma-separated quantizations", "args", "native"),
    "kv-types": (
        "comma-separated KV cache types of keys and values: f16, q8_0, q4_0 (llama.cpp; flash attention on where quantized)",
        "args",
        DEFAULT_KV_TYPE,
    ),
    "tasks": ("comma-separated lm-eval tasks, each with an optional few-shot count: slm_arith:5", "args", None),
    "limit": ("samples per task (default: all)", "string", None),
    "threads": (
        "CPU threads per worker (default: half the cores / xdist workers, at least 1: what times steadily on a shared machine)",
        "string",
        None,
    ),
    "baselines": ("directory of stored baselines, under the rootdir", "string", "baselines"),
    "registry": (
        "models registry TOML, added to the built-in one (default: suites/models.toml under the rootdir, if there)",
        "string",
        None,
    ),
    "task-paths": (
        "directories of lm-eval task YAMLs, added to the built-in tasks (default: suites/tasks under the rootdir, if there)",
        "args",
        None,
    ),
    "cache": (
        "directory for derived model files (default: $PYTEST_SLM_CACHE, else ~/.cache/pytest-slm)",
        "string",
        None,
    ),
    "history": (
        "SQLite file every run's rows are appended to, under the rootdir, or 'off'",
        "string",
        ".pytest-slm/history.sqlite",
    ),
    "report": (
        "directory to write results.json, summary.md and report.html to (the summary also to $GITHUB_STEP_SUMMARY)",
        "string",
        None,
    ),
    "eval-text": (
        "text parity and fidelity items compare on, latency prompts are cut from (default: suites/eval/text.txt under the rootdir if there, else the built-in one)",
        "string",
        None,
    ),
    "depth-text": (
        "long text fidelity items compare on after each nonzero --slm-depths of it in the KV cache (default: suites/eval/depth.txt under the rootdir if there, else the built-in one)",
        "string",
        None,
    ),
    "eval-window": (
        "tokens per window of the evaluation text, each evaluated from an empty cache, and of the depth text",
        "string",
        "256",
    ),
    "parity-top1": (
        "smallest top-1 next-token agreement between two runtimes on the same weights",
        "string",
        "0.99",
    ),
    "parity-kld": (
        "largest mean KL divergence, nats, between two runtimes on the same weights",
        "string",
        "0.01",
    ),
    "formats-top1": (
        "smallest top-1 agreement between a model's GGUF on llama.cpp and its MLX checkpoint on MLX",
        "string",
        "0.5",
    ),
    "formats-kld": (
        "largest mean KL divergence, nats, between a model's GGUF on llama.cpp and its MLX checkpoint",
        "string",
        "1.0",
    ),
    "prefill-lengths": ("prompt lengths, tokens, test_prefill_speed measures", "args", "128,512"),
    "decode-prompt": (
        "prompt tokens before test_decode_speed generates; its time to first token",
        "string",
        "128",
    ),
    "decode-tokens": ("tokens test_decode_speed generates per run", "string", "128"),
    "depths": (
        "context depths, tokens already in the KV cache, prefill and decode are also timed at, as llama-bench -d, and fidelity items compare --slm-depth-text at",
        "args",
        "0",
    ),
    "repeats": ("timed runs per latency metric, after one warm-up", "string", "9"),
    "cooldown": (
        "seconds of rest before each timed prefill or decode run, as mlx-lm's benchmark --delay, for a device that throttles when hot; energy is then not read",
        "string",
        "0",
    ),
    "latency-tolerance": (
        "slowdown that fails a latency item if the noise is smaller: 0.1, or per metric: prefill=0.1,decode=0.15,ttft=0.2",
        "args",
        str(DEFAULT_LATENCY_TOLERANCE),
    ),
    "latency-k": (
        "standard errors of the two medians (combined) a slowdown must also exceed",
        "string",
        "3",
    ),
    "noise-ceiling": (
        "largest noise limit (k x the medians' combined uncertainty) a latency metric is judged with: a noisier one is 'too noisy' (not judged), and --update-baselines refuses a baseline that noisy",
        "string",
        "0.2",
    ),
    "busy": (
        "others' share of our CPUs' time (steal included) above which a latency round is not judged: the item waits, then ends 'busy'; 'off' disables",
        "string",
        "0.10",
    ),
    "busy-wait": (
        "seconds a latency item waits for a busy machine to quieten before it ends 'busy'",
        "string",
        "30",
    ),
    "kv-contexts": (
        "context lengths the memory items report the KV cache at",
        "args",
        "512,2048,8192",
    ),
    "memory-tolerance": (
        "growth of weight or KV cache bytes that fails a memory item",
        "string",
        "0.01",
    ),
    "fidelity-margin": (
        "relative change of mean KL divergence to the reference that fails a fidelity item",
        "string",
        "0.1",
    ),
    "fidelity-tail": (
        "KL divergence percentile a fidelity item also judges, and its relative margin: p99=0.1 (median, p90, p95, p99, p999 or max)",
        "string",
        "p99=0.1",
    ),
    "kld-ceiling": (
        "largest mean KL divergence, nats, per quant, whatever the baseline: q8_0=0.01,q4_k_m=0.1",
        "args",
        None,
    ),
    "alpha": ("significance level of the paired accuracy test", "string", "0.05"),
    "min-drop": ("smallest accuracy drop, in points, that fails an item", "string", "1.0"),
    "detect-drop": (
        "accuracy drop, in points, every accuracy item must detect with power 0.8 at --slm-alpha; one that cannot (too few samples) is not judged; 'off': only items that cannot fail at all",
        "string",
        "10",
    ),
    "relative-gate": (
        (
            "fraction of its reference's accuracy (the fidelity items' reference, e.g. f32) an accuracy item must keep on the same samples:"
            " fails when the 95%% paired bootstrap interval of the ratio lies below it, e.g. 0.99 (default: off)"
        ),
        "string",
        None,
    ),
}
FLAGS = {
    "update-baselines": "rewrite the baselines of the items that run, instead of comparing",
    "slm-strict": "fail, instead of skip, items that cannot judge (no baseline, busy, too noisy, ...); on by default where the CI variable is set",
    "slm-first-run": "a machine's first run: an item with no baseline is not judged, not failed, even when strict (CI)",
    "slm-allow-task-change": "compare outcomes even when the task (prompts, targets, generation, filters, metric, version) changed since the baseline",
    "slm-update-partial": "with --update-baselines, let a run of fewer samples (--slm-limit) replace a fuller baseline, and a latency or fidelity run drop the baseline's figures at depths it did not measure (--slm-depths)",
}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("slm", "small language model regression (pytest-slm)")
    for name, (help_text, ini_type, default) in OPTIONS.items():
        dest = "slm_" + name.replace("-", "_")
        if default is not None:  # the default is declared once, in the row, and shown from there
            help_text = f"{help_text} (default {default})"
        group.addoption(f"--slm-{name}", dest=dest, default=None, help=help_text)
        parser.addini(dest, help_text, type=ini_type, default=_ini_default(ini_type, default))
    for name, help_text in FLAGS.items():
        dest = name.replace("-", "_")
        group.addoption(f"--{name}", dest=dest, action="store_true", default=False, help=help_text)
        parser.addini(dest, help_text, type="bool", default=False)


def _ini_default(ini_type: str, default: str | None) -> object:
    if ini_type == "args":
        return default.split(",") if default else []
    return default or ""


@dataclass(frozen=True)
class SlmConfig:
    """Every option, parsed; model and task names are checked against their catalogs later."""

    rootdir: Path
    models: tuple[str, ...] | None
    devices: tuple[str, ...] | None
    quants: tuple[str, ...]
    kv_types: tuple[str, ...]
    tasks: tuple[TaskSpec, ...] | None
    limit: int | None
    threads: int
    baselines_dir: Path
    registry_path: Path | None  # the project's registry, added to the built-in one; None: built-ins only
    task_paths: tuple[Path, ...]
    report_dir: Path | None
    cache_dir: Path
    eval_text: Path
    depth_text: Path  # what fidelity at a nonzero depth reads: its first `depth` tokens, then windows
    eval_window: int
    parity_top1: float
    parity_kld: float
    formats_top1: float
    formats_kld: float
    prefill_lengths: tuple[int, ...]
    decode_prompt: int
    decode_tokens: int
    depths: tuple[int, ...]  # tokens of context in the cache before each latency metric; 0: an empty cache
    repeats: int
    cooldown: float  # seconds of rest before each timed prefill/decode run
    latency_tolerances: dict[str, float]
    latency_k: float
    kv_contexts: tuple[int, ...]
    memory_tolerance: float
    fidelity_margin: float
    fidelity_tail: tuple[str, float]  # (a fidelity.KLD_PERCENTILES name, relative margin)
    kld_ceilings: dict[str, float]
    alpha: float
    min_drop_points: float
    detect_drop_points: float | None  # None: --slm-detect-drop=off
    noise_ceiling: float
    update: bool
    strict: bool
    first_run: bool
    allow_task_change: bool
    update_partial: bool
    worker_count: int = field(default=1)
    relative_gate: float | None = field(default=None)  # None: accuracy is not judged against the reference
    history_path: Path | None = field(default=None)  # None: --slm-history=off
    busy: float | None = field(default=None)  # None: --slm-busy=off
    busy_wait: float = field(default=30.0)


def read_config(config: pytest.Config) -> SlmConfig:
    """Parse and validate; any bad value is a `pytest.UsageError` before anything loads."""
    rootdir = Path(config.rootpath)

    def value(name: str) -> list[str] | str | None:
        dest = "slm_" + name.replace("-", "_")
        cli = config.getoption(dest)
        if cli is not None:
            return cli
        ini = config.getini(dest)
        return ini if ini not in ("", []) else None

    def flag(dest: str) -> bool:
        return bool(config.getoption(dest) or config.getini(dest))

    def names(name: str) -> tuple[str, ...] | None:
        raw = value(name)
        if raw is None:
            return None
        items = raw.split(",") if isinstance(raw, str) else [p for part in raw for p in part.split(",")]
        cleaned = tuple(dict.fromkeys(i.strip() for i in items if i.strip()))
        if not cleaned:
            raise pytest.UsageError(f"--slm-{name} is empty")
        return cleaned

    def parse(name: str, raw: str, kind: type, low: float, high: float = math.inf) -> Any:
        try:
            parsed = kind(raw)
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise pytest.UsageError(f"--slm-{name} must be {expected}, got {raw!r}") from None
        if not math.isfinite(parsed):  # NaN would make every comparison with it false: a verdict by accident
            raise pytest.UsageError(f"--slm-{name} must be a finite number, got {raw!r}")
        if parsed < low:
            raise pytest.UsageError(f"--slm-{name} must be at least {low}, got {raw!r}")
        if parsed > high:
            raise pytest.UsageError(f"--slm-{name} must be at most {high}, got {raw!r}")
        return parsed

    def number(name: str, kind: type, low: float, default: object = None, high: float = math.inf) -> Any:
        raw = value(name)
        return default if raw is None else parse(name, str(raw), kind, low, high)

    def lengths(name: str) -> tuple[int, ...]:
        return tuple(sorted({parse(name, part, int, 1) for part in names(name) or ()}))

    def per_quant(name: str) -> dict[str, float]:
        parsed = {}
        for part in names(name) or ():
            quant, _, raw = part.partition("=")
            if quant not in QUANTS:
                raise pytest.UsageError(f"unknown quant {quant!r} in --slm-{name}; known quants: {', '.join(QUANTS)}")
            parsed[quant] = parse(name, raw, float, 0.0)
        return parsed

    def tail() -> tuple[str, float]:
        from .fidelity import KLD_PERCENTILES

        name, _, raw = str(value("fidelity-tail")).partition("=")
        if name not in KLD_PERCENTILES or not raw:
            raise pytest.UsageError(
                f"--slm-fidelity-tail must be <percentile>=<margin> with a percentile of {', '.join(KLD_PERCENTILES)}, got {value('fidelity-tail')!r}"
            )
        return name, parse("fidelity-tail", raw, float, 0.0)

    def tolerances() -> dict[str, float]:
        """`0.1` for every metric, or `prefill=0.1,decode=0.15`; unnamed families keep the default."""
        parsed = {"*": DEFAULT_LATENCY_TOLERANCE}
        for part in names("latency-tolerance") or ():
            family, _, raw = part.rpartition("=")
            if family and family not in LATENCY_FAMILIES:
                raise pytest.UsageError(
                    f"unknown latency metric {family!r} in --slm-latency-tolerance; known: {', '.join(LATENCY_FAMILIES)}"
                )
            parsed[family or "*"] = parse("latency-tolerance", raw, float, 0.0)
        return parsed

    def relative_gate() -> float | None:
        fraction = number("relative-gate", float, 0.0, high=1.0)
        if fraction == 0:  # a gate every run passes
            raise pytest.UsageError("--slm-relative-gate must be above 0, got 0")
        return fraction

    def project_file(name: str, default: str, must_exist: bool = False) -> Path | None:
        """The file the user named, else the default under the rootdir when it is there."""
        given = value(name)
        if given is None:
            return rootdir / default if (rootdir / default).is_file() else None
        path = rootdir / str(given)
        if must_exist and not path.is_file():
            raise pytest.UsageError(f"--slm-{name}: no file {path}")
        return path

    def project_dirs(defaults: tuple[str, ...]) -> tuple[Path, ...]:
        return tuple(rootdir / d for d in defaults if (rootdir / d).is_dir() or (rootdir / d).is_symlink())

    def task_dirs() -> tuple[Path, ...]:
        """Named ones must exist; a link to nowhere (named or the default) is an error, not nothing."""
        dirs = tuple(rootdir / p for p in names("task-paths") or ()) or project_dirs(DEFAULT_TASK_PATHS)
        for path in dirs:
            if not path.is_dir():
                what = "a link to nowhere" if path.is_symlink() else "no such directory"
                raise pytest.UsageError(f"--slm-task-paths: {path}: {what}")
        return dirs

    devices = names("devices")
    for device in devices or ():
        if device not in DEVICES:
            raise pytest.UsageError(f"unknown device {device!r}; known devices: {', '.join(DEVICES)}")
    quants = names("quants") or ("native",)
    for quant in quants:
        if quant not in QUANTS:
            raise pytest.UsageError(f"unknown quant {quant!r}; known quants: {', '.join(QUANTS)}")
    kv = names("kv-types") or (DEFAULT_KV_TYPE,)
    for kv_type in kv:
        if kv_type not in KV_TYPES:
            raise pytest.UsageError(f"unknown KV cache type {kv_type!r}; known KV cache types: {', '.join(KV_TYPES)}")
    try:
        task_names = names("tasks")
        tasks = tuple(dict.fromkeys(TaskSpec.parse(t) for t in task_names)) if task_names else None
    except ValueError as exc:
        raise pytest.UsageError(f"--slm-tasks: {exc}") from None
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    alpha = number("alpha", float, 0.0)
    if not 0 < alpha < 1:
        raise pytest.UsageError(f"--slm-alpha must be between 0 and 1, got {alpha}")
    parsed = SlmConfig(
        rootdir=rootdir,
        models=names("models"),
        devices=devices,
        quants=quants,
        kv_types=kv,
        tasks=tasks,
        limit=number("limit", int, 1),
        threads=number("threads", int, 1, default_threads(workers)),
        baselines_dir=rootdir / str(value("baselines")),
        registry_path=project_file("registry", DEFAULT_REGISTRY, must_exist=True),
        task_paths=task_dirs(),
        report_dir=rootdir / str(report) if (report := value("report")) else None,
        cache_dir=rootdir / str(cache) if (cache := value("cache")) else default_cache_dir(),
        eval_text=project_file("eval-text", DEFAULT_EVAL_TEXT) or BUILTIN_EVAL_TEXT,
        depth_text=project_file("depth-text", DEFAULT_DEPTH_TEXT) or BUILTIN_DEPTH_TEXT,
        eval_window=number("eval-window", int, 2),
        parity_top1=number("parity-top1", float, 0.0, high=1.0),
        parity_kld=number("parity-kld", float, 0.0),
        formats_top1=number("formats-top1", float, 0.0, high=1.0),
        formats_kld=number("formats-kld", float, 0.0),
        prefill_lengths=lengths("prefill-lengths"),
        decode_prompt=number("decode-prompt", int, 1),
        decode_tokens=number("decode-tokens", int, 1),
        depths=tuple(sorted({parse("depths", part, int, 0) for part in names("depths") or ("0",)})),
        repeats=number("repeats", int, 1),
        cooldown=number("cooldown", float, 0.0),
        latency_tolerances=tolerances(),
        latency_k=number("latency-k", float, 0.0),
        kv_contexts=lengths("kv-contexts"),
        memory_tolerance=number("memory-tolerance", float, 0.0),
        fidelity_margin=number("fidelity-margin", float, 0.0),
        fidelity_tail=tail(),
        kld_ceilings=per_quant("kld-ceiling"),
        alpha=alpha,
        min_drop_points=number("min-drop", float, 0.0),
        detect_drop_points=None
        if str(value("detect-drop")).lower() == "off"
        else number("detect-drop", float, 0.0, high=100.0),
        noise_ceiling=number("noise-ceiling", float, 0.0),
        update=flag("update_baselines"),
        strict=flag("slm_strict") or bool(os.environ.get("CI")),
        first_run=flag("slm_first_run"),
        allow_task_change=flag("slm_allow_task_change"),
        update_partial=flag("slm_update_partial"),
        worker_count=workers,
        relative_gate=relative_gate(),
        history_path=None if str(history := value("history") or "off").lower() == "off" else rootdir / str(history),
        busy=None if str(value("busy")).lower() == "off" else number("busy", float, 0.0, high=1.0),
        busy_wait=number("busy-wait", float, 0.0),
    )
    _check_context(parsed)
    _say_overrides(config, parsed)
    return parsed


def default_threads(workers: int) -> int:
    """Half the cores, shared among xdist workers, at least one: two threads on two shared cores
    time unsteadily (docs/notes/latency.md), one times steadily."""
    return max(1, (os.cpu_count() or 1) // 2 // max(1, workers))


def _check_context(parsed: SlmConfig) -> None:
    """The deepest latency metric must fit the context every model is loaded with (without a depth,
    a prompt past it is the item's one-line failure, as llama.cpp reports it)."""
    deepest = max(parsed.depths) + max((*parsed.prefill_lengths, parsed.decode_prompt + parsed.decode_tokens))
    if max(parsed.depths) and deepest > CONTEXT_LENGTH:
        raise pytest.UsageError(
            f"--slm-depths: depth {max(parsed.depths)} + the longest prompt or prompt + decoded tokens needs"
            f" {deepest} tokens of context, models are loaded with {CONTEXT_LENGTH}"
        )


def _say_overrides(config: pytest.Config, parsed: SlmConfig) -> None:
    """A project's registry or task that replaces a built-in one by name is said in the run's
    warnings summary (an unreadable file is left to the start-up check, which names it)."""
    from .registry import RegistryError, load_registries
    from .tasks import TaskCatalog, TaskError

    try:
        notes = load_registries(parsed.registry_path)[1] + TaskCatalog(parsed.task_paths).overrides()
    except (RegistryError, TaskError):
        return
    for note in notes:
        config.issue_config_time_warning(pytest.PytestConfigWarning(note), stacklevel=2)
