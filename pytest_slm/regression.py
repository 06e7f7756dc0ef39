"""Verdicts: an accuracy result against its stored baseline, two runtimes' distributions against
the agreement they must reach."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .baselines import SCHEMA_VERSION, BaselineKey
from .fidelity import Fidelity
from .matrix import Case
from .stats import compare_outcomes
from .tasks import AccuracyResult

SHOWN_FLIPS = 3


@dataclass(frozen=True)
class Settings:
    alpha: float
    min_drop_points: float
    allow_prompt_change: bool


@dataclass(frozen=True)
class Row:
    """One line of the summary table; plain data so xdist workers can send it."""

    item: str
    accuracy: float
    baseline: float | None
    delta_points: float | None
    regressed: int | None
    improved: int | None
    p_value: float | None
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def baseline_key(case: Case) -> BaselineKey:
    assert case.task is not None
    return BaselineKey(case.model, case.device, case.quant, case.task.name, case.task.shots)


def baseline_record(case: Case, result: AccuracyResult, provenance: dict[str, str]) -> dict[str, Any]:
    assert case.task is not None
    return {
        "schema_version": SCHEMA_VERSION,
        "model": case.model,
        "device": case.device,
        "quant": case.quant,
        "task": case.task.name,
        "shots": case.task.shots,
        "metric": result.metric,
        "accuracy": round(result.accuracy, 6),
        "n": len(result.outcomes),
        "outcomes": result.outcomes,
        "prompts_sha256": result.prompts_sha256,
        "tokens_sha256": result.tokens_sha256,
        "provenance": {
            **provenance,
            "pytest_slm": _version("pytest-slm"),
            "lm_eval": _version("lm-eval"),
            "date": dt.date.today().isoformat(),
        },
    }


def judge(case: Case, result: AccuracyResult, baseline: dict[str, Any], settings: Settings) -> tuple[Row, str | None]:
    """The summary row, and the failure message when the item regressed (None when it passes)."""
    base_row = dict(item=case.id, accuracy=result.accuracy, baseline=baseline["accuracy"])
    refresh = "If the change is intended, refresh the baseline with --update-baselines."
    problem = None
    if baseline["prompts_sha256"] != result.prompts_sha256 and not settings.allow_prompt_change:
        problem = (
            "the task's prompts changed since the baseline (task YAML, data, few-shot or lm-eval version): "
            "outcomes would be compared blindly. Pass --slm-allow-prompt-change to compare anyway."
        )
    elif baseline["tokens_sha256"] != result.tokens_sha256 and not settings.allow_prompt_change:
        problem = (
            "the model's tokens for the same prompts changed since the baseline (a new tokenizer or GGUF)."
            " Pass --slm-allow-prompt-change to compare anyway."
        )
    elif baseline["n"] != len(result.outcomes):
        problem = f"the baseline has {baseline['n']} samples, this run {len(result.outcomes)} (--slm-limit differs)."
    if problem:
        row = Row(**base_row, delta_points=None, regressed=None, improved=None, p_value=None, verdict="changed")
        return row, f"{case.id}: {problem} {refresh}"

    comparison = compare_outcomes(baseline["outcomes"], result.outcomes)
    failed = comparison.is_regression(settings.alpha, settings.min_drop_points)
    row = Row(
        **base_row,
        delta_points=comparison.delta_points,
        regressed=len(comparison.regressed),
        improved=len(comparison.improved),
        p_value=comparison.p_value,
        verdict="FAIL" if failed else "pass",
    )
    if not failed:
        return row, None
    lines = [
        f"{case.id}: {result.metric} regressed: {comparison.accuracy:.3f} now vs {comparison.baseline_accuracy:.3f}"
        f" baseline ({comparison.delta_points:+.1f} points, n={comparison.n})",
        f"flips: {len(comparison.regressed)} right->wrong, {len(comparison.improved)} wrong->right;"
        f" McNemar exact one-sided p = {comparison.p_value:.3g} < alpha {settings.alpha}",
    ]
    for doc_id in comparison.regressed[:SHOWN_FLIPS]:
        sample = result.samples.get(doc_id)
        if sample is not None:
            lines.append(
                f"  now wrong: doc {doc_id}: ...{_tail(sample.prompt)!r} target {sample.target!r} got {_tail(sample.response)!r}"
            )
    lines.append(refresh)
    return row, "\n".join(lines)


def judge_parity(item: str, fidelity: Fidelity, min_top1: float, max_mean_kld: float) -> tuple[dict[str, Any], str | None]:
    """A summary row, and the failure message when the runtimes disagree more than allowed."""
    problems = []
    if fidelity.top1_agreement < min_top1:
        problems.append(f"top-1 agreement {fidelity.top1_agreement:.4f} < {min_top1}")
    if fidelity.mean_kld > max_mean_kld:
        problems.append(f"mean KL divergence {fidelity.mean_kld:.3g} nats > {max_mean_kld}")
    row = {"item": item, **fidelity.__dict__, "verdict": "FAIL" if problems else "pass"}
    if not problems:
        return row, None
    return row, (
        f"{item}: the runtimes disagree on the same weights: {'; '.join(problems)}"
        f" over {fidelity.tokens} positions (p99 KLD {fidelity.p99_kld:.3g}, perplexity"
        f" {fidelity.reference_perplexity:.2f} vs {fidelity.perplexity:.2f})"
    )


def _tail(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text[-width:]


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"
