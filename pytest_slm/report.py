"""The terminal summary: one table for the whole run, whichever process measured each row."""

from __future__ import annotations

from typing import Any, Sequence

from tabulate import tabulate

HEADERS = ("item", "accuracy", "baseline", "delta", "flips -/+", "p", "verdict")


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
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
    return tabulate(body, headers=HEADERS, tablefmt="simple", disable_numparse=True)


def baseline_writes(writes: Sequence[dict[str, Any]]) -> list[str]:
    changed = sorted(w["path"] for w in writes if w["changed"])
    lines = [f"baselines: {len(changed)} changed, {len(writes) - len(changed)} unchanged"]
    lines += [f"  wrote {path}" for path in changed]
    return lines


def _or_dash(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)
