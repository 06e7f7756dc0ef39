"""pytest-slm in a user's own repository: no suites/, no registry, no tasks of its own. The
built-ins (the embedded model, the offline tasks, the evaluation text) serve; the shipped accuracy
suite runs with `--pyargs pytest_slm.suite`; a project's registry and tasks add to the built-ins,
and one that replaces a built-in says so."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

USER_TEST = """
def test_my_app_still_answers(slm_model):
    assert "Paris" in slm_model.chat(
        [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
    )
"""
ARGS = ("--slm-models=smollm2-135m", "--slm-devices=llamacpp-cpu", "--slm-limit=10", "--slm-threads=1")


@pytest.fixture
def user_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_app=USER_TEST)
    pytester.makefile(".toml", pyproject="[project]\nname = 'my-app'\n")
    return pytester


def test_a_project_without_suites_runs_the_built_in_accuracy_items_and_its_own_tests(user_project):
    assert not (user_project.path / "suites").exists()
    update = user_project.runpytest_inprocess(
        "--pyargs", "pytest_slm.suite", "test_app.py", *ARGS, "--update-baselines", "-v"
    )
    update.assert_outcomes(passed=4)
    update.stdout.fnmatch_lines_random(
        [
            "*test_task_accuracy?smollm2-135m-llamacpp-cpu-native-slm_arith:0? PASSED*",
            "*test_task_accuracy?smollm2-135m-llamacpp-cpu-native-slm_cloze:0? PASSED*",
            "*test_task_accuracy?smollm2-135m-llamacpp-cpu-native-slm_facts:0? PASSED*",
            "*test_my_app_still_answers?smollm2-135m-llamacpp-cpu-native? PASSED*",
            "*baselines: 4 changed, 0 unchanged*",
        ]
    )
    facts = json.loads(
        (user_project.path / "baselines/smollm2-135m/llamacpp-cpu/native/slm_facts-0shot.json").read_text()
    )
    assert facts["n"] == 10 and len(facts["outcomes"]) == 10
    again = user_project.runpytest_inprocess("--pyargs", "pytest_slm.suite", "test_app.py", *ARGS)
    assert again.parseoutcomes() == {"passed": 1, "unjudged": 3}  # 10 samples cannot detect a 10-point drop
    again.stdout.fnmatch_lines(
        [
            "4 items: 1 pass, 0 fail, 3 not judged (3 cannot detect)",
            "*smollm2-135m-llamacpp-cpu-native-slm_facts:0*+0.0 pt*0/0*not judged*",
        ]
    )
    assert "overrides the built-in" not in again.stdout.str()


def test_with_no_model_named_the_offline_built_ins_are_the_matrix(user_project):
    result = user_project.runpytest_inprocess("test_app.py", "--slm-devices=llamacpp-cpu", "--co", "-q")
    result.stdout.fnmatch_lines(
        ["test_app.py::test_my_app_still_answers[smollm2-135m-llamacpp-cpu-native]", "1 test collected*"]
    )


def test_a_project_registry_and_tasks_add_to_the_built_ins_and_say_what_they_replace(user_project):
    from pytest_slm.models.registry import BUILTIN_REGISTRY, load_registry
    from pytest_slm.tasks.catalog import BUILTIN_TASKS

    gguf = load_registry(BUILTIN_REGISTRY)["smollm2-135m"].gguf_path()
    suites = user_project.mkdir("suites")
    (suites / "models.toml").write_text(f'[models.smollm2-135m]\ngguf = "{gguf}"\n\n[models.mine]\ngguf = "{gguf}"\n')
    tasks = suites / "tasks"
    tasks.mkdir()
    (tasks / "slm_facts.yaml").write_text((BUILTIN_TASKS / "slm_facts.yaml").read_text().replace("Answer:", "A:"))
    (tasks / "slm_cloze.yaml").write_text((BUILTIN_TASKS / "slm_cloze.yaml").read_text())  # the same: no override
    result = user_project.runpytest_inprocess(
        "test_app.py", "--slm-devices=llamacpp-cpu", "--co", "-q", "--slm-tasks=slm_arith"
    )
    result.stdout.fnmatch_lines_random(
        [
            "test_app.py::test_my_app_still_answers[mine-llamacpp-cpu-native]",
            "test_app.py::test_my_app_still_answers[smollm2-135m-llamacpp-cpu-native]",
            "*PytestConfigWarning: pytest-slm: model 'smollm2-135m' of *suites/models.toml overrides the built-in 'smollm2-135m'",
            "*PytestConfigWarning: pytest-slm: task 'slm_facts' of *suites/tasks/slm_facts.yaml overrides the built-in 'slm_facts'",
        ]
    )
    assert "'slm_cloze' of" not in result.stdout.str()


def test_a_registry_named_but_missing_is_one_line(user_project):
    result = user_project.runpytest_inprocess("--slm-registry=nowhere.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --slm-registry: no file */nowhere.toml"])
