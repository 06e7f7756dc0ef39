"""`python -m pytest_slm bisect --good REV --bad REV -- <pytest args>`: the first commit at which
the selected items fail, found by `git bisect run` in a temporary worktree, so the user's checkout
(its branch, its uncommitted changes) is never touched.

At each commit the step first looks in the history store (`--slm-history` among the pytest args,
else the repository's .pytest-slm/history.sqlite) for a run it can reuse: one made at that commit
from a clean work tree, with the same runtime versions as here, that has a figure for every item
the pytest args select (collected, not run) and whose timings carry this machine's fingerprint
and were measured with this machine's runtime build (where the run recorded one).
Its verdicts decide: a FAIL among the selected items is bad, none is good; the step says so.
Otherwise it runs `python -m pytest <args>` there, appending to that store: exit status 0 is good,
1 (tests failed) is bad, anything else (a usage error, no tests collected) makes git skip the
commit. A test that is not a pytest-slm item has no stored verdict, so its commits always run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .database import Measure, RunRecord

GOOD, BAD, SKIP = 0, 1, 125  # what `git bisect run` reads from a step
REUSED = "pytest-slm bisect: reused run"  # the step's line, found again in git's log


class BisectError(Exception):
    """The walk could not be made; one line."""


@dataclass(frozen=True)
class BisectResult:
    first_bad: str | None  # the full commit id, None when git could not single one out
    subject: str
    log: str  # git bisect's own account, for the reader
    reused: list[str]  # the step lines of commits judged from a stored run


STEP_SCRIPT = "import sys\nfrom pytest_slm.history.bisect import step\nsys.exit(step(sys.argv[1], sys.argv[2:]))\n"
# Loaded into the collection-only run: writes the selected items' case ids, or null for an item
# that is not a pytest-slm case, to the file $PYTEST_SLM_BISECT_ITEMS names.
PROBE_PLUGIN = """import json, os
def pytest_collection_finish(session):
    cases = [getattr(item, "callspec", None) and item.callspec.params.get("slm_case") for item in session.items]
    with open(os.environ["PYTEST_SLM_BISECT_ITEMS"], "w") as out:
        json.dump([getattr(case, "id", None) for case in cases], out)
