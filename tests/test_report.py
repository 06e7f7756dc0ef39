"""The summary table, the report files CI keeps, and the checks that a report can be written."""

import json
import os
import sys
from pathlib import Path

import pytest

from pytest_slm import report

ROWS = [
    dict(item="m-llamacpp-cpu-native-b:5", model="m", device="llamacpp-cpu", quant="native", task="b:5", accuracy=0.5, baseline=0.75, delta_points=-25.0, regressed=10,
         improved=0, p_value=0.000977, verdict="FAIL"),
    dict(item="m-llamacpp-cpu-native-a:0", model="m", device="llamacpp-cpu", quant="native", task="a:0", accuracy=0.6, baseline=None, delta_points=None, regressed=None,
         improved=None, p_value=None, verdict="updated"),
]
WRITES = [{"path": "baselines/m/a-0shot.json", "changed": True}, {"path": "baselines/m/b-5shot.json", "changed": False}]


def test_summary_table_sorts_items_and_dashes_what_was_not_compared():
    lines = report.table("items", ROWS).splitlines()
    assert lines[0].split() == ["item", "accuracy", "baseline", "delta", "flips", "-/+", "p", "verdict"]
    assert lines[2].split() == ["m-llamacpp-cpu-native-a:0", "0.600", "-", "-", "-", "-", "updated"]
    assert lines[3].split() == ["m-llamacpp-cpu-native-b:5", "0.500", "0.750", "-25.0", "pt", "10/0", "0.000977", "FAIL"]


def test_report_writes_json_markdown_and_appends_the_github_step_summary(tmp_path, monkeypatch):
    step_summary = tmp_path / "step.md"
    step_summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    results, summary, page = report.write_report(tmp_path / "out", {"items": ROWS, "baseline_writes": WRITES})

    data = json.loads(results.read_text())
    assert [row["item"] for row in data["items"]] == ["m-llamacpp-cpu-native-a:0", "m-llamacpp-cpu-native-b:5"]
    assert data["baseline_writes"] == WRITES
    markdown = summary.read_text()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines() if "|" in line]
    assert cells[-1] == ["m-llamacpp-cpu-native-b:5", "0.500", "0.750", "-25.0 pt", "10/0", "0.000977", "FAIL"]
    assert "- baselines: 1 changed, 1 unchanged" in markdown
    assert step_summary.read_text() == "earlier step\n" + markdown
    assert "m-llamacpp-cpu-native-b:5" in page.read_text()
    mask = os.umask(0o022)
    os.umask(mask)
    assert {path.stat().st_mode & 0o777 for path in (results, summary, page)} == {0o666 & ~mask}  # as `open` makes them


RUNTIME_ROW = dict(item="m-llamacpp-cpu-native", model="m", device="llamacpp-cpu", quant="native", metric="decode",
                   unit="tok/s", median=80.0, min=82.0, spread=0.02, baseline=100.0, change_pct=25.0, limit_pct=10.0,
                   rounds=2, load=1.5, verdict="FAIL", competition=0.05, joules_per_token=0.15, watts=12.0)
MEMORY_ROW = dict(item="m-llamacpp-cpu-native", model="m", device="llamacpp-cpu", quant="native", weights_bytes=2**27,
                  kv_bytes_per_token=1024, peak_rss_bytes=None, verdict="pass",
                  kv_cache=[{"context": 512, "kv_bytes": 2**19, "total_bytes": 2**27 + 2**19, "share": 0.0039}])


def test_runtime_and_memory_tables_show_both_rounds_and_the_kv_share():
    [runtime] = report.table("runtime", [RUNTIME_ROW]).splitlines()[2:]
    assert runtime.split() == ["m-llamacpp-cpu-native", "decode", "80", "tok/s", "±2.0%", "100", "25.0%", "slower",
                               "10.0%", "(2", "rounds)", "1.50", "5%", "150", "mJ/tok,", "12", "W", "FAIL"]
    [unmetered] = report.table("runtime", [{**RUNTIME_ROW, "watts": None, "energy_note": "no RAPL: /sys/class/powercap absent"}]).splitlines()[2:]
    assert unmetered.split()[-6:] == ["5%", "no", "RAPL:", "/sys/class/powercap", "absent", "FAIL"]
    [memory] = report.table("memory", [MEMORY_ROW]).splitlines()[2:]
    assert memory.split() == ["m-llamacpp-cpu-native", "128.0", "MiB", "1024", "B", "0.5", "MiB", "(0%)", "-", "pass"]


