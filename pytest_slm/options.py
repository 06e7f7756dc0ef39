"""Command-line and ini options, parsed and validated once into a typed `SlmConfig`."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

Raw = str | list[str] | bool | None  # what the command line, the ini file or the declared default gave


class OptionError(ValueError):
    """A bad value, in one line; `read_config` makes it a `pytest.UsageError`."""


@dataclass(frozen=True)
class Context:
    """What a parser may need beyond the raw value."""

    rootdir: Path
    workers: int  # xdist workers this process shares the cores with (1 without xdist)


Parser = Callable[[str, Raw, Context], Any]  # (option name, raw value, context) -> the typed value


@dataclass(frozen=True)
class Option:
    """One option: the command line `--<name>`, its ini twin, its default, how it is parsed, the
    `SlmConfig` field it fills and the item kinds' settings it feeds (kind -> keyword)."""

    name: str
    field: str
    parse: Parser
    help: str
    default: str | None = None
    ini_type: str = "string"
    feeds: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def dest(self) -> str:
        """The argparse dest and the ini key."""
        return self.name.replace("-", "_")

    @property
    def is_flag(self) -> bool:
        return self.ini_type == "bool"

    @property
    def help_shown(self) -> str:
        """The help `--help` prints: the default from the row, never retyped in the text."""
        return f"{self.help} (default {self.default})" if self.default is not None else self.help

    def ini_default(self) -> object:
        if self.is_flag:
            return False
        if self.ini_type == "args":
            return self.default.split(",") if self.default else []
        return self.default or ""


# Parsers: each takes the option's name (for its message), the raw value and the context.


def _number(kind: type, low: float, high: float = math.inf) -> Callable[[str, str], Any]:
    def parse(name: str, raw: str) -> Any:
        try:
            parsed = kind(raw)
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise OptionError(f"--{name} must be {expected}, got {raw!r}") from None
        if not math.isfinite(parsed):  # NaN would make every comparison with it false: a verdict by accident
            raise OptionError(f"--{name} must be a finite number, got {raw!r}")
        if parsed < low:
            raise OptionError(f"--{name} must be at least {low}, got {raw!r}")
        if parsed > high:
            raise OptionError(f"--{name} must be at most {high}, got {raw!r}")
        return parsed

    return parse


def number(kind: type, low: float, high: float = math.inf) -> Parser:
    """A number in [low, high]; unset: None."""
    parse = _number(kind, low, high)
    return lambda name, raw, context: None if raw is None else parse(name, str(raw))


def off_or(parser: Parser) -> Parser:
    """`off` (any case) is None; anything else goes to `parser`."""
    return lambda name, raw, context: None if str(raw).lower() == "off" else parser(name, raw, context)


def names(name: str, raw: Raw, context: Context) -> tuple[str, ...] | None:
    """A comma-separated list (or the ini's lines of them), deduplicated in order; unset: None."""
    if raw is None:
        return None
    items = [p for part in raw for p in part.split(",")] if isinstance(raw, list) else str(raw).split(",")
    cleaned = tuple(dict.fromkeys(i.strip() for i in items if i.strip()))
    if not cleaned:
        raise OptionError(f"--{name} is empty")
    return cleaned


def known(catalog: tuple[str, ...], what: str, unset: tuple[str, ...] | None = None) -> Parser:
    """Names, each one of `catalog`; unset: `unset`."""

    def parse(name: str, raw: Raw, context: Context) -> tuple[str, ...] | None:
        given = names(name, raw, context) or unset
        for one in given or ():
            if one not in catalog:
                raise OptionError(f"unknown {what} {one!r}; known {what}s: {', '.join(catalog)}")
        return given

    return parse


def lengths(low: int, unset: tuple[str, ...] = ()) -> Parser:
    """Whole numbers of at least `low`, sorted, each once; unset: `unset`."""
    parse = _number(int, low)
    return lambda name, raw, context: tuple(sorted({parse(name, part) for part in names(name, raw, context) or unset}))


