"""Latency and memory items end to end: the real embedded model on the real llama.cpp, timed on
this machine, compared with a baseline of this machine's fingerprint; a real slowdown injected
into llama.cpp's decode call (benchmarks/slowed_runtime.py) is caught, or the item is busy, never
passed. What each kind's record holds, the full tables and a slowdown failing in both rounds are
checked on the runs of tests/test_upgrade_loop.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
from projects import LOAD_TIME, WHOLE, benchmark_plugin, shipped_project

pytestmark = [pytest.mark.slow, pytest.mark.timed, pytest.mark.usefixtures("keep_loaded")]  # see conftest.py

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """The shipped runtime suite, with shorter measurements than the defaults (5 repeats, not 9) to
    keep the test quick, and a 50% tolerance: this test proves the mechanics (a 2x slowdown fails in
    both rounds, an unchanged run passes), not the calibration, which
    benchmarks/latency_calibration.py measures."""
    return shipped_project(
        pytester,
        ("test_runtime.py",),
        """
        slm_devices = ["llamacpp-cpu"]
        slm_threads = "2"
        slm_eval_text = "eval.txt"
        slm_prefill_lengths = ["32"]
        slm_decode_prompt = "32"
        slm_decode_tokens = "16"
        slm_repeats = "5"
        slm_latency_tolerance = ["0.5"]
        slm_noise_ceiling = "10"
        """,
        eval_chars=WHOLE,
    )


def runtime_files(project: pytest.Pytester) -> dict[str, dict]:
    root = project.path / "baselines"
    return {p.relative_to(root).as_posix(): json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))}


def test_another_machine_skips_with_the_reason_and_xdist_workers_do_not_time(project):
    project.runpytest_inprocess("--update-baselines", "-k", "memory").assert_outcomes(passed=1, deselected=2)
    other = project.runpytest_inprocess("-k", "memory", "--slm-threads=1")  # another fingerprint
    assert other.parseoutcomes() == {"unjudged": 1, "deselected": 2}
    other.stdout.fnmatch_lines(
        [
            (
                "*no memory baseline for smollm2-135m-llamacpp-cpu-native on this machine (*, 1 threads, *)"
                " (*runtime/*-1t-*/memory.json); create it with: pytest '*' --update-baselines"
            )
        ]
    )
    parallel = project.runpytest_inprocess("-n", "2")
    assert parallel.parseoutcomes() == {"unjudged": 3}
    parallel.stdout.fnmatch_lines(
        ["*is measured alone: with 2 xdist workers the timings would include each other*-n 0*"]
    )


def test_depths_are_metrics_of_their_own_with_their_own_baseline(project):
    """--slm-depths (llama-bench's -d): prefill and decode also timed with 128 tokens of the text
    already in the cache, each (metric, depth) a figure of its own in the baseline; the memory item
    shows the cache at that depth (a run judged on fewer depths: tests/test_depths.py)."""
    depths = (
        "--slm-depths=0,128",
        "--slm-repeats=2",
        "--slm-threads=1",
        "--slm-decode-tokens=16",
        "--slm-prefill-lengths=64",
    )
    written = project.runpytest_inprocess("--update-baselines", *depths)
    written.assert_outcomes(passed=3)
    files = runtime_files(project)
    prefill, decode = (
        next(r for p, r in files.items() if p.endswith(f"{name}.json")) for name in ("prefill", "decode")
    )
    assert sorted(prefill["metrics"]) == ["prefill@64", "prefill@64@d128"]
    assert sorted(decode["metrics"]) == ["decode", "decode@d128", "ttft@32", "ttft@32@d128"]
    assert decode["metrics"]["decode@d128"]["tokens"] == 16 and len(decode["metrics"]["decode@d128"]["seconds"]) == 2

    again = project.runpytest_inprocess(*depths, "-v")
    again.assert_outcomes(passed=3)
    again.stdout.fnmatch_lines(
        [
            "smollm2-135m-llamacpp-cpu-native*decode@d128*tok/s*pass",
            "*memory item*weights*KV/token*KV @128*KV @512*",
            f"smollm2-135m-llamacpp-cpu-native*23040 B*{128 * 23040 / 2**20:.1f} MiB (*%)*pass",
        ]
    )


def test_a_cpu_bound_competitor_makes_the_item_busy_not_failed_and_a_slowdown_still_fails(project, monkeypatch):
    """One CPU-bound process beside the decode item (the issue's 322% "regression"): the gate sees
    others take over --slm-busy of our CPUs, waits --slm-busy-wait, and ends the item not judged
    (busy), counted in the summary line, exit status 0. With the competitor gone, the gate on, a 4x
    slower llama_decode still fails; or, if other sessions on this shared machine keep it busy, it is
    not judged, never passed. 4x, not 2x: these runs scale by the speed probe however far it moved
    (conftest.py), and a make test of 8 Dec 2026 saw it 38% slower than at the baseline, which took
    a 2x llama_decode (decode 74% slower) under the project's 50% tolerance."""
    project.runpytest_inprocess("--update-baselines", "-k", "decode").assert_outcomes(passed=1, deselected=2)
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = project.runpytest_inprocess("-k", "decode", "--slm-busy=0.15", "--slm-busy-wait=2")
    finally:
        competitor.kill()
        competitor.wait()
    assert busy.parseoutcomes() == {"unjudged": 1, "deselected": 2} and busy.ret == 0
    busy.stdout.fnmatch_lines(
        [
            (
                "NOT JUDGED (busy) *test_decode_speed[[]smollm2-135m-llamacpp-cpu-native[]]: smollm2-135m-llamacpp-cpu-native:"
                " other processes *% + steal *% of * CPU(s) over 1.0 s, load * after waiting * s, above --slm-busy=0.15; nothing measured"
            )
        ]
    )

    monkeypatch.setenv("PYTEST_SLM_SLOWDOWN", "3.0")
    slowed = project.runpytest_inprocess(
        "-k", "decode", "--slm-busy=0.15", "--slm-busy-wait=10", plugins=[benchmark_plugin("slowed_runtime")]
    )
    outcomes = slowed.parseoutcomes()
    assert outcomes in ({"failed": 1, "deselected": 2}, {"unjudged": 1, "deselected": 2}), outcomes
    if "unjudged" in outcomes:  # other processes, not ours: the message shows their share over the threshold
        slowed.stdout.fnmatch_lines(["NOT JUDGED (busy) *other processes *above --slm-busy=0.15*"])


def test_load_time_cold_warm_and_first_token_from_cold_against_this_machines_baseline(project):
    """suites/test_load_time.py: its own loads (the session's model is never loaded: no model load
    line), the file evicted before each cold start; where a process maps the file, eviction cannot
    work and the record and table say "page cache kept" and why, instead of calling it cold."""
    shutil.copy(ROOT / "suites" / "test_load_time.py", project.path / LOAD_TIME)
    project.runpytest_inprocess(LOAD_TIME, "--update-baselines", "--slm-repeats=2").assert_outcomes(passed=1)
    [(_path, record)] = [(p, r) for p, r in runtime_files(project).items() if p.endswith("/load.json")]
    assert sorted(record["metrics"]) == ["load.cold", "load.warm", "ttft.cold@32"]
    assert all(len(t["seconds"]) == 2 and t["tokens"] == 0 for t in record["metrics"].values())
    cold = zip(record["metrics"]["ttft.cold@32"]["seconds"], record["metrics"]["load.cold"]["seconds"])
    assert all(first_token > load for first_token, load in cold)  # the load, then the first token
    assert set(record["notes"]) <= {"load.cold", "ttft.cold@32"}
    assert all(note.startswith("page cache kept") for note in record["notes"].values())
    assert record["energy"] and record["machine"] is not None and record["competition"]["cpus"] >= 1
    assert record["probe_seconds"] is None  # a load reads the disk: the speed probe times the CPU

    # a 300% tolerance: this test proves the mechanics; a fresh clone's run measured an unchanged cold
    # load of this 92 MiB file 69% and 77% slower in its two rounds (0.255 s against 0.144 s)
    again = project.runpytest_inprocess(
        LOAD_TIME, "--slm-repeats=2", "--slm-latency-tolerance=3", "--junitxml=junit.xml"
    )
    again.stdout.fnmatch_lines(["smollm2-135m-llamacpp-cpu-native*load.warm*s*pass"])
    assert "model loads:" not in again.stdout.str()
    [note] = [
        p.get("value")
        for p in ElementTree.parse(project.path / "junit.xml").iter("property")
        if p.get("name") == "load.cold.note"
    ]
    if "the baseline's" in note:  # another process mapped the file in one run and not in the other
        assert again.parseoutcomes() == {"unjudged": 1}
        again.stdout.fnmatch_lines(["*load.cold: not judged (now *; the baseline's: *); the rest passed*"])
    else:
        again.assert_outcomes(passed=1)
