"""The summary table, the report files CI keeps, and the checks that a report can be written."""

import json
import os
import sys
from pathlib import Path

import pytest

from pytest_slm import report
from pytest_slm.report.outcomes import Outcome

ROWS = [
    {
        "item": "m-llamacpp-cpu-native-b:5",
        "model": "m",
        "device": "llamacpp-cpu",
        "quant": "native",
        "task": "b:5",
        "accuracy": 0.5,
        "baseline": 0.75,
        "delta_points": -25.0,
        "regressed": 10,
        "improved": 0,
        "p_value": 0.000977,
        "verdict": "FAIL",
    },
    {
        "item": "m-llamacpp-cpu-native-a:0",
        "model": "m",
        "device": "llamacpp-cpu",
        "quant": "native",
        "task": "a:0",
        "accuracy": 0.6,
        "baseline": None,
        "delta_points": None,
        "regressed": None,
        "improved": None,
        "p_value": None,
        "verdict": "updated",
    },
]
OUTCOMES = [
    Outcome("t.py::test[m-llamacpp-cpu-native-b:5]", "fail", message="acc regressed"),
    Outcome("t.py::test[m-llamacpp-cpu-native-a:0]", "pass"),
]
WRITES = [{"path": "baselines/m/a-0shot.json", "changed": True}, {"path": "baselines/m/b-5shot.json", "changed": False}]


def test_summary_table_sorts_items_and_dashes_what_was_not_compared():
    lines = report.table("items", ROWS).splitlines()
    assert lines[0].split() == ["item", "accuracy", "baseline", "delta", "flips", "-/+", "p", "detects", "verdict"]
    assert lines[2].split() == ["m-llamacpp-cpu-native-a:0", "0.600", "-", "-", "-", "-", "-", "updated"]
    assert lines[3].split() == [
        "m-llamacpp-cpu-native-b:5",
        "0.500",
        "0.750",
        "-25.0",
        "pt",
        "10/0",
        "0.000977",
        "-",
        "FAIL",
    ]


def test_report_writes_json_markdown_and_appends_the_github_step_summary(tmp_path, monkeypatch):
    step_summary = tmp_path / "step.md"
    step_summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    results, summary, page = report.write_report(tmp_path / "out", {"items": ROWS, "baseline_writes": WRITES}, OUTCOMES)

    data = json.loads(results.read_text())
    assert [row["item"] for row in data["items"]] == ["m-llamacpp-cpu-native-a:0", "m-llamacpp-cpu-native-b:5"]
    assert data["baseline_writes"] == WRITES
    markdown = summary.read_text()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines() if "|" in line]
    assert cells[-1] == ["m-llamacpp-cpu-native-b:5", "0.500", "0.750", "-25.0 pt", "10/0", "0.000977", "-", "FAIL"]
    assert "- baselines: 1 changed, 1 unchanged" in markdown
    assert step_summary.read_text() == "earlier step\n" + markdown
    assert "m-llamacpp-cpu-native-b:5" in page.read_text()
    mask = os.umask(0o022)
    os.umask(mask)
    assert {path.stat().st_mode & 0o777 for path in (results, summary, page)} == {0o666 & ~mask}  # as `open` makes them


RUNTIME_ROW = {
    "item": "m-llamacpp-cpu-native",
    "model": "m",
    "device": "llamacpp-cpu",
    "quant": "native",
    "metric": "decode",
    "unit": "tok/s",
    "median": 80.0,
    "min": 82.0,
    "spread": 0.02,
    "baseline": 100.0,
    "change_pct": 25.0,
    "limit_pct": 10.0,
    "rounds": 2,
    "load": 1.5,
    "verdict": "FAIL",
    "competition": 0.05,
    "joules_per_token": 0.15,
    "watts": 12.0,
    "host_change_pct": 4.0,
}
MEMORY_ROW = {
    "item": "m-llamacpp-cpu-native",
    "model": "m",
    "device": "llamacpp-cpu",
    "quant": "native",
    "weights_bytes": 2**27,
    "kv_bytes_per_token": 1024,
    "peak_rss_bytes": None,
    "verdict": "pass",
    "kv_cache": [{"context": 512, "kv_bytes": 2**19, "total_bytes": 2**27 + 2**19, "share": 0.0039}],
}


