"""Finding lm-eval tasks and running one on a model, down to per-sample binary outcomes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .matrix import TaskSpec

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

    from .model import SlmModel

TASK_LINE = re.compile(r"^task:\s*['\"]?([\w.\-]+)", re.MULTILINE)


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
    prompts_sha256: str
    tokens_sha256: str
    seconds: float
    samples: dict[str, Sample] = field(default_factory=dict, repr=False)

    @property
    def accuracy(self) -> float:
        return sum(self.outcomes.values()) / len(self.outcomes) if self.outcomes else 0.0


class TaskCatalog:
    """The project's own task directories first (cheap to index), lm-eval's registry on demand."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = tuple(p for p in paths if p.is_dir())
        self._managers: dict[bool, TaskManager] = {}

    @cached_property
    def shipped(self) -> frozenset[str]:
        names = set()
        for path in self.paths:
            for yaml_file in path.rglob("*.y*ml"):
                names.update(TASK_LINE.findall(yaml_file.read_text(encoding="utf-8", errors="ignore")))
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


def evaluate(model: SlmModel, spec: TaskSpec, limit: int | None, catalog: TaskCatalog) -> AccuracyResult:
    """Run one task through lm-eval on `model`, keeping every sample's outcome."""
    from lm_eval import simple_evaluate

    from .bridge import SlmLM

    _quiet_lm_eval()
    lm = SlmLM(model)
    manager = catalog.manager(with_lm_eval_tasks=spec.name not in catalog.shipped)
    started = time.perf_counter()
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
    seconds = time.perf_counter() - started
    records = (output or {}).get("samples", {}).get(spec.name)
    if not records:
        raise TaskError(f"task {spec.name!r} produced no samples (is it a group of tasks?)")
    metric = _binary_metric(spec.name, records)
    first_filter = records[0]["filter"]
    records = sorted((r for r in records if r["filter"] == first_filter), key=lambda r: r["doc_id"])
    width = max(5, len(str(records[-1]["doc_id"])))
    outcomes = {f"{r['doc_id']:0{width}d}": int(r[metric]) for r in records}
    prompts = hashlib.sha256(
        json.dumps([[r["doc_id"], r["arguments"]] for r in records], default=str, ensure_ascii=False).encode()
    ).hexdigest()
    samples = {
        f"{r['doc_id']:0{width}d}": Sample(
            prompt=str(r["arguments"][0][0]), target=str(r["target"]), response=_response(r)
        )
        for r in records
    }
    return AccuracyResult(spec, metric, outcomes, prompts, lm.tokens_digest.hexdigest(), seconds, samples)


def _binary_metric(task: str, records: list[dict[str, Any]]) -> str:
    """The first of the task's metrics whose per-sample values are all 0 or 1: paired tests need that."""
    for metric in records[0]["metrics"]:
        if all(r.get(metric) in (0, 1, True, False) for r in records):
            return metric
    raise TaskError(f"task {task!r} has no per-sample 0/1 metric (has {records[0]['metrics']}); accuracy items need one")


def _response(record: dict[str, Any]) -> str:
    """The model's answer: the generated text, or the index of the chosen choice."""
    filtered = record.get("filtered_resps") or []
    if len(filtered) > 1:  # multiple choice: one (log-likelihood, greedy) per choice
        scores = [f[0] if isinstance(f, (list, tuple)) else f for f in filtered]
        return f"choice {scores.index(max(scores))}"
    return str(filtered[0] if filtered else "")


def _quiet_lm_eval() -> None:
    """No network, no process pools under xdist, no log flood in a test report."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DISABLE_MULTIPROC", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("lm-eval", "lm_eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
