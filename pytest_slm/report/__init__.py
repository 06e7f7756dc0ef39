"""What a run reports: one table for the whole run, whichever process measured each row, in the
terminal and, with --slm-report, as files CI keeps (results.json, summary.md, report.html, the step
summary)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from tabulate import tabulate

from . import html, tables
from ..store.atomic import write_text_atomic


def table(section: str, rows: Sequence[dict[str, Any]], tablefmt: str = "simple") -> str:
    headers, body = tables.SECTIONS[section][1](rows)
    return tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)


IDENTITY = frozenset({"item", "model", "device", "quant", "task", "metric", "unit"})


def junit_properties(row: dict[str, Any]) -> list[tuple[str, object]]:
    """A row's figures as JUnit properties, so CI test viewers show them beside the test:
    `accuracy`, `decode.median`, `kv_bytes@2048`."""
    prefix = f"{row['metric']}." if "metric" in row else ""
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
    return "model loads: " + "; ".join(f"{process}: {', '.join(models)}" for process, models in sorted(by_process.items()))


def all_tables(results: dict[str, list[dict[str, Any]]], tablefmt: str = "simple") -> list[str]:
    """The run's tables, in order, for the sections that have rows."""
    return [table(section, results[section], tablefmt) for section in tables.SECTIONS if results.get(section)]


def write_report(directory: Path, results: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """results.json for machines; summary.md and report.html (tables and plots) for people; the
    summary also goes to GitHub's job page when $GITHUB_STEP_SUMMARY names a file."""
    ordered = {
        name: rows if name == "baseline_writes" else sorted(rows, key=lambda r: (r["item"], r.get("metric", "")))
        for name, rows in results.items()
    }
    summary = "## pytest-slm summary\n\n" + "".join(f"{text}\n\n" for text in all_tables(ordered, tablefmt="github"))
    if writes := ordered.get("baseline_writes"):
        summary += "\n".join(f"- {line.strip()}" for line in baseline_writes(writes)) + "\n"
    paths = [directory / "results.json", directory / "summary.md", directory / "report.html"]
    write_text_atomic(paths[0], json.dumps(ordered, indent=2, sort_keys=True) + "\n")
    write_text_atomic(paths[1], summary)
    write_text_atomic(paths[2], html.render(ordered))
    if step_summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(summary)
    return paths
