"""The run as one HTML page CI can keep: the plots of the SLM survey (Lu et al. 2024) drawn as
inline SVG, then the tables. Nothing is fetched and nothing runs, so the page opens offline, from
an artifact, in any browser."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from html import escape
from typing import Any, Iterable, Sequence

from . import tables
from ..options import QUANTS

# Bar colours are used nowhere else on the page, so a screenshot shows whether each plot was drawn.
TASK_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#edc948", "#9c755f")
PREFILL_COLOURS = ("#2a9d8f", "#8ecdc4", "#1d6b62")
DECODE_COLOUR = "#e76f51"
REST_COLOUR = "#8d99ae"
KV_COLOUR = "#6a3d9a"

MIB = 2**20
LEFT, RIGHT, BOTTOM = 64, 16, 58  # margins around a plot area: y ticks and label, -, x ticks and label
TITLE_HEIGHT, LEGEND_LINE = 30, 18
PLOT_HEIGHT, MIN_PLOT_WIDTH = 220, 300
BAR, BAR_GAP, GROUP_GAP = 16, 2, 22
MIN_GROUP = 40  # room for a quant's name under its group
CHAR_WIDTH = 6.5  # of 11px sans-serif, to lay out legends without measuring text

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 1140px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.counts span { padding: 1px 6px; border-radius: 3px; }
figure { margin: 24px 0; }
figcaption { font-size: 17px; font-weight: 600; margin-bottom: 8px; }
.panels { display: flex; flex-wrap: wrap; gap: 16px; }
svg { border: 1px solid #e3e3e3; border-radius: 4px; background: #fff; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg .panel-title { font-size: 13px; font-weight: 600; }
svg .axis-label { font-size: 12px; fill: #555; }
.grid { stroke: #ececec; }
.axis { stroke: #888; }
.whisker { stroke: #222; stroke-width: 1.2; }
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


def render(results: dict[str, Any]) -> str:
    """The page for the dict results.json holds; a section without rows is left out, not drawn empty."""
    figures = (
        _accuracy_figure(results.get("items") or []),
        _speed_figure(results.get("runtime") or []),
        _memory_figure(results.get("memory") or []),
    )
    sections = [_table(title, *cells(results[name])) for name, (title, cells) in tables.SECTIONS.items() if results.get(name)]
    writes = _baseline_writes(results.get("baseline_writes") or [])
    body = "\n".join(part for part in ("<h1>pytest-slm report</h1>", _counts(results), *figures, *sections, writes) if part)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>pytest-slm report</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def ladder_order(quants: Iterable[str]) -> list[str]:
    """Quants from the shipped file down the ladder, so bars coarsen left to right; unknown ones last."""
    return sorted(set(quants), key=lambda quant: (QUANTS.index(quant) if quant in QUANTS else len(QUANTS), quant))


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


# Plots


@dataclass(frozen=True)
class Series:
    name: str
    colour: str


@dataclass(frozen=True)
class Frame:
    """Where one panel's plot area lies, in pixels, and the value its top edge stands for."""

    top: float
    plot_width: float
    y_top: float

    @property
    def width(self) -> float:
        return LEFT + self.plot_width + RIGHT

    @property
    def height(self) -> float:
        return self.top + PLOT_HEIGHT + BOTTOM

    @property
    def x_axis(self) -> float:
        return self.top + PLOT_HEIGHT

    def y(self, value: float) -> float:
        return self.x_axis - PLOT_HEIGHT * max(0.0, min(value, self.y_top)) / self.y_top


@dataclass(frozen=True)
class Panel:
    """One chart of grouped bars: a group per x label, a bar per series, an optional whisker per bar."""

    title: str
    x_label: str
    y_label: str
    groups: Sequence[str]
    series: Sequence[Series]
    values: dict[tuple[str, str], float]  # (group, series name) -> height
    whiskers: dict[tuple[str, str], float]  # (group, series name) -> half-length