"""


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BisectError(f"cannot run git: {exc}") from None
    if check and done.returncode != 0:
        raise BisectError(
            f"git {' '.join(args[:2])} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:] or ''}"
        )
    return done


def history_store(top: Path, pytest_args: Sequence[str]) -> Path | None:
    """The store the pytest args name (relative to the repository's top), the repository's default
    one without `--slm-history`, None with `--slm-history=off`."""
    given = None
    for index, arg in enumerate(pytest_args):
        if arg.startswith("--slm-history="):
            given = arg.partition("=")[2]
        elif arg == "--slm-history" and index + 1 < len(pytest_args):
            given = pytest_args[index + 1]
    if given is not None and given.lower() == "off":
        return None
    return top / (given or ".pytest-slm/history.sqlite")


def _with_store(pytest_args: Sequence[str], path: Path | None) -> list[str]:
    """The args with the store named absolutely: each step runs in the worktree, whose own
    .pytest-slm goes when the walk ends."""
    args, skip = [], False
    for arg in pytest_args:
        if skip:
            skip = False
        elif arg == "--slm-history":
            skip = True
        elif not arg.startswith("--slm-history="):
            args.append(arg)
    return [*args, f"--slm-history={path if path is not None else 'off'}"]


def bisect(repo: Path, good: str, bad: str, pytest_args: Sequence[str]) -> BisectResult:
    top = Path(_git(repo, "rev-parse", "--show-toplevel").stdout.strip())
    good_id, bad_id = (_git(top, "rev-parse", "--verify", f"{rev}^{{commit}}").stdout.strip() for rev in (good, bad))
    if _git(top, "merge-base", "--is-ancestor", good_id, bad_id, check=False).returncode != 0:
        raise BisectError(f"--good {good} is not an ancestor of --bad {bad}")
    store_path = history_store(top, pytest_args)
    work = Path(tempfile.mkdtemp(prefix="pytest-slm-bisect-"))
    tree = work / "tree"
    try:
        _git(top, "worktree", "add", "--detach", str(tree), bad_id)
        script = work / "step.py"
        script.write_text(STEP_SCRIPT)
        _git(tree, "bisect", "start", bad_id, good_id)
        walk = subprocess.run(
            [
                "git",
                "bisect",
                "run",
                sys.executable,
                str(script),
                str(store_path or ""),
                *_with_store(pytest_args, store_path),
            ],
            cwd=tree,
            capture_output=True,
            text=True,
            check=False,
        )
        log = walk.stdout + walk.stderr
        found = re.search(r"^([0-9a-f]{40}) is the first bad commit", log, re.MULTILINE)
        _git(tree, "bisect", "reset", check=False)
    finally:
        _git(top, "worktree", "remove", "--force", str(tree), check=False)
        shutil.rmtree(work, ignore_errors=True)
        _git(top, "worktree", "prune", check=False)
    reused = [line for line in log.splitlines() if line.startswith(REUSED)]
    if found is None:
        return BisectResult(None, "", log, reused)
    commit = found.group(1)
    return BisectResult(commit, _git(top, "log", "-1", "--format=%s", commit).stdout.strip(), log, reused)


def step(store_arg: str, pytest_args: list[str]) -> int:
    """One commit of the walk, in the worktree checked out there: a stored run's verdict, or a run."""
    if store_arg and Path(store_arg).is_file():
        commit = _git(Path.cwd(), "rev-parse", "HEAD").stdout.strip()
        if (found := stored_verdict(Path(store_arg), commit, pytest_args)) is not None:
            verdict, line = found
            print(line, flush=True)
            return verdict
    status = subprocess.run([sys.executable, "-m", "pytest", *pytest_args], check=False).returncode
    return GOOD if status == 0 else BAD if status == 1 else SKIP


def stored_verdict(path: Path, commit: str, pytest_args: list[str]) -> tuple[int, str] | None:
    """GOOD or BAD from the latest reusable run at `commit`, with the line that says so."""
    from . import database
    from .record import versions

    with database.connect(path, write=False) as db:
        candidates = [r["run_id"] for r in database.runs(db) if r["git_commit"] == commit and r["git_dirty"] == 0]
        runs = [database.read_run(db, run_id) for run_id in reversed(candidates)]
    if not runs or (items := _selected(pytest_args)) is None:
        return None
    here = {name: version for name, version in versions().items() if name != "pytest-slm"}
    for run in runs:
        if dict(run.versions) != here:
            continue
        chosen = [m for m in run.measures if m.item in items]
        if {m.item for m in chosen} != set(items) or not _same_machine(run, chosen):
            continue
        failed = sorted({m.item for m in chosen if m.verdict == "FAIL"})
        verdict = f"FAIL ({', '.join(failed)})" if failed else "pass"
        line = f"{REUSED} {run.run_id[:12]} at {commit[:10]} for {len(items)} item(s): {verdict}; pytest not run"
        return (BAD if failed else GOOD), line
    return None


def _selected(pytest_args: list[str]) -> list[str] | None:
    """The case ids the args select, collected in a pytest that runs nothing; None when some
    selected test is not a pytest-slm case, or collection fails."""
    with tempfile.TemporaryDirectory(prefix="pytest-slm-probe-") as probe:
        (Path(probe) / "pytest_slm_bisect_probe.py").write_text(PROBE_PLUGIN)
        listing = Path(probe) / "items.json"
        env = {**os.environ, "PYTEST_SLM_BISECT_ITEMS": str(listing)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [probe, env.get("PYTHONPATH")]))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--collect-only",
                "-p",
                "pytest_slm_bisect_probe",
                *pytest_args,
                "--slm-history=off",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not listing.is_file():
            return None
        ids = json.loads(listing.read_text())
    return None if not ids or None in ids else sorted(set(ids))


def _same_machine(run: RunRecord, chosen: Sequence[Measure]) -> bool:
    """Every timing or memory figure's fingerprint is this machine's now, at the threads it ran with,
    and its device's runtime build (the fingerprint no longer holds it) is the one here now."""
    from ..measure.machine import fingerprint, runtime_build
    from .database import RUNTIME_BUILD

    devices = {row.get("item"): row.get("device") for _, row in run.rows}
    for m in chosen:
        if not m.fingerprint:
            continue
        data, device = run.fingerprints.get(m.fingerprint), devices.get(m.item)
        try:
            if data is None or device is None or fingerprint(device, int(data["threads"])).slug != m.fingerprint:
                return False
            if run.provenance.get(RUNTIME_BUILD + device, runtime_build(device)) != runtime_build(device):
                return False
        except KeyError:  # a device of a backend not registered here
            return False
    return True
