"""The roll-up of every item's outcome: counted from pytest's own reports on the controller (xdist's
workers' included), printed first in the summary with each not-judged item's reason, and the same
counts in results.json, summary.md and report.html."""

from __future__ import annotations

import json

import pytest

from pytest_slm import report
from pytest_slm.checks.core import STRICT_SUFFIX
from pytest_slm.report.outcomes import Outcome, Outcomes, as_json, colour, rollup

ITEMS = """
import pytest

from pytest_slm.checks.core import not_judged

pytestmark = pytest.mark.slm


def test_passes():
    pass


def test_fails():
    assert 1 == 2, "m-llamacpp-cpu-native: acc regressed"


def test_no_baseline():
    not_judged("no baseline", "m: no accuracy baseline; create it with: pytest 'x' --update-baselines", strict=False)


def test_busy():
    not_judged("busy", "m: others used 30% of our CPUs", strict=False)


def test_strict_no_baseline():
    not_judged("no baseline", "m: no latency baseline for this machine", strict=True)


@pytest.mark.skip(reason="mlx-cpu unavailable: not macOS")
def test_on_a_missing_device():
    pass


@pytest.mark.xfail(reason="known")
def test_expected_to_fail():
    assert False


@pytest.fixture
def broken():
    raise RuntimeError("no model file")


def test_errors(broken):
    pass
"""
NOT_SLM = """
def test_a_projects_own_unit_test():
    pass
"""
ROLLUP = (
    "8 items: 1 pass, 2 fail (1 not judged, strict: 1 no baseline: create with pytest test_items.py --update-baselines),"
    " 2 not judged (1 no baseline: create with pytest test_items.py --update-baselines; 1 busy),"
    " 1 skipped (not run here), 1 xfail, 1 error"
)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_items=ITEMS, test_unit=NOT_SLM)
    return pytester


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_summary_opens_with_every_items_outcome_and_each_reason(project, workers):
    result = project.runpytest_subprocess("-p", "no:cacheprovider", *workers)
    result.assert_outcomes(passed=2, failed=2, errors=1, skipped=1, xfailed=1)  # the two not judged: their own word
    lines = result.stdout.lines
    start = next(index for index, line in enumerate(lines) if "pytest-slm summary" in line)
    assert lines[start + 1] == ROLLUP  # the unit test, not pytest-slm's, is pytest's closing line's alone
    assert lines[start + 2 : start + 5] == [
        "NOT JUDGED (busy) test_items.py::test_busy: m: others used 30% of our CPUs",
        "NOT JUDGED (no baseline) test_items.py::test_no_baseline: m: no accuracy baseline; create it with: pytest 'x' --update-baselines",
        "FAILED, NOT JUDGED (no baseline) test_items.py::test_strict_no_baseline: m: no latency baseline for this machine",
    ]


def test_without_pytest_slm_items_there_is_no_summary(pytester):
    pytester.makepyfile(test_unit=NOT_SLM)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "pytest-slm summary" not in result.stdout.str()


def _report(nodeid, outcome, when="call", longrepr=None, **extra):
    found = pytest.TestReport(nodeid, ("t.py", 0, nodeid), {"slm": 1}, outcome, longrepr, when)
    for name, value in extra.items():
        setattr(found, name, value)
    return found


def _skip(message):
    return ("t.py", 1, f"Skipped: {message}")


def test_each_phase_gives_the_items_outcome_a_teardown_error_after_a_pass_included():
    outcomes = Outcomes()
    for found in (
        _report("t.py::a", "passed", "setup"),
        _report("t.py::a", "passed"),
        _report("t.py::a", "passed", "teardown"),
        _report("t.py::b", "passed"),
        _report("t.py::b", "failed", "teardown", "RuntimeError: cleanup"),
        _report("t.py::c", "failed", longrepr="Failed: c: acc regressed\nflips: ..."),
        _report("t.py::c", "failed", "teardown", "x"),
        _report("t.py::d", "skipped", "setup", _skip("llamacpp-metal unavailable: no Metal")),
        _report("t.py::e", "skipped", longrepr=_skip("not judged (too noisy): e: decode's limit 25% > 20%")),
        _report("t.py::f", "failed", longrepr=f"not judged (unlike conditions): f: page cache kept{STRICT_SUFFIX}"),
        _report("t.py::g", "skipped", longrepr=_skip("reason"), wasxfail="known"),
        _report("t.py::h", "passed", wasxfail="known"),
    ):
        outcomes.add(found)
    outcomes.add(pytest.TestReport("t.py::unit", ("t.py", 0, "unit"), {}, "passed", None, "call"))  # not pytest-slm's
    assert outcomes.items() == [
        Outcome("t.py::a", "pass"),
        Outcome("t.py::b", "error", message="RuntimeError: cleanup"),
        Outcome("t.py::c", "fail", message="c: acc regressed"),
        Outcome("t.py::d", "skipped", message="llamacpp-metal unavailable: no Metal"),
        Outcome("t.py::e", "not judged", "too noisy", "e: decode's limit 25% > 20%"),
        Outcome("t.py::f", "fail", "unlike conditions", "f: page cache kept"),
        Outcome("t.py::g", "xfail", message="known"),
        Outcome("t.py::h", "xpass"),
    ]