def _accuracy_figure(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    tasks = sorted({row["task"] for row in rows})
    colours = {task: TASK_COLOURS[index % len(TASK_COLOURS)] for index, task in enumerate(tasks)}
    panels = []
    for (model, device), facet in _facets(rows):
        panel = Panel(
            title=f"{model} · {device}",
            x_label="quantization",
            y_label="accuracy",
            groups=ladder_order(row["quant"] for row in facet),
            series=[Series(task, colours[task]) for task in sorted({row["task"] for row in facet})],
            values={(row["quant"], row["task"]): row["accuracy"] for row in facet},
            whiskers={},
        )
        panels.append(_grouped_bars(panel, "acc-bar", largest=1.0))  # the whole scale, so panels compare
    return _figure("accuracy-ladder", "Accuracy per task across the quantization ladder", panels)


def _speed_figure(rows: Sequence[dict[str, Any]]) -> str:
    """Prefill and decode side by side, each on its own scale: decode is often ten times slower and
    would be a sliver beside prefill."""
    rows = [row for row in rows if row["unit"] == "tok/s" and _is_speed(row["metric"])]
    if not rows:
        return ""
    panels = []
    for (model, device), facet in _facets(rows):
        for phase in ("prefill", "decode"):
            if phase_rows := [row for row in facet if row["metric"].startswith(phase)]:
                panels.append(_speed_panel(f"{model} · {device} · {phase}", phase_rows))
    return _figure("speed", "Prefill and decode speed per quantization", panels)


def _speed_panel(title: str, rows: Sequence[dict[str, Any]]) -> str:
    """Whiskers from `spread`, a robust standard deviation relative to the median: the same fraction
    of a speed as of the timings it came from, to first order."""
    panel = Panel(
        title=title,
        x_label="quantization",
        y_label="tokens / s (median ± robust σ)",
        groups=ladder_order(row["quant"] for row in rows),
        series=_speed_series({row["metric"] for row in rows}),
        values={(row["quant"], row["metric"]): row["median"] for row in rows},
        whiskers={(row["quant"], row["metric"]): row["median"] * row["spread"] for row in rows},
    )
    return _grouped_bars(panel, "speed-bar", largest=max(row["median"] * (1 + row["spread"]) for row in rows))


def _is_speed(metric: str) -> bool:
    name, _, length = metric.partition("@")
    return metric == "decode" or (name == "prefill" and length.isdigit())


def _speed_series(metrics: set[str]) -> list[Series]:
    """Prefill lengths in order, in shades of one colour, then decode in another: the phases differ in kind."""
    prefills = sorted(metrics - {"decode"}, key=lambda metric: int(metric.partition("@")[2]))
    series = [Series(metric, PREFILL_COLOURS[index % len(PREFILL_COLOURS)]) for index, metric in enumerate(prefills)]
    if "decode" in metrics:
        series.append(Series("decode", DECODE_COLOUR))
    return series


def _memory_figure(rows: Sequence[dict[str, Any]]) -> str:
    rows = [row for row in rows if row.get("kv_cache")]
    if not rows:
        return ""
    panels = [_memory_panel(f"{model} · {device}", facet) for (model, device), facet in _facets(rows)]
    return _figure("memory", "Memory against context length, with the KV cache's share", panels)


def _facets(rows: Sequence[dict[str, Any]]) -> list[tuple[tuple[str, str], list[dict[str, Any]]]]:
    """Rows by (model, device): quants of one model on one runtime are what a panel compares."""
    facets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        facets.setdefault((row["model"], row["device"]), []).append(row)
    return sorted(facets.items())


def _figure(figure_id: str, caption: str, panels: Sequence[str]) -> str:
    return (
        f'<figure id="{figure_id}">\n<figcaption>{escape(caption)}</figcaption>\n'
        f'<div class="panels">\n{"".join(panels)}</div>\n</figure>'
    )


def _grouped_bars(panel: Panel, bar_class: str, largest: float) -> str:
    group_width = max(len(panel.series) * (BAR + BAR_GAP) - BAR_GAP, MIN_GROUP) + GROUP_GAP
    plot_width = max(len(panel.groups) * group_width, MIN_PLOT_WIDTH)
    legend, legend_height = _legend(panel.series, LEFT + plot_width + RIGHT)
    frame = Frame(top=TITLE_HEIGHT + legend_height + 8, plot_width=plot_width, y_top=_ticks(largest)[-1])
    parts = _axes(frame, panel.title, panel.x_label, panel.y_label) + legend
    slot = plot_width / len(panel.groups)
    for index, group in enumerate(panel.groups):
        centre = LEFT + (index + 0.5) * slot
        parts.append(_text(centre, frame.x_axis + 16, group, "middle", "x-tick"))
        present = [series for series in panel.series if (group, series.name) in panel.values]
        left = centre - (len(present) * (BAR + BAR_GAP) - BAR_GAP) / 2
        for position, series in enumerate(present):
            value = panel.values[group, series.name]
            x = left + position * (BAR + BAR_GAP)
            tooltip = f"{group} {series.name}: {value:.4g}"
            parts.append(_bar(bar_class, x, frame.y(value), BAR, frame.x_axis - frame.y(value), series.colour, tooltip))
            if (spread := panel.whiskers.get((group, series.name))) is not None:
                parts.append(_whisker(x + BAR / 2, frame.y(value - spread), frame.y(value + spread)))
    return _svg(frame, parts)


def _memory_panel(title: str, rows: Sequence[dict[str, Any]]) -> str:
    """Stacked bars, one per context length in a group per quant: what the KV cache adds to the weights."""
    by_quant = {row["quant"]: sorted(row["kv_cache"], key=lambda kv: kv["context"]) for row in rows}
    quants = ladder_order(by_quant)
    most_contexts = max(len(by_quant[quant]) for quant in quants)
    bar_width = 2 * BAR  # wide enough for the share printed above it
    plot_width = max(len(quants) * (most_contexts * (bar_width + 4) + GROUP_GAP), MIN_PLOT_WIDTH)
    series = [Series("non-KV (weights and the rest)", REST_COLOUR), Series("KV cache", KV_COLOUR)]
    legend, legend_height = _legend(series, LEFT + plot_width + RIGHT)
    largest = max(kv["total_bytes"] for quant in quants for kv in by_quant[quant]) / MIB
    # headroom above the tallest bar for its share
    frame = Frame(top=TITLE_HEIGHT + legend_height + 16, plot_width=plot_width, y_top=_ticks(largest * 1.08)[-1])
    parts = _axes(frame, title, "context length (tokens), per quantization", "memory (MiB)") + legend
    slot = plot_width / len(quants)
    for index, quant in enumerate(quants):
        centre = LEFT + (index + 0.5) * slot
        parts.append(_text(centre, frame.x_axis + 30, quant, "middle", "x-tick"))
        contexts = by_quant[quant]
        left = centre - (len(contexts) * (bar_width + 4) - 4) / 2
        for position, kv in enumerate(contexts):
            x = left + position * (bar_width + 4)
            total, kv_top = frame.y(kv["total_bytes"] / MIB), frame.y((kv["total_bytes"] - kv["kv_bytes"]) / MIB)
            tooltip = f"{quant} @ {kv['context']}: {kv['total_bytes'] / MIB:.1f} MiB, KV {kv['kv_bytes'] / MIB:.1f} MiB"
            parts.append(_bar("mem-rest", x, kv_top, bar_width, frame.x_axis - kv_top, REST_COLOUR, tooltip))
            parts.append(_bar("mem-kv", x, total, bar_width, kv_top - total, KV_COLOUR, tooltip))
            parts.append(_text(x + bar_width / 2, total - 4, _percent(kv["share"]), "middle", "share"))
            parts.append(_text(x + bar_width / 2, frame.x_axis + 14, _context(kv["context"]), "middle", "context-tick"))
    return _svg(frame, parts)


def _ticks(largest: float) -> list[float]:
    """Round steps (1, 2, 2.5 or 5 times a power of ten) from 0 to the first at or above the largest value."""
    largest = largest if largest > 0 else 1.0
    raw = largest / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(power * multiple for multiple in (1, 2, 2.5, 5, 10) if power * multiple >= raw * (1 - 1e-9))
    return [step * index for index in range(math.ceil(largest / step - 1e-9) + 1)]


def _axes(frame: Frame, title: str, x_label: str, y_label: str) -> list[str]:
    """Title, grid with y ticks, both axes and their labels: what every panel shares."""
    right = LEFT + frame.plot_width
    parts = [_text(LEFT, 20, title, "start", "panel-title")]
    for tick in _ticks(frame.y_top):
        y = frame.y(tick)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>')
        parts.append(_text(LEFT - 6, y + 4, f"{tick:g}", "end", "y-tick"))
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{frame.top}" x2="{LEFT}" y2="{frame.x_axis}"/>')
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{frame.x_axis}" x2="{right}" y2="{frame.x_axis}"/>')
    parts.append(_text(LEFT + frame.plot_width / 2, frame.height - 8, x_label, "middle", "axis-label"))
    middle = frame.top + PLOT_HEIGHT / 2
    parts.append(
        f'<text class="axis-label" text-anchor="middle" transform="translate(16 {middle:.1f}) rotate(-90)">'
        f"{escape(y_label)}</text>"
    )
    return parts


def _legend(series: Sequence[Series], width: float) -> tuple[list[str], float]:
    """Swatches in rows under the title, wrapped to the panel's width; returns them and their height."""
    parts: list[str] = []
    x, y = float(LEFT), float(TITLE_HEIGHT)
    for entry in series:
        entry_width = 18 + CHAR_WIDTH * len(entry.name) + 14
        if x + entry_width > width - RIGHT and x > LEFT:
            x, y = float(LEFT), y + LEGEND_LINE
        parts.append(f'<rect class="swatch" x="{x:.1f}" y="{y:.1f}" width="11" height="11" fill="{entry.colour}"/>')
        parts.append(_text(x + 16, y + 10, entry.name, "start", "legend"))
        x += entry_width
    return parts, y + LEGEND_LINE - TITLE_HEIGHT


def _bar(css_class: str, x: float, y: float, width: float, height: float, colour: str, tooltip: str) -> str:
    return (
        f'<rect class="{css_class}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{max(height, 0.0):.1f}" '
        f'fill="{colour}"><title>{escape(tooltip)}</title></rect>'
    )


def _whisker(x: float, low: float, high: float) -> str:
    """The spread as a vertical line with caps, drawn over the bar it belongs to."""
    return (
        f'<path class="whisker" d="M{x:.1f} {low:.1f}V{high:.1f}M{x - 4:.1f} {low:.1f}h8M{x - 4:.1f} {high:.1f}h8"/>'
    )


def _text(x: float, y: float, text: str, anchor: str, css_class: str) -> str:
    return f'<text class="{css_class}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def _svg(frame: Frame, parts: Sequence[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{frame.width:.0f}" height="{frame.height:.0f}" '
        f'viewBox="0 0 {frame.width:.0f} {frame.height:.0f}" role="img">\n' + "\n".join(parts) + "\n</svg>\n"
    )


def _percent(share: float) -> str:
    return f"{share:.0%}" if share >= 0.01 else f"{share:.1%}"


def _context(tokens: int) -> str:
    return f"{tokens // 1024}k" if tokens >= 1024 and tokens % 1024 == 0 else str(tokens)


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
