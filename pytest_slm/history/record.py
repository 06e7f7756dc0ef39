"""A finished run as a `RunRecord`: the summary's rows flattened into one figure per (item,
metric), with the git state of the project under test, the hardware fingerprint of the figures
that belong to a machine (timings, memory), and the run's provenance: the versions that ran, the
OS release and GPU driver, and the runtime build of each device measured."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from ..checks import KINDS
from .database import RUNTIME_BUILD, Measure, RunRecord

RUNTIMES = ("llama-cpp-python", "mlx", "lm-eval", "pytest")
NOT_ROWS = ("baseline_writes", "changed")  # what session.results() gives besides the summary's rows


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_state(root: Path) -> tuple[str | None, str | None, bool | None]:
    """Commit, branch and whether the work tree has changes; all None without git or a repository."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None, None
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, branch, None if status is None else bool(status)


def versions() -> dict[str, str]:
    found = {}
    for name in ("pytest-slm", *RUNTIMES):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def provenance_of(
    found_versions: Mapping[str, str], system: Mapping[str, str], builds: Mapping[str, str]
) -> dict[str, str]:
    """One flat mapping, keyed as baseline records' provenance is (`llama_cpp_python`, `pytest_slm`,
    `os_release`...), each device's runtime build under `runtime_build:<device>`."""
    found = {name.replace("-", "_"): version for name, version in found_versions.items()}
    return found | dict(system) | {RUNTIME_BUILD + device: build for device, build in builds.items()}


def measures_of(section: str, row: Mapping[str, Any], slug: str) -> list[Measure]:
    """The figures of one summary row that a trend is drawn through, as its kind gives them; none
    for a section no registered kind has."""
    kind = KINDS.get(section)
    figures = kind.figures(row) if kind else []
    return [
        Measure(section, row["item"], figure.metric, figure.value, figure.unit, figure.spread, row["verdict"], slug)
        for figure in figures
    ]


def build(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    outcomes: Mapping[str, Mapping[str, int]],
    *,
    started: str,
    root: Path,
    settings: Mapping[str, Any],
    exitstatus: int | None,
    fingerprint_of: Callable[[str], Any],
    runtime_of: Callable[[str], str] | None = None,
    system: Mapping[str, str] | None = None,
) -> RunRecord:
    """`fingerprint_of(device)` gives the machine's `Fingerprint` for a device's timings,
    `runtime_of(device)` the runtime's build there, `system` the OS release and GPU driver."""
    commit, branch, dirty = git_state(root)
    measures: list[Measure] = []
    rows: list[tuple[str, Mapping[str, Any]]] = []
    fingerprints: dict[str, dict[str, Any]] = {}
    for section, section_rows in results.items():
        if section in NOT_ROWS:
            continue
        for row in section_rows:
            slug = ""
            if section in KINDS and KINDS[section].machine:  # its figures mean something only on their hardware
                found = fingerprint_of(row["device"])
                slug, fingerprints[found.slug] = found.slug, asdict(found)
            measures += measures_of(section, row, slug)
            rows.append((section, row))
    paired_items = {  # the items whose per-sample outcomes a later run is compared with
        row["item"] for section, row in rows if section in KINDS and KINDS[section].keeps_outcomes
    }
    found_versions = versions()
    devices = sorted({str(row["device"]) for _, row in rows if row.get("device")})
    builds = {device: runtime_of(device) for device in devices} if runtime_of else {}
    return RunRecord(
        run_id=uuid.uuid4().hex,
        started=started,
        finished=now(),
        host=platform.node(),
        git_commit=commit,
        git_branch=branch,
        git_dirty=dirty,
        pytest_slm=found_versions.get("pytest-slm", "unknown"),
        versions={name: version for name, version in found_versions.items() if name != "pytest-slm"},
        settings=dict(settings),
        exitstatus=exitstatus,
        measures=measures,
        rows=rows,
        outcomes={item: dict(o) for item, o in outcomes.items() if item in paired_items},
        fingerprints=fingerprints,
        provenance=provenance_of(found_versions, system or {}, builds),
    )