def test_the_roll_up_counts_pass_and_fail_always_and_the_rest_when_there_are_some():
    assert rollup([]) == "0 items: 0 pass, 0 fail"
    assert rollup([Outcome("a.py::t", "pass")]) == "1 item: 1 pass, 0 fail"
    many = [Outcome(f"suites/test_{n}.py::t", "not judged", "no baseline", "") for n in "abcd"]
    assert (
        rollup(many)
        == "4 items: 0 pass, 0 fail, 4 not judged (4 no baseline: create with pytest suites --update-baselines)"
    )
    later = [Outcome("a.py::t", "known failure"), Outcome("a.py::u", "fixed"), Outcome("a.py::v", "pass")]
    assert rollup(later) == "3 items: 1 pass, 0 fail, 1 known failure, 1 fixed"


def test_green_only_where_every_item_was_judged():
    judged, unjudged = Outcome("a::t", "pass"), Outcome("a::u", "not judged", "busy")
    assert [colour([judged]), colour([judged, unjudged]), colour([]), colour([judged, Outcome("a::v", "error")])] == [
        "green",
        "yellow",
        "yellow",
        "red",
    ]


OUTCOMES = [
    Outcome("suites/test_accuracy.py::test_task_accuracy[m-a:0]", "pass"),
    Outcome("suites/test_accuracy.py::test_task_accuracy[m-b:5]", "fail", message="m-b:5: acc regressed"),
    Outcome("suites/test_runtime.py::test_decode_speed[m]", "not judged", "unlike conditions", "m: page cache kept"),
    Outcome(
        "suites/test_accuracy.py::test_task_accuracy[m-c:0]", "not judged", "no baseline", "m-c:0: no accuracy baseline"
    ),
    Outcome("suites/test_parity.py::test_backend_parity[m]", "skipped", message="mlx-cpu unavailable: not macOS"),
]


def test_results_json_summary_md_and_report_html_count_what_the_terminal_counts(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    line = rollup(OUTCOMES)
    assert line == (
        "5 items: 1 pass, 1 fail, 2 not judged (1 no baseline: create with pytest suites/test_accuracy.py"
        " --update-baselines; 1 unlike conditions), 1 skipped (not run here)"
    )
    changed = ["llama-cpp-python 0.3.36 → 0.3.40 (3 items)"]
    results, summary, page = report.write_report(tmp_path, {"items": [], "changed": changed}, OUTCOMES)

    data = json.loads(results.read_text())
    assert data["outcomes"] == as_json(OUTCOMES)
    assert data["outcomes"]["counts"] == {"pass": 1, "fail": 1, "not judged": 2, "skipped": 1}
    assert data["outcomes"]["reasons"] == {"not judged": {"no baseline": 1, "unlike conditions": 1}}
    assert data["outcomes"]["line"] == line and data["changed"] == changed
    assert {
        "nodeid": OUTCOMES[2].nodeid,
        "outcome": "not judged",
        "reason": "unlike conditions",
        "message": "m: page cache kept",
    } in data["outcomes"]["items"]

    markdown = summary.read_text()
    assert (
        f"**{line}**" in markdown
        and "changed since the baselines: llama-cpp-python 0.3.36 → 0.3.40 (3 items)" in markdown
    )
    assert "- `suites/test_runtime.py::test_decode_speed[m]` (unlike conditions): m: page cache kept" in markdown

    html = page.read_text()
    import re

    shown = re.sub(r"<[^>]+>", "", re.search(r'<p class="counts">(.*?)</p>', html).group(1))
    assert shown == line
    lead = (
        html.index('<section id="changed"'),
        html.index('<section id="failed"'),
        html.index('<section id="not-judged"'),
    )
    assert list(lead) == sorted(lead)
    assert "<li><code>suites/test_accuracy.py::test_task_accuracy[m-b:5]</code>: m-b:5: acc regressed</li>" in html
    assert (
        "<li><code>suites/test_runtime.py::test_decode_speed[m]</code> (unlike conditions): m: page cache kept</li>"
        in html
    )


def test_known_failures_and_fixes_are_listed_with_their_messages_in_every_report():
    outcomes = [
        Outcome(
            "a.py::t[m]", "known failure", message="assert 'Paris' in 'La femme' (failing since the baseline of d)"
        ),
        Outcome("a.py::u[m]", "fixed", message="failed at the baseline of d (x), passes now"),
    ]
    assert report.lead(outcomes, []) == [
        "KNOWN FAILURE a.py::t[m]: assert 'Paris' in 'La femme' (failing since the baseline of d)",
        "FIXED a.py::u[m]: failed at the baseline of d (x), passes now",
    ]
    markdown = report.markdown({}, outcomes)
    assert "Known failures and fixes:\n\n- `a.py::t[m]` (known failure): assert 'Paris'" in markdown
    page = report.html.render({}, outcomes)
    assert '<section id="known" class="lead">' in page
    assert "<code>a.py::u[m]</code> (fixed): failed at the baseline of d (x), passes now" in page