def test_full_runtime_and_memory_tables_show_both_rounds_the_probe_energy_and_the_kv_share():
    [runtime] = report.table("runtime", [RUNTIME_ROW], full=True).splitlines()[2:]
    assert runtime.split() == [
        "m-llamacpp-cpu-native",
        "decode",
        "80",
        "tok/s",
        "±2.0%",
        "100",
        "25.0%",
        "slower",
        "10.0%",
        "(2",
        "rounds)",
        "1.50",
        "5%",
        "4.0%",
        "slower",
        "150",
        "mJ/tok,",
        "12",
        "W",
        "FAIL",
    ]
    unmetered = {**RUNTIME_ROW, "watts": None, "energy_note": "no RAPL: /sys/class/powercap absent"}
    [unmetered] = report.table("runtime", [unmetered], full=True).splitlines()[2:]
    assert unmetered.split()[-8:] == ["5%", "4.0%", "slower", "no", "RAPL:", "/sys/class/powercap", "absent", "FAIL"]
    [memory] = report.table("memory", [MEMORY_ROW], full=True).splitlines()[2:]
    assert memory.split() == ["m-llamacpp-cpu-native", "128.0", "MiB", "1024", "B", "0.5", "MiB", "(0%)", "-", "pass"]


def test_brief_runtime_and_memory_tables_keep_what_the_verdict_is_read_from():
    noted = {**RUNTIME_ROW, "note": "others used 30% of our CPUs"}
    header, _, runtime = report.table("runtime", [noted]).splitlines()
    assert header.split() == ["runtime", "item", "metric", "median", "baseline", "change", "limit", "verdict"]
    assert runtime.split() == [
        "m-llamacpp-cpu-native",
        "decode",
        "80",
        "tok/s",
        "100",
        "25.0%",
        "slower",
        "10.0%",
        "(2",
        "rounds)",
        "FAIL",
    ]
    header, _, memory = report.table("memory", [MEMORY_ROW]).splitlines()
    assert header.split() == ["memory", "item", "weights", "KV/token", "verdict"]
    assert memory.split() == ["m-llamacpp-cpu-native", "128.0", "MiB", "1024", "B", "pass"]


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
    assert (
        report.output_problem(tmp_path / "taken", None)
        == f"--slm-report: {tmp_path / 'taken'} is a file, not a directory"
    )
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
    assert problem is not None and problem.startswith(
        "$GITHUB_STEP_SUMMARY /sys/pytest-slm-summary.md cannot be created: "
    )


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
        report.write_report(tmp_path / "taken", {"items": ROWS}, OUTCOMES)
    assert str(failure.value).startswith(f"--slm-report: cannot create directory {tmp_path / 'taken'}: ")
    (tmp_path / "out" / "summary.md").mkdir(parents=True)
    with pytest.raises(report.ReportError, match=f"^--slm-report: cannot write {tmp_path / 'out' / 'summary.md'}: "):
        report.write_report(tmp_path / "out", {"items": ROWS}, OUTCOMES)

    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))
    with pytest.raises(report.ReportError) as failure:
        report.write_report(tmp_path / "fine", {"items": ROWS}, OUTCOMES)
    assert str(failure.value) == f"$GITHUB_STEP_SUMMARY {tmp_path}: cannot append: Is a directory"
    assert sorted(path.name for path in (tmp_path / "fine").iterdir()) == ["report.html", "results.json", "summary.md"]


