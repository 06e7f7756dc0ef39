"""Two stored runs compared item by item with the items' own judges: accuracy sample by sample
(`compare_outcomes`, one-sided McNemar, the run's alpha and minimum drop), timings with
`compare_timings` (median change against max(tolerance, k x the medians' combined uncertainty)), memory against
its tolerance. The thresholds are those the later run was judged with, as stored with it. Runs on
the same hardware are compared whatever runtime they ran: a new release is judged against the old
one's figures, and what changed between the runs is said first (`changes.line`)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..checks import KINDS
from ..checks.kind import Kind, Runs
from . import database
from .database import HistoryError, RunRecord

SHOWN = Kind()  # how a figure of a section no registered kind has is compared: its difference shown


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
    """Each figure both runs have, judged by its kind as the item itself is (a section no
    registered kind has is shown); figures of other hardware are not compared."""
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
            continue
        outcomes = before.outcomes.get(m.item, {}), after.outcomes.get(m.item, {})
        runs = Runs(after.settings, *outcomes, before.settings)
        judged = KINDS.get(m.section, SHOWN).compare(m, base, runs)
        found.append(Comparison(m.section, m.item, m.metric, *judged))
    return found
