"""The run as one HTML page CI can keep: the plots of the SLM survey (Lu et al. 2024), drawn by
charts.py as inline SVG, then the tables. Nothing is fetched and nothing runs, so the page opens
offline, from an artifact, in any browser."""

from __future__ import annotations

from collections import Counter
from html import escape
from pathlib import Path
from typing import Any, Sequence

from . import tables

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 1140px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.counts span { padding: 1px 6px; border-radius: 3px; }
figure { margin: 24px 0; }
figcaption { font-size: 17px; font-weight: 600; margin-bottom: 8px; }
.panels { display: flex; flex-wrap: wrap; gap: 16px; }
svg { border: 1px solid #e3e3e3; border-radius: 4px; max-width: 100%; height: auto; }
.no-charts { color: #7a5a00; }
table { border-collapse: collapse; font-size: 13px; margin-bottom: 8px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e6e6e6; text-align: right; white-space: nowrap; }
th { background: #f5f5f5; }
th:first-child, td:first-child { text-align: left; }
.verdict-pass { background: #e2f2e0; color: #1e6b24; }
.verdict-fail { background: #d62728; color: #fff; font-weight: 600; }
.verdict-updated, .verdict-changed { background: #fff1cc; color: #7a5a00; }
"""
VERDICT_CLASSES = {"pass": "verdict-pass", "FAIL": "verdict-fail", "updated": "verdict-updated", "changed": "verdict-changed"}
VERDICT_SEVERITY = ("FAIL", "changed", "updated", "pass")  # worst first


def render(results: dict[str, Any], history: Path | None = None) -> str:
    """The page for the dict results.json holds; a section without rows is left out, not drawn empty.
    With a history store, the trend of each of the run's series across the stored runs too."""
    sections = [_table(title, *cells(results[name])) for name, (title, cells) in tables.SECTIONS.items() if results.get(name)]
    writes = _baseline_writes(results.get("baseline_writes") or [])
    trends = _trends(results, history) if history is not None else ""
    parts = ("<h1>pytest-slm report</h1>", _counts(results), *_figures(results), trends, *sections, writes)
    body = "\n".join(part for part in parts if part)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>pytest-slm report</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _figures(results: dict[str, Any]) -> list[str]:
    """The plots, or the one line that says why there are none: matplotlib is an optional extra."""
    try:
        from . import charts  # imports matplotlib: only when a page is drawn
    except ImportError:
        return ["<p class=\"no-charts\">charts need matplotlib: pip install 'pytest-slm[report]'</p>"]
    return [
        f'<figure id="{plot_id}">\n<figcaption>{escape(caption)}</figcaption>\n'
        f'<div class="panels">\n{"".join(panels)}</div>\n</figure>'
        for plot_id, caption, panels in charts.figures(results)
    ]


def _trends(results: dict[str, Any], history: Path) -> str:
    """A panel per series of this run's items that the store has two runs or more of, with its
    steps marked; one line instead when the store cannot be read (the run has said why already)."""
    from ..history import trends
    from ..history.store import HistoryError

    items = {row["item"] for section in tables.SECTIONS for row in results.get(section) or []}
    try:
        series = trends.of_items(history, items)
    except HistoryError as exc:
        return f'<p class="no-charts">trend plots: {escape(str(exc))}</p>'
    if not series:
        return ""
    try:
        from . import trend_charts  # imports matplotlib; without it _figures has said so
    except ImportError:
        return ""
    panels = "".join(
        f'<div class="trend" data-series="{escape(" ".join((one.section, one.item, one.metric, one.fingerprint)).strip())}">'
        f"{panel}</div>\n"
        for one, panel in trend_charts.panels(series)
    )
    return (
        '<figure id="trends">\n<figcaption>Trends across the stored runs, steps marked</figcaption>\n'
        f"<p>{len(series)} series of this run's items in <code>{escape(str(history))}</code>, each an item × metric"
        " on one machine; the steps are those <code>python -m pytest_slm history</code> finds.</p>\n"
        f'<div class="panels">\n{panels}</div>\n</figure>'
    )


def _counts(results: dict[str, Any]) -> str:
    """One verdict per combination and kind of item, the worst of its rows: a latency item fails
    when any of its metrics does."""
    worst: dict[tuple[str, str], str] = {}
    for section in tables.SECTIONS:
        for row in results.get(section) or []:
            key = (section, row["item"])
            worst[key] = min(worst.get(key, row["verdict"]), row["verdict"], key=_severity)
    verdicts = Counter(worst.values())
    shown = {"pass": verdicts.pop("pass", 0), **dict(sorted(verdicts.items(), key=lambda kv: _severity(kv[0])))}
    parts = [
        f'<span class="{VERDICT_CLASSES.get(verdict, "")}">{count} {escape(verdict)}</span>' for verdict, count in shown.items()
    ]
    return f'<p class="counts">{len(worst)} items: {", ".join(parts)}</p>'


def _severity(verdict: str) -> int:
    return VERDICT_SEVERITY.index(verdict) if verdict in VERDICT_SEVERITY else len(VERDICT_SEVERITY)


# Tables


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table whose last column is the verdict, coloured so a failure stands out."""
    if not rows:
        return ""
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{escape(cell)}</td>" for cell in row[:-1])
        + f'<td class="{VERDICT_CLASSES.get(row[-1], "")}">{escape(row[-1])}</td></tr>\n'
        for row in rows
    )
    return f"<h2>{escape(title)}</h2>\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _baseline_writes(writes: Sequence[dict[str, Any]]) -> str:
    if not writes:
        return ""
    changed = sorted(write["path"] for write in writes if write["changed"])
    paths = "".join(f"<li><code>{escape(path)}</code></li>" for path in changed)
    return (
        f"<h2>Baselines</h2>\n<p>{len(changed)} changed, {len(writes) - len(changed)} unchanged</p>\n"
        + (f"<ul>{paths}</ul>" if paths else "")
    )
