"""An item kind added from one file, with nothing else in the package edited: a conftest registers
it (`checks.register`), its item goes through the one core check, and its rows show up in the
terminal table, results.json, the history store, and `compare`, judged by the kind's own rule. The
kind measures the length of a fixed answer: no model runs."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import pytest

from pytest_slm.checks import unregister
from pytest_slm.history import database
from pytest_slm.history.compare import compare_runs

LENGTH_KIND = """
from dataclasses import dataclass
from typing import ClassVar

import pytest

from pytest_slm.checks import Kind, core, register
from pytest_slm.checks.columns import ITEM, VERDICT, Column, select
from pytest_slm.checks.kind import Figure, Judged
from pytest_slm.plugin import SESSION

LIMIT = 40  # characters an answer may have


@dataclass(frozen=True)
class LengthRow:
    SECTION: ClassVar[str] = "length"
    item: str
    characters: int
    verdict: str


class LengthKind(Kind):
    row = LengthRow
    title = "Length"

    def table(self, rows, full=True):
        return select([ITEM, Column("characters", lambda row: str(row["characters"])), VERDICT], rows, full)

    def figures(self, row):
        return [Figure("characters", row["characters"], "chars")]

    def compare(self, now, before, runs):
        grew = now.value - before.value
        return Judged(before.value, now.value, f"{grew:+g} chars", "FAIL" if grew > 10 else "pass")


@dataclass
class LengthCheck(core.Check):
    item: str
    answer: str
    kind: str = "length"
    key: None = None  # judged against its limit only: no baseline
    baseline_of: str = ""

    def identity(self):
        return {}

    def validate(self, record):
        core.require(record, "characters", int)

    def measure(self):
        return len(self.answer)

    def record(self, measured):
        return {"characters": measured}

    def judge(self, measured, baseline):
        failure = f"{self.item}: {measured} characters, over {LIMIT}" if measured > LIMIT else None
        return core.Verdict([LengthRow(self.item, measured, "FAIL" if failure else "pass")], failure)


KIND = register(LengthKind())


@pytest.fixture
def slm_length(request):
    context = request.config.stash[SESSION].check_context(request.node, dict)
    return lambda answer: core.run(LengthCheck(request.node.name, answer), context)
"""

ANSWER = """
import pytest

pytestmark = pytest.mark.slm


def test_answer(slm_length):
    slm_length({answer!r})
"""


def run(pytester: pytest.Pytester, answer: str) -> pytest.RunResult:
    pytester.makepyfile(test_answer=ANSWER.format(answer=answer))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--slm-report=report", "--slm-history=runs.sqlite")


def test_a_kind_registered_by_a_conftest_is_reported_kept_and_compared(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(length_kind=LENGTH_KIND)
    pytester.makeconftest("from length_kind import KIND, slm_length")
    first = run(pytester, "Paris")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["item*characters*verdict", "test_answer*5*pass"])
    results: dict[str, Any] = json.loads((pytester.path / "report" / "results.json").read_text())
    assert results["length"] == [{"item": "test_answer", "characters": 5, "verdict": "pass"}]
    assert "<h2>Length</h2>" in (pytester.path / "report" / "report.html").read_text()

    run(pytester, "Paris, on the Seine, since the 3rd century").assert_outcomes(failed=1)
    with database.connect(pytester.path / "runs.sqlite", write=False) as db:
        before, after = (database.read_run(db, run["run_id"]) for run in database.runs(db))
    assert [(m.section, m.item, m.metric, m.value, m.unit) for m in before.measures] == [
        ("length", "test_answer", "characters", 5, "chars")
    ]
    pytester.syspathinsert()
    kind = importlib.import_module("length_kind")  # registered in this process too, as the conftest does
    try:
        [comparison] = compare_runs(before, after)
    finally:
        unregister(kind.KIND)
        del sys.modules["length_kind"]
    assert (comparison.section, comparison.before, comparison.after) == ("length", 5, 42)
    assert (comparison.change, comparison.verdict) == ("+37 chars", "FAIL")
