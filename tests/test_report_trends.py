"""report.html's trend plots, from a history store filled through the store's own API: a panel per
series of the run's items, the step `history` finds marked at its run. The real plugin drawing them
after four real runs is checked in test_history_runs.py."""

from __future__ import annotations

import re

import pytest
from records import make_run

from pytest_slm import report
from pytest_slm.history import database

ACCURACY_ITEM, RUNTIME_ITEM = "m-llamacpp-cpu-native-slm_facts:0", "m-llamacpp-cpu-native"
RESULTS = {
    "items": [
        {
            "item": ACCURACY_ITEM,
            "model": "m",
            "device": "llamacpp-cpu",
            "quant": "native",
            "task": "slm_facts",
            "accuracy": 0.25,
            "baseline": 0.5,
            "delta_points": -25.0,
            "regressed": 10,
            "improved": 0,
            "p_value": 0.002,
            "verdict": "FAIL",
        }
    ],
    "runtime": [
        {
            "item": RUNTIME_ITEM,
            "model": "m",
            "device": "llamacpp-cpu",
            "quant": "native",
            "metric": "decode",
            "unit": "tok/s",
            "median": 75.0,
            "min": 76.0,
            "spread": 0.01,
            "baseline": 100.0,
            "change_pct": 33.0,
            "limit_pct": 10.0,
            "rounds": 1,
            "load": 0.4,
            "verdict": "FAIL",
        }
    ],
}


@pytest.fixture(autouse=True)
def _matplotlib():
    pytest.importorskip("matplotlib", reason="the plots need matplotlib: pip install 'pytest-slm[report]'")


@pytest.fixture
def history(tmp_path):
    """Six runs: decode 25% slower from run 4, accuracy down from run 5 (10 of its 20 right answers lost)."""
    path = tmp_path / "history.sqlite"
    right = {f"{i:02d}": int(i % 2 == 0) for i in range(40)}
    for index, decode in enumerate((100.0, 101.0, 99.0, 75.0, 76.0, 74.0)):
        outcomes = {**right, **{f"{i:02d}": 0 for i in range(0, 20, 2)}} if index >= 4 else right
        database.append(path, make_run(f"2026-01-0{index + 1}", decode=decode, accuracy=outcomes))
    return path


def panel(page: str, series: str) -> str:
    found = re.search(rf'<div class="trend" data-series="{re.escape(series)}">(.*?)</div>', page, re.DOTALL)
    assert found, f"no trend panel for {series!r}"
    return found.group(1)


def test_each_series_has_a_panel_with_its_step_marked_at_its_run(tmp_path, history):
    report.write_report(tmp_path / "report", RESULTS, [], history)
    page = (tmp_path / "report" / "report.html").read_text()
    assert '<figure id="trends">' in page and "2 series of this run's items" in page
    decode = panel(page, f"runtime {RUNTIME_ITEM} decode linux-2t-x")
    assert decode.startswith("<svg")
    assert re.findall(r'id="(step-at-run-\d+)"', decode) == ["step-at-run-4"]
    assert "step at run 4: -25.0%" in decode
    accuracy = panel(page, f"items {ACCURACY_ITEM} accuracy")
    assert re.findall(r'id="(step-at-run-\d+)"', accuracy) == ["step-at-run-5"]
    assert "step at run 5: -25.0 pt (p=0.002)" in accuracy


def test_a_steady_series_is_drawn_only_when_this_run_did_not_pass_it(tmp_path):
    path = tmp_path / "history.sqlite"
    for index, decode in enumerate((100.0, 101.0, 99.0, 100.5)):
        database.append(path, make_run(f"2026-01-0{index + 1}", decode=decode))
    report.write_report(tmp_path / "failed", RESULTS, [], path)
    decode = panel((tmp_path / "failed" / "report.html").read_text(), f"runtime {RUNTIME_ITEM} decode linux-2t-x")
    assert "<svg" in decode and "step-at-run" not in decode and "step at run" not in decode

    passed = {section: [dict(row, verdict="pass") for row in rows] for section, rows in RESULTS.items()}
    report.write_report(tmp_path / "passed", passed, [], path)
    page = (tmp_path / "passed" / "report.html").read_text()
    assert '<div class="trend"' not in page and "<svg" not in page.split('id="trends"')[1].split("</figure>")[0]
    assert (
        "2 series of this run's items" in page
        and "0 moved (a step, or a verdict other than pass) and are drawn, 2 steady" in page
    )
    [row] = re.findall(rf'<tr data-series="runtime {RUNTIME_ITEM} decode linux-2t-x">(.*?)</tr>', page)
    assert re.findall(r"<td>([^<]*)</td>", row) == [
        RUNTIME_ITEM,
        "decode",
        "linux-2t-x",
        "4",
        "99 – 101",
        "100.5 tok/s",
    ]


def test_a_series_that_stepped_is_drawn_though_this_run_passed_it(tmp_path, history):
    passed = {section: [dict(row, verdict="pass") for row in rows] for section, rows in RESULTS.items()}
    report.write_report(tmp_path / "report", passed, [], history)
    page = (tmp_path / "report" / "report.html").read_text()
    assert re.findall(r'id="(step-at-run-\d+)"', panel(page, f"runtime {RUNTIME_ITEM} decode linux-2t-x")) == [
        "step-at-run-4"
    ]
    assert 'class="steady"' not in page


def test_no_trends_without_a_store_or_for_other_items_or_a_single_run(tmp_path, history):
    report.write_report(tmp_path / "none", RESULTS, [], tmp_path / "absent.sqlite")
    report.write_report(tmp_path / "off", RESULTS, [])
    other = {"runtime": [dict(RESULTS["runtime"][0], item="other-llamacpp-cpu-native")]}
    report.write_report(tmp_path / "other", other, [], history)
    single = tmp_path / "single.sqlite"
    database.append(single, make_run("2026-01-01"))
    report.write_report(tmp_path / "single", RESULTS, [], single)
    for name in ("none", "off", "other", "single"):
        assert 'id="trends"' not in (tmp_path / name / "report.html").read_text(), name


def test_an_unreadable_store_is_one_line_on_the_page(tmp_path):
    broken = tmp_path / "broken.sqlite"
    broken.write_text("not a database")
    report.write_report(tmp_path / "report", RESULTS, [], broken)
    page = (tmp_path / "report" / "report.html").read_text()
    [line] = re.findall(r'<p class="no-charts">trend plots: [^<\n]*</p>', page)
    assert "is not a pytest-slm SQLite store" in line
    assert 'id="trends"' not in page and "<h2>Runtime</h2>" in page  # the rest of the page is there
