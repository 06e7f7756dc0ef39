"""Finding lm-eval tasks and running one on a model, down to per-sample binary outcomes."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..matrix import TaskSpec

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

    from ..models.handle import SlmModel

# The project's offline tasks, shipped inside the package; --slm-task-paths add to them (a task of
# the same name there overrides the built-in one, as lm-eval's later include paths do).
BUILTIN_TASKS = Path(__file__).resolve().parents[1] / "data" / "tasks"
TASK_LINE = re.compile(r"^task:\s*['\"]?([\w.\-]+)", re.MULTILINE)
# What a task is made of, each hashed apart, so "the task changed" can say what changed.
TASK_PARTS = ("prompts", "targets", "generation", "filters", "metric", "version")


class TaskError(Exception):
    """A task is unknown or unsuitable for a paired accuracy test; one line for the user."""


@dataclass(frozen=True)
class Sample:
    """What a failure message shows of one sample."""

    prompt: str
    target: str
    response: str


@dataclass
class AccuracyResult:
    spec: TaskSpec
    metric: str
    outcomes: dict[str, int]  # zero-padded doc id -> 1 right / 0 wrong
    task_fingerprint: dict[str, str]  # TASK_PARTS -> sha256
    tokens_sha256: str
    seconds: float
    samples: dict[str, Sample] = field(default_factory=dict, repr=False)

    @property
    def accuracy(self) -> float:
        return sum(self.outcomes.values()) / len(self.outcomes) if self.outcomes else 0.0


class TaskCatalog:
    """The project's own task directories first (cheap to index), lm-eval's registry on demand."""

    def __init__(self, paths: Iterable[Path], builtin: bool = True) -> None:
        given = [BUILTIN_TASKS] if builtin else []
        given += [p for p in paths if p.is_dir() and p.resolve() != BUILTIN_TASKS]
        self.paths = tuple(given)
        self._managers: dict[bool, TaskManager] = {}

    def overrides(self) -> list[str]:
        """A line per built-in task a project directory redefines differently (an identical copy
        of the built-in YAML is not an override)."""
        if not self.paths or self.paths[0] != BUILTIN_TASKS:
            return []
        builtin = {n: f for f in BUILTIN_TASKS.rglob("*.y*ml") for n in TASK_LINE.findall(_text(f))}
        notes = []
        for path in self.paths[1:]:
            for yaml_file in sorted(path.rglob("*.y*ml")):
                for name in TASK_LINE.findall(_text(yaml_file)):
                    if name in builtin and _text(yaml_file) != _text(builtin[name]):
                        notes.append(f"pytest-slm: task {name!r} of {yaml_file} overrides the built-in {name!r}")
        return notes

    @cached_property
    def shipped(self) -> frozenset[str]:
        """The project's task names; a YAML that cannot be read is a TaskError naming it."""
        names = set()
        for path in self.paths:
            for yaml_file in sorted(path.rglob("*.y*ml")):
                try:
                    text = yaml_file.read_text(encoding="utf-8")
                except FileNotFoundError:
                    raise TaskError(
                        f"task file {yaml_file} is a dangling symlink (in --slm-task-paths {path})"
                    ) from None
                except (OSError, UnicodeDecodeError) as exc:
                    raise TaskError(f"cannot read task file {yaml_file}: {exc}") from None
                names.update(TASK_LINE.findall(text))
        return frozenset(names)

    def manager(self, with_lm_eval_tasks: bool) -> TaskManager:
        """Indexing lm-eval's thousands of YAMLs takes seconds: only when a task needs it."""
        if with_lm_eval_tasks not in self._managers:
            _quiet_lm_eval()
            from lm_eval.tasks import TaskManager

            self._managers[with_lm_eval_tasks] = TaskManager(
                include_path=[str(p) for p in self.paths] or None,
                include_defaults=with_lm_eval_tasks or not self.paths,
            )
        return self._managers[with_lm_eval_tasks]

    def check(self, names: Iterable[str]) -> None:
        """Unknown names are a usage error listing the valid ones; lm-eval's index is built only
        when a name is not one of the project's own."""
        missing = sorted(set(names) - self.shipped)
        if not missing:
            return
        known = set(self.manager(with_lm_eval_tasks=True).all_tasks)
        unknown = [n for n in missing if n not in known]
        if unknown:
            raise TaskError(
                f"unknown task {', '.join(map(repr, unknown))}; shipped tasks: {', '.join(sorted(self.shipped))}"
                f" (and {len(known - self.shipped)} lm-eval tasks: python -m lm_eval ls tasks)"
            )


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # reported by `shipped`, which reads every file first
        return ""


