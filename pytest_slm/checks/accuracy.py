"""Accuracy items: one lm-eval task's per-sample outcomes, paired with the baseline's (McNemar)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any, ClassVar, TypedDict

from ..matrix import Case
from ..stats import RELATIVE_CONFIDENCE, compare_outcomes, detectable_drop, relative_accuracy
from ..store.baselines import BaselineKey
from ..tasks.catalog import TASK_PARTS, AccuracyResult
from ..tasks.prompt_set import PROMPT_SET_PARTS
from .columns import ITEM, VERDICT, Column, Rows, Table, or_dash, select
from .core import CANNOT_DETECT, NOT_JUDGED, REFRESH, Check, RecordError, Verdict, require
from .kind import Figure, Judged, Kind, Runs, Stored

SHOWN_FLIPS = 3


@dataclass(frozen=True)
class AccuracyRow:
    """One line of the accuracy table; plain data so xdist workers can send it."""

    SECTION: ClassVar[str] = "items"
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
    detects_points: float | None = None  # the smallest drop caught with power 0.8 (stats.detectable_drop)
    reference_accuracy: float | None = None  # the relative gate's: the reference on the same samples
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    gate: float | None = None
    gate_verdict: str | None = None


@dataclass(frozen=True)
class AccuracySettings:
    alpha: float
    min_drop_points: float
    allow_task_change: bool
    relative_gate: float | None = None  # the fraction of the reference's accuracy to keep; None: off
    detect_drop_points: float | None = None  # the drop every item must be able to catch (--slm-detect-drop); None: off


@dataclass
class AccuracyCheck(Check):
    case: Case
    settings: AccuracySettings
    evaluate: Callable[[], AccuracyResult]
    kind: str = "accuracy"
    reference: tuple[str, Callable[[], AccuracyResult]] | None = None  # the relative gate's: item and its run

    def __post_init__(self) -> None:
        assert self.case.task is not None
        self.item = self.baseline_of = self.case.id
        self.key = BaselineKey(
            self.case.model, self.case.device, self.case.variant, f"{self.case.task.name}-{self.case.task.shots}shot"
        )

    def identity(self) -> dict[str, Any]:
        assert self.case.task is not None
        return {**model_identity(self.case), "task": self.case.task.name, "shots": self.case.task.shots}

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_accuracy(record)

    def measure(self) -> AccuracyResult:
        return self.evaluate()

    def record(self, result: AccuracyResult) -> dict[str, Any]:
        return {
            "metric": result.metric,
            "accuracy": round(result.accuracy, 6),
            "n": len(result.outcomes),
            "outcomes": result.outcomes,
            "task_fingerprint": result.task_fingerprint,
            "tokens_sha256": result.tokens_sha256,
        }

    def replaces_less(self, record: Mapping[str, Any], stored: Mapping[str, Any]) -> str | None:
        if record["n"] < stored["n"]:
            return f"this run has {record['n']} samples, the stored baseline {stored['n']} (--slm-limit)"
        return None

    def judge(self, result: AccuracyResult, baseline: Mapping[str, Any] | None) -> Verdict:
        """Against the baseline (McNemar), and, with --slm-relative-gate, against the reference."""
        gate, gate_failure = self._against_reference(result)
        verdict = self._against_baseline(result, baseline)
        rows = [replace(row, **gate, **({"verdict": "FAIL"} if gate_failure else {})) for row in verdict.rows]
        failure = "\n".join(f for f in (verdict.failure, gate_failure) if f) or None
        return Verdict(rows, failure, verdict.not_judged if failure is None else None)

    def _against_reference(self, result: AccuracyResult) -> tuple[dict[str, Any], str | None]:
        """The row's gate fields and why the item fails the gate (None: it passes, or no gate)."""
        fraction = self.settings.relative_gate
        if fraction is None or self.reference is None:
            return {}, None
        name, run = self.reference
        reference = run()
        if problem := _unpaired(reference, result):
            return {"gate": fraction, "gate_verdict": "FAIL"}, (
                f"{self.item}: not comparable with the reference {name} (--slm-relative-gate): {problem}"
            )
        try:
            relative = relative_accuracy(reference.outcomes, result.outcomes)
        except ValueError as exc:
            return {"gate": fraction, "gate_verdict": "FAIL"}, f"{self.item}: no relative verdict against {name}: {exc}"
        below = relative.confidently_below(fraction)
        fields = {
            "reference_accuracy": relative.reference_accuracy,
            "ratio": relative.ratio,
            "ratio_low": relative.low,
            "ratio_high": relative.high,
            "gate": fraction,
            "gate_verdict": "FAIL" if below else "pass",
        }
        if not below:
            return fields, None
        return fields, (
            f"{self.item}: {result.metric} {relative.accuracy:.3f} is {relative.ratio:.3f} of the reference {name}'s"
            f" {relative.reference_accuracy:.3f} on the same {relative.n} samples ({RELATIVE_CONFIDENCE:.0%} paired"
            f" bootstrap interval [{relative.low:.3f}, {relative.high:.3f}]): below {fraction} (--slm-relative-gate)"
        )

    def _against_baseline(self, result: AccuracyResult, baseline: Mapping[str, Any] | None) -> Verdict:
        row = self._row(result, baseline, "updated" if baseline is None else "changed")
        if baseline is None:
            return Verdict([row])
        if problem := self._incomparable(result, baseline):
            return Verdict([row], f"{self.item}: {problem} {REFRESH}")
        comparison = compare_outcomes(baseline["outcomes"], result.outcomes)
        if comparison.n == 0:
            return Verdict(
                [row], f"{self.item}: the baseline and this run share no sample: nothing to compare. {REFRESH}"
            )
        alpha = self.settings.alpha
        failed = comparison.is_regression(alpha, self.settings.min_drop_points)
        correct = sum(baseline["outcomes"].values())
        detects = detectable_drop(comparison.n, correct, alpha, self.settings.min_drop_points)
        blind = self._blind(detects, comparison.n, correct)
        row = self._row(
            result,
            baseline,
            "FAIL" if failed else NOT_JUDGED if blind else "pass",
            delta_points=comparison.delta_points,
            regressed=len(comparison.regressed),
            improved=len(comparison.improved),
            p_value=comparison.p_value,
            detects_points=detects,
        )
        if blind and not failed:
            return Verdict([row], not_judged=(CANNOT_DETECT, f"{self.item}: {blind}"))
        if not failed:
            return Verdict([row])
        lines = [
            (
                f"{self.item}: {result.metric} regressed: {comparison.accuracy:.3f} now vs {comparison.baseline_accuracy:.3f}"
                f" baseline ({comparison.delta_points:+.1f} points, n={comparison.n})"
            ),
            (
                f"flips: {len(comparison.regressed)} right->wrong, {len(comparison.improved)} wrong->right;"
                f" McNemar exact one-sided p = {comparison.p_value:.3g} < alpha {self.settings.alpha}"
            ),
        ]
        for doc_id in comparison.regressed[:SHOWN_FLIPS]:
            if (sample := result.samples.get(doc_id)) is not None:
                lines.append(
                    f"  now wrong: doc {doc_id}: ...{_tail(sample.prompt)!r} target {sample.target!r} got {_tail(sample.response)!r}"
                )
        lines.append(REFRESH)
        return Verdict([row], "\n".join(lines))

    def _blind(self, detects: float | None, n: int, correct: int) -> str | None:
        """Why this item's test cannot catch what it must: no drop can fail it, or not the drop
        --slm-detect-drop asks every item to catch."""
        alpha = self.settings.alpha
        if detects is None:
            return (
                f"cannot detect a drop at α={alpha:g} with {correct} correct in the baseline (n={n}): even all"
                f" {correct} turning wrong would not fail it; use more samples (--slm-limit, a larger task)"
            )
        wanted = self.settings.detect_drop_points
        if wanted is not None and detects > wanted:
            return (
                f"cannot detect a {wanted:g} pt drop (--slm-detect-drop): with n={n} and {correct} correct in the"
                f" baseline it detects ≥ {detects:.1f} pt at α={alpha:g} with power 0.8; use more samples"
            )
        return None

    def _incomparable(self, result: AccuracyResult, baseline: Mapping[str, Any]) -> str | None:
        """Why outcomes cannot be paired: other samples, another task definition, other tokens."""
        if baseline["n"] != len(result.outcomes):
            return (
                f"limit differs: the baseline has {baseline['n']} samples, this run {len(result.outcomes)}"
                " (--slm-limit); compare runs of the same size."
            )
        if self.settings.allow_task_change:
            return None
        changed = _changed_parts(baseline["task_fingerprint"], result.task_fingerprint)
        if baseline["metric"] != result.metric and "metric" not in changed:
            changed.append("metric")
        if changed:
            metrics = (
                f"; metric {baseline['metric']!r} then, {result.metric!r} now"
                if baseline["metric"] != result.metric
                else ""
            )
            return (
                f"the task changed since the baseline (changed: {', '.join(changed)}{metrics}): outcomes would be"
                " compared blindly. Pass --slm-allow-task-change to compare anyway."
            )
        if baseline["tokens_sha256"] != result.tokens_sha256:
            return (
                "the model's tokens for the same prompts changed since the baseline (a new tokenizer or GGUF)."
                " Pass --slm-allow-task-change to compare anyway."
            )
        if set(baseline["outcomes"]) != set(result.outcomes):
            return "the baseline's sample ids are not this run's (the same task would give the same ids)."
        return None

    def _row(
        self, result: AccuracyResult, baseline: Mapping[str, Any] | None, verdict: str, **comparison: Any
    ) -> AccuracyRow:
        return AccuracyRow(
            self.item,
            **model_identity(self.case),
            task=str(self.case.task),
            accuracy=result.accuracy,
            baseline=None if baseline is None else baseline["accuracy"],
            verdict=verdict,
            **comparison,
        )


