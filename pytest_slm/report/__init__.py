"""What a run reports: one roll-up of every item's outcome, then one table for the whole run,
whichever process measured each row, in the terminal and, with --slm-report, as files CI keeps
(results.json, summary.md, report.html, the step summary). What each table shows is its kind's
(`checks.KINDS`), how outcomes are counted in outcomes.py, the page in html.py, its plots in charts.py."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..checks import KINDS
from ..checks.core import NOT_JUDGED
from ..store.atomic import directory_problem, write_text_atomic
from . import html
from .outcomes import Outcome, as_json, explained_lines, known, rollup

TERMINAL_WIDTH = 120  # what the brief tables fit, item ids shortened where they must be
ITEM_MIN = 24  # the shortest an item id is cut to


def table(
    section: str, rows: Sequence[dict[str, Any]], tablefmt: str = "simple", full: bool = False, width: int | None = None
) -> str:
    """The section's table, brief (what its verdicts are read from) or full; no line wider than
    `width` where shortening item ids (its first column) down to ITEM_MIN gets there."""
    headers, body = KINDS[section].table(rows, full)
    text: str = tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)
    excess = max(map(len, text.splitlines())) - width if width else 0
    if excess > 0 and body:
        keep = max(ITEM_MIN, max(len(row[0]) for row in body) - excess)
        body = [(shorten(row[0], keep), *row[1:]) for row in body]
        text = tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)
    return text


def shorten(item: str, width: int) -> str:
    """An item id within `width`: its first word (the model's name begins there) and as many of its
    last (quant, KV type, task, depth: what tells rows apart) as fit, whole, around an ellipsis."""
    if len(item) <= width:
        return item
    head, *tail = item.split("-")
    while tail and len("-".join([head, "…", *tail])) > width:
        tail.pop(0)
    if tail:
        return "-".join([head, "…", *tail])
    return f"{item[: (width - 1) // 3]}…{item[len(item) - (width - 1 - (width - 1) // 3) :]}"


IDENTITY = frozenset({"item", "model", "device", "quant", "task", "metric", "unit"})


def junit_properties(row: dict[str, Any]) -> list[tuple[str, object]]:
    """A row's figures as JUnit properties, so CI test viewers show them beside the test:
    `accuracy`, `decode.median`, `kv_bytes@2048`, `d2048.mean_kld` (a fidelity row at a depth)."""
    prefix = f"{row['metric']}." if "metric" in row else f"d{row['depth']}." if row.get("depth") else ""
    properties: list[tuple[str, object]] = []
    for key, value in row.items():
        if key == "kv_cache":
            properties += [(f"kv_bytes@{kv['context']}", kv["kv_bytes"]) for kv in value]
        elif key not in IDENTITY and value is not None:
            properties.append((prefix + key, value))
    return properties


def baseline_writes(writes: Sequence[dict[str, Any]]) -> list[str]:
    changed = sorted(w["path"] for w in writes if w["changed"])
    lines = [f"baselines: {len(changed)} changed, {len(writes) - len(changed)} unchanged"]
    lines += [f"  wrote {path}" for path in changed]
    return lines


def model_loads(loads: Sequence[dict[str, str]]) -> str:
    """Which process loaded what: a model loaded twice in one process is time thrown away."""
    by_process: dict[str, list[str]] = {}
    for load in loads:
        by_process.setdefault(load["process"], []).append(load["model"])
    return "model loads: " + "; ".join(
        f"{process}: {', '.join(models)}" for process, models in sorted(by_process.items())
    )


def all_tables(
    results: dict[str, Any], tablefmt: str = "simple", full: bool = False, width: int | None = None
) -> list[str]:
    """The run's tables, in order, for the sections that have rows."""
    return [table(section, results[section], tablefmt, full, width) for section in KINDS if results.get(section)]


def lead(outcomes: Sequence[Outcome], changed: Sequence[str]) -> list[str]:
    """What follows the roll-up: what changed in the software since the baselines, then each item
    that compared nothing, with why, and each known failure and fix."""
    return ([f"changed since the baselines: {'; '.join(changed)}"] if changed else []) + explained_lines(outcomes)


FILES = ("results.json", "summary.md", "report.html")


class ReportError(Exception):
    """A report file could not be written: one line for the person reading CI's log, not a traceback."""


def output_problem(report_dir: Path | None, step_summary: str | None) -> str | None:
    """Why the report could not be written, checked at start-up so that a bad --slm-report or
    $GITHUB_STEP_SUMMARY costs no run. Creates and changes nothing: the writes it stands for come
    at the end. The step summary is written only beside a report, so without one it is not checked."""
    if report_dir is None:
        return None
    if problem := _directory_problem(report_dir):
        return f"--slm-report: {problem}"
    if step_summary and (problem := _append_problem(Path(step_summary))):
        return f"$GITHUB_STEP_SUMMARY {problem}"
    return None


def _directory_problem(directory: Path) -> str | None:
    """The report directory, or the first of its parents that exists, must be a directory a file
    can be written in; none of the report's files may be a directory."""
    if problem := directory_problem(directory):
        return problem
    if taken := [name for name in FILES if (directory / name).is_dir()]:
        return f"{directory / taken[0]} is a directory, not a file"
    return None


def _append_problem(path: Path) -> str | None:
    """GitHub names a file that exists; appending needs it to be a regular, writable file, or, where
    it does not exist yet, a writable directory to create it in."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if not path.parent.is_dir():
            return f"{path}: no such directory {path.parent}"
        try:
            with tempfile.TemporaryFile(dir=path.parent):
                return None
        except OSError as exc:
            return f"{path} cannot be created: {exc.strerror}"
    except OSError as exc:  # a parent is a file, a loop of links, ...
        return f"{path}: {exc.strerror}"
    if not stat.S_ISREG(mode):  # opening a FIFO to check it would wait for a reader
        return f"{path} is {'a directory' if stat.S_ISDIR(mode) else 'not a regular file'}"
    try:  # opened for appending and closed: nothing written, nothing changed
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        return f"{path} is not writable: {exc.strerror}"
    return None


def write_report(
    directory: Path, results: dict[str, Any], outcomes: Sequence[Outcome], history: Path | None = None
) -> list[Path]:
    """results.json for machines; summary.md and report.html (tables and plots, and the trends in
    the `history` store) for people; each opens with the same outcomes as the terminal's roll-up.
    The summary also goes to GitHub's job page when $GITHUB_STEP_SUMMARY names a file. A write that
    fails raises ReportError, naming the file; files written before it stay."""
    ordered = {
        name: sorted(rows, key=lambda r: (r["item"], r.get("metric", ""))) if name in KINDS else rows
        for name, rows in results.items()
    }
    texts = (
        json.dumps({**ordered, "outcomes": as_json(outcomes)}, indent=2, sort_keys=True) + "\n",
        summary := markdown(ordered, outcomes),
        html.render(ordered, outcomes, history),
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"--slm-report: cannot create directory {directory}: {exc.strerror or exc}") from exc
    paths = [directory / name for name in FILES]
    for path, text in zip(paths, texts):
        try:
            write_text_atomic(path, text)
        except OSError as exc:
            raise ReportError(f"--slm-report: cannot write {path}: {exc.strerror or exc}") from exc
    if step_summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        try:
            with open(step_summary, "a", encoding="utf-8") as handle:
                handle.write(summary)
        except OSError as exc:
            raise ReportError(f"$GITHUB_STEP_SUMMARY {step_summary}: cannot append: {exc.strerror or exc}") from exc
    return paths


def markdown(results: dict[str, Any], outcomes: Sequence[Outcome]) -> str:
    """summary.md: the roll-up, what changed, the items not judged and why, the brief tables, the baselines written."""
    text = f"## pytest-slm summary\n\n**{rollup(outcomes)}**\n\n"
    if changed := results.get("changed"):
        text += f"changed since the baselines: {'; '.join(changed)}\n\n"
    if unjudged := [outcome for outcome in outcomes if outcome.reason]:
        text += "Not judged:\n\n" + "".join(f"- {_unjudged(outcome)}\n" for outcome in unjudged) + "\n"
    if found := known(outcomes):
        text += "Known failures and fixes:\n\n" + "".join(f"- `{o.nodeid}` ({o.outcome}): {o.message}\n" for o in found)
        text += "\n"
    text += "".join(f"{table}\n\n" for table in all_tables(results, tablefmt="github"))
    if writes := results.get("baseline_writes"):
        text += "\n".join(f"- {line.strip()}" for line in baseline_writes(writes)) + "\n"
    return text


def _unjudged(outcome: Outcome) -> str:
    strict = "" if outcome.outcome == NOT_JUDGED else ", failed: strict"
    return f"`{outcome.nodeid}` ({outcome.reason}{strict}): {outcome.message}"
