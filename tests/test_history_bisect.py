"""`bisect` over a synthetic git history made here: six commits of a small project whose test
starts failing at the fourth; the walk names that commit and leaves the checkout as it was, and
judges a commit from a stored run of its items on this machine instead of running pytest there."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import asdict

import pytest

from pytest_slm.history import database
from pytest_slm.history.database import Measure, RunRecord
from pytest_slm.history.record import versions
from pytest_slm.measure.machine import Fingerprint, fingerprint

pytestmark = pytest.mark.slow  # make check leaves it out

ITEM = "smollm2-135m-llamacpp-cpu-native"  # the embedded model's one case on llama.cpp's CPU device


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def history(tmp_path):
    return make_history(tmp_path, "def test_decode_speed():")


@pytest.fixture
def slm_history(tmp_path):
    """The same history, its test a pytest-slm item (it asks for `slm_case`, so it is collected as
    one case per combination; it loads no model)."""
    return make_history(
        tmp_path, "def test_decode_speed(slm_case):", '[tool.pytest.ini_options]\nslm_devices = ["llamacpp-cpu"]\n'
    )


def make_history(tmp_path, signature, config=""):
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "pyproject.toml").write_text(config)
    commits = []
    for index in range(6):
        slowdown = 0.25 if index >= 3 else 0.0  # the build gets slower from the fourth commit on
        (repo / "build.py").write_text(f"SLOWDOWN = {slowdown}\n")
        (repo / "test_speed.py").write_text(f"from build import SLOWDOWN\n\n{signature}\n    assert SLOWDOWN < 0.1\n")
        (repo / f"notes{index}.txt").write_text(str(index))
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", f"change {index}")
        commits.append(git(repo, "rev-parse", "HEAD"))
    return repo, commits


def bisect(repo, *args):
    return subprocess.run(
        [sys.executable, "-m", "pytest_slm", "bisect", *args], cwd=repo, capture_output=True, text=True, check=False
    )


def test_bisect_names_the_first_bad_commit_and_leaves_the_checkout_alone(history):
    repo, commits = history
    (repo / "notes0.txt").write_text("an uncommitted edit")
    done = bisect(repo, "--good", commits[0], "--bad", "main", "--", "-q", "-p", "no:cacheprovider")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"first bad commit: {commits[3]} change 3"
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert (repo / "notes0.txt").read_text() == "an uncommitted edit"
    assert git(repo, "worktree", "list").count("\n") == 0  # the temporary worktree is gone
    assert "bisect" not in git(repo, "status")


def test_a_good_rev_that_is_not_an_ancestor_is_one_line(history):
    repo, commits = history
    done = bisect(repo, "--good", commits[4], "--bad", commits[2], "--", "-q")
    assert done.returncode == 1
    assert done.stderr.strip() == f"bisect: --good {commits[4]} is not an ancestor of --bad {commits[2]}"


def stored_run(commit, verdict, machine):
    """What a run of the decode item at `commit` would have stored, on `machine`."""
    here = {name: version for name, version in versions().items() if name != "pytest-slm"}
    return RunRecord(
        run_id=uuid.uuid4().hex,
        started=f"2026-01-01T00:00:0{commit[:1]}",
        finished="2026-01-01",
        host="h",
        git_commit=commit,
        git_branch="main",
        git_dirty=False,
        pytest_slm="0",
        versions=here,
        settings={},
        exitstatus=0,
        measures=[Measure("runtime", ITEM, "decode", 100.0, "tok/s", 0.01, verdict, machine.slug)],
        rows=[("runtime", {"item": ITEM, "device": "llamacpp-cpu"})],
        outcomes={},
        fingerprints={machine.slug: asdict(machine)},
    )


def test_stored_runs_of_the_items_on_this_machine_are_reused_instead_of_running(slm_history):
    """The stored runs say commit 2 already failed (the code there passes): the walk believes them,
    so the first bad commit it names is 2, and it says which runs it used."""
    repo, commits = slm_history
    path = repo / ".pytest-slm" / "history.sqlite"
    for index in range(1, 5):
        database.append(
            path, stored_run(commits[index], "FAIL" if index >= 2 else "pass", fingerprint("llamacpp-cpu", 2))
        )
    done = bisect(repo, "--good", commits[0], "--bad", "main", "--", "-q", "-p", "no:cacheprovider")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == f"first bad commit: {commits[2]} change 2"
    assert lines[:-1] and all(
        line.startswith("pytest-slm bisect: reused run ") and "pytest not run" in line for line in lines[:-1]
    )
    assert f"at {commits[2][:10]} for 1 item(s): FAIL ({ITEM}); pytest not run" in done.stdout


def test_stored_runs_from_another_machine_are_not_reused(slm_history):
    repo, commits = slm_history
    path = repo / "elsewhere.sqlite"
    other = Fingerprint(**{**asdict(fingerprint("llamacpp-cpu", 2)), "cpu": "Another CPU"})
    for index in range(1, 5):
        database.append(path, stored_run(commits[index], "FAIL" if index >= 2 else "pass", other))
    done = bisect(
        repo,
        "--good",
        commits[0],
        "--bad",
        "main",
        "--",
        "-q",
        "-p",
        "no:cacheprovider",
        "--slm-history=elsewhere.sqlite",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"first bad commit: {commits[3]} change 3"  # pytest ran: the truth
