"""The plots of report.html, those of the SLM survey (Lu et al. 2024): accuracy across the
quantization ladder, prefill and decode speed, memory against context length; and the KL
divergence's tail per quant, as llama-perplexity reports it. matplotlib draws
them and measures their text; each becomes SVG text the page holds inline, so the page stays one
file that needs nothing else. Importing this module imports matplotlib (most of a second): the
page does it only when it is drawn."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation

from ..checks import KINDS
from ..measure.machine import metric_depth
from ..options import QUANTS

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

Rows = Sequence[dict[str, Any]]

# Bar colours are used nowhere else on the page, so a screenshot shows whether each plot was drawn.
TASK_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#edc948", "#9c755f")
PREFILL_COLOURS = ("#2a9d8f", "#8ecdc4", "#1d6b62")
DECODE_COLOUR = "#e76f51"
REST_COLOUR = "#8d99ae"
KV_COLOUR = "#6a3d9a"
DEPTH_DASHES = ("-", "--", ":", "-.")  # one per quant on a depth panel
KLD_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
# The KL divergence percentiles a fidelity row holds, as the share of positions above each.
KLD_TAILS = (("median", 0.5), ("p90", 0.1), ("p95", 0.05), ("p99", 0.01), ("p999", 0.001))

MIB = 2**20
HEIGHT, MIN_WIDTH = 3.4, 5.6  # inches; the page shows 96 px per inch
BAR_WIDTH, GROUP_GAP = 0.8, 0.25  # of a group's slot: bars, and the gap between groups
# Set while a figure is built and drawn, and restored after: nothing else in the process changes.
STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",  # text stays <text>: selectable, searchable, and small
    "text.parse_math": False,  # names from the data are text, even with a `$` in them
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "axes.axisbelow": True,
    "grid.color": "#e6e6e6",
    "errorbar.capsize": 3,
}


def figures(results: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(id, caption, panels as SVG) for each plot the results have rows for, in the page's order:
    each kind's plots (`Kind.charts`), the kinds ordered by their `chart_order`."""
    kinds = sorted(KINDS.values(), key=lambda kind: kind.chart_order)
    plots = [plot for kind in kinds for plot in kind.charts(results.get(kind.section) or [])]
    return [(plot_id, caption, [svg(panel) for panel in panels]) for plot_id, caption, panels in plots if panels]


@matplotlib.rc_context(STYLE)
def svg(figure: Figure) -> str:
    """The figure as an <svg> element, without the XML prolog a page inside HTML must not have."""
    buffer = io.StringIO()
    FigureCanvasSVG(figure).print_svg(buffer)  # type: ignore[no-untyped-call]  # matplotlib's backend_svg is untyped
    text = buffer.getvalue()
    return text[text.index("<svg") :]


@matplotlib.rc_context(STYLE)
def accuracy(rows: Rows) -> list[Figure]:
    """A panel per model and device: a group of bars per quant, a bar per task, on the whole 0-1
    scale so that panels compare."""
    tasks = sorted({row["task"] for row in rows})
    colours = {task: TASK_COLOURS[index % len(TASK_COLOURS)] for index, task in enumerate(tasks)}
    panels = []
    for (model, device), facet in _facets(rows):
        figure, axes = _grouped_bars(
            f"{model} · {device}",
            ladder_order(row["quant"] for row in facet),
            [(task, colours[task]) for task in sorted({row["task"] for row in facet})],
            {(row["quant"], row["task"]): row["accuracy"] for row in facet},
            {},
        )
        axes.set(ylim=(0, 1), xlabel="quantization", ylabel="accuracy")
        panels.append(figure)
    return panels


