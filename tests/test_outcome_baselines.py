"""A team's own test judged against its recorded outcome, through real runs of the embedded model:
passing then and failing now fails; failing then and now is a known failure (exit status 0, even
strict) unless it fails another way now; failing then and passing now is fixed; running then and
skipping now is not judged. What breaks the answer here is the app's token budget cut to two tokens
("The capital"), as an app change would, or a budget that is not a number (a crash); the model and
runtime are real."""

from __future__ import annotations

import json

import pytest
from projects import shipped_project

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

APP_TESTS = """
import os

import pytest


def ask(slm_model):
    if os.environ.get("CHAT_OFF"):
        pytest.skip("the app's chat is switched off")
    tokens = int(os.environ["ANSWER_TOKENS"])
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    return slm_model.chat(conversation, max_tokens=tokens)


def test_names_the_capital(slm_model):
    assert "Paris" in ask(slm_model)


@pytest.mark.slm_absolute
def test_names_the_capital_always(slm_model):
    assert "Paris" in ask(slm_model)
"""
RECORD = "baselines/smollm2-135m/llamacpp-cpu/native/outcomes/test_app.test_names_the_capital.json"
NODE = "test_app.py::test_names_the_capital[smollm2-135m-llamacpp-cpu-native]"
MATCHED = NODE.replace("[", "?").replace("]", "?")  # fnmatch reads brackets as a set


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    project = shipped_project(pytester, (), 'slm_devices = ["llamacpp-cpu"]\nslm_history = "off"')
    project.makepyfile(test_app=APP_TESTS)
    return project


def test_newly_failing_fails_still_failing_is_known_and_newly_passing_is_fixed(project, monkeypatch):
    monkeypatch.setenv("ANSWER_TOKENS", "32")
    written = project.runpytest_inprocess("--update-baselines")
    written.assert_outcomes(passed=2)
    record = json.loads((project.path / RECORD).read_text())
    assert (record["kind"], record["test"], record["outcome"]) == (
        "outcome",
        "test_app.py::test_names_the_capital",
        "passed",
    )
    assert [p.name for p in (project.path / RECORD).parent.iterdir()] == [
        (project.path / RECORD).name
    ]  # absolute: none

    monkeypatch.setenv("ANSWER_TOKENS", "2")
    newly = project.runpytest_inprocess("--slm-report=report")
    newly.assert_outcomes(failed=2)
    newly.stdout.fnmatch_lines(
        [
            "*- pytest-slm: newly failing -*",
            f"smollm2-135m-llamacpp-cpu-native: passed at the baseline of * ({RECORD}), fails now",
            "nothing recorded changed since the baseline *",
        ]
    )
    rows = json.loads((project.path / "report" / "results.json").read_text())["test_outcomes"]
    assert [(row["test"], row["baseline"].split()[0], row["now"], row["verdict"]) for row in rows] == [
        ("test_app.py::test_names_the_capital", "passed", "failed", "FAIL")
    ]

    recorded = project.runpytest_inprocess("--update-baselines", "-k", "not always")
    assert recorded.parseoutcomes() == {"known_failure": 1, "deselected": 1}
    assert json.loads((project.path / RECORD).read_text())["reason"].startswith("assert 'Paris' in ")

    known = project.runpytest_inprocess("--slm-strict", "-n", "2", "-k", "not always")  # from an xdist worker too
    assert known.parseoutcomes() == {"known_failure": 1} and known.ret == 0  # xdist counts no deselected
    known.stdout.fnmatch_lines(
        [
            "1 item: 0 pass, 0 fail, 1 known failure",
            f"KNOWN FAILURE {MATCHED}: assert 'Paris' in * (failing since the baseline of *)",
        ]
    )

    monkeypatch.setenv("ANSWER_TOKENS", "two")  # failing still, but not by the recorded assert
    crashed = project.runpytest_inprocess("-k", "not always")
    crashed.assert_outcomes(failed=1, deselected=1)
    crashed.stdout.fnmatch_lines(
        [
            "*- pytest-slm: failing differently -*",
            (
                f"smollm2-135m-llamacpp-cpu-native: failed at the baseline of * ({RECORD}) with AssertionError,"
                " fails now with ValueError: invalid literal for int() with base 10: 'two'"
            ),
        ]
    )

    monkeypatch.setenv("CHAT_OFF", "1")
    said = (
        f"{MATCHED}: smollm2-135m-llamacpp-cpu-native: failed at the baseline of * ({RECORD}),"
        " skips now: the app's chat is switched off"
    )
    skipping = project.runpytest_inprocess("-k", "not always")
    assert skipping.parseoutcomes() == {"unjudged": 1, "deselected": 1} and skipping.ret == 0
    skipping.stdout.fnmatch_lines(
        ["1 item: 0 pass, 0 fail, 1 not judged (1 skips now: *)", f"NOT JUDGED (skips now) {said}"]
    )
    strict = project.runpytest_inprocess("-k", "not always", "--slm-strict")
    strict.assert_outcomes(failed=1, deselected=1)
    strict.stdout.fnmatch_lines([f"FAILED, NOT JUDGED (skips now) {said}"])
    monkeypatch.delenv("CHAT_OFF")

    monkeypatch.setenv("ANSWER_TOKENS", "32")
    fixed = project.runpytest_inprocess("-k", "not always")
    assert fixed.parseoutcomes() == {"fixed": 1, "deselected": 1} and fixed.ret == 0
    fixed.stdout.fnmatch_lines(
        [
            "1 item: 0 pass, 0 fail, 1 fixed",
            (
                f"FIXED {MATCHED}: failed at the baseline of * (assert 'Paris' in *), passes now;"
                f" record it with: pytest '{MATCHED}' --update-baselines"
            ),
        ]
    )

    monkeypatch.setenv("CHAT_OFF", "1")  # an intended skip, recorded: skipping on is a plain skip, even strict
    project.runpytest_inprocess("-k", "not always", "--update-baselines").assert_outcomes(skipped=1, deselected=1)
    assert json.loads((project.path / RECORD).read_text())["outcome"] == "skipped"
    project.runpytest_inprocess("-k", "not always", "--slm-strict").assert_outcomes(skipped=1, deselected=1)


@pytest.mark.parametrize(
    ("planted", "said"),
    [
        ('{"schema_version": 3, "kind": "outcome", "model": "smollm2-135m"', "{path} is not valid JSON (line 1: *"),
        (
            json.dumps(
                {
                    "schema_version": 3,
                    "kind": "outcome",
                    "model": "smollm2-135m",
                    "device": "llamacpp-cpu",
                    "quant": "native",
                    "test": "test_app.py::test_names_the_capital_always",
                    "outcome": "failed",
                    "reason": "assert 'Paris' in 'The capital'",
                    "error": "AssertionError",
                    "provenance": {"date": "2026-12-06"},
                }
            ),
            "{record}: field 'test' is 'test_app.py::test_names_the_capital_always': the record is of another item*",
        ),
    ],
    ids=["corrupt", "another-tests"],
)
def test_an_outcome_record_that_cannot_be_trusted_fails_its_item_in_one_line_and_is_left_as_it_was(
    project, monkeypatch, planted, said
):
    path = project.path / RECORD
    path.parent.mkdir(parents=True)
    path.write_text(planted)
    monkeypatch.setenv("ANSWER_TOKENS", "32")
    result = project.runpytest_inprocess("-k", "not always")
    result.assert_outcomes(failed=1, deselected=1)
    said = said.format(path=path, record=RECORD)
    result.stdout.fnmatch_lines([f"*smollm2-135m-llamacpp-cpu-native: baseline {said}"])
    assert path.read_text() == planted
