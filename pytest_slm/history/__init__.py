"""Every run kept: the results store (`store`), what a run appends (`record`), step changes in
the series (`changepoint`), two runs compared with the items' own judges (`compare`).

The plugin calls `configure` at start-up (a store this pytest-slm cannot write is a usage error
before anything runs) and `append_run` once, on the controller, when the session finishes: xdist
workers have already sent their rows and outcomes to it, so one process writes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from . import database, record

STARTED = pytest.StashKey[str]()


def configure(config: pytest.Config, path: Any) -> None:
    config.stash[STARTED] = record.now()
    if path is not None and not hasattr(config, "workerinput") and (problem := database.version_problem(path)):
        raise pytest.UsageError(f"--slm-history: {problem}")


def append_run(config: pytest.Config, slm: Any, exitstatus: int) -> tuple[str, bool] | None:
    """Append the finished run: the line for the summary, and whether it was written. Nothing
    is written for a run that measured nothing (collection only, or every item skipped)."""
    path = slm.config.history_path
    results = slm.results()
    if path is None or not any(rows for section, rows in results.items() if section not in record.NOT_ROWS):
        return None
    clock = time.perf_counter()
    from ..measure.machine import fingerprint, runtime_build
    from ..provenance import system

    threads = slm.config.item_threads
    run = record.build(
        results,
        slm.accuracy_results.outcomes(),
        started=config.stash.get(STARTED, record.now()),
        root=slm.config.rootdir,
        settings=settings(slm.config),
        exitstatus=exitstatus,
        fingerprint_of=lambda device: fingerprint(device, threads),
        runtime_of=runtime_build,
        system=system(),
    )
    try:
        database.append(path, run)
    except database.HistoryError as exc:
        return f"pytest-slm history not written, so this run fails: {exc}", False
    spent = time.perf_counter() - clock  # git, versions, fingerprints and the write: what history adds to a run
    shown = path.relative_to(slm.config.rootdir) if path.is_relative_to(slm.config.rootdir) else path
    return (
        f"pytest-slm history: run {run.run_id[:12]} ({len(run.measures)} figures) appended to {shown} in {spent:.2f} s",
        True,
    )


def settings(config: Any) -> dict[str, Any]:
    """The thresholds the items judged with, so `compare` judges two runs alike."""
    return config.settings("history")  # type: ignore[no-any-return]
