"""One outcome for an item that compared nothing: `not judged`, with a named reason. Each reason,
fed through the core check, is a skip that says why and is counted as "not judged" in pytest's own
closing line; under --slm-strict, or wherever the CI variable is set, the same item fails in one
line. End to end on the real model: a missing baseline, a limit above the noise ceiling, an
accuracy item too small to detect the drop it must, and runtime items under xdist."""

from __future__ import annotations

import pytest
from projects import WHOLE, shipped_project

from pytest_slm.checks.core import REASONS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

FED = """
import pytest
from pytest_slm.checks import core
from pytest_slm.checks.core import Check, CheckContext, Policy, Verdict
from pytest_slm.store.baselines import BaselineKey, BaselineStore

REASON = {reason!r}


class Fed(Check):
    item = "m-llamacpp-cpu-native"
    kind = "toy"
    baseline_of = "m-llamacpp-cpu-native on this machine"
    key = BaselineKey("m", "llamacpp-cpu", "native", "toy")

    def identity(self):
        return {{}}

    def validate(self, record):
        pass

    def measure(self):
        return 1.0

    def record(self, measured):
        return {{"figure": measured}}

    def judge(self, measured, baseline):
        return Verdict([], not_judged=(REASON, f"{{self.item}}: fed {{REASON}}"))


def test_fed(request, tmp_path):
    store = BaselineStore(tmp_path)
    if REASON != "no baseline":
        store.write(Fed.key, {{"schema_version": 3, "kind": "toy", "figure": 1.0, "provenance": {{}}}})
    strict = request.config.stash[__import__("pytest_slm.plugin").plugin.SESSION].config.strict
    context = CheckContext(store, Policy(False, strict, False), request.node.nodeid, dict, lambda rows: None, lambda p, c: None)
    core.run(Fed(), context)
"""


@pytest.mark.parametrize("reason", REASONS)
def test_each_reason_is_counted_not_judged_and_fails_where_strict(pytester, monkeypatch, reason):
    pytester.makepyfile(test_fed=FED.format(reason=reason))
    default = pytester.runpytest_inprocess("--slm-models=smollm2-135m", "--slm-devices=llamacpp-cpu")
    assert default.ret == 0 and default.parseoutcomes() == {"unjudged": 1}
    default.stdout.fnmatch_lines([f"NOT JUDGED ({reason}) test_fed.py::test_fed: m-llamacpp-cpu-native: *"])

    strict = pytester.runpytest_inprocess("--slm-strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines([f"*not judged ({reason}): m-llamacpp-cpu-native: * [[]fails: --slm-strict, or CI[]]"])

    monkeypatch.setenv("CI", "true")  # as GitHub Actions and most CI services set it
    in_ci = pytester.runpytest_inprocess()
    in_ci.assert_outcomes(failed=1)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """The runtime and accuracy suites, cut short: short prompts and runs, 8 samples of one task, and
    tolerance and noise ceiling so wide that a busy development machine still writes and passes:
    what is shown here is which outcome each case gets, not the calibration."""
    return shipped_project(
        pytester,
        ("test_runtime.py", "test_accuracy.py"),
        """
        slm_devices = ["llamacpp-cpu"]
        slm_threads = "1"
        slm_tasks = ["slm_facts"]
        slm_limit = "8"
        slm_eval_text = "eval.txt"
        slm_prefill_lengths = ["32"]
        slm_decode_prompt = "32"
        slm_decode_tokens = "8"
        slm_repeats = "3"
        slm_latency_tolerance = ["1.0"]
        slm_noise_ceiling = "10"
        slm_history = "off"
        """,
        tasks=True,
        eval_chars=WHOLE,
    )


@pytest.mark.timed
def test_real_items_that_cannot_judge_say_why_and_strict_fails_exactly_them(project):
    first = project.runpytest_inprocess("-k", "memory or accuracy")
    assert first.parseoutcomes() == {"unjudged": 2, "deselected": 2}
    first.stdout.fnmatch_lines_random(
        [
            "NOT JUDGED (no baseline) *test_memory*: smollm2-135m-llamacpp-cpu-native: no memory baseline for *--update-baselines",
            "NOT JUDGED (no baseline) *test_task_accuracy*: smollm2-135m-llamacpp-cpu-native-slm_facts:0: no accuracy baseline *",
        ]
    )
    assert project.runpytest_inprocess("-k", "memory or accuracy", "--slm-strict").parseoutcomes() == {
        "failed": 2,
        "deselected": 2,
    }
    assert project.runpytest_inprocess("-k", "memory", "--slm-strict", "--slm-first-run").parseoutcomes() == {
        "unjudged": 1,
        "deselected": 3,
    }

    project.runpytest_inprocess("--update-baselines").assert_outcomes(passed=4)
    again = project.runpytest_inprocess("-k", "prefill or accuracy", "--slm-noise-ceiling=0")
    assert again.parseoutcomes() == {"unjudged": 2, "deselected": 2}
    again.stdout.fnmatch_lines_random(
        [
            "NOT JUDGED (too noisy) *test_prefill_speed*: *prefill@32: too noisy (noise limit *% > ceiling 0%*",
            "NOT JUDGED (cannot detect) *test_task_accuracy*: *cannot detect a *n=8*",
        ]
    )
    strict = project.runpytest_inprocess("-k", "prefill or accuracy", "--slm-noise-ceiling=0", "--slm-strict")
    strict.assert_outcomes(failed=2, deselected=2)
    parallel = project.runpytest_inprocess("-k", "decode", "-n", "2")
    assert parallel.parseoutcomes() == {"unjudged": 1}
    parallel.stdout.fnmatch_lines(
        ["NOT JUDGED (under xdist) *test_decode_speed*: decode is measured alone: with 2 xdist workers*"]
    )
