"""Two stored runs compared item by item with the items' own judges: accuracy sample by sample
(`compare_outcomes`, one-sided McNemar, the run's alpha and minimum drop), timings with
`compare_timings` (median change against max(tolerance, k x the medians' combined uncertainty)), memory against
its tolerance. The thresholds are those the later run was judged with, as stored with it. Runs on
the same hardware are compared whatever runtime they ran: a new release is judged against the old
one's figures, and what changed between the runs is said first (`changes.line`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..stats import MAD_TO_SIGMA, Spread, compare_outcomes, compare_timings
from . import database
from .database import HistoryError, Measure, RunRecord

DEFAULT_TOLERANCE = 0.10


@dataclass(frozen=True)
class Comparison:
    section: str
    item: str
    metric: str
    before: float
    after: float
    change: str  # as people read it: "+1.5 pt, 3/0 flips, p=0.12" or "24.8% slower, limit 12.0%"
    verdict: str  # pass, FAIL, or "not compared: why"


def resolve(db: sqlite3.Connection, ref: str) -> str:
    """A run id (or a unique prefix of one), a git commit (prefix; its latest run), or a date
    (YYYY-MM-DD[THH:MM]; the latest run started then or before)."""
    runs = database.runs(db)
    by_id: list[str] = [r["run_id"] for r in runs if r["run_id"].startswith(ref)]
    if len(by_id) == 1:
        return by_id[0]
    by_commit: list[str] = [r["run_id"] for r in runs if r["git_commit"] and r["git_commit"].startswith(ref)]
    if by_commit and len(ref) >= 4:
        return by_commit[-1]
    if ref[:1].isdigit() and "-" in ref:
        by_date: list[str] = [r["run_id"] for r in runs if r["started"][: len(ref)] <= ref]
        if by_date:
            return by_date[-1]
    if len(by_id) > 1:
        raise HistoryError(f"run {ref!r} is ambiguous: {len(by_id)} run ids start with it")
    raise HistoryError(f"no run matches {ref!r} (a run id, a git commit, or a date YYYY-MM-DD)")


def compare_runs(before: RunRecord, after: RunRecord) -> list[Comparison]:
    settings = after.settings
    old = {(m.section, m.item, m.metric): m for m in before.measures}
    found = []
    for m in after.measures:
        base = old.get((m.section, m.item, m.metric))
        if base is None:
            continue
        if base.fingerprint != m.fingerprint:
            found.append(
                Comparison(m.section, m.item, m.metric, base.value, m.value, "", "not compared: other hardware")
            )
        elif m.section == "items":
            found.append(_accuracy(m, base, before.outcomes.get(m.item, {}), after.outcomes.get(m.item, {}), settings))
        elif m.section == "runtime":
            found.append(_timing(m, base, settings))
        elif m.section == "memory" and m.metric != "peak_rss_bytes":
            grew = m.value / base.value - 1
            limit = float(settings.get("memory_tolerance", 0.01))
            verdict = "FAIL" if grew > limit else "pass"
            found.append(
                Comparison(
                    m.section,
                    m.item,
                    m.metric,
                    base.value,
                    m.value,
                    f"{100 * grew:+.1f}%, limit {100 * limit:.0f}%",
                    verdict,
                )
            )
        else:
            found.append(
                Comparison(m.section, m.item, m.metric, base.value, m.value, f"{m.value - base.value:+.3g}", "shown")
            )
    return found


def _accuracy(
    m: Measure, base: Measure, before: Mapping[str, int], after: Mapping[str, int], settings: Mapping[str, Any]
) -> Comparison:
    if not before or not after:
        return Comparison(
            m.section, m.item, m.metric, base.value, m.value, "", "not compared: no per-sample outcomes stored"
        )
    paired = compare_outcomes(before, after)
    if paired.n == 0:
        return Comparison(m.section, m.item, m.metric, base.value, m.value, "", "not compared: no sample in common")
    alpha, min_drop = float(settings.get("alpha", 0.05)), float(settings.get("min_drop_points", 1.0))
    verdict = "FAIL" if paired.is_regression(alpha, min_drop) else "pass"
    change = f"{paired.delta_points:+.1f} pt, flips {len(paired.regressed)}/{len(paired.improved)}, p={paired.p_value:.3g}, n={paired.n}"
    return Comparison(m.section, m.item, m.metric, paired.baseline_accuracy, paired.accuracy, change, verdict)


def seconds_spread(m: Measure, repeats: int) -> Spread:
    """The item's Spread of seconds from a stored figure: tok/s is tokens / seconds, so the ratio
    of two medians inverts; the relative spread is that of the seconds, as stored."""
    seconds = 1 / m.value if m.unit == "tok/s" else m.value
    relative = m.spread or 0.0
    return Spread(seconds, seconds, relative * seconds / MAD_TO_SIGMA, repeats)


def _timing(m: Measure, base: Measure, settings: Mapping[str, Any]) -> Comparison:
    tolerances = settings.get("latency_tolerances") or {"*": DEFAULT_TOLERANCE}
    tolerance = float(tolerances.get(m.metric.split("@")[0], tolerances.get("*", DEFAULT_TOLERANCE)))
    repeats = int(settings.get("repeats", 5))  # runs stored before it was recorded used the default, 5
    slowdown = compare_timings(
        seconds_spread(base, repeats), seconds_spread(m, repeats), tolerance, float(settings.get("latency_k", 3.0))
    )
    word = "slower" if slowdown.change >= 0 else "faster"
    change = f"{100 * abs(slowdown.change):.1f}% {word}, limit {100 * slowdown.limit:.1f}%"
    return Comparison(
        m.section, m.item, m.metric, base.value, m.value, change, "FAIL" if slowdown.regressed else "pass"
    )