def _unpaired(reference: AccuracyResult, result: AccuracyResult) -> str | None:
    """Why the reference's run is not this run's samples of this task: the gate pairs nothing else."""
    differs = _changed_parts(reference.task_fingerprint, result.task_fingerprint)
    if reference.metric != result.metric and "metric" not in differs:
        differs.append("metric")
    if reference.tokens_sha256 != result.tokens_sha256:
        differs.append("the prompts' tokens")
    if set(reference.outcomes) != set(result.outcomes):
        differs.append("sample ids")
    return f"its run differs in {', '.join(differs)}" if differs else None


def _changed_parts(before: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """The fingerprint's parts that differ, in the order `now` lists them (an lm-eval task's or a
    prompt set's); all of them where one side is a task and the other a prompt set."""
    return [part for part in now if before.get(part) != now[part]]


def validate_accuracy(record: Mapping[str, Any]) -> None:
    require(record, "metric", str, bool, "empty")
    n = require(record, "n", int, lambda v: v >= 1, "a baseline needs at least one sample")
    outcomes = require(record, "outcomes", dict, lambda v: len(v) == n, f"it has not n = {n} samples")
    if not all(type(v) is int and v in (0, 1) for v in outcomes.values()):
        raise RecordError("field 'outcomes' must hold 0 or 1 per sample")
    mean = sum(outcomes.values()) / n
    require(record, "accuracy", float, lambda v: abs(v - mean) < 1e-6, f"not the mean of the outcomes ({mean:.6f})")
    parts = require(
        record,
        "task_fingerprint",
        dict,
        lambda v: set(v) in (set(TASK_PARTS), set(PROMPT_SET_PARTS)),
        f"needs exactly {', '.join(TASK_PARTS)} (an lm-eval task) or {', '.join(PROMPT_SET_PARTS)} (a prompt set)",
    )
    if not all(isinstance(v, str) and v for v in parts.values()):
        raise RecordError("field 'task_fingerprint' must hold a hash per part")
    require(record, "tokens_sha256", str, bool, "empty")


class ModelIdentity(TypedDict):
    """Rows' and records' model fields, typed by name so `**model_identity(case)` fills them."""

    model: str
    device: str
    quant: str


def model_identity(case: Case) -> ModelIdentity:
    """Rows' and records' model fields; the quant with its KV cache type where that is not f16."""
    return {"model": case.model, "device": case.device, "quant": case.variant}


def _tail(text: str, width: int = 60) -> str:
    return " ".join(text.split())[-width:]


class AccuracyKind(Kind):
    """Accuracy on a task's samples, judged by McNemar's test on the per-sample outcomes. Its
    results.json section is `items` (the name runs stored before kinds had one), kept so that
    stored reports and histories still read."""

    row = AccuracyRow
    title = "Accuracy"
    record_kind = "accuracy"
    keeps_outcomes = True
    chart_order = 0

    def table(self, rows: Rows, full: bool = True) -> Table:
        """Against the baseline (McNemar); with --slm-relative-gate, also against the reference (its
        accuracy and the ratio's interval in the full table only)."""
        gated = any(row.get("gate") is not None for row in rows)
        relative = [
            Column("reference", _gated(lambda row: or_dash(row.get("reference_accuracy"), "{:.3f}")), brief=False),
            Column("ratio (95% CI)", _gated(_ratio), brief=False),
            Column("gate", _gated(lambda row: f"{row['gate']:g}: {row['gate_verdict']}")),
        ]
        columns = [
            ITEM,
            Column("accuracy", lambda row: f"{row['accuracy']:.3f}"),
            Column("baseline", lambda row: or_dash(row["baseline"], "{:.3f}")),
            Column("delta", lambda row: or_dash(row["delta_points"], "{:+.1f} pt")),
            Column(
                "flips -/+", lambda row: "-" if row["regressed"] is None else f"{row['regressed']}/{row['improved']}"
            ),
            Column("p", lambda row: or_dash(row["p_value"], "{:.3g}")),
            Column("detects", lambda row: or_dash(row.get("detects_points"), "≥ {:.1f} pt")),
            *(relative if gated else ()),
            VERDICT,
        ]
        return select(columns, sorted(rows, key=itemgetter("item")), full)

    def charts(self, rows: Rows) -> list[tuple[str, str, list[Any]]]:
        from ..report import charts  # matplotlib: only when the page is drawn

        return [("accuracy-ladder", "Accuracy per task across the quantization ladder", charts.accuracy(rows))]

    def figures(self, row: Mapping[str, Any]) -> list[Figure]:
        return [Figure("accuracy", row["accuracy"], "share")]

    def compare(self, now: Stored, before: Stored, runs: Runs) -> Judged:
        """Paired on the samples both runs have, as the item itself is judged."""
        if not runs.before or not runs.after:
            return Judged(before.value, now.value, "", "not compared: no per-sample outcomes stored")
        paired = compare_outcomes(runs.before, runs.after)
        if paired.n == 0:
            return Judged(before.value, now.value, "", "not compared: no sample in common")
        settings = runs.settings
        alpha, min_drop = float(settings.get("alpha", 0.05)), float(settings.get("min_drop_points", 1.0))
        verdict = "FAIL" if paired.is_regression(alpha, min_drop) else "pass"
        change = (
            f"{paired.delta_points:+.1f} pt, flips {len(paired.regressed)}/{len(paired.improved)},"
            f" p={paired.p_value:.3g}, n={paired.n}"
        )
        return Judged(paired.baseline_accuracy, paired.accuracy, change, verdict)

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_accuracy(record)

    def file_name(self, record: Mapping[str, Any]) -> str:
        return f"{require(record, 'task', str)}-{require(record, 'shots', int)}shot.json"


def _gated(cell: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
    """A relative cell, or a dash for an item the gate does not judge (the reference itself)."""
    return lambda row: "-" if row.get("gate") is None else cell(row)


def _ratio(row: dict[str, Any]) -> str:
    return "-" if row.get("ratio") is None else f"{row['ratio']:.3f} [{row['ratio_low']:.3f}, {row['ratio_high']:.3f}]"