def tasks(name: str, raw: Raw, context: Context) -> tuple[TaskSpec, ...] | None:
    given = names(name, raw, context)
    try:
        return tuple(dict.fromkeys(TaskSpec.parse(t) for t in given)) if given else None
    except ValueError as exc:
        raise OptionError(f"--{name}: {exc}") from None


def per_quant(name: str, raw: Raw, context: Context) -> dict[str, float]:
    parsed = {}
    for part in names(name, raw, context) or ():
        quant, _, value = part.partition("=")
        if quant not in QUANTS:
            raise OptionError(f"unknown quant {quant!r} in --{name}; known quants: {', '.join(QUANTS)}")
        parsed[quant] = _number(float, 0.0)(name, value)
    return parsed


def tail(name: str, raw: Raw, context: Context) -> tuple[str, float]:
    from .measure.divergence import KLD_PERCENTILES

    percentile, _, margin = str(raw).partition("=")
    if percentile not in KLD_PERCENTILES or not margin:
        raise OptionError(
            f"--{name} must be <percentile>=<margin> with a percentile of {', '.join(KLD_PERCENTILES)}, got {raw!r}"
        )
    return percentile, _number(float, 0.0)(name, margin)


def tolerances(name: str, raw: Raw, context: Context) -> dict[str, float]:
    """`0.1` for every metric, or `prefill=0.1,decode=0.15`; unnamed families keep the default."""
    parsed = {"*": DEFAULT_LATENCY_TOLERANCE}
    for part in names(name, raw, context) or ():
        family, _, value = part.rpartition("=")
        if family and family not in LATENCY_FAMILIES:
            raise OptionError(f"unknown latency metric {family!r} in --{name}; known: {', '.join(LATENCY_FAMILIES)}")
        parsed[family or "*"] = _number(float, 0.0)(name, value)
    return parsed


def alpha(name: str, raw: Raw, context: Context) -> float:
    level = number(float, 0.0)(name, raw, context)
    if not 0 < level < 1:
        raise OptionError(f"--{name} must be between 0 and 1, got {level}")
    return float(level)


def gate(name: str, raw: Raw, context: Context) -> float | None:
    fraction = number(float, 0.0, high=1.0)(name, raw, context)
    if fraction == 0:  # a gate every run passes
        raise OptionError(f"--{name} must be above 0, got 0")
    return fraction  # type: ignore[no-any-return]


def threads(name: str, raw: Raw, context: Context) -> int:
    return number(int, 1)(name, raw, context) or default_threads(context.workers)


def under_root(default: Callable[[], Path | None] = lambda: None) -> Parser:
    """A path under the rootdir; unset: `default()`."""
    return lambda name, raw, context: context.rootdir / str(raw) if raw is not None else default()


def project_file(default: str, builtin: Path | None = None, must_exist: bool = False) -> Parser:
    """The file the user named, else the default under the rootdir when it is there, else `builtin`."""

    def parse(name: str, raw: Raw, context: Context) -> Path | None:
        if raw is None:
            path = context.rootdir / default
            return path if path.is_file() else builtin
        path = context.rootdir / str(raw)
        if must_exist and not path.is_file():
            raise OptionError(f"--{name}: no file {path}")
        return path

    return parse


def task_dirs(name: str, raw: Raw, context: Context) -> tuple[Path, ...]:
    """Named ones must exist; a link to nowhere (named or the default) is an error, not nothing."""
    root = context.rootdir
    dirs = tuple(root / p for p in names(name, raw, context) or ()) or tuple(
        root / d for d in DEFAULT_TASK_PATHS if (root / d).is_dir() or (root / d).is_symlink()
    )
    for path in dirs:
        if not path.is_dir():
            what = "a link to nowhere" if path.is_symlink() else "no such directory"
            raise OptionError(f"--{name}: {path}: {what}")
    return dirs


def flag(name: str, raw: Raw, context: Context) -> bool:
    return bool(raw)


def flag_or_ci(name: str, raw: Raw, context: Context) -> bool:
    return bool(raw) or bool(os.environ.get("CI"))


