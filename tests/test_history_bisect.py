"""`bisect` over a synthetic git history made here: six commits of a small project whose test
starts failing at the fourth; the walk names that commit and leaves the checkout as it was."""

from __future__ import annotations

import subprocess
import sys

import pytest


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def history(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    commits = []
    for index in range(6):
        slowdown = 0.25 if index >= 3 else 0.0  # the build gets slower from the fourth commit on
        (repo / "build.py").write_text(f"SLOWDOWN = {slowdown}\n")
        (repo / "test_speed.py").write_text("from build import SLOWDOWN\n\ndef test_decode_speed():\n    assert SLOWDOWN < 0.1\n")
        (repo / f"notes{index}.txt").write_text(str(index))
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", f"change {index}")
        commits.append(git(repo, "rev-parse", "HEAD"))
    return repo, commits


def bisect(repo, *args):
    return subprocess.run([sys.executable, "-m", "pytest_slm", "bisect", *args], cwd=repo, capture_output=True, text=True)


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
