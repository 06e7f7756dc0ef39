"""The relative gate's statistic and verdict rule: a quant's accuracy as a fraction of its
reference's on the same samples, with a paired bootstrap interval (pytest_slm.stats)."""

from __future__ import annotations

import pytest
from projects import shipped_project

from pytest_slm.checks import KINDS
from pytest_slm.checks.accuracy import AccuracyCheck, AccuracySettings
from pytest_slm.checks.core import Verdict
from pytest_slm.matrix import Case, TaskSpec
from pytest_slm.stats import relative_accuracy
from pytest_slm.tasks.catalog import TASK_PARTS, AccuracyResult

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out


def outcomes(*values: int) -> dict[str, int]:
    return {f"{i:03d}": v for i, v in enumerate(values)}


def test_identical_outcomes_give_a_ratio_of_one_with_no_spread():
    same = outcomes(*[1, 0, 1, 1] * 10)
    relative = relative_accuracy(same, same)
    assert (relative.n, relative.reference_accuracy, relative.ratio, relative.low, relative.high) == (
        40,
        0.75,
        1.0,
        1.0,
        1.0,
    )
    assert not relative.confidently_below(1.0)  # a fraction of 1.0 holds where nothing changed


def test_a_consistent_drop_is_confidently_below_one_and_not_below_half():
    reference = outcomes(*[1, 1, 0, 1] * 50)  # 150 of 200 right
    current = {k: v if int(k) % 5 else 0 for k, v in reference.items()}  # 30 of them lost, none gained
    relative = relative_accuracy(reference, current)
    assert relative.ratio == pytest.approx(120 / 150)
    assert relative.low < relative.ratio < relative.high < 1.0
    assert relative.confidently_below(0.99) and not relative.confidently_below(0.5)


def test_all_different_outcomes_are_not_paired_evidence_of_much():
    reference = outcomes(*[1] * 20 + [0] * 20)
    current = outcomes(*[0] * 20 + [1] * 20)  # every sample flips, as many each way
    relative = relative_accuracy(reference, current)
    assert relative.ratio == 1.0
    assert relative.low < 0.7 and relative.high > 1.4  # wider than for the same accuracies with few flips
    mostly_same = outcomes(*[1] * 18 + [0, 1] + [0] * 18 + [1, 0])
    narrow = relative_accuracy(reference, mostly_same)
    assert narrow.ratio == 1.0 and narrow.high - narrow.low < relative.high - relative.low


def test_pairing_narrows_the_interval_against_unpaired_samples_of_the_same_accuracies():
    reference = outcomes(*[1, 0] * 50)
    paired = {k: v if int(k) % 10 else 0 for k, v in reference.items()}  # 10 lost, the rest identical
    unpaired = outcomes(*[0, 1] * 5 + [1, 0] * 10 + [0] * 20 + [0, 1] * 25)  # 40 right too, scattered
    assert sum(paired.values()) == sum(unpaired.values()) == 40
    a, b = relative_accuracy(reference, paired), relative_accuracy(reference, unpaired)
    assert a.ratio == b.ratio == 0.8
    assert a.high - a.low < b.high - b.low


def test_a_reference_with_no_right_answer_has_no_ratio():
    with pytest.raises(ValueError, match="the reference got none of the 3 samples right"):
        relative_accuracy(outcomes(0, 0, 0), outcomes(1, 0, 1))


def test_no_shared_sample_has_no_ratio():
    with pytest.raises(ValueError, match="share no sample"):
        relative_accuracy({"a": 1}, {"b": 1})


def test_a_quant_that_gets_nothing_right_is_below_any_fraction_it_can_be_told():
    relative = relative_accuracy(outcomes(*[1, 0] * 20), outcomes(*[0] * 40))
    assert (relative.ratio, relative.low, relative.high) == (0.0, 0.0, 0.0)
    assert relative.confidently_below(0.01)


def test_only_shared_samples_count_and_the_interval_is_the_same_every_time():
    reference = {**outcomes(*[1, 1, 0, 1] * 10), "extra": 1}
    current = {**outcomes(*[1, 0, 0, 1] * 10), "other": 0}
    first, second = relative_accuracy(reference, current), relative_accuracy(reference, current)
    assert first == second and first.n == 40
    assert first.ratio == pytest.approx(20 / 30)


def test_a_resample_where_the_reference_gets_none_right_keeps_the_upper_end_finite():
    relative = relative_accuracy(outcomes(1, 0), outcomes(0, 1))  # a resample of (0, 1) twice has no reference right
    assert relative.high == 2.0  # counted as if the reference had one right: the current run's count over one