@matplotlib.rc_context(STYLE)
def speed(rows: Rows) -> list[Figure]:
    """Prefill and decode in panels of their own, each on its own scale: decode is often ten times
    slower and would be a sliver beside prefill. Whiskers from `spread`, a robust standard deviation
    relative to the median: the same fraction of a speed as of the timings it came from, to first
    order."""
    rows = [row for row in rows if row["unit"] == "tok/s" and _is_speed(row["metric"])]
    panels = []
    for (model, device), facet in _facets(rows):
        for phase in ("prefill", "decode"):
            if not (phase_rows := [row for row in facet if row["metric"].startswith(phase)]):
                continue
            figure, axes = _grouped_bars(
                f"{model} · {device} · {phase}",
                ladder_order(row["quant"] for row in phase_rows),
                _speed_series({row["metric"] for row in phase_rows}),
                {(row["quant"], row["metric"]): row["median"] for row in phase_rows},
                {(row["quant"], row["metric"]): row["median"] * row["spread"] for row in phase_rows},
            )
            axes.set(xlabel="quantization", ylabel="tokens / s (median ± robust σ)")
            panels.append(figure)
    return panels


@matplotlib.rc_context(STYLE)
def depth(rows: Rows) -> list[Figure]:
    """A panel per model and device whose speeds were measured at several depths, as llama-bench -d
    shows them: tokens/s against the tokens already in the cache, a line per metric (and per quant,
    in its own dash), so the fall with depth reads at a glance."""
    lines: dict[tuple[str, str], dict[tuple[str, str], list[tuple[int, float]]]] = {}
    for row in rows:
        at = metric_depth(row["metric"])
        name = row["metric"].removesuffix(f"@d{at}")
        if row["unit"] == "tok/s" and _is_speed(name):
            lines.setdefault((row["model"], row["device"]), {}).setdefault((row["quant"], name), []).append(
                (at, row["median"])
            )
    panels = []
    for (model, device), facet in sorted(lines.items()):
        if max(len(points) for points in facet.values()) < 2:
            continue
        figure, axes = _panel(0)
        quants = ladder_order(quant for quant, _ in facet)
        colours = dict(_speed_series({name for _, name in facet}))
        for (quant, name), points in sorted(facet.items(), key=lambda item: (quants.index(item[0][0]), item[0][1])):
            dash = DEPTH_DASHES[quants.index(quant) % len(DEPTH_DASHES)]
            label = name if len(quants) == 1 else f"{name} · {quant}"
            axes.plot(*zip(*sorted(points)), marker="o", color=colours[name], linestyle=dash, label=label)
        axes.set(xlabel="depth: tokens already in the KV cache", ylabel="tokens / s (median)", ylim=(0, None))
        _legend(figure, axes, f"{model} · {device}")
        panels.append(figure)
    return panels


@matplotlib.rc_context(STYLE)
def memory(rows: Rows) -> list[Figure]:
    """A panel per model and device: per quant, a stacked bar per context length, what the KV cache
    adds to the weights, with its share above."""
    rows = [row for row in rows if row.get("kv_cache")]
    return [_memory_panel(f"{model} · {device}", facet) for (model, device), facet in _facets(rows)]


@matplotlib.rc_context(STYLE)
def kld(rows: Rows) -> list[Figure]:
    """A panel per model and device: per quant, the share of positions whose KL divergence exceeds
    each value (from the row's percentiles; the max at one position), on log scales, so the tail a
    mean hides is where the curves part; the mean is marked on each curve. Depth 0's rows only:
    a quant's rows at other depths are in the fidelity table."""
    panels = []
    for (model, device), facet in _facets([row for row in rows if not row.get("depth")]):
        figure, axes = _panel(0)
        by_quant = {row["quant"]: row for row in facet}
        for index, quant in enumerate(ladder_order(by_quant)):
            row, colour = by_quant[quant], KLD_COLOURS[index % len(KLD_COLOURS)]
            points = [(row[f"{name}_kld"], above) for name, above in KLD_TAILS] + [(row["max_kld"], 1 / row["tokens"])]
            axes.plot(*zip(*points), marker="o", markersize=3, color=colour, label=quant)
            axes.axvline(row["mean_kld"], color=colour, linestyle=":", linewidth=1)
        axes.set(
            xscale="log", yscale="log", xlabel="KL divergence, nats (dotted: mean)", ylabel="share of positions above"
        )
        _plain_log_labels(axes.xaxis, axes.yaxis)
        axes.grid(True, axis="x", which="major")
        _legend(figure, axes, f"{model} · {device}")
        panels.append(figure)
    return panels