# Every option, in the order `--help` lists them and `read_config` parses them; each is also an ini key.
OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option(
            "slm-models",
            "models",
            names,
            "comma-separated model names from the registry, or paths to .gguf files",
            ini_type="args",
        ),
        Option(
            "slm-devices",
            "devices",
            known(DEVICES, "device"),
            "comma-separated backend-device pairs (default: every pair available here)",
            ini_type="args",
        ),
        Option(
            "slm-quants",
            "quants",
            known(QUANTS, "quant", ("native",)),
            "comma-separated quantizations",
            "native",
            "args",
        ),
        Option(
            "slm-kv-types",
            "kv_types",
            known(KV_TYPES, "KV cache type", (DEFAULT_KV_TYPE,)),
            "comma-separated KV cache types of keys and values: f16, q8_0, q4_0 (llama.cpp; flash attention on where quantized)",
            DEFAULT_KV_TYPE,
            "args",
        ),
        Option(
            "slm-tasks",
            "tasks",
            tasks,
            "comma-separated lm-eval tasks, each with an optional few-shot count: slm_arith:5",
            ini_type="args",
        ),
        Option("slm-limit", "limit", number(int, 1), "samples per task (default: all)", feeds={"history": "limit"}),
        Option(
            "slm-threads",
            "threads",
            threads,
            "CPU threads per worker (default: half the cores / xdist workers, at least 1: what times steadily on a shared machine)",
            feeds={"history": "threads"},
        ),
        Option(
            "slm-baselines",
            "baselines_dir",
            under_root(),
            "directory of stored baselines, under the rootdir",
            "baselines",
        ),
        Option(
            "slm-registry",
            "registry_path",
            project_file(DEFAULT_REGISTRY, must_exist=True),
            "models registry TOML, added to the built-in one (default: suites/models.toml under the rootdir, if there)",
        ),
        Option(
            "slm-task-paths",
            "task_paths",
            task_dirs,
            "directories of lm-eval task YAMLs, added to the built-in tasks (default: suites/tasks under the rootdir, if there)",
            ini_type="args",
        ),
        Option(
            "slm-cache",
            "cache_dir",
            under_root(default_cache_dir),
            "directory for derived model files (default: $PYTEST_SLM_CACHE, else ~/.cache/pytest-slm)",
        ),
        Option(
            "slm-history",
            "history_path",
            off_or(under_root()),
            "SQLite file every run's rows are appended to, under the rootdir, or 'off'",
            ".pytest-slm/history.sqlite",
        ),
        Option(
            "slm-report",
            "report_dir",
            under_root(),
            "directory to write results.json, summary.md and report.html to (the summary also to $GITHUB_STEP_SUMMARY)",
        ),
        Option(
            "slm-eval-text",
            "eval_text",
            project_file(DEFAULT_EVAL_TEXT, BUILTIN_EVAL_TEXT),
            "text parity and fidelity items compare on, latency prompts are cut from (default: suites/eval/text.txt under the rootdir if there, else the built-in one)",
        ),
        Option(
            "slm-depth-text",
            "depth_text",
            project_file(DEFAULT_DEPTH_TEXT, BUILTIN_DEPTH_TEXT),
            "long text fidelity items compare on after each nonzero --slm-depths of it in the KV cache (default: suites/eval/depth.txt under the rootdir if there, else the built-in one)",
        ),
        Option(
            "slm-eval-window",
            "eval_window",
            number(int, 2),
            "tokens per window of the evaluation text, each evaluated from an empty cache, and of the depth text",
            "256",
        ),
        Option(
            "slm-parity-top1",
            "parity_top1",
            number(float, 0.0, high=1.0),
            "smallest top-1 next-token agreement between two runtimes on the same weights",
            "0.99",
        ),
        Option(
            "slm-parity-kld",
            "parity_kld",
            number(float, 0.0),
            "largest mean KL divergence, nats, between two runtimes on the same weights",
            "0.01",
        ),
        Option(
            "slm-formats-top1",
            "formats_top1",
            number(float, 0.0, high=1.0),
            "smallest top-1 agreement between a model's GGUF on llama.cpp and its MLX checkpoint on MLX",
            "0.5",
        ),
        Option(
            "slm-formats-kld",
            "formats_kld",
            number(float, 0.0),
            "largest mean KL divergence, nats, between a model's GGUF on llama.cpp and its MLX checkpoint",
            "1.0",
        ),
        Option(
            "slm-prefill-lengths",
            "prefill_lengths",
            lengths(1),
            "prompt lengths, tokens, test_prefill_speed measures",
            "128,512",
            "args",
        ),
        Option(
            "slm-decode-prompt",
            "decode_prompt",
            number(int, 1),
            "prompt tokens before test_decode_speed generates; its time to first token",
            "128",
        ),
        Option(
            "slm-decode-tokens", "decode_tokens", number(int, 1), "tokens test_decode_speed generates per run", "128"
        ),
        Option(
            "slm-depths",
            "depths",
            lengths(0, ("0",)),
            "context depths, tokens already in the KV cache, prefill and decode are also timed at, as llama-bench -d, and fidelity items compare --slm-depth-text at",
            "0",
            "args",
        ),
        Option(
            "slm-repeats",
            "repeats",
            number(int, 1),
            "timed runs per latency metric, after one warm-up",
            "9",
            feeds={"history": "repeats"},
        ),
        Option(
            "slm-cooldown",
            "cooldown",
            number(float, 0.0),
            "seconds of rest before each timed prefill or decode run, as mlx-lm's benchmark --delay, for a device that throttles when hot; energy is then not read",
            "0",
        ),
        Option(
            "slm-latency-tolerance",
            "latency_tolerances",
            tolerances,
            "slowdown that fails a latency item if the noise is smaller: 0.1, or per metric: prefill=0.1,decode=0.15,ttft=0.2",
            str(DEFAULT_LATENCY_TOLERANCE),
            "args",
            feeds={"latency": "tolerances", "history": "latency_tolerances"},
        ),
        Option(
            "slm-latency-k",
            "latency_k",
            number(float, 0.0),
            "standard errors of the two medians (combined) a slowdown must also exceed",
            "3",
            feeds={"latency": "k", "history": "latency_k"},
        ),
        Option(
            "slm-noise-ceiling",
            "noise_ceiling",
            number(float, 0.0),
            "largest noise limit (k x the combined uncertainty of the medians and the speed probe's scaling) a latency metric is judged with: a noisier one is 'too noisy' (not judged), and --update-baselines refuses a baseline that noisy",
            "0.2",
            feeds={"latency": "ceiling"},
        ),
        Option(
            "slm-probe-limit",
            "probe_limit",
            number(float, 0.0),
            "how far the speed probe may find this machine's own speed moved since the baseline, either way, for the baseline's timings to be scaled by it: further, they are not judged ('unlike conditions')",
            "0.25",
            feeds={"latency": "probe_limit"},
        ),
        Option(
            "slm-confirm-pause",
            "confirm_pause",
            number(float, 0.0),
            "seconds between a latency round that found a slowdown and the round that confirms it, so that a slow minute on a shared machine is not timed twice",
            "60",
            feeds={"latency": "confirm_pause"},
        ),
        Option(
            "slm-busy",
            "busy",
            off_or(number(float, 0.0, high=1.0)),
            "others' share of our CPUs' time (steal included) above which a latency round is not judged: the item waits, then ends 'busy'; 'off' disables",
            "0.10",
            feeds={"latency": "busy"},
        ),
        Option(
            "slm-busy-wait",
            "busy_wait",
            number(float, 0.0),
            "seconds a latency item waits for a busy machine to quieten before it ends 'busy'",
            "30",
        ),
        Option(
            "slm-kv-contexts",
            "kv_contexts",
            lengths(1),
            "context lengths the memory items report the KV cache at",
            "512,2048,8192",
            "args",
        ),
        Option(
            "slm-memory-tolerance",
            "memory_tolerance",
            number(float, 0.0),
            "growth of weight or KV cache bytes that fails a memory item",
            "0.01",
            feeds={"history": "memory_tolerance"},
        ),
        Option(
            "slm-fidelity-margin",
            "fidelity_margin",
            number(float, 0.0),
            "relative change of mean KL divergence to the reference that fails a fidelity item",
            "0.1",
        ),
        Option(
            "slm-fidelity-tail",
            "fidelity_tail",
            tail,
            "KL divergence percentile a fidelity item also judges, and its relative margin: p99=0.1 (median, p90, p95, p99, p999 or max)",
            "p99=0.1",
        ),
        Option(
            "slm-kld-ceiling",
            "kld_ceilings",
            per_quant,
            "largest mean KL divergence, nats, per quant, whatever the baseline: q8_0=0.01,q4_k_m=0.1",
            ini_type="args",
        ),
        Option(
            "slm-alpha",
            "alpha",
            alpha,
            "significance level of the paired accuracy test",
            "0.05",
            feeds={"accuracy": "alpha", "history": "alpha"},
        ),
        Option(
            "slm-min-drop",
            "min_drop_points",
            number(float, 0.0),
            "smallest accuracy drop, in points, that fails an item",
            "1.0",
            feeds={"accuracy": "min_drop_points", "history": "min_drop_points"},
        ),
        Option(
            "slm-detect-drop",
            "detect_drop_points",
            off_or(number(float, 0.0, high=100.0)),
            "accuracy drop, in points, every accuracy item must detect with power 0.8 at --slm-alpha; one that cannot (too few samples) is not judged; 'off': only items that cannot fail at all",
            "10",
            feeds={"accuracy": "detect_drop_points"},
        ),
        Option(
            "slm-relative-gate",
            "relative_gate",
            gate,
            "fraction of its reference's accuracy (the fidelity items' reference, e.g. f32) an accuracy item must keep on the same samples:"
            " fails when the 95%% paired bootstrap interval of the ratio lies below it, e.g. 0.99 (default: off)",
            feeds={"accuracy": "relative_gate"},
        ),
        Option(
            "update-baselines",
            "update",
            flag,
            "rewrite the baselines of the items that run, instead of comparing",
            ini_type="bool",
        ),
        Option(
            "slm-strict",
            "strict",
            flag_or_ci,
            "fail, instead of skip, items that cannot judge (no baseline, busy, too noisy, ...); on by default where the CI variable is set",
            ini_type="bool",
        ),
        Option(
            "slm-first-run",
            "first_run",
            flag,
            "a machine's first run: an item with no baseline is not judged, not failed, even when strict (CI)",
            ini_type="bool",
        ),
        Option(
            "slm-allow-task-change",
            "allow_task_change",
            flag,
            "compare outcomes even when the task (prompts, targets, generation, filters, metric, version) changed since the baseline",
            ini_type="bool",
            feeds={"accuracy": "allow_task_change"},
        ),
        Option(
            "slm-update-partial",
            "update_partial",
            flag,
            "with --update-baselines, let a run of fewer samples (--slm-limit) replace a fuller baseline, and a latency or fidelity run drop the baseline's figures at depths it did not measure (--slm-depths)",
            ini_type="bool",
        ),
    )
}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("slm", "small language model regression (pytest-slm)")
    for option in OPTIONS.values():
        if option.is_flag:
            group.addoption(f"--{option.name}", dest=option.dest, action="store_true", default=False, help=option.help)
        else:
            group.addoption(f"--{option.name}", dest=option.dest, default=None, help=option.help_shown)
        parser.addini(option.dest, option.help_shown, type=option.ini_type, default=option.ini_default())  # type: ignore[arg-type]


