"""The run as one HTML page CI can keep: first what the reader came for (every item's outcome,
what changed since the baselines, what failed, what was not judged and why), then the plots of the
SLM survey (Lu et al. 2024), drawn by charts.py as inline SVG, the trends that moved, and the full
tables. Nothing is fetched and nothing runs, so the page opens offline, from an artifact, in any
browser."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checks import KINDS
from ..checks.core import NOT_JUDGED
from .outcomes import ERROR, FAIL, PASS, Outcome, known, parts

if TYPE_CHECKING:
    from ..history.trends import Series

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 1140px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.counts { font-size: 15px; }
.counts span { padding: 1px 6px; border-radius: 3px; }
.lead li { margin: 2px 0; }
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
VERDICT_CLASSES = {
    "pass": "verdict-pass",
    "FAIL": "verdict-fail",
    "updated": "verdict-updated",
    "changed": "verdict-changed",
}
OUTCOME_CLASSES = {PASS: "verdict-pass", FAIL: "verdict-fail", ERROR: "verdict-fail", NOT_JUDGED: "verdict-changed"}


def render(results: dict[str, Any], outcomes: Sequence[Outcome] = (), history: Path | None = None) -> str:
    """The page for the dict results.json holds, and the run's outcomes; a section without rows is
    left out, not drawn empty. With a history store, the trend of each of the run's series across
    the stored runs too."""
    sections = [_table(kind.title, *kind.table(results[name])) for name, kind in KINDS.items() if results.get(name)]
    writes = _baseline_writes(results.get("baseline_writes") or [])
    trends = _trends(results, history) if history is not None else ""
    blocks = ("<h1>pytest-slm report</h1>", *_lead(results, outcomes), *_figures(results), trends, *sections, writes)
    body = "\n".join(block for block in blocks if block)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>pytest-slm report</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _lead(results: dict[str, Any], outcomes: Sequence[Outcome]) -> list[str]:
    """The roll-up line the terminal prints, coloured; then what changed in the software since the
    baselines, the items that failed, those not judged, and the known failures and fixes, each with
    its one line."""
    counted = ", ".join(
        f'<span class="{OUTCOME_CLASSES.get(name, "")}">{escape(text)}</span>' for name, text in parts(outcomes)
    )
    total = len(outcomes)
    lead = [f'<p class="counts">{total} item{"" if total == 1 else "s"}: {counted}</p>']
    if changed := results.get("changed"):
        lead.append(_list("changed", "Changed since the baselines", [escape(change) for change in changed]))
    if failed := [outcome for outcome in outcomes if outcome.outcome in (FAIL, ERROR)]:
        lead.append(_list("failed", "Failed", [_outcome(outcome) for outcome in failed]))
    if unjudged := [outcome for outcome in outcomes if outcome.outcome == NOT_JUDGED]:
        lead.append(_list("not-judged", "Not judged", [_outcome(outcome) for outcome in unjudged]))
    if found := known(outcomes):
        lead.append(_list("known", "Known failures and fixes", [_outcome(o, o.outcome) for o in found]))
    return lead


def _list(section_id: str, title: str, items: Sequence[str]) -> str:
    lines = "".join(f"<li>{item}</li>\n" for item in items)
    return f'<section id="{section_id}" class="lead">\n<h2>{title}</h2>\n<ul>\n{lines}</ul>\n</section>'


def _outcome(outcome: Outcome, said: str = "") -> str:
    """An item's line: its node id, what it is (`said`: a known failure, a fix) or why it was not
    judged (a strict failure's too), its message."""
    said = said or outcome.reason
    reason = f" ({escape(said)})" if said else ""
    return f"<code>{escape(outcome.nodeid)}</code>{reason}: {escape(outcome.message)}"


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
    """For the series of this run's items that the store has two runs or more of: a panel, its
    steps marked, for each that moved (a step, or a verdict this run other than pass); a row of one
    table for each steady one. One line instead when the store cannot be read (the run has said why)."""
    from ..history import trends
    from ..history.database import HistoryError
    from ..history.record import measures_of

    rows = [(section, row) for section in KINDS for row in results.get(section) or []]
    try:
        series = trends.of_items(history, {row["item"] for _, row in rows})
    except HistoryError as exc:
        return f'<p class="no-charts">trend plots: {escape(str(exc))}</p>'
    if not series:
        return ""
    try:
        from . import trend_charts  # imports matplotlib; without it _figures has said so
    except ImportError:
        return ""
    verdicts = {
        (m.section, m.item, m.metric): m.verdict for section, row in rows for m in measures_of(section, row, "")
    }
    moved = [bool(one.steps) or verdicts.get((one.section, one.item, one.metric), "pass") != "pass" for one in series]
    drawn = [one for one, moving in zip(series, moved) if moving]
    panels = "".join(
        f'<div class="trend" data-series="{_series_name(one)}">{panel}</div>\n'
        for one, panel in trend_charts.panels(drawn)
    )
    return (
        '<figure id="trends">\n<figcaption>Trends across the stored runs, steps marked</figcaption>\n'
        f"<p>{len(series)} series of this run's items in <code>{escape(str(history))}</code>, each an item × metric"
        f" on one machine: {len(drawn)} moved (a step, or a verdict other than pass) and are drawn,"
        f" {len(series) - len(drawn)} steady. The steps are those <code>python -m pytest_slm history</code> finds.</p>\n"
        + (f'<div class="panels">\n{panels}</div>\n' if panels else "")
        + _steady([one for one, moving in zip(series, moved) if not moving])
        + "</figure>"
    )


def _series_name(one: Series) -> str:
    return escape(f"{one.section} {one.item} {one.metric} {one.fingerprint}".strip())


def _steady(series: Sequence[Series]) -> str:
    """A row per series that did not move: its runs, its range and its latest value."""
    if not series:
        return ""
    rows = "".join(
        f'<tr data-series="{_series_name(one)}"><td>{escape(one.item)}</td><td>{escape(one.metric)}</td>'
        f"<td>{escape(one.fingerprint) or '-'}</td><td>{len(one.runs)}</td>"
        f"<td>{min(one.values):.4g} – {max(one.values):.4g}</td><td>{one.values[-1]:.4g} {escape(one.unit)}</td></tr>\n"
        for one in series
    )
    head = "".join(f"<th>{name}</th>" for name in ("steady series", "metric", "machine", "runs", "range", "latest"))
    return f'<table class="steady">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n'


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
    return f"<h2>Baselines</h2>\n<p>{len(changed)} changed, {len(writes) - len(changed)} unchanged</p>\n" + (
        f"<ul>{paths}</ul>" if paths else ""
    )
