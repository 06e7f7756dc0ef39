"""The store's series (item x metric on one hardware fingerprint), each with its step changes
found. A series runs across runtime upgrades on the same machine: each run says what changed
since the series' previous run (`changed`), so a step can say what changed where it lands."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import changes, database
from .changepoint import DEFAULT_K, DEFAULT_MIN_STEP, AccuracyStep, Step, accuracy_steps, find_steps


@dataclass
class Series:
    section: str
    item: str
    metric: str
    unit: str
    fingerprint: str
    # run_id, started, git_commit, value, spread, and changed: what changed since the series'
    # previous run besides the code ("llama-cpp-python 0.3.36 → 0.3.40"; [] for the first run)
    runs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step | AccuracyStep] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [r["value"] for r in self.runs]

    def changed_at(self, step: Step | AccuracyStep) -> list[str]:
        """What changed at the run where `step` lands ([] where nothing recorded did)."""
        return list(self.runs[step.index]["changed"])


def load(db: sqlite3.Connection, item_filter: str | None = None) -> list[Series]:
    """Every series, runs oldest first; a figure stored under a slug that hashed the runtime in
    (before schema 2) joins its hardware's series."""
    hardware = database.hardware_slugs(db)
    found: dict[tuple[str, str, str, str], Series] = {}
    query = (
        "SELECT m.section, m.item, m.metric, m.unit, m.fingerprint, m.run_id, r.started, r.git_commit, m.value, m.spread"
        " FROM measures m JOIN runs r USING (run_id) ORDER BY r.started, r.run_id"
    )
    for section, item, metric, unit, slug, run_id, started, commit, value, spread in db.execute(query):
        if item_filter and item_filter not in f"{item} {metric}":
            continue
        slug = hardware.get(slug, slug)
        series = found.setdefault((section, item, metric, slug), Series(section, item, metric, unit, slug))
        series.runs.append(
            {"run_id": run_id, "started": started, "git_commit": commit, "value": value, "spread": spread}
        )
    provenances = database.provenances(db) if found else {}
    for series in found.values():
        for before, run in zip([None, *series.runs], series.runs):
            run["changed"] = (
                changes.between(provenances[before["run_id"]], provenances[run["run_id"]]) if before else []
            )
    return sorted(found.values(), key=lambda s: (s.section, s.item, s.metric, s.fingerprint))


def analyse(
    db: sqlite3.Connection,
    item_filter: str | None = None,
    k: float = DEFAULT_K,
    min_step: float = DEFAULT_MIN_STEP,
    alpha: float = 0.05,
    min_change_points: float = 1.0,
    keep: Callable[[Series], bool] = lambda _: True,
) -> list[Series]:
    """The series `keep` accepts, each with its steps."""
    series = [one for one in load(db, item_filter) if keep(one)]
    for one in series:
        if one.section == "items":
            outcomes = [database.outcomes(db, r["run_id"], one.item) for r in one.runs]
            one.steps = list(accuracy_steps(outcomes, alpha, min_change_points))
        elif one.metric != "peak_rss_bytes":  # shown, never judged: it depends on what ran before
            one.steps = list(find_steps(one.values, [r["spread"] for r in one.runs], k=k, min_step=min_step))
    return series


def of_items(path: Path, items: Collection[str]) -> list[Series]:
    """The series of these items that have two runs or more, steps found as `history` finds them
    with its defaults: what report.html draws for the run that just appended."""
    if not path.is_file():
        return []
    with database.connect(path, write=False) as db:
        return analyse(db, keep=lambda one: one.item in items and len(one.runs) >= 2)


def describe(one: Series, recent: int) -> list[str]:
    where = f" on {one.fingerprint}" if one.fingerprint else ""
    lines = [f"{one.item}  {one.metric} ({one.unit}){where}: {len(one.runs)} run(s)"]
    shown = one.runs[-recent:]
    lines.append("  recent: " + "  ".join(f"{r['value']:.4g}" for r in shown))
    for step in one.steps:
        run = one.runs[step.index]
        at = f"run {step.index + 1} ({run['run_id'][:12]}, {run['started']}" + (
            f", commit {run['git_commit'][:10]})" if run["git_commit"] else ")"
        )
        if isinstance(step, AccuracyStep):
            lines.append(
                f"  STEP at {at}: {step.before:.3f} -> {step.after:.3f} ({step.delta_points:+.1f} pt, n={step.n},"
                f" flips {step.worse} worse / {step.better} better, McNemar p={step.p_value:.3g})"
            )
        else:
            lines.append(
                f"  STEP at {at}: {step.before:.4g} -> {step.after:.4g} ({100 * step.change:+.1f}%,"
                f" {step.score:.1f} x its noise {100 * step.noise:.2f}%)"
            )
        if changed := one.changed_at(step):
            lines.append(f"    changed at run {step.index + 1}: {'; '.join(changed)}")
    if not one.steps:
        lines.append("  no step")
    return lines