@dataclass(frozen=True)
class SlmConfig:
    """Every option, parsed (one field per row of `OPTIONS`, checked by tests/test_options.py);
    model and task names are checked against their catalogs later."""

    rootdir: Path
    worker_count: int  # xdist workers (1 without xdist)
    process: str  # this xdist worker's id ("gw0"), or "main"
    item_threads: int  # the threads the items run with; on the controller, as each xdist worker computes them
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
    cache_dir: Path
    history_path: Path | None  # None: --slm-history=off
    report_dir: Path | None
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
    noise_ceiling: float
    probe_limit: float
    confirm_pause: float  # seconds before a confirmation round
    busy: float | None  # None: --slm-busy=off
    busy_wait: float
    kv_contexts: tuple[int, ...]
    memory_tolerance: float
    fidelity_margin: float
    fidelity_tail: tuple[str, float]  # (a fidelity.KLD_PERCENTILES name, relative margin)
    kld_ceilings: dict[str, float]
    alpha: float
    min_drop_points: float
    detect_drop_points: float | None  # None: --slm-detect-drop=off
    relative_gate: float | None  # None: accuracy is not judged against the reference
    update: bool
    strict: bool
    first_run: bool
    allow_task_change: bool
    update_partial: bool

    def settings(self, kind: str) -> dict[str, Any]:
        """The keyword arguments of a kind's settings (`"accuracy"`, `"latency"`, `"history"`),
        from the options whose rows say they feed it."""
        return {
            keyword: getattr(self, option.field)
            for option in OPTIONS.values()
            for feeds, keyword in option.feeds.items()
            if feeds == kind
        }


