"""The GitHub workflows: actionlint-clean, and naming only options, devices and commands that exist."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_slm.__main__ import build_parser
from pytest_slm.options import DEVICES

WORKFLOWS = Path(__file__).resolve().parents[1] / ".github" / "workflows"
SUITE = "./.github/workflows/device-suite.yml"
MACHINES = {
    ("self-hosted", "macOS", "ARM64"): ("mlx-gpu", "llamacpp-metal"),
    ("self-hosted", "linux", "x64", "gpu"): ("llamacpp-cuda", "mlx-gpu"),
    ("self-hosted", "linux", "x64"): ("llamacpp-cpu", "mlx-cpu"),
}
PLUGIN_OPTION = re.compile(r"--(?:slm-[a-z][a-z-]*[a-z]|update-baselines)")


def load(name):
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def triggers(workflow):
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true


def strings(node):
    """Every string in a parsed workflow: run scripts, `with:` values, descriptions."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def all_strings():
    return [text for path in sorted(WORKFLOWS.glob("*.yml")) for text in strings(load(path.name))]


def tool(name):
    """A linter installed in this interpreter's environment (the `test` extra), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def test_actionlint_passes_every_workflow():
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 4
    linted = subprocess.run(
        [tool("actionlint"), f"-shellcheck={tool('shellcheck')}", "-pyflakes=", *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_each_kind_of_machine_runs_exactly_its_devices():
    [job] = load("device-suite.yml")["jobs"].values()
    machines = {tuple(m["labels"]): tuple(m["devices"].split(",")) for m in job["strategy"]["matrix"]["include"]}
    assert machines == MACHINES
    run = " ".join(step.get("run", "") for step in job["steps"])
    assert "make regress ARGS=" in run and "--slm-devices=${{ matrix.devices }}" in run


def test_every_device_named_is_a_real_device():
    named = [d for text in all_strings() for v in re.findall(r"--slm-devices=([\w,-]+)", text) for d in v.split(",")]
    named += [d for devices in MACHINES.values() for d in devices]
    assert set(named) <= set(DEVICES)


def test_every_plugin_option_used_exists_in_the_real_parser(tmp_path):
    shown = subprocess.run(
        [sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
        cwd=tmp_path,  # no project ini: only the installed plugin's options
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    real = set(PLUGIN_OPTION.findall(shown.stdout))
    used = {option for text in all_strings() for option in PLUGIN_OPTION.findall(text)}
    assert {"--slm-devices", "--slm-report", "--update-baselines"} <= used
    assert used <= real, f"not options of the plugin: {sorted(used - real)}"


def test_regression_and_refresh_run_the_device_suite_and_no_pull_request_does():
    regression, refresh = load("regression.yml"), load("refresh-baselines.yml")
    assert set(triggers(regression)) == {"push", "schedule", "workflow_dispatch"}
    assert triggers(regression)["push"]["branches"] == ["main"]
    assert set(triggers(refresh)["workflow_dispatch"]["inputs"]) == {"models", "quants", "tasks"}
    assert [job["uses"] for job in regression["jobs"].values()] == [SUITE]
    assert refresh["jobs"]["measure"]["uses"] == SUITE
    for path in WORKFLOWS.glob("*.yml"):  # self-hosted runners must never run a fork's code
        workflow = load(path.name)
        if any(job.get("uses") == SUITE for job in workflow["jobs"].values()):
            assert not {"pull_request", "pull_request_target"} & set(triggers(workflow)), path.name


def test_refresh_uploads_the_directory_it_writes_and_merges_with_the_real_cli():
    jobs = load("refresh-baselines.yml")["jobs"]
    measure = jobs["measure"]["with"]
    assert "--update-baselines" in measure["args"]
    assert f"--slm-baselines={measure['upload-baselines']}" in measure["args"].split()
    assert jobs["propose"]["permissions"] == {"contents": "write", "pull-requests": "write"}

    commands = [
        line.strip()
        for step in jobs["propose"]["steps"]
        for line in step.get("run", "").splitlines()
        if "pytest_slm" in line and "pip install" not in line
    ]
    assert len(commands) == 1
    words = shlex.split(commands[0])
    assert words[:3] == ["python", "-m", "pytest_slm"]
    args = build_parser().parse_args(words[3:])  # exits, failing the test, on anything the CLI lacks
    assert (args.command, str(args.into), args.prefer) == ("merge-baselines", "baselines", None)
