"""The device suite's one pytest run, from the workflow's inputs, without a shell or make in between.

Usage: .venv/bin/python .github/scripts/run_suite.py   (in the repository root; inputs in the
environment, as the workflow step's `env:` puts them)

    SLM_MODELS   registry names, comma-separated (suites/models.toml; no paths)
    SLM_QUANTS   quantizations, comma-separated (empty: the plugin's default)
    SLM_TASKS    tasks as name or name:shots, comma-separated (empty: the ini's tasks)
    SLM_DEVICES  backend-device pairs, comma-separated (the machine's own, from the job matrix)
    SLM_UPDATE   a directory name to write refreshed baselines into (empty: compare, do not update)

A comparing run is strict (--slm-strict): an item that could not judge (no baseline, a busy
machine, too noisy) fails the job instead of skipping, so a pull request cannot pass on items
that compared nothing. A refresh writes baselines and is not strict: it runs without the CI
variable, which would otherwise make the plugin strict by itself.

Every value is checked against the plugin's own vocabularies (the registry, the backends' devices
and quants, the task grammar) before anything runs; a bad one is one line on stderr and exit status
4, pytest's own status for a usage error. Good values reach pytest as separate arguments through
exec: nothing parses them again.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
USAGE_ERROR = 4
# A task in a dispatch: an lm-eval task name, optionally `:shots`; the name as strict as a model name.
TASK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(?::[0-9]{1,3})?")
HISTORY = "slm-history/history.sqlite"
DIRECTORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class DispatchError(Exception):
    """An input the suite refuses: its message is the one line the run prints."""


def _items(env: Mapping[str, str], key: str) -> list[str]:
    raw = env.get(key, "")
    items = raw.split(",") if raw else []
    if any(item == "" for item in items):
        raise DispatchError(f"{key}: {raw!r} has an empty name (write names comma-separated, without spaces)")
    return items


def build_argv(env: Mapping[str, str]) -> list[str]:
    """pytest's argument list for these inputs, or DispatchError naming the first bad one."""
    from pytest_slm.matrix import TaskSpec
    from pytest_slm.models.errors import RegistryError
    from pytest_slm.models.registry import load_registry
    from pytest_slm.options import DEVICES, QUANTS

    try:
        registry = load_registry(ROOT / "suites" / "models.toml")
    except RegistryError as exc:
        raise DispatchError(str(exc)) from None
    argv = ["-m", "pytest", "suites", "-rs"]
    models = _items(env, "SLM_MODELS")
    for model in models:
        if model not in registry:
            raise DispatchError(
                f"SLM_MODELS: {model!r} is not a model of suites/models.toml (known: {', '.join(sorted(registry))})"
            )
    quants = _items(env, "SLM_QUANTS")
    for quant in quants:
        if quant not in QUANTS:
            raise DispatchError(f"SLM_QUANTS: {quant!r} is not a quantization (known: {', '.join(QUANTS)})")
    tasks = _items(env, "SLM_TASKS")
    for task in tasks:
        if not TASK.fullmatch(task):
            raise DispatchError(
                f"SLM_TASKS: {task!r} is not name or name:shots (a name is letters, digits, '_', '.', '-')"
            )
        try:
            TaskSpec.parse(task)  # the plugin's own rule for shots (0-100)
        except ValueError as exc:
            raise DispatchError(f"SLM_TASKS: {exc}") from None
    devices = _items(env, "SLM_DEVICES")
    for device in devices:
        if device not in DEVICES:
            raise DispatchError(f"SLM_DEVICES: {device!r} is not a device (known: {', '.join(DEVICES)})")
    update = env.get("SLM_UPDATE", "")
    if update and not DIRECTORY.fullmatch(update):
        raise DispatchError(f"SLM_UPDATE: {update!r} is not a plain directory name")
    for option, values in (("models", models), ("quants", quants), ("tasks", tasks), ("devices", devices)):
        if values:
            argv.append(f"--slm-{option}={','.join(values)}")
    if update:
        argv += ["--update-baselines", f"--slm-baselines={update}"]
    else:
        argv.append("--slm-strict")
    # the run's history in a store of its own, uploaded for regression.yml's history job to merge
    return argv + ["--slm-report=slm-report", "--junitxml=slm-report/junit.xml", f"--slm-history={HISTORY}"]


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """pytest's environment: this one, less CI for a refresh (the plugin turns strict where CI is set)."""
    return {key: value for key, value in env.items() if not (key == "CI" and env.get("SLM_UPDATE"))}


def main() -> int:
    try:
        argv = build_argv(os.environ)
    except DispatchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return USAGE_ERROR
    os.chdir(ROOT)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *argv], child_environment(os.environ))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