def read_config(config: pytest.Config) -> SlmConfig:
    """Parse and validate every row, command line over ini over default; any bad value is a
    `pytest.UsageError` before anything loads."""
    worker = getattr(config, "workerinput", {})  # xdist's, on a worker: not the environment, which a
    # pytest run started from a worker (pytester) inherits
    context = Context(Path(config.rootpath), int(worker.get("workercount", 1)))
    given = {option.name: _given(config, option) for option in OPTIONS.values()}
    try:
        fields = {option.field: option.parse(option.name, given[option.name], context) for option in OPTIONS.values()}
    except OptionError as exc:
        raise pytest.UsageError(str(exc)) from None
    parsed = SlmConfig(
        rootdir=context.rootdir,
        worker_count=context.workers,
        process=str(worker.get("workerid", "main")),
        item_threads=fields["threads"] if given["slm-threads"] is not None else default_threads(_xdist_workers(config)),
        **fields,
    )
    _check_context(parsed)
    _say_overrides(config, parsed)
    return parsed


def _given(config: pytest.Config, option: Option) -> Raw:
    """The command line's value, else the ini file's (its default when unset), else None."""
    cli = config.getoption(option.dest)
    if option.is_flag:
        return bool(cli or config.getini(option.dest))
    if cli is not None:
        return cli  # type: ignore[no-any-return]
    ini = config.getini(option.dest)
    return ini if ini not in ("", []) else None


