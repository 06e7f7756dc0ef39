"""Verdicts: an accuracy result against its stored baseline, two runtimes' distributions against
the agreement they must reach, timings and memory against this machine's baseline."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Sequence

from .store.baselines import SCHEMA_VERSION, BaselineKey
from .fidelity import Fidelity
from .matrix import Case
from .runtime import Fingerprint, MemoryUse, Timing
from .stats import PairedComparison, Slowdown, compare_outcomes, compare_timings, mcnemar_two_sided, spread
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
    model: str
    device: str
    quant: str
    task: str
    accuracy: float
    baseline: float | None
    verdict: str
    delta_points: float | None = None
    regressed: int | None = None
    improved: int | None = None
    p_value: float | None = None

    @classmethod
    def of(cls, case: Case, accuracy: float, baseline: float | None, verdict: str, **comparison: Any) -> Row:
        return cls(case.id, **_identity(case), task=str(case.task), accuracy=accuracy, baseline=baseline, verdict=verdict, **comparison)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def baseline_key(case: Case) -> BaselineKey:
    assert case.task is not None
    return BaselineKey(case.model, case.device, case.quant, f"{case.task.name}-{case.task.shots}shot")


def runtime_key(case: Case, kind: str, fingerprint: Fingerprint) -> BaselineKey:
    """Timings and memory belong to the machine: one directory per hardware fingerprint."""
    return BaselineKey(case.model, case.device, case.quant, f"runtime/{fingerprint.slug}/{kind}")


def fidelity_key(case: Case) -> BaselineKey:
    return BaselineKey(case.model, case.device, case.quant, "fidelity")


def _record(kind: str, case: Case, provenance: dict[str, str], fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "model": case.model,
        "device": case.device,
        "quant": case.quant,
        **fields,
        "provenance": {
            **provenance,
            "pytest_slm": _version("pytest-slm"),
            "date": dt.date.today().isoformat(),
        },
    }


def baseline_record(case: Case, result: AccuracyResult, provenance: dict[str, str]) -> dict[str, Any]:
    assert case.task is not None
    return _record(
        "accuracy",
        case,
        {**provenance, "lm_eval": _version("lm-eval")},
        {
            "task": case.task.name,
            "shots": case.task.shots,
            "metric": result.metric,
            "accuracy": round(result.accuracy, 6),
            "n": len(result.outcomes),
            "outcomes": result.outcomes,
            "prompts_sha256": result.prompts_sha256,
            "tokens_sha256": result.tokens_sha256,
        },
    )


def latency_record(
    case: Case, fingerprint: Fingerprint, timings: Sequence[Timing], load: float | None, provenance: dict[str, str]
) -> dict[str, Any]:
    fields = {"fingerprint": fingerprint.as_dict(), "metrics": {t.metric: t.as_dict() for t in timings}, "load_average": load}
    return _record("latency", case, provenance, fields)


def memory_record(case: Case, fingerprint: Fingerprint, use: MemoryUse, provenance: dict[str, str]) -> dict[str, Any]:
    fields = {
        "fingerprint": fingerprint.as_dict(),
        "weights_bytes": use.profile.weights_bytes,
        "kv_bytes_per_token": use.profile.kv_bytes_per_token,
        "peak_rss_bytes": use.peak_rss_bytes,
    }
    return _record("memory", case, provenance, fields)


def judge(case: Case, result: AccuracyResult, baseline: dict[str, Any], settings: Settings) -> tuple[Row, str | None]:
    """The summary row, and the failure message when the item regressed (None when it passes)."""
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
        row = Row.of(case, result.accuracy, baseline["accuracy"], "changed")
        return row, f"{case.id}: {problem} {refresh}"

    comparison = compare_outcomes(baseline["outcomes"], result.outcomes)
    failed = comparison.is_regression(settings.alpha, settings.min_drop_points)
    row = Row.of(
        case,
        result.accuracy,
        baseline["accuracy"],
        "FAIL" if failed else "pass",
        delta_points=comparison.delta_points,
        regressed=len(comparison.regressed),
        improved=len(comparison.improved),
        p_value=comparison.p_value,
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


@dataclass(frozen=True)
class ParitySettings:
    min_top1: float
    max_mean_kld: float
    alpha: float
    min_drop_points: float


def judge_parity(
    item: str,
    fidelity: Fidelity,
    tasks: dict[str, PairedComparison],
    settings: ParitySettings,
) -> tuple[dict[str, Any], str | None]:
    """A summary row, and the failure message when the runtimes disagree more than allowed: on the
    distributions, or on the task outcomes both ran this session (paired, two-sided)."""
    distributions = []
    if fidelity.top1_agreement < settings.min_top1:
        distributions.append(f"top-1 agreement {fidelity.top1_agreement:.4f} < {settings.min_top1}")
    if fidelity.mean_kld > settings.max_mean_kld:
        distributions.append(f"mean KL divergence {fidelity.mean_kld:.3g} nats > {settings.max_mean_kld}")
    problems = [f"{'; '.join(distributions)} over {fidelity.tokens} positions"] if distributions else []
    flips = 0
    for task, paired in sorted(tasks.items()):
        p = mcnemar_two_sided(len(paired.regressed), len(paired.improved))
        flips += len(paired.regressed) + len(paired.improved)
        if p < settings.alpha and abs(paired.delta_points) >= settings.min_drop_points:
            problems.append(
                f"{task}: accuracy {paired.accuracy:.3f} vs {paired.baseline_accuracy:.3f} on llama.cpp's"
                f" shipped weights, {len(paired.regressed)} samples right only on llama.cpp and"
                f" {len(paired.improved)} only here, two-sided McNemar p = {p:.3g} < {settings.alpha}"
            )
    outcomes = f"{len(tasks)} tasks, {flips} flips" if tasks else "not run"
    row = {"item": item, **fidelity.__dict__, "task_outcomes": outcomes, "verdict": "FAIL" if problems else "pass"}
    if not problems:
        return row, None
    return row, (
        f"{item}: the runtimes disagree on the same weights: {'; '.join(problems)}"
        f" (p99 KLD {fidelity.p99_kld:.3g}, perplexity {fidelity.reference_perplexity:.2f} vs {fidelity.perplexity:.2f})"
    )


@dataclass(frozen=True)
class LatencySettings:
    tolerances: dict[str, float]  # by metric family ("prefill", "decode", "ttft"); "*" for the rest
    k: float

    def tolerance(self, metric: str) -> float:
        return self.tolerances.get(metric.split("@")[0], self.tolerances["*"])


def compare_latency(
    timings: Sequence[Timing], baseline: dict[str, Any], settings: LatencySettings
) -> tuple[dict[str, Slowdown], str | None]:
    """Each metric against its baseline, or why they cannot be compared (other lengths or counts)."""
    stored = baseline["metrics"]
    measured = {t.metric: t for t in timings}
    if set(stored) != set(measured) or any(stored[m]["tokens"] != t.tokens for m, t in measured.items()):
        return {}, (
            f"the baseline measured {', '.join(sorted(stored))}, this run {', '.join(sorted(measured))}"
            " (prompt lengths or token counts differ)."
        )
    return {
        metric: compare_timings(spread(stored[metric]["seconds"]), timing.spread, settings.tolerance(metric), settings.k)
        for metric, timing in measured.items()
    }, None


def latency_rows(
    case: Case, rounds: Sequence[tuple[Sequence[Timing], dict[str, Slowdown]]], baseline: dict[str, Any] | None, load: float | None
) -> list[dict[str, Any]]:
    """One row per metric, from the last round; a metric fails only if every round found it slower."""
    timings, slowdowns = rounds[-1]
    rows = []
    for timing in timings:
        stored = baseline["metrics"].get(timing.metric) if baseline else None
        slowdown = slowdowns.get(timing.metric)
        verdict = "updated" if baseline is None else "changed" if slowdown is None else "pass"
        if slowdown is not None and all(s[timing.metric].regressed for _, s in rounds):
            verdict = "FAIL"
        current = timing.spread
        rows.append(
            {
                "item": case.id,
                **_identity(case),
                "metric": timing.metric,
                "unit": timing.unit,
                "median": timing.shown(current.median),
                "min": timing.shown(current.minimum),
                "spread": current.relative,
                "baseline": timing.shown(spread(stored["seconds"]).median) if stored else None,
                "change_pct": None if slowdown is None else 100 * slowdown.change,
                "limit_pct": None if slowdown is None else 100 * slowdown.limit,
                "rounds": len(rounds),
                "load": load,
                "verdict": verdict,
            }
        )
    return rows


def latency_failure(
    case: Case, fingerprint: Fingerprint, rows: Sequence[dict[str, Any]], rounds: Sequence[dict[str, Slowdown]]
) -> str | None:
    failed = [row for row in rows if row["verdict"] == "FAIL"]
    if not failed:
        return None
    lines = [f"{case.id}: slower than this machine's baseline ({fingerprint}), in every round:"]
    for row in failed:
        changes = ", ".join(f"{100 * r[row['metric']].change:+.1f}%" for r in rounds)
        lines.append(
            f"  {row['metric']}: {row['median']:.4g} {row['unit']} now vs {row['baseline']:.4g} baseline;"
            f" slower by {changes} (rounds), limit {row['limit_pct']:.1f}% = max(tolerance, k x spread)"
        )
    lines.append("If the change is intended, refresh the baseline with --update-baselines on this machine.")
    return "\n".join(lines)


def fidelity_record(case: Case, reference: Case, fidelity: Fidelity, provenance: dict[str, str]) -> dict[str, Any]:
    return _record("fidelity", case, provenance, {"reference": reference.model_id, **fidelity.__dict__})


def judge_fidelity(
    case: Case, fidelity: Fidelity, baseline: dict[str, Any] | None, margin: float, ceiling: float | None
) -> tuple[dict[str, Any], str | None]:
    """Against the quant's own baseline, in both directions: the same build gives the same logits,
    so a large change either way means the quant is not what the baseline describes (a new
    quantizer, a regression, or figures filed under the wrong quant). And against a ceiling, if set."""
    problems = []
    if ceiling is not None and fidelity.mean_kld > ceiling:
        problems.append(f"mean KL divergence {fidelity.mean_kld:.3g} nats is over the {case.quant} ceiling {ceiling}")
    if baseline is not None and baseline["tokens"] != fidelity.tokens:
        problems.append(f"the baseline compared {baseline['tokens']} positions, this run {fidelity.tokens} (another text or window)")
    elif baseline is not None:
        change = fidelity.mean_kld / baseline["mean_kld"] - 1 if baseline["mean_kld"] else float("inf")
        if abs(change) > margin:
            direction = "worse" if change > 0 else "better"
            problems.append(
                f"mean KL divergence to the reference is {fidelity.mean_kld:.3g} nats, {direction} than the baseline's"
                f" {baseline['mean_kld']:.3g} by {100 * abs(change):.0f}% (margin {100 * margin:.0f}%);"
                f" top-1 agreement {fidelity.top1_agreement:.4f} vs {baseline['top1_agreement']:.4f}"
            )
    verdict = "FAIL" if problems else "updated" if baseline is None else "pass"
    row = {"item": case.id, **_identity(case), **fidelity.__dict__, "baseline_mean_kld": baseline and baseline["mean_kld"], "verdict": verdict}
    if not problems:
        return row, None
    return row, f"{case.id}: " + "; ".join(problems) + ". If the change is intended, refresh with --update-baselines."


def judge_memory(
    case: Case, use: MemoryUse, baseline: dict[str, Any] | None, tolerance: float
) -> tuple[dict[str, Any], str | None]:
    """Weights and KV cache per token are properties of the build: any growth past `tolerance` fails,
    as does a runtime that stores more per cached token than the model's shape says. Peak RSS is
    shown, not judged: it depends on what else the process loaded before."""
    profile = use.profile
    problems = []
    if abs(profile.kv_bytes_per_token_stored / profile.kv_bytes_per_token - 1) > tolerance:
        problems.append(
            f"the runtime stores {profile.kv_bytes_per_token_stored:.0f} KV cache bytes per token,"
            f" the model's shape says {profile.kv_bytes_per_token}"
        )
    for name in ("weights_bytes", "kv_bytes_per_token") if baseline else ():
        now, before = getattr(profile, name), baseline[name]
        if now > before * (1 + tolerance):
            problems.append(f"{name} grew from {before} to {now} ({100 * (now / before - 1):+.1f}% > {100 * tolerance:.0f}%)")
    verdict = "updated" if baseline is None and not problems else "FAIL" if problems else "pass"
    row = {
        "item": case.id,
        **_identity(case),
        "weights_bytes": profile.weights_bytes,
        "kv_bytes_per_token": profile.kv_bytes_per_token,
        "kv_cache": use.kv_cache(),
        "peak_rss_bytes": use.peak_rss_bytes,
        "verdict": verdict,
    }
    return row, f"{case.id}: " + "; ".join(problems) if problems else None


def _identity(case: Case) -> dict[str, Any]:
    return {"model": case.model, "device": case.device, "quant": case.quant}


def _tail(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text[-width:]


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"
