"""A runtime upgrade as a user meets it: baselines written under one llama-cpp-python, the suite run
under another (the installed build reporting another version: benchmarks/reported_version.py; a
real second release is compiled by benchmarks/two_releases.py). Every runtime item compares with the
old release's baselines, and a real slowdown fails naming the version change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree

import pytest
from projects import LOAD_TIME, WHOLE, benchmark_plugin, shipped_project

pytestmark = [pytest.mark.slow, pytest.mark.timed, pytest.mark.usefixtures("keep_loaded")]  # see conftest.py

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """The shipped runtime and load-time suites, one thread (steady on two shared cores), short
    measurements, a 25% tolerance and no noise ceiling (short runs are noisy): what matters here is
    that the items compare across releases, and that a slowdown to a quarter of the speed fails; the calibration is
    benchmarks/latency_calibration.py's."""
    project = shipped_project(
        pytester,
        ("test_runtime.py",),
        """
        slm_devices = ["llamacpp-cpu"]
        slm_threads = "1"
        slm_eval_text = "eval.txt"
        slm_prefill_lengths = ["32"]
        slm_decode_prompt = "32"
        slm_decode_tokens = "16"
        slm_repeats = "5"
        slm_latency_tolerance = ["0.25"]
        slm_noise_ceiling = "10"
        slm_history = "off"
        """,
        eval_chars=WHOLE,
    )
    shutil.copy(ROOT / "suites" / "test_load_time.py", project.path / LOAD_TIME)
    return project


def test_an_upgrade_is_compared_across_and_a_slowdown_names_it(project, monkeypatch):
    """Also what the runtime items write and show, on the runs this test makes anyway: each kind's
    record under this machine's fingerprint, the JUnit properties and the full tables."""
    project.runpytest_inprocess("--update-baselines").assert_outcomes(passed=4)  # with its load-time item
    paths = list((project.path / "baselines").rglob("*.json"))
    records = {p.name: json.loads(p.read_text()) for p in paths}
    assert sorted(records) == ["decode.json", "load.json", "memory.json", "prefill.json"]
    [fingerprint_dir] = {p.parent.name for p in paths}
    decode, memory = records["decode.json"], records["memory.json"]
    assert "-1t-" in fingerprint_dir and decode["fingerprint"]["threads"] == 1
    installed = decode["provenance"]["llama_cpp_python"]
    assert (
        decode["provenance"]["runtime_build"] == f"llama-cpp-python {installed}"
        and "runtime" not in decode["fingerprint"]
    )
    assert len(decode["metrics"]["decode"]["seconds"]) == 5 and decode["metrics"]["decode"]["tokens"] == 16
    assert decode["probe_seconds"] > 0  # the speed probe beside the timings: the machine's own speed then
    assert memory["kv_bytes_per_token"] == 2 * 30 * 3 * 64 * 2  # layers x KV heads x head size, K and V in F16

    monkeypatch.setenv("PYTEST_SLM_REPORTED_VERSION", "99.0.0")
    reported_version = benchmark_plugin("reported_version")
    # 300% here: this run proves the items compare across the upgrade, not timing; on a shared machine
    # fresh clones' runs found an unchanged ttft 27-28% slower and a cold load 69-77% slower
    upgraded = project.runpytest_inprocess(
        "--slm-strict", "--slm-report=report", "--slm-latency-tolerance=3", "--junitxml=junit.xml", "-v",
        plugins=[reported_version],
    )  # fmt: skip
    upgraded.assert_outcomes(passed=4)  # strict: an item that compared nothing would fail
    changed = json.loads((project.path / "report" / "results.json").read_text())["changed"]
    assert f"llama-cpp-python {installed} → 99.0.0 (4 items)" in changed
    properties = {
        (case.get("name"), p.get("name")): p.get("value")
        for case in ElementTree.parse(project.path / "junit.xml").iter("testcase")
        for p in case.iter("property")
    }
    decode_item = "test_decode_speed[smollm2-135m-llamacpp-cpu-native]"
    assert float(properties[decode_item, "decode.median"]) > 1 and properties[decode_item, "decode.verdict"] == "pass"
    assert properties["test_memory[smollm2-135m-llamacpp-cpu-native]", "kv_bytes@2048"] == str(2048 * 23040)
    upgraded.stdout.fnmatch_lines(  # -v: the full tables
        [
            "*runtime item*metric*median*spread*baseline*change*limit*load*verdict*",
            "smollm2-135m-llamacpp-cpu-native*decode*tok/s*pass",
            "*memory item*weights*KV/token*KV @512*KV @2048*KV @8192*peak RSS*verdict*",
            "smollm2-135m-llamacpp-cpu-native*23040 B*pass",
        ]
    )

    # every llama_decode 4x as slow as well: at 50%, a fresh clone's CI run measured decode 35.5% slower
    # against a 37.6% limit widened by that busy round's spread, and failed only its ttft; at 2x, a probe
    # found 38% slower (seen in a make test of 8 Dec 2026) would scale decode under the limit it widens
    monkeypatch.setenv("PYTEST_SLM_SLOWDOWN", "3.0")
    slowed = project.runpytest_inprocess("-k", "decode", plugins=[reported_version, benchmark_plugin("slowed_runtime")])
    slowed.assert_outcomes(failed=1, deselected=3)
    slowed.stdout.fnmatch_lines(
        [
            "*smollm2-135m-llamacpp-cpu-native: slower than this machine's baseline (*1 threads*), in every round that judged it:",
            "*decode: * tok/s now vs * baseline; slower by +*%, +*% (rounds), limit *",
            f"*changed since the baseline: llama-cpp-python {installed} → 99.0.0; runtime build llama-cpp-python {installed} → llama-cpp-python 99.0.0",
            "*decode*slower*(2 rounds)*FAIL*",
        ]
    )