# -- the verdict of an accuracy item with the gate on (AccuracyCheck.judge, no model) ---------------

FINGERPRINT = {part: "h" for part in TASK_PARTS}


def run_of(values: dict[str, int], **changed: object) -> AccuracyResult:
    fields = {"metric": "acc", "outcomes": values, "task_fingerprint": FINGERPRINT, "tokens_sha256": "t", **changed}
    return AccuracyResult(TaskSpec("slm_facts"), seconds=0.0, **fields)  # type: ignore[arg-type]


def judged(reference: AccuracyResult, current: AccuracyResult, gate: float | None) -> Verdict:
    case = Case("m", "llamacpp-cpu", "q4_0", TaskSpec("slm_facts"))
    check = AccuracyCheck(case, AccuracySettings(0.05, 1.0, False, gate), lambda: current)
    check.reference = "m-llamacpp-cpu-f32", lambda: reference
    return check.judge(current, None)


REFERENCE = outcomes(*[1, 1, 0, 1] * 50)
DROPPED = {k: v if int(k) % 5 else 0 for k, v in REFERENCE.items()}  # 0.8 of the reference's accuracy


def test_the_gate_fails_a_quant_confidently_below_the_fraction_and_passes_it_at_a_lower_one():
    failed = judged(run_of(REFERENCE), run_of(DROPPED), 0.99)
    assert failed.failure is not None and failed.failure.startswith(
        "m-llamacpp-cpu-q4_0-slm_facts:0: acc 0.600 is 0.800"
    )
    assert "95% paired bootstrap interval [" in failed.failure and "below 0.99 (--slm-relative-gate)" in failed.failure
    (row,) = failed.rows
    assert (row.verdict, row.gate_verdict, row.gate, row.reference_accuracy, row.ratio) == (
        "FAIL",
        "FAIL",
        0.99,
        0.75,
        0.8,
    )
    assert row.ratio_low < 0.8 < row.ratio_high < 0.99

    passed = judged(run_of(REFERENCE), run_of(DROPPED), 0.5)
    assert passed.failure is None and passed.rows[0].gate_verdict == "pass" and passed.rows[0].verdict == "updated"


def test_without_the_gate_the_verdict_is_the_baselines_alone():
    verdict = judged(run_of(REFERENCE), run_of(DROPPED), None)
    assert verdict.failure is None and verdict.rows[0].gate is None and verdict.rows[0].ratio is None


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({"task_fingerprint": {**FINGERPRINT, "version": "other"}}, "version"),
        ({"metric": "acc_norm"}, "metric"),
        ({"tokens_sha256": "other"}, "the prompts' tokens"),
        ({"outcomes": {**REFERENCE, "999": 1}}, "sample ids"),
    ],
)
def test_a_reference_run_of_another_task_version_or_sample_set_fails_loudly(changed, named):
    reference = run_of(REFERENCE, **changed)
    verdict = judged(reference, run_of(REFERENCE), 0.5)  # identical outcomes otherwise: it would pass
    assert verdict.failure == (
        f"m-llamacpp-cpu-q4_0-slm_facts:0: not comparable with the reference m-llamacpp-cpu-f32 (--slm-relative-gate):"
        f" its run differs in {named}"
    )
    assert verdict.rows[0].verdict == "FAIL" and verdict.rows[0].ratio is None


def test_a_reference_that_got_nothing_right_is_no_verdict_but_a_failure():
    nothing = {k: 0 for k in REFERENCE}
    verdict = judged(run_of(nothing), run_of(REFERENCE), 0.5)
    assert verdict.failure == (
        "m-llamacpp-cpu-q4_0-slm_facts:0: no relative verdict against m-llamacpp-cpu-f32: the reference got none of the"
        " 200 samples right: a fraction of its accuracy means nothing"
    )


def test_the_accuracy_table_shows_the_gate_only_when_it_is_on():
    row = {
        "item": "m-q4_0-t:0",
        "accuracy": 0.6,
        "baseline": None,
        "delta_points": None,
        "regressed": None,
        "improved": None,
        "p_value": None,
        "verdict": "FAIL",
    }
    headers, body = KINDS["items"].table([row])
    assert "ratio (95% CI)" not in headers
    gated = {
        **row,
        "reference_accuracy": 0.75,
        "ratio": 0.8,
        "ratio_low": 0.72,
        "ratio_high": 0.877,
        "gate": 0.99,
        "gate_verdict": "FAIL",
    }
    headers, body = KINDS["items"].table([gated, {**row, "item": "m-f32-t:0", "verdict": "pass"}])  # f32: no gate
    assert headers[-4:] == ["reference", "ratio (95% CI)", "gate", "verdict"]
    assert body[1][-4:] == ("0.750", "0.800 [0.720, 0.877]", "0.99: FAIL", "FAIL")
    assert body[0][-4:] == ("-", "-", "-", "pass")