def test_junit_properties_name_each_figure_by_its_metric():
    assert ("decode.median", 80.0) in report.junit_properties(RUNTIME_ROW)
    assert ("decode.verdict", "FAIL") in report.junit_properties(RUNTIME_ROW)
    memory = dict(report.junit_properties(MEMORY_ROW))
    assert memory["kv_bytes@512"] == 2**19 and "peak_rss_bytes" not in memory and "model" not in memory


def _tree(root):
    """Every path under root with its size and mtime: what a check that changes nothing leaves as it was."""
    return {(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in root.rglob("*")}


def test_a_report_directory_to_be_made_and_a_step_summary_to_append_to_are_fine_and_left_untouched(tmp_path):
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "step.md").write_text("earlier step\n")
    before = _tree(tmp_path)
    assert report.output_problem(tmp_path / "out" / "report", str(tmp_path / "ci" / "step.md")) is None
    assert report.output_problem(tmp_path, str(tmp_path / "ci" / "new.md")) is None  # GitHub may not have made it yet
    assert report.output_problem(None, str(tmp_path)) is None  # the step summary is written only beside a report
    assert _tree(tmp_path) == before


def test_a_report_directory_that_is_a_file_or_under_one_is_named(tmp_path):
    (tmp_path / "taken").write_text("")
    assert report.output_problem(tmp_path / "taken", None) == f"--slm-report: {tmp_path / 'taken'} is a file, not a directory"
    assert report.output_problem(tmp_path / "taken" / "out", None) == (
        f"--slm-report: {tmp_path / 'taken'} is a file, not a directory (to hold {tmp_path / 'taken' / 'out'})"
    )
    (tmp_path / "out" / "report.html").mkdir(parents=True)
    assert report.output_problem(tmp_path / "out", None) == (
        f"--slm-report: {tmp_path / 'out' / 'report.html'} is a directory, not a file"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/sys is Linux's")
def test_a_directory_even_root_cannot_write_in_is_found_by_writing_not_by_permission_bits():
    problem = report.output_problem(Path("/sys/pytest-slm-report"), None)
    assert problem is not None and problem.startswith("--slm-report: /sys is not writable: ")
    problem = report.output_problem(Path("/tmp"), "/sys/pytest-slm-summary.md")
    assert problem is not None and problem.startswith("$GITHUB_STEP_SUMMARY /sys/pytest-slm-summary.md cannot be created: ")


def test_a_step_summary_that_is_a_directory_or_under_a_file_or_nowhere_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    assert report.output_problem(tmp_path, str(tmp_path)) == f"$GITHUB_STEP_SUMMARY {tmp_path} is a directory"
    assert report.output_problem(tmp_path, str(tmp_path / "file" / "step.md")) == (
        f"$GITHUB_STEP_SUMMARY {tmp_path / 'file' / 'step.md'}: Not a directory"
    )
    assert report.output_problem(tmp_path, str(tmp_path / "gone" / "step.md")) == (
        f"$GITHUB_STEP_SUMMARY {tmp_path / 'gone' / 'step.md'}: no such directory {tmp_path / 'gone'}"
    )


def test_writes_that_fail_at_the_end_raise_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    (tmp_path / "taken").write_text("")
    with pytest.raises(report.ReportError) as failure:
        report.write_report(tmp_path / "taken", {"items": ROWS})
    assert str(failure.value).startswith(f"--slm-report: cannot create directory {tmp_path / 'taken'}: ")
    (tmp_path / "out" / "summary.md").mkdir(parents=True)
    with pytest.raises(report.ReportError, match=f"^--slm-report: cannot write {tmp_path / 'out' / 'summary.md'}: "):
        report.write_report(tmp_path / "out", {"items": ROWS})

    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))
    with pytest.raises(report.ReportError) as failure:
        report.write_report(tmp_path / "fine", {"items": ROWS})
    assert str(failure.value) == f"$GITHUB_STEP_SUMMARY {tmp_path}: cannot append: Is a directory"
    assert sorted(path.name for path in (tmp_path / "fine").iterdir()) == ["report.html", "results.json", "summary.md"]
