"""What a run reports: one table for the whole run, whichever process measured each row, in the
terminal and, with --slm-report, as files CI keeps (results.json, summary.md, the step summary)."""

from __future__ import annotations

import json
import os
from operator import itemgetter
from pathlib import Path
from typing import Any, Sequence

from tabulate import tabulate

from .atomic import write_text_atomic

HEADERS = ("item", "accuracy", "baseline", "delta", "flips -/+", "p", "verdict")


def summary_table(rows: Sequence[dict[str, Any]], tablefmt: str = "simple") -> str:
    body = [
        (
            row["item"],
            f"{row['accuracy']:.3f}",
            _or_dash(row["baseline"], "{:.3f}"),
            _or_dash(row["delta_points"], "{:+.1f} pt"),
            "-" if row["regressed"] is None else f"{row['regressed']}/{row['improved']}",
            _or_dash(row["p_value"], "{:.3g}"),
            row["verdict"],
        )
        for row in sorted(rows, key=lambda r: r["item"])
    ]
    return tabulate(body, headers=HEADERS, tablefmt=tablefmt, disable_numparse=True)


PARITY_HEADERS = ("parity item", "positions", "top-1 agree", "mean KLD", "p99 KLD", "ppl ref / cand", "verdict")


def parity_table(rows: Sequence[dict[str, Any]], tablefmt: str = "simple") -> str:
    body = [
        (
            row["item"],
            str(row["tokens"]),
            f"{row['top1_agreement']:.4f}",
            f"{row['mean_kld']:.2e}",
            f"{row['p99_kld']:.2e}",
            f"{row['reference_perplexity']:.2f} / {row['perplexity']:.2f}",
            row["verdict"],
        )
        for row in sorted(rows, key=lambda r: r["item"])
    ]
    return tabulate(body, headers=PARITY_HEADERS, tablefmt=tablefmt, disable_numparse=True)


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


def _or_dash(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)


def write_report(
    directory: Path,
    rows: Sequence[dict[str, Any]],
    parity_rows: Sequence[dict[str, Any]],
    writes: Sequence[dict[str, Any]],
) -> list[Path]:
    """results.json for machines, summary.md for people; the summary also goes to GitHub's job
    page when $GITHUB_STEP_SUMMARY names a file."""
    by_item = itemgetter("item")
    results = {
        "items": sorted(rows, key=by_item),
        "parity": sorted(parity_rows, key=by_item),
        "baseline_writes": list(writes),
    }
    summary = "## pytest-slm summary\n\n"
    if rows:
        summary += summary_table(rows, tablefmt="github") + "\n"
    if parity_rows:
        summary += "\n" + parity_table(parity_rows, tablefmt="github") + "\n"
    if writes:
        summary += "\n" + "\n".join(f"- {line.strip()}" for line in baseline_writes(writes)) + "\n"
    paths = [directory / "results.json", directory / "summary.md"]
    write_text_atomic(paths[0], json.dumps(results, indent=2, sort_keys=True) + "\n")
    write_text_atomic(paths[1], summary)
    if step_summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(summary)
    return paths