# -- end to end: the embedded model's q4_0 against its float32 copy, on 40 arithmetic questions ----


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return shipped_project(
        pytester,
        ("test_accuracy.py",),
        """
        slm_devices = ["llamacpp-cpu"]
        slm_quants = ["q4_0"]
        slm_tasks = ["slm_arith"]
        slm_limit = "40"
        slm_threads = "1"
        slm_history = "off"
        """,
    )


def test_q4_0_fails_a_gate_of_its_reference_accuracy_and_passes_half_of_it(project):
    """q4_0 gets 0.61 of f32's accuracy on these questions (measured: 95% interval [0.37, 0.91]):
    confidently under 1.0, clearly not under 0.5. The failing run writes no baseline."""
    baseline = project.path / "baselines" / "smollm2-135m" / "llamacpp-cpu" / "q4_0" / "slm_arith-0shot.json"
    failed = project.runpytest_inprocess("--update-baselines", "--slm-relative-gate=1.0", "-v")  # -v: the full table
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(
        [
            (
                "smollm2-135m-llamacpp-cpu-q4_0-slm_arith:0: exact_match * is 0.* of the reference"
                " smollm2-135m-llamacpp-cpu-f32's * on the same 40 samples (95% paired bootstrap interval [[]0.*, 0.*]):"
                " below 1.0 (--slm-relative-gate)"
            ),
            "*item*accuracy*reference*ratio (95% CI)*gate*verdict*",
            "smollm2-135m-llamacpp-cpu-q4_0-slm_arith:0 * 0.* [[]0.*, 0.*] * 1: FAIL * FAIL",
            "model loads: main: smollm2-135m-llamacpp-cpu-q4_0, smollm2-135m-llamacpp-cpu-f32",
        ]
    )
    assert not baseline.exists()

    project.makeconftest(COUNT_EVALUATIONS)
    passed = project.runpytest_inprocess("--update-baselines", "--slm-relative-gate=0.5", "--slm-quants=q4_0,f32", "-v")
    passed.assert_outcomes(passed=2)
    passed.stdout.fnmatch_lines(["smollm2-135m-llamacpp-cpu-q4_0-slm_arith:0 * 0.* [[]0.*, 0.*] * 0.5: pass * updated"])
    assert baseline.exists()
    # f32's own item reuses the run the gate made of it
    passed.stdout.fnmatch_lines(["task runs: smollm2-135m-llamacpp-cpu-q4_0, smollm2-135m-llamacpp-cpu-f32"])


COUNT_EVALUATIONS = """
import pytest_slm.tasks.results

runs = []
evaluate = pytest_slm.tasks.results.evaluate


def counted(model, *args, **kwargs):
    runs.append(model.case.model_id)
    return evaluate(model, *args, **kwargs)


pytest_slm.tasks.results.evaluate = counted


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line("task runs: " + ", ".join(runs))
"""


def test_three_correct_in_the_baseline_cannot_fail_and_is_not_judged_saying_so():
    outcomes = {f"{i:05d}": int(i < 3) for i in range(20)}
    result = AccuracyResult(TaskSpec("slm_facts"), "acc", outcomes, FINGERPRINT, "t", 1.0)
    check = AccuracyCheck(
        Case("m", "llamacpp-cpu", "native", TaskSpec("slm_facts")), AccuracySettings(0.05, 1.0, False), lambda: result
    )
    baseline = {
        "n": 20,
        "metric": "acc",
        "accuracy": 0.15,
        "outcomes": outcomes,
        "task_fingerprint": FINGERPRINT,
        "tokens_sha256": "t",
    }
    verdict = check.judge(result, baseline)
    assert verdict.failure is None and verdict.not_judged is not None
    assert verdict.not_judged[0] == "cannot detect"
    assert "cannot detect a drop at α=0.05 with 3 correct in the baseline" in verdict.not_judged[1]
    assert [row.verdict for row in verdict.rows] == ["not judged"] and verdict.rows[0].detects_points is None
