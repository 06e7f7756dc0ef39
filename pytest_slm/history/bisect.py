"""`python -m pytest_slm bisect --good REV --bad REV -- <pytest args>`: the first commit at which
the selected items fail, found by `git bisect run` in a temporary worktree, so the user's checkout
(its branch, its uncommitted changes) is never touched. Each step runs `python -m pytest <args>`
in the worktree: exit status 0 is good, 1 (tests failed) is bad, anything else (a usage error, no
tests collected) makes git skip that commit. The runs append to the history store given with
`--slm-history` in the pytest args, like any other run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


class BisectError(Exception):
    """The walk could not be made; one line."""


@dataclass(frozen=True)
class BisectResult:
    first_bad: str | None  # the full commit id, None when git could not single one out
    subject: str
    log: str  # git bisect's own account, for the reader


# pytest's exit statuses: 0 passed, 1 failed; the rest mean the commit cannot be judged
STEP_SCRIPT = """import subprocess, sys
status = subprocess.run([sys.executable, "-m", "pytest", *sys.argv[1:]]).returncode
sys.exit(0 if status == 0 else 1 if status == 1 else 125)
"""


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    except OSError as exc:
        raise BisectError(f"cannot run git: {exc}") from None
    if check and done.returncode != 0:
        raise BisectError(f"git {' '.join(args[:2])} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:] or ''}")
    return done


def bisect(repo: Path, good: str, bad: str, pytest_args: Sequence[str]) -> BisectResult:
    top = Path(_git(repo, "rev-parse", "--show-toplevel").stdout.strip())
    good_id, bad_id = (_git(top, "rev-parse", "--verify", f"{rev}^{{commit}}").stdout.strip() for rev in (good, bad))
    if _git(top, "merge-base", "--is-ancestor", good_id, bad_id, check=False).returncode != 0:
        raise BisectError(f"--good {good} is not an ancestor of --bad {bad}")
    work = Path(tempfile.mkdtemp(prefix="pytest-slm-bisect-"))
    tree = work / "tree"
    try:
        _git(top, "worktree", "add", "--detach", str(tree), bad_id)
        script = work / "step.py"
        script.write_text(STEP_SCRIPT)
        _git(tree, "bisect", "start", bad_id, good_id)
        walk = subprocess.run(
            ["git", "bisect", "run", sys.executable, str(script), *pytest_args], cwd=tree, capture_output=True, text=True
        )
        log = walk.stdout + walk.stderr
        found = re.search(r"^([0-9a-f]{40}) is the first bad commit", log, re.MULTILINE)
        _git(tree, "bisect", "reset", check=False)
    finally:
        _git(top, "worktree", "remove", "--force", str(tree), check=False)
        shutil.rmtree(work, ignore_errors=True)
        _git(top, "worktree", "prune", check=False)
    if found is None:
        return BisectResult(None, "", log)
    commit = found.group(1)
    return BisectResult(commit, _git(top, "log", "-1", "--format=%s", commit).stdout.strip(), log)
