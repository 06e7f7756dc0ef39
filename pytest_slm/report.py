"""What a run reports: one table for the whole run, whichever process measured each row, in the
terminal and, with --slm-report, as files CI keeps (results.json, summary.md, the step summary)."""

from __future__ import annotations

import json
import os
from operator import itemgetter
from pathlib import Path
from typing import Any, Sequence

from tabulate import tabulate

from . import html_report
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


def parity_table(rows: Sequence[dict[str, Any]], tablefmt: str = "simple") -> str:
    return _distributions_table(rows, "parity item", tablefmt)


def fidelity_table(rows: Sequence[dict[str, Any]], tablefmt: str = "simple") -> str:
    """Each quant against the model's exact float32 values, and the mean KLD its baseline had."""
    return _distributions_table(rows, "fidelity item (vs f32)", tablefmt)


def _distributions_table(rows: Sequence[dict[str, Any]], title: str, tablefmt: str) -> str:
    with_baseline = any("baseline_mean_kld" in row for row in rows)
    headers = [title, "positions", "top-1 agree", "mean KLD", *(["baseline"] if with_baseline else []), "p99 KLD", "ppl ref / cand", "verdict"]
    body = [
        (
            row["item"],
            str(row["tokens"]),
            f"{row['top1_agreement']:.4f}",
            f"{row['mean_kld']:.2e}",
            *([_or_dash(row.get("baseline_mean_kld"), "{:.2e}")] if with_baseline else []),
            f"{row['p99_kld']:.2e}",
            f"{row['reference_perplexity']:.2f} / {row['perplexity']:.2f}",
            row["verdict"],
        )
        for row in sorted(rows, key=lambda r: r["item"])
    ]
    return tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)


RUNTIME_HEADERS = ("runtime item", "metric", "median", "spread", "baseline", "change", "limit", "load", "verdict")


def runtime_table(rows: Sequence[dict[str, Any]], tablefmt: str = "simple") -> str:
    body = [
        (
            row["item"],
            row["metric"],
            f"{row['median']:.4g} {row['unit']}",
            f"±{100 * row['spread']:.1f}%",
            _or_dash(row["baseline"], "{:.4g}"),
            _or_dash(row["change_pct"], "{:+.1f}% slower"),
            _or_dash(row["limit_pct"], "{:.1f}%") + (f" ({row['rounds']} rounds)" if row["rounds"] > 1 else ""),
            _or_dash(row["load"], "{:.2f}"),
            row["verdict"],
        )
        for row in sorted(rows, key=itemgetter("item", "metric"))
    ]
    return tabulate(body, headers=RUNTIME_HEADERS, tablefmt=tablefmt, disable_numparse=True)


def memory_table(rows: Sequence[dict[str, Any]], tablefmt: str = "simple") -> str:
    """Weights, KV cache per token, and the cache's share of weights + cache at each context length."""
    contexts = sorted({kv["context"] for row in rows for kv in row["kv_cache"]})
    headers = ("memory item", "weights", "KV/token", *(f"KV @{c}" for c in contexts), "peak RSS", "verdict")
    body = []
    for row in sorted(rows, key=itemgetter("item")):
        by_context = {kv["context"]: kv for kv in row["kv_cache"]}
        cells = [
            f"{_mib(by_context[c]['kv_bytes'])} ({100 * by_context[c]['share']:.0f}%)" if c in by_context else "-"
            for c in contexts
        ]
        peak = "-" if row["peak_rss_bytes"] is None else _mib(row["peak_rss_bytes"])
        body.append((row["item"], _mib(row["weights_bytes"]), f"{row['kv_bytes_per_token']} B", *cells, peak, row["verdict"]))
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


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


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


TABLES = {"items": summary_table, "parity": parity_table, "fidelity": fidelity_table, "runtime": runtime_table, "memory": memory_table}


def tables(results: dict[str, list[dict[str, Any]]], tablefmt: str = "simple") -> list[str]:
    """The run's tables, in order, for the sections that have rows."""
    return [table(results[name], tablefmt=tablefmt) for name, table in TABLES.items() if results.get(name)]


def write_report(directory: Path, results: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """results.json for machines; summary.md and report.html (tables and plots) for people; the
    summary also goes to GitHub's job page when $GITHUB_STEP_SUMMARY names a file."""
    ordered = {
        name: rows if name == "baseline_writes" else sorted(rows, key=lambda r: (r["item"], r.get("metric", "")))
        for name, rows in results.items()
    }
    summary = "## pytest-slm summary\n\n" + "".join(f"{table}\n\n" for table in tables(ordered, tablefmt="github"))
    if writes := ordered.get("baseline_writes"):
        summary += "\n".join(f"- {line.strip()}" for line in baseline_writes(writes)) + "\n"
    paths = [directory / "results.json", directory / "summary.md", directory / "report.html"]
    write_text_atomic(paths[0], json.dumps(ordered, indent=2, sort_keys=True) + "\n")
    write_text_atomic(paths[1], summary)
    write_text_atomic(paths[2], html_report.render(ordered))
    if step_summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(summary)
    return paths
