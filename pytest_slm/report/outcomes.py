"""Each pytest-slm item's outcome, counted one way for the terminal's roll-up line, results.json,
summary.md and report.html: what the run judged, and what it did not and why, so that a run whose
items compared nothing never reads as green. The plugin feeds it the controller's reports (xdist
forwards its workers' there); items that are not pytest-slm's (a project's own unit tests) are
pytest's closing line's alone."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pytest

from ..checks.core import NO_BASELINE, NOT_JUDGED, REASONS, SKIPS_NOW, first_line, unjudged
from ..checks.outcome_baseline import FIXED, KNOWN_FAILURE, marked_outcome

PASS, FAIL, SKIPPED, XFAIL, XPASS, ERROR = "pass", "fail", "skipped", "xfail", "xpass", "error"
ORDER = (PASS, FAIL, KNOWN_FAILURE, FIXED, NOT_JUDGED, SKIPPED, XFAIL, XPASS, ERROR)
ALWAYS = (PASS, FAIL)  # counted even at 0: "0 fail" is what a reader looks for
NOT_RUN_HERE = "not run here"  # any other skip: a device this machine lacks, an empty matrix
MATRIX_SKIP = "pytest-slm: "  # how an empty matrix's placeholder item's skip begins
HINTS = {
    NO_BASELINE: "create with pytest {} --update-baselines",
    SKIPS_NOW: "if the skip is intended, record it with pytest {} --update-baselines",
}


@dataclass(frozen=True)
class Outcome:
    nodeid: str
    outcome: str  # one of ORDER
    reason: str = ""  # why it compared nothing (checks.core.REASONS), also where --slm-strict made that a failure
    message: str = ""  # the not-judged or skip message, or a failure's first line


class Outcomes:
    """The run's items by node id, each with the outcome its reports so far give: the call's, or a
    setup's that did not pass; a teardown's error turns a pass into an error and changes nothing else."""

    def __init__(self) -> None:
        self._by_item: dict[str, Outcome] = {}

    def add(self, report: pytest.TestReport) -> None:
        found = of_report(report)
        if found is None or not _is_slm(report):
            return
        earlier = self._by_item.get(report.nodeid)
        if report.when == "teardown" and earlier is not None and earlier.outcome != PASS:
            return
        self._by_item[report.nodeid] = found

    def items(self) -> list[Outcome]:
        return sorted(self._by_item.values(), key=lambda outcome: outcome.nodeid)


def of_report(report: pytest.TestReport) -> Outcome | None:
    """What one phase's report makes of its item; None where it says nothing (a setup that passed)."""
    nodeid = report.nodeid
    if marked := marked_outcome(report):  # a test judged against its recorded outcome
        return Outcome(nodeid, marked[0], message=marked[1])
    if report.passed:
        if report.when != "call":
            return None
        return Outcome(nodeid, XPASS if hasattr(report, "wasxfail") else PASS)
    if report.skipped:
        if hasattr(report, "wasxfail"):
            return Outcome(nodeid, XFAIL, message=report.wasxfail)
        if found := unjudged(report):
            return Outcome(nodeid, NOT_JUDGED, *found)
        return Outcome(nodeid, SKIPPED, message=_skip_message(report))
    if report.when != "call":
        return Outcome(nodeid, ERROR, message=first_line(report))
    if found := unjudged(report):  # --slm-strict, or CI: a failure, with its reason kept
        return Outcome(nodeid, FAIL, *found)
    return Outcome(nodeid, FAIL, message=first_line(report))


def _is_slm(report: pytest.TestReport) -> bool:
    """An item of the matrix (marked `slm`), an empty matrix's placeholder, or one a check ended."""
    if "slm" in report.keywords or unjudged(report):
        return True
    return report.skipped and _skip_message(report).startswith(MATRIX_SKIP)


def _skip_message(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]).removeprefix("Skipped: ") if isinstance(longrepr, tuple) else ""


