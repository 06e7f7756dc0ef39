"""Outcome baselines: a team's own test that uses `slm_model` (the model still answers what the app
parses, on every model, device and quant) is judged against the outcome it had when the baselines
were written, not by its assert alone. As pytest-expect records a run's failures, but per (model,
device, quant), beside the item's other baselines, and saying what changed since:

- passing then, failing now: it fails, as a regression;
- failing then, failing now with the same exception type: a *known failure*, reported and counted,
  exit status 0; another type (an assert then, a crash now) fails, as failing differently;
- failing then, passing now: *fixed*, with the command that records it;
- passing or failing then, skipping now: *not judged* (skips now), a failure where strict;
- no baseline, or a skip recorded: its assert alone judges it, as in any pytest run.

`--update-baselines` records each outcome, a skip too; a test marked `slm_absolute` keeps none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, ClassVar

import pytest

from ..matrix import Case
from ..provenance import changes
from ..store.baselines import BaselineError, BaselineKey
from .columns import ITEM, VERDICT, Column, Rows, Table, select
from .core import (
    REFRESH,
    SKIPS_NOW,
    CheckContext,
    RecordError,
    envelope,
    first_line,
    not_judged_report,
    reported_text,
    require,
    since_baseline,
    validate,
)
from .kind import Kind

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
OUTCOMES = (PASSED, FAILED, SKIPPED)
KNOWN_FAILURE, FIXED = "known failure", "fixed"
MARKER = "slm_absolute"
REASON_LIMIT = 300  # characters of a failure's first line kept in the record: an answer can be long
_UNSAFE = re.compile(r"[/\\\0]")


@dataclass(frozen=True)
class OutcomeRow:
    SECTION: ClassVar[str] = "test_outcomes"
    item: str
    test: str
    baseline: str  # "passed", "failed (2026-12-06)", or "-" where none is stored
    now: str
    verdict: str
    reason: str = ""  # the failure's first line, now (or at the baseline, for a test fixed since)


@dataclass(frozen=True)
class Observed:
    outcome: str  # PASSED, FAILED or SKIPPED
    reason: str = ""  # a failure's first line, or why the test skipped
    error: str = ""  # a failure's exception type: a known failure must fail the same way

    @classmethod
    def of(cls, report: pytest.TestReport, call: pytest.CallInfo[None]) -> Observed:
        if report.passed:
            return cls(PASSED)
        if report.skipped:
            return cls(SKIPPED, reported_text(report))
        return cls(FAILED, _reason(report), call.excinfo.typename if call.excinfo is not None else "")

    @classmethod
    def stored(cls, record: Mapping[str, Any]) -> Observed:
        return cls(record["outcome"], record["reason"], record["error"])


@dataclass
class OutcomeCheck:
    """The record of one test on one case: its key, identity and schema, for the core's envelope
    and validation."""

    case: Case
    test: str  # "test_instruct_format.py::test_answers_capital_question", other parameters kept
    kind: str = "outcome"

    def __post_init__(self) -> None:
        self.item = self.case.id

    @property
    def key(self) -> BaselineKey:
        return BaselineKey(self.case.model, self.case.device, self.case.variant, record_name(self.test))

    def identity(self) -> dict[str, Any]:
        return {"model": self.case.model, "device": self.case.device, "quant": self.case.variant, "test": self.test}

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_outcome(record)


def record_name(test: str) -> str:
    """'outcomes/test_x.test_y': one file per test, under the case's directory."""
    file_name, _, function = test.partition("::")
    return "outcomes/" + _UNSAFE.sub("_", f"{file_name.removesuffix('.py')}.{function.replace('::', '.')}")


def validate_outcome(record: Mapping[str, Any]) -> None:
    require(record, "test", str, lambda test: "::" in test, "not a test's name ('file.py::test')")
    require(record, "outcome", str, lambda outcome: outcome in OUTCOMES, f"not one of {', '.join(OUTCOMES)}")
    require(record, "reason", str)
    require(record, "error", str)


def applies(item: pytest.Item, check_fixtures: frozenset[str]) -> bool:
    """A test of the matrix that talks to `slm_model` and is not one of the built-in checks (which
    keep baselines of their own), unless it asked to stay absolute."""
    fixtures = set(getattr(item, "fixturenames", ()))
    return "slm_model" in fixtures and not fixtures & check_fixtures and item.get_closest_marker(MARKER) is None


def name_of_test(item: pytest.Item, case: Case) -> str:
    """The test without its case ('test_x.py::test_y', or 'test_x.py::test_y[json]' where the test
    has parameters of its own): the same test on every case and in every checkout."""
    path, _, name = item.nodeid.partition("::")
    function = name.partition("[")[0]
    callspec = getattr(item, "callspec", None)
    others = callspec.id.replace(case.id, "").replace("--", "-").strip("-") if callspec is not None else ""
    return f"{path.rpartition('/')[2]}::{function}" + (f"[{others}]" if others else "")


