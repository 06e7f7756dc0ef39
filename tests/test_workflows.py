"""The GitHub workflows and Dependabot's configuration: valid against their schemas, linted clean
(actionlint, zizmor), pinned, least-privileged, naming only options, devices and commands that
exist, strict where they compare, and with self-hosted runners out of reach of untrusted events
(the guard is evaluated here on the event payloads GitHub would send)."""

from __future__ import annotations

import re
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_slm.cli.main import build_parser
from pytest_slm.options import DEVICES

pytestmark = pytest.mark.slow  # make check leaves it out

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
DEPENDABOT = ROOT / ".github" / "dependabot.yml"
RUN_SUITE = ROOT / ".github" / "scripts" / "run_suite.py"
SUITE = "./.github/workflows/device-suite.yml"
MACHINES = {
    ("self-hosted", "macOS", "ARM64"): ("mlx-gpu", "llamacpp-metal"),
    ("self-hosted", "linux", "x64", "gpu"): ("llamacpp-cuda", "mlx-gpu"),
    ("self-hosted", "linux", "x64"): ("llamacpp-cpu", "mlx-cpu"),
}
PLUGIN_OPTION = re.compile(r"--(?:slm-[a-z][a-z-]*[a-z]|update-baselines)")
PINNED = re.compile(r"^\s*(?:- )?uses: ([\w.-]+/[\w./-]+)@([0-9a-f]{40})  # v\d+(?:\.\d+)*$")
EXPRESSION = re.compile(r"^\$\{\{ (inputs|matrix)\.([\w-]+) \}\}$")


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


def all_jobs():
    return [
        (path.name, name, job)
        for path in sorted(WORKFLOWS.glob("*.yml"))
        for name, job in load(path.name)["jobs"].items()
    ]


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
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize(
    ("schema", "files"),
    [
        pytest.param("vendor.dependabot", [DEPENDABOT], id="dependabot"),
        pytest.param("vendor.github-workflows", sorted(WORKFLOWS.glob("*.yml")), id="workflows"),
    ],
)
def test_the_files_match_the_schemas_github_reads_them_by(schema, files):
    """Offline: check-jsonschema ships these schemas (SchemaStore's) inside its package."""
    checked = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_schema_check_is_really_looking(tmp_path):
    """Its control: an ecosystem Dependabot does not know is an error."""
    bad = tmp_path / "dependabot.yml"
    bad.write_text(DEPENDABOT.read_text(encoding="utf-8").replace("package-ecosystem: uv", "package-ecosystem: uvx"))
    checked = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode != 0 and "package-ecosystem" in checked.stdout, checked.stdout + checked.stderr


def test_dependabot_proposes_the_runtimes_through_the_lock_and_the_actions():
    updates = {
        update["package-ecosystem"]: update
        for update in yaml.safe_load(DEPENDABOT.read_text(encoding="utf-8"))["updates"]
    }
    assert set(updates) == {"uv", "github-actions"}
    lock = updates["uv"]
    assert lock["directory"] == "/" and (ROOT / "requirements.in").is_file() and (ROOT / "requirements.txt").is_file()
    assert {entry["dependency-name"] for entry in lock["allow"]} == {"llama-cpp-python", "mlx-lm", "lm-eval"}
    # Dependabot recompiles with the options it reads in the lock's header: one lock for every platform
    header = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()[1]
    assert "--universal" in header.split() and "--python-version" in header.split()
    assert updates["github-actions"]["directory"] == "/"
    assert all(update["schedule"]["interval"] == "weekly" for update in updates.values())


def test_zizmor_finds_nothing_at_its_default_level():
    """Offline: the audits that ask GitHub (impostor commits, known-vulnerable versions) need a token."""
    audited = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", "--format=plain", str(WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "No findings to report" in audited.stdout, audited.stdout


def test_zizmor_would_report_an_unpinned_action(tmp_path):
    """The linter is really looking: the same file with one tag instead of a SHA is a finding."""
    text = (WORKFLOWS / "ci.yml").read_text(encoding="utf-8")
    unpinned = re.sub(r"actions/checkout@[0-9a-f]{40}", "actions/checkout@v6", text, count=1)
    assert unpinned != text
    (tmp_path / "ci.yml").write_text(unpinned, encoding="utf-8")
    audited = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", "--format=plain", str(tmp_path / "ci.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert audited.returncode != 0 and "unpinned-uses" in audited.stdout, audited.stdout