def _xdist_workers(config: pytest.Config) -> int:
    """The workers `-n` starts, as the controller sees them (a worker reads its count from xdist)."""
    workers = getattr(config.option, "numprocesses", None)
    return workers if isinstance(workers, int) and workers > 0 else 1


def default_threads(workers: int) -> int:
    """Half the cores, shared among xdist workers, at least one: two threads on two shared cores
    time unsteadily (docs/notes/latency.md), one times steadily."""
    return max(1, (os.cpu_count() or 1) // 2 // max(1, workers))


def _check_context(parsed: SlmConfig) -> None:
    """The deepest latency metric must fit the context every model is loaded with: known at start-up,
    so said before any model loads rather than as each item's llama_decode failure."""
    depth = max(parsed.depths)
    deepest = depth + max((*parsed.prefill_lengths, parsed.decode_prompt + parsed.decode_tokens))
    if deepest <= CONTEXT_LENGTH:
        return
    options = (
        f"--slm-depths: depth {depth} +"
        if depth
        else "--slm-prefill-lengths, --slm-decode-prompt, --slm-decode-tokens:"
    )
    raise pytest.UsageError(
        f"{options} the longest prompt or prompt + decoded tokens needs {deepest} tokens of context,"
        f" models are loaded with {CONTEXT_LENGTH}"
    )


def _say_overrides(config: pytest.Config, parsed: SlmConfig) -> None:
    """A project's registry or task that replaces a built-in one by name is said in the run's
    warnings summary (an unreadable file is left to the start-up check, which names it)."""
    from .models.errors import RegistryError
    from .models.registry import load_registries
    from .tasks.catalog import TaskCatalog, TaskError

    try:
        notes = load_registries(parsed.registry_path)[1] + TaskCatalog(parsed.task_paths).overrides()
    except (RegistryError, TaskError):
        return
    for note in notes:
        config.issue_config_time_warning(pytest.PytestConfigWarning(note), stacklevel=2)
