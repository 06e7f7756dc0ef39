"""The user project the end-to-end tests run pytest in: what a repository using pytest-slm holds,
copied from this one into a pytester directory, with the options of the test in its pyproject.toml."""

from __future__ import annotations

import importlib.util
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"
WHOLE = -1  # eval_chars: the whole evaluation text
# suites/test_load_time.py as a project's copy names it: a run in this process would take
# test_load_time for tests/test_load_time.py, a module it has imported already
LOAD_TIME = "test_loading.py"


def shipped_project(
    pytester: pytest.Pytester,
    suites: Sequence[str],
    ini: str,
    *,
    registry: bool = True,
    tasks: bool = False,
    eval_chars: int | None = None,
) -> pytest.Pytester:
    """The named suite files at the project's root; the shipped registry (suites/models.toml) unless
    not `registry`, and its task files (suites/tasks) when `tasks`; the evaluation text's first
    `eval_chars` characters (WHOLE: all of it) as eval.txt; `ini` as [tool.pytest.ini_options]."""
    root = pytester.path
    if registry or tasks:
        (root / "suites").mkdir(exist_ok=True)
    if registry:
        shutil.copy(SUITES / "models.toml", root / "suites" / "models.toml")
    if tasks:
        shutil.copytree(SUITES / "tasks", root / "suites" / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    for name in suites:
        shutil.copy(SUITES / name, root / name)
    if eval_chars is not None:
        text = (SUITES / "eval" / "text.txt").read_text(encoding="utf-8")
        (root / "eval.txt").write_text(text if eval_chars == WHOLE else text[:eval_chars], encoding="utf-8")
    pytester.makefile(".toml", pyproject="[tool.pytest.ini_options]\n" + textwrap.dedent(ini).strip() + "\n")
    return pytester


def benchmark_plugin(name: str) -> ModuleType:
    """benchmarks/<name>.py, a pytest plugin that changes the runtime under test (slowed_runtime,
    reported_version), as a module to give `runpytest_inprocess(plugins=[...])`: the run stays in
    this process, where `-p name` would need a new one to read PYTHONPATH."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
