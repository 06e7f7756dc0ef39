"""Every item kind through the one core check, as a team lives with it: no baseline fails (strict) ->
update -> a baseline that says the build was better fails -> update -> pass. The real
embedded model on the real llama.cpp, real lm-eval tasks, in pytester."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from projects import shipped_project

pytestmark = [pytest.mark.slow, pytest.mark.timed, pytest.mark.usefixtures("keep_loaded")]  # see conftest.py

NATIVE = Path("baselines/smollm2-135m/llamacpp-cpu/native")
SUITE = ("test_accuracy.py", "test_fidelity.py", "test_runtime.py")  # the shipped suite
ITEMS = 5


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    return shipped_project(
        pytester,
        SUITE,
        f"""
        slm_devices = ["llamacpp-cpu"]
        slm_tasks = ["slm_facts"]
        slm_limit = "20"
        slm_threads = "2"
        slm_cache = "{tmp_path_factory.mktemp("cache")}"
        slm_eval_text = "eval.txt"
        slm_eval_window = "128"
        slm_prefill_lengths = ["32"]
        slm_decode_prompt = "32"
        slm_decode_tokens = "16"
        slm_repeats = "3"
        slm_latency_tolerance = ["0.5"]
        slm_noise_ceiling = "10"
        slm_detect_drop = "35"
        """,
        tasks=True,
        eval_chars=1500,
    )


def edit(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text())), indent=2))


def better_than_measured(project: pytest.Pytester) -> None:
    """Each kind's baseline rewritten as a valid record of a better build than this one."""
    native = project.path / NATIVE
    [machine] = (native / "runtime").iterdir()

    def all_right(record):  # the baseline claims every question right: each wrong answer now is a flip
        outcomes = {doc: 1 for doc in record["outcomes"]}
        return {**record, "outcomes": outcomes, "accuracy": 1.0}

    def three_times_faster(record):
        metrics = {m: {**t, "seconds": [s / 3 for s in t["seconds"]]} for m, t in record["metrics"].items()}
        return {**record, "metrics": metrics}

    edit(native / "slm_facts-0shot.json", all_right)
    edit(native / "fidelity.json", lambda r: {**r, "mean_kld": r["mean_kld"] / 2})
    edit(machine / "prefill.json", three_times_faster)
    edit(machine / "decode.json", three_times_faster)
    edit(machine / "memory.json", lambda r: {**r, "weights_bytes": r["weights_bytes"] // 2})


def test_every_kind_fails_without_a_baseline_then_fails_on_a_better_one_and_passes_once_updated(project):
    strict = project.runpytest_inprocess("--slm-strict")
    strict.assert_outcomes(failed=ITEMS)
    strict.stdout.fnmatch_lines_random(
        [
            f"*no {kind} baseline for smollm2-135m-llamacpp-cpu-native*create it with: pytest '*{test}*' --update-baselines"
            for kind, test in [
                ("accuracy", "test_task_accuracy"),
                ("fidelity", "test_fidelity"),
                ("latency", "test_prefill_speed"),
                ("latency", "test_decode_speed"),
                ("memory", "test_memory"),
            ]
        ]
    )
    assert not (project.path / "baselines").exists()

    project.runpytest_inprocess("--update-baselines").assert_outcomes(passed=ITEMS)
    better_than_measured(project)
    worse = project.runpytest_inprocess()
    worse.assert_outcomes(failed=ITEMS)
    worse.stdout.fnmatch_lines_random(
        [
            "*slm_facts:0: acc regressed: * now vs 1.000 baseline (-* points, n=20)",
            "*flips: * right->wrong, 0 wrong->right; McNemar exact one-sided p = * < alpha 0.05",
            "*now wrong: doc 000*",
            "*smollm2-135m-llamacpp-cpu-native: mean KL divergence to the reference is * nats, worse than the baseline's *",
            "*prefill@32: * tok/s now vs * baseline; slower by +*%, +*% (rounds)*",
            "*decode: * tok/s now vs * baseline; slower by +*%, +*% (rounds)*",
            "*smollm2-135m-llamacpp-cpu-native: weights_bytes grew from * to *",
        ]
    )

    rewritten = project.runpytest_inprocess("--update-baselines")
    rewritten.assert_outcomes(passed=ITEMS)
    rewritten.stdout.fnmatch_lines(["*baselines: 5 changed, 0 unchanged*"])
    project.runpytest_inprocess().assert_outcomes(passed=ITEMS)
