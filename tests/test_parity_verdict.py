"""The parity verdict: distributions within the thresholds, and task outcomes within the paired test."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest

from pytest_slm.checks import KINDS
from pytest_slm.checks.parity import ParityCheck, ParitySettings
from pytest_slm.matrix import ParityCase
from pytest_slm.measure.divergence import Fidelity
from pytest_slm.stats import compare_outcomes

ITEM = "smollm2-135m-mlx-cpu-native-vs-llamacpp-cpu-f32"
CLOSE = Fidelity(
    tokens=1530,
    mean_kld=6e-7,
    kld_stderr=2e-8,
    median_kld=2e-7,
    p90_kld=1e-6,
    p95_kld=2e-6,
    p99_kld=3e-6,
    p999_kld=1e-5,
    max_kld=2e-5,
    delta_p_mean=1e-5,
    delta_p_rms=1e-4,
    delta_p_median=0.0,
    delta_p_p99=3e-4,
    delta_p_max=1e-3,
    top1_agreement=0.9993,
    top1_low=0.9963,
    top1_high=0.9999,
    reference_perplexity=34.2,
    perplexity=34.2,
    ppl_ratio=1.0,
    ppl_ratio_stderr=1e-5,
)
SETTINGS = ParitySettings(min_top1=0.99, max_mean_kld=0.01, alpha=0.05, min_drop_points=1.0)


def judge_parity(item, fidelity, tasks, settings):
    check = ParityCheck(
        ParityCase("smollm2-135m", "llamacpp-cpu", "mlx-cpu"), settings, lambda: fidelity, lambda: tasks
    )
    assert check.item == item
    verdict = check.judge(fidelity, None)
    [row] = verdict.rows
    return asdict(row), verdict.failure


def outcomes(right: int, n: int = 100) -> dict[str, int]:
    return {f"{i:05d}": int(i < right) for i in range(n)}


def test_a_few_differing_samples_pass_and_are_counted():
    tasks = {
        "slm_cloze:0": compare_outcomes(outcomes(51), outcomes(49)),
        "slm_facts:0": compare_outcomes(outcomes(65), outcomes(65)),
    }
    row, failure = judge_parity(ITEM, CLOSE, tasks, SETTINGS)
    assert failure is None and row["task_outcomes"] == "2 tasks, 2 flips"
    headers, [cells] = KINDS["parity"].table([row])
    assert headers[-2:] == ["task outcomes", "verdict"] and cells[-2:] == ("2 tasks, 2 flips", "pass")


@pytest.mark.parametrize(
    ("llama", "mlx", "flips"),
    [
        (60, 40, "20 samples right only on llama.cpp and 0 only here"),
        (40, 60, "0 samples right only on llama.cpp and 20 only here"),
    ],
)
def test_outcomes_that_differ_significantly_fail_either_way(llama, mlx, flips):
    row, failure = judge_parity(
        ITEM, CLOSE, {"slm_arith:0": compare_outcomes(outcomes(llama), outcomes(mlx))}, SETTINGS
    )
    assert row["verdict"] == "FAIL" and "\n" not in failure
    assert (
        f"slm_arith:0: accuracy {mlx / 100:.3f} vs {llama / 100:.3f} on llama.cpp's shipped weights, {flips}" in failure
    )
    assert "two-sided McNemar p = 1.91e-06 < 0.05" in failure


def test_without_task_runs_only_the_distributions_are_judged():
    broken = replace(CLOSE, tokens=254, mean_kld=0.5, p99_kld=3.0, top1_agreement=0.67, perplexity=80.0)
    row, failure = judge_parity(ITEM, broken, {}, SETTINGS)
    assert row["task_outcomes"] == "not run"
    assert failure.startswith(f"{ITEM}: the runtimes disagree on the same weights: top-1 agreement 0.6700 < 0.99;")
    assert "over 254 positions" in failure