def parts(outcomes: Sequence[Outcome]) -> list[tuple[str, str]]:
    """(outcome, its part of the roll-up line) in ORDER: "8 not judged (6 no baseline: create with
    pytest suites/test_accuracy.py --update-baselines; 2 unlike conditions)"."""
    by_outcome: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_outcome.setdefault(outcome.outcome, []).append(outcome)
    found = []
    for name in ORDER:
        group = by_outcome.get(name, [])
        if group or name in ALWAYS:
            found.append((name, f"{len(group)} {name}{_detail(name, group)}"))
    return found


def rollup(outcomes: Sequence[Outcome]) -> str:
    """The line that opens the summary, counting every pytest-slm item of the run by outcome."""
    return f"{_items(len(outcomes))}: " + ", ".join(text for _, text in parts(outcomes))


def _items(count: int) -> str:
    return f"{count} item{'' if count == 1 else 's'}"


def _detail(name: str, group: Sequence[Outcome]) -> str:
    if name == SKIPPED:
        return f" ({NOT_RUN_HERE})"
    reasons = _reasons(group)
    if not reasons:
        return ""
    if name == NOT_JUDGED:
        return f" ({reasons})"
    unjudged_count = sum(1 for outcome in group if outcome.reason)
    return f" ({unjudged_count} not judged, strict: {reasons})"


def _reasons(group: Sequence[Outcome]) -> str:
    """Each reason's count in REASONS' order, with what to do where there is one thing to do."""
    counts = Counter(outcome.reason for outcome in group if outcome.reason)
    said = []
    for reason in sorted(counts, key=lambda reason: REASONS.index(reason) if reason in REASONS else len(REASONS)):
        hint = HINTS.get(reason)
        files = _files([outcome.nodeid for outcome in group if outcome.reason == reason])
        said.append(f"{counts[reason]} {reason}" + (f": {hint.format(files)}" if hint else ""))
    return "; ".join(said)


def _files(nodeids: Sequence[str]) -> str:
    """The test files of these items, or the directory they share when there are more than three."""
    files = sorted({nodeid.split("::")[0] for nodeid in nodeids})
    if len(files) > 3:
        return os.path.commonpath(files) or "."
    return " ".join(files)


def explained_lines(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per item that compared nothing, with its reason and message, then per known failure
    and fix, with what its baseline said: no -rs needed."""
    unjudged = [
        f"{'NOT JUDGED' if outcome.outcome == NOT_JUDGED else 'FAILED, NOT JUDGED'} ({outcome.reason})"
        f" {outcome.nodeid}: {outcome.message}"
        for outcome in outcomes
        if outcome.reason
    ]
    return unjudged + [f"{outcome.outcome.upper()} {outcome.nodeid}: {outcome.message}" for outcome in known(outcomes)]


def known(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """The known failures and the fixes: tests judged against the outcome recorded at their baseline."""
    return [outcome for outcome in outcomes if outcome.outcome in (KNOWN_FAILURE, FIXED)]


def colour(outcomes: Sequence[Outcome]) -> str:
    """Red for a failure or an error, green only where every item was judged and one passed at least."""
    found = {outcome.outcome for outcome in outcomes}
    if found & {FAIL, ERROR}:
        return "red"
    if NOT_JUDGED in found or PASS not in found:
        return "yellow"
    return "green"


def as_json(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """results.json's "outcomes": the roll-up's counts and reasons, and every item's outcome."""
    reasons: dict[str, dict[str, int]] = {}
    for outcome in outcomes:
        if outcome.reason:
            counted = reasons.setdefault(outcome.outcome, {})
            counted[outcome.reason] = counted.get(outcome.reason, 0) + 1
    counts = Counter(outcome.outcome for outcome in outcomes)
    return {
        "line": rollup(outcomes),
        "total": len(outcomes),
        "counts": {name: counts[name] for name in ORDER if counts[name] or name in ALWAYS},
        "reasons": reasons,
        "items": [asdict(outcome) for outcome in outcomes],
    }