def judge(report: pytest.TestReport, call: pytest.CallInfo[None], check: OutcomeCheck, context: CheckContext) -> None:
    """Judge the call's report against the stored outcome (or record it when updating), turning it
    into a regression, a known failure, a fix or, for a test that skips now, not judged; an
    xfail-marked test is left alone."""
    if hasattr(report, "wasxfail"):
        return
    observed = Observed.of(report, call)
    try:
        path = context.store.path(check.key)
        if context.policy.update:
            _record(report, check, context, observed)
            return
        baseline = context.store.read(check.key)
        if baseline is not None:
            validate(check, baseline)
    except BaselineError as exc:  # unreadable, not JSON, a newer schema: the store's message names the file
        _fail(report, f"{check.item}: {exc}")
        return
    except RecordError as exc:
        _fail(report, f"{check.item}: baseline {context.shown(path)}: {exc}. {REFRESH}")
        return
    if baseline is None:
        if observed.outcome != SKIPPED:
            context.add_rows([_row(check, observed, None, _verdict(None, observed))])
        return
    before, date = Observed.stored(baseline), _date(baseline)
    where = f"at the baseline of {date} ({context.shown(path)})"
    if observed.outcome == SKIPPED:
        if before.outcome != SKIPPED:
            message = f"{check.item}: {before.outcome} {where}, skips now: {observed.reason}"
            not_judged_report(report, SKIPS_NOW, message, context.policy.strict)
        return
    verdict = _verdict(before, observed)
    context.add_rows([_row(check, observed, baseline, verdict)])
    if verdict == "FAIL" and before.outcome != SKIPPED:  # passed then, or failed another way
        changed = changes(baseline["provenance"], context.provenance())
        context.add_changes(changed)
        if before.outcome == PASSED:
            heading, said = "newly failing", f"passed {where}, fails now"
        else:
            heading = "failing differently"
            now = observed.reason.removeprefix(f"{observed.error}: ")
            said = f"failed {where} with {before.error}, fails now with {observed.error}: {now}"
        report.sections.append((f"pytest-slm: {heading}", f"{check.item}: {said}\n{since_baseline(changed)}"))
    elif verdict == KNOWN_FAILURE:
        still = "" if before.reason == observed.reason else f"; at the baseline: {before.reason}"
        _mark(report, KNOWN_FAILURE, f"{observed.reason} (failing since the baseline of {date}{still})")
    elif verdict == FIXED:
        _mark(
            report,
            FIXED,
            f"failed at the baseline of {date} ({before.reason}), passes now; record it with:"
            f" pytest '{report.nodeid}' --update-baselines",
        )


def _verdict(before: Observed | None, now: Observed) -> str:
    """pass or FAIL as its asserts say where no outcome (or a skip) was recorded; else the transition."""
    if before is None or before.outcome == SKIPPED:
        return "pass" if now.outcome == PASSED else "FAIL"
    if now.outcome == PASSED:
        return "pass" if before.outcome == PASSED else FIXED
    return KNOWN_FAILURE if before.outcome == FAILED and before.error == now.error else "FAIL"


def _record(report: pytest.TestReport, check: OutcomeCheck, context: CheckContext, observed: Observed) -> None:
    """Write the outcome as the baseline; a failure recorded so is this run's known failure."""
    fields = {"outcome": observed.outcome, "reason": observed.reason, "error": observed.error}
    record = envelope(check, fields, context.provenance())
    validate(check, record)
    changed = context.store.write(check.key, record)
    context.add_write(context.store.path(check.key), changed)
    context.add_rows([OutcomeRow(check.item, check.test, "-", observed.outcome, "updated", observed.reason)])
    if observed.outcome == FAILED:
        _mark(report, KNOWN_FAILURE, f"{observed.reason} (recorded now by --update-baselines)")


def _reason(report: pytest.TestReport) -> str:
    """The failure's first line as a record keeps it: one line, without the assert's exception name."""
    return " ".join(first_line(report).removeprefix("AssertionError: ").split())[:REASON_LIMIT]


def _date(baseline: Mapping[str, Any]) -> str:
    return str(baseline["provenance"].get("date", "an unknown date"))


def _row(check: OutcomeCheck, observed: Observed, baseline: Mapping[str, Any] | None, verdict: str) -> OutcomeRow:
    shown = f"{baseline['outcome']} ({_date(baseline)})" if baseline is not None else "-"
    reason = observed.reason or (baseline["reason"] if baseline is not None else "")
    return OutcomeRow(check.item, check.test, shown, observed.outcome, verdict, reason)


def _mark(report: pytest.TestReport, outcome: str, message: str) -> None:
    """The report carries its pytest-slm outcome (it survives xdist's transfer); a known failure
    becomes a skip, as an xfail does, so that the run's exit status is 0 and the message is kept."""
    report.slm_outcome = outcome  # type: ignore[attr-defined]
    report.slm_message = message  # type: ignore[attr-defined]
    if outcome == KNOWN_FAILURE:
        path, line, _ = report.location
        report.outcome = "skipped"
        report.longrepr = (path, (line or 0) + 1, f"{outcome}: {message}")


def _fail(report: pytest.TestReport, message: str) -> None:
    report.outcome = "failed"
    report.longrepr = message


def marked_outcome(report: pytest.TestReport) -> tuple[str, str] | None:
    """(outcome, message) of a report `judge` marked: a known failure or a fix."""
    outcome = getattr(report, "slm_outcome", None)
    return (outcome, str(getattr(report, "slm_message", ""))) if outcome in (KNOWN_FAILURE, FIXED) else None


class OutcomeKind(Kind):
    """The team's own tests against their recorded outcomes."""

    row = OutcomeRow
    title = "Test outcomes"
    record_kind = "outcome"

    def table(self, rows: Rows, full: bool = True) -> Table:
        columns = [
            ITEM,
            Column("test", itemgetter("test"), brief=False),
            Column("test", lambda row: row["test"].partition("::")[2], full=False),  # within 120 columns
            Column("baseline", itemgetter("baseline")),
            Column("now", itemgetter("now")),
            Column("reason", itemgetter("reason"), brief=False),
            VERDICT,
        ]
        return select(columns, sorted(rows, key=itemgetter("test", "item")), full)

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_outcome(record)

    def file_name(self, record: Mapping[str, Any]) -> str:
        return record_name(record["test"]) + ".json"