@matplotlib.rc_context(STYLE)
def kld_depth(rows: Rows) -> list[Figure]:
    """A panel per model and device whose fidelity was measured at several depths: per quant, the
    mean KL divergence (solid) and the p99 (dashed) against the depth its windows start at (0: the
    evaluation text's windows, each from an empty cache), on a log scale, so an error that grows
    with the context (a quantized KV cache's) shows as a rising line."""
    panels = []
    for (model, device), facet in _facets(rows):
        by_quant: dict[str, list[dict[str, Any]]] = {}
        for row in facet:
            by_quant.setdefault(row["quant"], []).append(row)
        if max(len(quant_rows) for quant_rows in by_quant.values()) < 2:
            continue
        figure, axes = _panel(0)
        for index, quant in enumerate(ladder_order(by_quant)):
            points = sorted(by_quant[quant], key=lambda row: row.get("depth", 0))
            depths, colour = [row.get("depth", 0) for row in points], KLD_COLOURS[index % len(KLD_COLOURS)]
            axes.plot(depths, [row["mean_kld"] for row in points], marker="o", color=colour, label=quant)
            axes.plot(
                depths, [row["p99_kld"] for row in points], marker="o", markersize=3, color=colour, linestyle="--"
            )
        axes.set(
            yscale="log",
            xlabel="depth: tokens of the depth text in the KV cache before the windows",
            ylabel="KL divergence, nats (solid: mean; dashed: p99)",
        )
        _plain_log_labels(axes.yaxis)
        _legend(figure, axes, f"{model} · {device}")
        panels.append(figure)
    return panels


class PlainLogFormatter(LogFormatterSciNotation):
    """matplotlib's log-scale labels (which ticks get one included) as plain text, 10⁻³ or 2×10⁻³:
    its own are TeX source (`$\\mathdefault{10^{-3}}$`), printed as such, long enough to overlap,
    where math text is off so that names from the data stay text."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        if not super().__call__(x, pos) or x <= 0:
            return ""
        exponent = math.floor(math.log10(x) + 1e-9)
        coefficient = round(x / 10**exponent)
        power = f"10{str(exponent).translate(SUPERSCRIPTS)}"
        return power if coefficient == 1 else f"{coefficient}×{power}"


SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _plain_log_labels(*axes: Axis) -> None:
    """Log axes' tick labels as PlainLogFormatter writes them, major and minor alike."""
    for axis in axes:
        axis.set_major_formatter(PlainLogFormatter())
        axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def ladder_order(quants: Iterable[str]) -> list[str]:
    """Quants from the shipped file down the ladder, so bars coarsen left to right; unknown ones last."""
    return sorted(set(quants), key=lambda quant: (QUANTS.index(quant) if quant in QUANTS else len(QUANTS), quant))


def _facets(rows: Rows) -> list[tuple[tuple[str, str], list[dict[str, Any]]]]:
    """Rows by (model, device): quants of one model on one runtime are what a panel compares."""
    facets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        facets.setdefault((row["model"], row["device"]), []).append(row)
    return sorted(facets.items())


def _is_speed(metric: str) -> bool:
    name, _, length = metric.partition("@")
    return metric == "decode" or (name == "prefill" and length.isdigit())


def _speed_series(metrics: set[str]) -> list[tuple[str, str]]:
    """Prefill lengths in order, in shades of one colour, then decode in another: the phases differ in kind."""
    prefills = sorted(metrics - {"decode"}, key=lambda metric: int(metric.partition("@")[2]))
    series = [(metric, PREFILL_COLOURS[index % len(PREFILL_COLOURS)]) for index, metric in enumerate(prefills)]
    return series + ([("decode", DECODE_COLOUR)] if "decode" in metrics else [])