def test_every_action_is_pinned_by_full_sha_with_its_version_beside_it():
    uses = [
        line
        for path in sorted(WORKFLOWS.glob("*.yml"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.match(r"^\s*(- )?uses: ", line) and "uses: ./" not in line
    ]
    assert len(uses) >= 10
    assert [line for line in uses if not PINNED.match(line)] == []
    # one version per action across all files, so a bump cannot leave one copy behind
    versions: dict[str, set[str]] = {}
    for line in uses:
        action, sha = PINNED.match(line).groups()
        versions.setdefault(action, set()).add(sha)
    assert {action: len(shas) for action, shas in versions.items()} == dict.fromkeys(versions, 1)


def test_permissions_are_empty_by_default_and_granted_per_job():
    for path in sorted(WORKFLOWS.glob("*.yml")):
        assert load(path.name)["permissions"] == {}, path.name
    for name, job_name, job in all_jobs():
        granted = job.get("permissions")
        assert granted is not None, f"{name}: job {job_name} states no permissions"
        writes = {scope for scope, level in granted.items() if level == "write"}
        if (name, job_name) == ("refresh-baselines.yml", "propose"):
            assert granted == {"contents": "write", "pull-requests": "write"}
            assert job["environment"] == "refresh-baselines"  # required reviewers gate the write token
        elif (name, job_name) == ("regression.yml", "history"):
            assert granted == {"contents": "write"}  # the history release; no pull request can start it
            assert "pull_request_target" not in triggers(load(name))
            assert history_runs_for(github("pull_request", ref="refs/pull/7/merge", head=HOME)) is False
        else:
            assert granted == {"contents": "read"} and not writes, (name, job_name)


def test_every_checkout_drops_its_credentials():
    checkouts = [
        step
        for _, _, job in all_jobs()
        for step in job.get("steps", [])
        if step.get("uses", "").startswith("actions/checkout@")
    ]
    assert len(checkouts) == 5
    assert all(step["with"]["persist-credentials"] is False for step in checkouts)


def test_no_run_script_holds_an_expression():
    """`${{ }}` in a `run:` is pasted into the script before the shell reads it: values go through env."""
    runs = [step["run"] for _, _, job in all_jobs() for step in job.get("steps", []) if "run" in step]
    assert runs and [run for run in runs if "${{" in run] == []
    assert not any(re.search(r"\bmake\b.*\$", run) for run in runs), "no variable may reach make's command line"


# --- the guard on self-hosted runners -----------------------------------------------------------

TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))|(?P<word>[A-Za-z_][\w.-]*))")