def evaluate(model: SlmModel, spec: TaskSpec, limit: int | None, catalog: TaskCatalog) -> AccuracyResult:
    """Run one task through lm-eval on `model`, keeping every sample's outcome."""
    from lm_eval import simple_evaluate

    from .bridge import SlmLM

    _quiet_lm_eval()
    lm = SlmLM(model)
    manager = catalog.manager(with_lm_eval_tasks=spec.name not in catalog.shipped)
    started = time.perf_counter()
    try:
        with _no_run_description():
            output = simple_evaluate(
                model=lm,
                tasks=[spec.name],
                num_fewshot=spec.shots,
                limit=limit,
                task_manager=manager,
                log_samples=True,
                bootstrap_iters=0,
                verbosity="ERROR",
            )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:  # the task's data, as users bring it
        raise TaskError(f"lm-eval could not load task {spec.name!r}: {type(exc).__name__}: {exc}") from None
    seconds = time.perf_counter() - started
    records = (output or {}).get("samples", {}).get(spec.name)
    if not records:
        raise TaskError(f"task {spec.name!r} produced no samples (is it a group of tasks?)")
    metric = _binary_metric(spec.name, records)
    first_filter = records[0]["filter"]
    records = sorted((r for r in records if r["filter"] == first_filter), key=lambda r: r["doc_id"])
    width = max(5, len(str(records[-1]["doc_id"])))
    outcomes = {f"{r['doc_id']:0{width}d}": int(r[metric]) for r in records}
    fingerprint = task_fingerprint(records, (output.get("configs") or {}).get(spec.name, {}), metric)
    samples = {
        f"{r['doc_id']:0{width}d}": Sample(
            prompt=str(r["arguments"][0][0]), target=str(r["target"]), response=_response(r)
        )
        for r in records
    }
    return AccuracyResult(spec, metric, outcomes, fingerprint, lm.tokens_digest.hexdigest(), seconds, samples)


def task_fingerprint(records: list[dict[str, Any]], config: dict[str, Any], metric: str) -> dict[str, str]:
    """The task whole, part by part: the rendered requests (few-shot examples included), the
    targets, the generation arguments, the answer filters, the metric and the task's version.
    Where the data lives (paths differ between checkouts) is left out: its content is in the requests."""

    def digest(value: object) -> str:
        return hashlib.sha256(
            json.dumps(value, default=_stable, sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()

    def text_arguments(arguments: Any) -> list[Any]:
        return [[a for a in args if not isinstance(a, dict)] for args in _argument_tuples(arguments)]

    def generation_arguments(arguments: Any) -> list[Any]:
        return [[a for a in args if isinstance(a, dict)] for args in _argument_tuples(arguments)]

    return {
        "prompts": digest([[r["doc_id"], text_arguments(r["arguments"])] for r in records]),
        "targets": digest([[r["doc_id"], r["target"]] for r in records]),
        "generation": digest(
            [
                config.get("output_type"),
                config.get("generation_kwargs"),
                [generation_arguments(r["arguments"]) for r in records],
            ]
        ),
        "filters": digest([config.get("filter_list"), sorted({r["filter"] for r in records})]),
        "metric": digest([metric, config.get("metric_list")]),
        "version": digest((config.get("metadata") or {}).get("version")),
    }


def _stable(value: object) -> str:
    """A value JSON cannot write, the same in every process: a function by its source (a task's
    `!function` filter), anything else without the memory address its repr may carry."""
    if callable(value):
        try:
            return inspect.getsource(value)
        except (OSError, TypeError):
            return getattr(value, "__qualname__", type(value).__qualname__)
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(value))


def _argument_tuples(arguments: Any) -> list[tuple[Any, ...]]:
    """lm-eval logs a sample's requests as a list of argument tuples, or (newer) as
    {"gen_args_0": {"arg_0": ..., "arg_1": ...}}."""
    if isinstance(arguments, dict):
        return [tuple(args[k] for k in sorted(args)) for _, args in sorted(arguments.items())]
    return [tuple(args) if isinstance(args, (list, tuple)) else (args,) for args in arguments]


def _binary_metric(task: str, records: list[dict[str, Any]]) -> str:
    """The first of the task's metrics whose per-sample values are all 0 or 1: paired tests need that."""
    metrics: list[str] = records[0]["metrics"]
    for metric in metrics:
        if all(r.get(metric) in (0, 1, True, False) for r in records):
            return metric
    raise TaskError(
        f"task {task!r} has no per-sample 0/1 metric (has {records[0]['metrics']}); accuracy items need one"
    )


def _response(record: dict[str, Any]) -> str:
    """The model's answer: the generated text, or the index of the chosen choice."""
    filtered = record.get("filtered_resps") or []
    if len(filtered) > 1:  # multiple choice: one (log-likelihood, greedy) per choice
        scores = [f[0] if isinstance(f, (list, tuple)) else f for f in filtered]
        return f"choice {scores.index(max(scores))}"
    return str(filtered[0] if filtered else "")


@contextmanager
def _no_run_description() -> Iterator[None]:
    """simple_evaluate ends by describing the run for its own results file: `git describe` in a
    subprocess and an import of transformers, about a second per process. The baselines keep their
    own provenance, so those two are left out while an item evaluates (lm-eval's own use is untouched)."""
    from lm_eval import evaluator

    skipped = {"add_env_info": lambda storage: None, "get_git_commit_hash": lambda: None}
    saved = {name: getattr(evaluator, name) for name in skipped if hasattr(evaluator, name)}
    for name in saved:
        setattr(evaluator, name, skipped[name])
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(evaluator, name, original)


def _quiet_lm_eval() -> None:
    """No network, no process pools under xdist, no log flood in a test report."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DISABLE_MULTIPROC", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("lm-eval", "lm_eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