def _grouped_bars(
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, str]],
    values: dict[tuple[str, str], float],
    whiskers: dict[tuple[str, str], float],
) -> tuple[Figure, Axes]:
    """A group of bars per x label, a bar per (name, colour) series in a slot of its own, with a
    whisker of the given half-length where there is one."""
    figure, axes = _panel(len(groups) * len(series))
    width = (1 - GROUP_GAP) / len(series)
    for index, (name, colour) in enumerate(series):
        present = [position for position, group in enumerate(groups) if (group, name) in values]
        axes.bar(
            [position - (1 - GROUP_GAP) / 2 + (index + 0.5) * width for position in present],
            [values[groups[position], name] for position in present],
            width * BAR_WIDTH,
            color=colour,
            label=name,
            yerr=[whiskers[groups[position], name] for position in present] if whiskers else None,
        )
    axes.set_xticks(range(len(groups)), groups)
    _legend(figure, axes, title)
    return figure, axes


def _memory_panel(title: str, rows: Rows) -> Figure:
    by_quant = {row["quant"]: sorted(row["kv_cache"], key=lambda kv: kv["context"]) for row in rows}
    quants = ladder_order(by_quant)
    most = max(len(contexts) for contexts in by_quant.values())
    figure, axes = _panel(len(quants) * most)
    width = (1 - GROUP_GAP) / most
    bars = [
        (position - (1 - GROUP_GAP) / 2 + (index + 0.5) * width, kv)
        for position, quant in enumerate(quants)
        for index, kv in enumerate(by_quant[quant])
    ]
    xs = [x for x, _ in bars]
    rest = [(kv["total_bytes"] - kv["kv_bytes"]) / MIB for _, kv in bars]
    axes.bar(xs, rest, width * BAR_WIDTH, color=REST_COLOUR, label="non-KV (weights and the rest)")
    kv_bars = axes.bar(
        xs, [kv["kv_bytes"] / MIB for _, kv in bars], width * BAR_WIDTH, bottom=rest, color=KV_COLOUR, label="KV cache"
    )
    axes.bar_label(kv_bars, [_percent(kv["share"]) for _, kv in bars], padding=2, fontsize=8)
    axes.set_xticks(xs, [_context(kv["context"]) for _, kv in bars])
    axes.set_xticks(range(len(quants)), quants, minor=True)  # each quant's name under its contexts
    axes.tick_params(axis="x", which="minor", length=0, pad=19)  # under the contexts' labels' boxes, not into them
    axes.xaxis.remove_overlapping_locs = False  # a quant's middle context sits where its name goes
    axes.margins(y=0.12)  # room above the tallest bar for its share
    axes.set(xlabel="context length (tokens), per quantization", ylabel="memory (MiB)")
    _legend(figure, axes, title)
    return figure


def _panel(bars: int) -> tuple[Figure, Axes]:
    """A figure with one plot area, wide enough for its bars (the page wraps panels to its width)."""
    figure = Figure(figsize=(max(MIN_WIDTH, 1.2 + 0.22 * bars), HEIGHT), layout="constrained")
    return figure, figure.add_subplot()


def _legend(figure: Figure, axes: Axes, title: str) -> None:
    """The panel's title with its legend under it, above the plot where they cover no bar (as the
    legend's own title: layout then keeps the two apart)."""
    count = len(axes.get_legend_handles_labels()[1])
    figure.legend(
        loc="outside upper left",
        ncols=min(count, 4),
        frameon=False,
        title=title,
        alignment="left",
        title_fontproperties={"weight": "bold", "size": 10},
    )


def _percent(share: float) -> str:
    return f"{share:.0%}" if share >= 0.01 else f"{share:.1%}"


def _context(tokens: int) -> str:
    return f"{tokens // 1024}k" if tokens >= 1024 and tokens % 1024 == 0 else str(tokens)