def evaluate(expression: str, context: dict) -> object:
    """GitHub's expression language, for the operators the guard uses: property paths, 'strings',
    ==, !=, !, &&, ||, parentheses; strings compare ignoring case, as GitHub's do; a missing
    property is null. Anything else is an error, so the guard cannot grow past what is tested."""
    tokens, at = [], 0
    while at < len(expression.rstrip()):
        match = TOKEN.match(expression, at)
        if not match:
            raise ValueError(f"unsupported at {expression[at:]!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        at = match.end()
    position = 0

    def peek():
        return tokens[position][1] if position < len(tokens) else None

    def take():
        nonlocal position
        position += 1
        return tokens[position - 1]

    def truthy(value):
        return value not in (None, False, "", 0)

    def primary():
        kind, text = take()
        if text == "!":
            return not truthy(primary())
        if text == "(":
            value = either()
            assert take()[1] == ")"
            return value
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        value = context
        for part in text.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def comparison():
        left = primary()
        while peek() in ("==", "!="):
            op, right = take()[1], primary()
            same = (
                (left.lower() == right.lower()) if isinstance(left, str) and isinstance(right, str) else left == right
            )
            left = same if op == "==" else not same
        return left

    def both():
        left = comparison()
        while peek() == "&&":
            take()
            right = comparison()
            left = right if truthy(left) else left
        return left

    def either():
        left = both()
        while peek() == "||":
            take()
            right = both()
            left = left if truthy(left) else right
        return left

    value = either()
    assert position == len(tokens), f"unparsed: {tokens[position:]}"
    return value


HOME = "owner/pytest-slm"


FORK = "someone/pytest-slm"
DELETED = object()  # a pull request whose head repository was deleted: GitHub sends `"repo": null`


def github(event_name, ref="refs/heads/main", repository=HOME, fork=False, trusted=HOME, head=None, head_fork=None):
    """The context GitHub evaluates a job's `if:` in, for an event on `repository`; `head` makes it a
    pull request's payload, from a branch of that repository (its `pull_request.head.repo`)."""
    event = {"repository": {"full_name": repository, "fork": fork, "default_branch": "main"}}
    if head is DELETED:
        event["pull_request"] = {"head": {"repo": None}, "base": {"repo": {"full_name": repository}}}
    elif head is not None:
        fork_head = head != repository if head_fork is None else head_fork
        event["pull_request"] = {
            "head": {"ref": "a-branch", "repo": {"full_name": head, "fork": fork_head}},
            "base": {"ref": "main", "repo": {"full_name": repository, "fork": fork}},
        }
    return {
        "github": {"event_name": event_name, "ref": ref, "repository": repository, "event": event},
        "vars": {} if trusted is None else {"SLM_TRUSTED_REPOSITORY": trusted},
    }


def history_runs_for(context: dict) -> object:
    """regression.yml's history job's `if:` for this event, the suite having run (`always()` is true)."""
    condition = load("regression.yml")["jobs"]["history"]["if"]
    assert condition.startswith("always() && ")
    return evaluate(condition.removeprefix("always() && "), {**context, "needs": {"regress": {"result": "success"}}})


def guard():
    [job] = load("device-suite.yml")["jobs"].values()
    return job["if"]


@pytest.mark.parametrize(
    "context",
    [
        pytest.param(github("push"), id="push-to-main"),
        pytest.param(github("schedule"), id="nightly"),
        pytest.param(github("workflow_dispatch"), id="dispatch-on-main"),
        pytest.param(github("pull_request", ref="refs/pull/7/merge", head=HOME), id="pull-request-from-a-branch-here"),
        pytest.param(
            github("pull_request", ref="refs/pull/8/merge", head=HOME), id="dependabot-upgrade"
        ),  # Dependabot pushes its branch (dependabot/uv/...) to this repository
    ],
)
def test_the_guard_lets_the_projects_own_triggers_through(context):
    assert evaluate(guard(), context) is True


@pytest.mark.parametrize(
    "context",
    [
        pytest.param(github("pull_request", ref="refs/pull/7/merge", head=FORK), id="fork-pull-request"),
        pytest.param(github("pull_request", ref="refs/heads/main", head=FORK), id="fork-pull-request-claiming-main"),
        pytest.param(
            github("pull_request", ref="refs/pull/7/merge", head=HOME, head_fork=True),
            id="fork-pull-request-claiming-this-repository",
        ),
        pytest.param(
            github("pull_request", ref="refs/pull/7/merge", head=DELETED), id="pull-request-from-a-deleted-fork"
        ),
        pytest.param(github("pull_request", ref="refs/pull/7/merge"), id="pull-request-without-a-head"),
        pytest.param(
            github("pull_request", ref="refs/pull/7/merge", head=HOME, trusted=None), id="pull-request-variable-unset"
        ),
        pytest.param(
            github("pull_request", ref="refs/pull/7/merge", repository=FORK, fork=True, trusted=None, head=FORK),
            id="pull-request-inside-a-fork",
        ),
        pytest.param(github("pull_request_target"), id="pull-request-target"),
        pytest.param(github("pull_request_target", head=FORK), id="fork-pull-request-target"),
        pytest.param(github("pull_request_target", head=HOME), id="pull-request-target-from-a-branch-here"),
        pytest.param(github("issue_comment"), id="comment"),
        pytest.param(github("workflow_run"), id="workflow-run"),
        pytest.param(github("push", ref="refs/heads/feature"), id="push-to-a-branch"),
        pytest.param(github("workflow_dispatch", ref="refs/heads/feature"), id="dispatch-on-a-branch"),
        pytest.param(github("push", repository="someone/pytest-slm", fork=True, trusted=None), id="fork-push"),
        pytest.param(github("schedule", repository="someone/pytest-slm", fork=True, trusted=None), id="fork-schedule"),
        pytest.param(
            github("push", repository="someone/pytest-slm", fork=True, trusted="someone/pytest-slm"),
            id="fork-with-variable",
        ),
        pytest.param(github("push", trusted=None), id="variable-unset"),
        pytest.param(github("push", repository="other/copy", trusted=HOME), id="another-repository"),
    ],
)
def test_the_guard_refuses_untrusted_events_and_forks(context):
    assert evaluate(guard(), context) is False


def test_every_job_that_can_reach_a_self_hosted_runner_carries_the_guard():
    guarded = []
    for name, job_name, job in all_jobs():
        labels = [str(job.get("runs-on"))] + [
            str(entry.get("labels")) for entry in job.get("strategy", {}).get("matrix", {}).get("include", [])
        ]
        if any("self-hosted" in label for label in labels):
            assert job.get("if") == guard(), f"{name}: {job_name} runs on self-hosted without the guard"
            guarded.append((name, job_name))
        if job.get("uses") == SUITE:  # callers reach it only through the guarded reusable workflow
            assert set(triggers(load(name))) <= {"push", "pull_request", "schedule", "workflow_dispatch"}, name
    assert guarded == [("device-suite.yml", "suite")]
    assert load("regression.yml")[True]["push"]["branches"] == ["main"]  # the guard's ref is this branch


# --- dispatch inputs ----------------------------------------------------------------------------


def suite_step():
    [job] = load("device-suite.yml")["jobs"].values()
    [step] = [step for step in job["steps"] if "run_suite.py" in step.get("run", "")]
    return job, step


def step_environment(dispatch: dict[str, str], machine: dict[str, str]) -> dict[str, str]:
    """The suite step's environment for a refresh dispatched with these inputs on this machine:
    refresh-baselines.yml's `with:` -> device-suite.yml's inputs -> the step's `env:`."""
    caller = load("refresh-baselines.yml")["jobs"]["measure"]["with"]
    declared = load("device-suite.yml")[True]["workflow_call"]["inputs"]
    inputs = {name: spec.get("default", "") for name, spec in declared.items()}
    for name, value in caller.items():
        found = EXPRESSION.match(value)
        inputs[name] = dispatch[found.group(2)] if found else value  # an expression passes the value as is
    _, step = suite_step()
    env = {}
    for key, value in step["env"].items():
        found = EXPRESSION.match(value)
        assert found, f"{key}: only a whole expression, never pasted into a longer string: {value!r}"
        env[key] = (inputs if found.group(1) == "inputs" else machine)[found.group(2)]
    return env


LINUX = {"machine": "linux-x64", "devices": "llamacpp-cpu,mlx-cpu"}
DEFAULTS = {"models": "smollm2-135m", "quants": "native", "tasks": "slm_facts,slm_cloze,slm_arith:0,slm_arith:5"}


def hostile_values(marker: Path) -> list[str]:
    touch = f"touch {marker}"
    return [
        f"smollm2-135m;{touch}",
        f"$({touch})",
        f"$(shell {touch})",
        f"`{touch}`",
        f"smollm2-135m\n{touch}",
        f"smollm2-135m {touch}",
        f"smollm2-135m && {touch} #",
        f"smollm2-135m' ; {touch} ; '",
        "smollm2-135m,--rootdir=/",
        "--co",
        "slm_facts --override-ini=python_files=*",
        "native,-p no:slm",
        "slm_arith:5;x",
        "",  # an empty list item: `a,,b`
    ]


def run_step(env: dict[str, str], tmp_path: Path, command: str | None = None) -> subprocess.CompletedProcess:
    _, step = suite_step()
    return subprocess.run(
        ["bash", "-e", "-c", command or step["run"]],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("field", ["models", "quants", "tasks"])
def test_hostile_dispatch_inputs_run_nothing_and_end_in_one_usage_line(field, tmp_path):
    marker = tmp_path / "pwned"
    for value in hostile_values(marker):
        if value == "":
            value = "a,,b"
        env = step_environment({**DEFAULTS, field: value}, LINUX)
        done = run_step(env, tmp_path)
        assert not marker.exists(), (field, value)
        assert done.returncode == 4, (field, value, done.stdout, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"ERROR: SLM_{field.upper()}: "), (field, value, done.stderr)
        assert done.stdout == "", (field, value)


def test_the_marker_is_seen_when_a_command_does_let_the_shell_parse_an_input(tmp_path):
    """The hostile test's own control: the old `make regress ARGS="$ARGS_IN ..."` shape runs the marker."""
    marker = tmp_path / "pwned"
    env = step_environment({**DEFAULTS, "models": f"smollm2-135m;touch {marker}"}, LINUX)
    run_step(env, tmp_path, command='eval "echo --slm-models=$SLM_MODELS"')
    assert marker.exists()


def test_good_dispatch_inputs_reach_pytest_as_separate_arguments():
    build_argv = runpy.run_path(str(RUN_SUITE))["build_argv"]
    env = step_environment(DEFAULTS, LINUX)
    assert build_argv(env) == [
        "-m", "pytest", "suites", "-rs",
        "--slm-models=smollm2-135m",
        "--slm-quants=native",
        "--slm-tasks=slm_facts,slm_cloze,slm_arith:0,slm_arith:5",
        "--slm-devices=llamacpp-cpu,mlx-cpu",
        "--update-baselines", "--slm-baselines=refreshed-baselines",
        "--slm-report=slm-report", "--junitxml=slm-report/junit.xml", "--slm-history=slm-history/history.sqlite",
    ]  # fmt: skip
    nightly = {name: "" for name in ("SLM_QUANTS", "SLM_TASKS", "SLM_UPDATE")}
    assert build_argv({**nightly, "SLM_MODELS": "smollm2-135m", "SLM_DEVICES": "llamacpp-cpu"})[4:] == [
        "--slm-models=smollm2-135m", "--slm-devices=llamacpp-cpu", "--slm-strict", "--slm-report=slm-report",
        "--junitxml=slm-report/junit.xml", "--slm-history=slm-history/history.sqlite",
    ]  # fmt: skip


def test_a_comparing_run_is_strict_and_a_refresh_is_not():
    """Push, nightly and pull request pass --slm-strict (an item that could not judge fails the job);
    a refresh passes no --slm-strict and runs without CI, which would make the plugin strict itself."""
    script = runpy.run_path(str(RUN_SUITE))
    build_argv, child_environment = script["build_argv"], script["child_environment"]
    _, step = suite_step()
    assert set(step["env"]) == {"SLM_MODELS", "SLM_QUANTS", "SLM_TASKS", "SLM_DEVICES", "SLM_UPDATE"}
    declared = load("device-suite.yml")[True]["workflow_call"]["inputs"]
    assert declared["update-baselines"]["default"] == ""  # regression.yml passes no inputs: it compares
    assert "with" not in load("regression.yml")["jobs"]["regress"]
    comparing = {"SLM_MODELS": "smollm2-135m", "SLM_DEVICES": "llamacpp-cpu", "SLM_UPDATE": "", "CI": "true"}
    assert "--slm-strict" in build_argv(comparing) and "--update-baselines" not in build_argv(comparing)
    assert child_environment(comparing) == comparing
    refresh = {**step_environment(DEFAULTS, LINUX), "CI": "true", "GITHUB_STEP_SUMMARY": "/summary"}
    assert "--slm-strict" not in build_argv(refresh) and "--update-baselines" in build_argv(refresh)
    assert child_environment(refresh) == {key: value for key, value in refresh.items() if key != "CI"}


def test_a_refresh_really_runs_pytest_without_ci(tmp_path):
    """main() hands pytest the refresh's environment: a stand-in interpreter prints what it got."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "CI=${CI-unset} $*"\n')
    fake.chmod(0o755)
    code = (
        f"import runpy, sys; sys.executable = {str(fake)!r}; sys.argv = [{str(RUN_SUITE)!r}];"
        f" runpy.run_path({str(RUN_SUITE)!r}, run_name='__main__')"
    )
    common = {"PATH": "/usr/bin:/bin", "CI": "true", "SLM_MODELS": "smollm2-135m", "SLM_DEVICES": "llamacpp-cpu"}
    for update, expected in (("", "CI=true"), ("refreshed-baselines", "CI=unset")):
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**common, "SLM_UPDATE": update},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(expected + " -m pytest suites"), done.stdout
        assert ("--slm-strict" in done.stdout.split()) == (update == ""), done.stdout


def test_a_shot_count_out_of_the_plugins_range_is_refused_by_the_plugins_own_rule():
    build_argv = runpy.run_path(str(RUN_SUITE))["build_argv"]
    DispatchError = runpy.run_path(str(RUN_SUITE))["DispatchError"]
    with pytest.raises(Exception, match=r"SLM_TASKS: few-shot count must be a whole number 0-100") as caught:
        build_argv({"SLM_MODELS": "smollm2-135m", "SLM_TASKS": "slm_arith:101"})
    assert type(caught.value).__name__ == DispatchError.__name__


# --- what each workflow runs --------------------------------------------------------------------


def test_each_kind_of_machine_runs_exactly_its_devices():
    job, step = suite_step()
    machines = {tuple(m["labels"]): tuple(m["devices"].split(",")) for m in job["strategy"]["matrix"]["include"]}
    assert machines == MACHINES
    assert step["env"]["SLM_DEVICES"] == "${{ matrix.devices }}"
    assert step["run"].strip() == ".venv/bin/python .github/scripts/run_suite.py"


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
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    real = set(PLUGIN_OPTION.findall(shown.stdout))
    script = RUN_SUITE.read_text(encoding="utf-8")
    used = {option for text in [*all_strings(), script] for option in PLUGIN_OPTION.findall(text)}
    used |= {f"--slm-{option}" for option in re.findall(r'"--slm-\{option\}.*?\(\((.*?)\)\)', script)}
    used |= {f"--slm-{name}" for name in re.findall(r'\("(models|quants|tasks|devices)", \1\)', script)}
    assert {"--slm-devices", "--slm-models", "--slm-tasks", "--slm-report", "--update-baselines"} <= used
    assert used <= real, f"not options of the plugin: {sorted(used - real)}"


def test_regression_runs_the_device_suite_on_pull_requests_too_and_refresh_only_by_hand():
    """A pull request (the guard admits only those from this repository's branches) gets the verdict
    before it merges; the nightly run stays; no pull request ever refreshes baselines or merges history."""
    regression, refresh = load("regression.yml"), load("refresh-baselines.yml")
    assert set(triggers(regression)) == {"push", "pull_request", "schedule", "workflow_dispatch"}
    assert triggers(regression)["push"]["branches"] == ["main"]
    assert [entry["cron"] for entry in triggers(regression)["schedule"]] == ["17 3 * * *"]
    assert set(triggers(refresh)) == {"workflow_dispatch"}
    assert set(triggers(refresh)["workflow_dispatch"]["inputs"]) == {"models", "quants", "tasks"}
    assert [job.get("uses") for job in regression["jobs"].values()] == [
        SUITE,
        None,
    ]  # the suite, then the history merge
    assert refresh["jobs"]["measure"]["uses"] == SUITE
    for path in WORKFLOWS.glob("*.yml"):
        workflow = load(path.name)
        if any(job.get("uses") == SUITE for job in workflow["jobs"].values()):
            assert not {"pull_request_target", "workflow_run", "issue_comment"} & set(triggers(workflow)), path.name
    assert history_runs_for(github("pull_request", ref="refs/pull/7/merge", head=HOME)) is False
    assert history_runs_for(github("schedule")) is True and history_runs_for(github("push")) is True
    # a pull request's newer push cancels its older run; the nightly and pushes are never cancelled
    assert regression["concurrency"]["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"


def test_refresh_uploads_the_directory_it_writes_and_merges_with_the_real_cli():
    jobs = load("refresh-baselines.yml")["jobs"]
    measure = jobs["measure"]["with"]
    assert measure["update-baselines"] == "refreshed-baselines"
    [upload] = [s for s in suite_step()[0]["steps"] if s.get("if") == "inputs.update-baselines != ''"]
    assert upload["with"]["path"] == "${{ inputs.update-baselines }}/"
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


def cli_commands(job):
    """The `python -m pytest_slm` command lines of a job's steps, as words."""
    return [
        shlex.split(line.strip())
        for step in job["steps"]
        for line in step.get("run", "").splitlines()
        if line.strip().startswith("python -m pytest_slm")
    ]


def test_each_runners_history_is_uploaded_and_one_job_merges_them_into_the_release_store():
    """device-suite uploads the store run_suite.py writes; regression.yml's history job downloads
    every runner's, merges them with the real CLI into the release's store and uploads it back."""
    history = runpy.run_path(str(RUN_SUITE))["HISTORY"]
    [upload] = [
        s for s in suite_step()[0]["steps"] if s.get("with", {}).get("name") == "slm-history-${{ matrix.machine }}"
    ]
    assert upload["if"] == "always()" and upload["with"]["path"] == f"{Path(history).parent}/"
    job = load("regression.yml")["jobs"]["history"]
    assert job["needs"] == "regress"
    assert job["if"] == "always() && github.event_name != 'pull_request' && needs.regress.result != 'skipped'"
    assert job["concurrency"] == {"group": "slm-history", "cancel-in-progress": False}
    [download] = [s for s in job["steps"] if s.get("uses", "").startswith("actions/download-artifact@")]
    assert download["with"] == {"pattern": "slm-history-*", "path": "${{ runner.temp }}/runners"}
    [words] = cli_commands(job)
    args = build_parser().parse_args(words[3:])  # exits, failing the test, on anything the CLI lacks
    assert (args.command, [str(s) for s in args.sources], str(args.into)) == (
        "merge-history",
        ["${stores[@]}"],
        "$RUNNER_TEMP/history.sqlite",
    )
    script = next(s["run"] for s in job["steps"] if "merge-history" in s.get("run", ""))
    assert 'stores=("$RUNNER_TEMP"/runners/*/' + Path(history).name + ")" in script
    assert 'gh release upload history "$RUNNER_TEMP/history.sqlite" --clobber' in script
    assert "|| true" not in script  # a store that cannot be downloaded must stop the job before the upload


def _closure(names):
    """The distributions these install, with their requirements (as installed here)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found, todo = set(), [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return found


@pytest.mark.parametrize(
    ("workflow", "job_name"), [("refresh-baselines.yml", "propose"), ("regression.yml", "history")]
)
def test_a_job_running_the_cli_from_the_checkout_installs_what_it_imports(workflow, job_name):
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    job = load(workflow)["jobs"][job_name]
    assert cli_commands(job)
    [install] = [line for step in job["steps"] for line in step.get("run", "").splitlines() if "pip install" in line]
    installed = _closure(Requirement(word).name for word in shlex.split(install)[4:])
    listing = "import sys; {0} print('\\n'.join(sorted(name.split('.')[0] for name in sys.modules)))"
    before, after = (
        set(
            subprocess.run(
                [sys.executable, "-c", listing.format(code)], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.split()
        )
        for code in ("", "import pytest_slm.cli.main;")
    )
    owners = metadata.packages_distributions()
    needed = {canonicalize_name(d) for module in after - before for d in owners.get(module, [])} - {"pytest-slm"}
    assert {"pytest", "numpy", "tabulate", "filelock"} <= needed  # the check sees the CLI's imports
    assert needed <= installed, (
        f"{workflow} {job_name}: the CLI imports {sorted(needed - installed)} that `{install.strip()}` does not install"
    )


def test_apple_silicon_runs_on_a_hosted_vm_the_readmes_way():
    ci = load("ci.yml")
    assert set(triggers(ci)) == {"push", "pull_request"}
    job = ci["jobs"]["apple-silicon"]
    assert job["runs-on"] == "macos-14"  # GitHub's hosted arm64 (M1) image: fresh per job, safe for pull requests
    runs = [step["run"] for step in job["steps"] if "run" in step]
    [regress] = [run for run in runs if run.startswith("make regress")]
    words = shlex.split(regress)
    assert words[:2] == ["make", "regress"] and not any(
        "--slm-devices" in w for w in words
    )  # the plugin picks what exists
    args = shlex.split(words[2].removeprefix("ARGS="))
    assert "-rs" in args  # every skipped device prints its reason
    # GitHub sets CI (the plugin turns strict); this VM has no baselines of its own, so they go unjudged
    assert "--slm-first-run" in args and "--slm-report=slm-report" in args
    assert any(
        step.get("uses", "").startswith("actions/upload-artifact@") and step.get("if") == "always()"
        for step in job["steps"]
    )
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^regress: install$", makefile, re.MULTILINE)
    assert (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[3].startswith("make regress")