def _wide_results():
    """The HTML report's test rows, each kind at its widest: a long model id with a KV type, the
    relative gate on, fidelity judged against baselines at depths, a runtime row with a note, energy
    and a confirmation round, a memory row whose KV figure is measured."""
    from test_html_report import RESULTS

    long_item = "qwen2.5-coder-1.5b-instruct-llamacpp-cpu-q4_k_m-kv_q8_0"
    gated = dict(
        RESULTS["items"][0],
        item=f"{long_item}-slm_arith:5",
        reference_accuracy=0.75,
        ratio=0.8,
        ratio_low=0.72,
        ratio_high=0.877,
        gate=0.99,
        gate_verdict="FAIL",
        p_value=3.05e-05,
        detects_points=15.9,
        verdict="not written",
    )
    fidelity = [
        dict(
            row,
            item=f"{long_item}-fidelity" if n else row["item"],
            depth=depth,
            baseline_mean_kld=row["mean_kld"] / 1.3,
            baseline_tail_kld=row["p99_kld"] / 2,
            judged_tail="p99",
        )
        for n, row in enumerate(RESULTS["fidelity"])
        for depth in (0, 2048)
    ]
    runtime = dict(
        RESULTS["runtime"][0],
        item=long_item,
        metric="prefill@128@d2048",
        median=1234.5,
        baseline=1987.6,
        change_pct=-37.9,
        limit_pct=17.4,
        rounds=2,
        verdict="too noisy",
        competition=0.31,
        joules_per_token=0.15,
        watts=12.0,
        note="others used 31% of our CPUs; waited 30 s",
    )
    memory = dict(
        RESULTS["memory"][0],
        item=long_item,
        kv_note="the runtime's own figure: 2 layers share a cache",
        verdict="not written",
    )
    return {
        **RESULTS,
        "items": [*RESULTS["items"], gated],
        "fidelity": [*RESULTS["fidelity"], *fidelity],
        "runtime": [*RESULTS["runtime"], runtime],
        "memory": [*RESULTS["memory"], memory],
    }


def test_the_terminals_tables_fit_120_columns_and_the_rest_is_under_verbose():
    results = _wide_results()
    brief = report.all_tables(results, width=report.TERMINAL_WIDTH)
    full = report.all_tables(results, full=True)
    assert len(brief) == len(full) == 5
    for table in brief:
        too_wide = [line for line in table.splitlines() if len(line) > 120]
        assert not too_wide, "\n".join(too_wide)
    assert max(len(line) for table in full for line in table.splitlines()) > 200  # the parity and fidelity tables
    for moved in ("p99.9", "Δp mean / RMS", "ppl ratio", "spread", "energy", "KV @8192", "peak RSS", "ratio (95% CI)"):
        assert not any(moved in table for table in brief) and any(moved in table for table in full), moved
    for kept in (
        "flips -/+",
        "detects",
        "gate",
        "baseline mean / tail",
        "change",
        "limit",
        "top-1 agree",
        "task outcomes",
    ):
        assert any(kept in table.splitlines()[0] for table in brief), kept


def test_a_long_item_id_keeps_its_start_and_end_and_only_where_the_line_is_too_wide():
    results = _wide_results()
    runtime = report.table("runtime", results["runtime"], width=report.TERMINAL_WIDTH)
    [row] = [line for line in runtime.splitlines() if "prefill@128@d2048" in line]
    assert row.split()[0] == "qwen2.5-…-cpu-q4_k_m-kv_q8_0"
    assert "smollm2-…-mlx-cpu-native-latency  decode" in runtime  # the others, to the same width
    assert "…" not in report.table("runtime", results["runtime"])  # no width, no cut
    assert report.shorten("m-llamacpp-cpu-q4_k_m-slm_facts:0", 33) == "m-llamacpp-cpu-q4_k_m-slm_facts:0"
    assert report.shorten("m-llamacpp-cpu-q4_k_m-slm_facts:0", 24) == "m-…-q4_k_m-slm_facts:0"
    assert report.shorten("abcdefghijklmnopqrstuvwxyz", 10) == "abc…uvwxyz"  # one word: cut in its middle
