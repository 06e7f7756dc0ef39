"""report.html's trend plots: per series of the history store (an item x metric on one
fingerprint), its values run by run with the step changes `python -m pytest_slm history` finds
marked where they are, so the page shows when a figure moved, not only where it is now. Drawn
like charts.py's plots (inline SVG, text kept as text), one small panel per series."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
from matplotlib.figure import Figure

from ..history.changepoint import AccuracyStep, Step
from ..history.trends import Series
from .charts import DECODE_COLOUR, STYLE, svg

LAST_RUNS = 60  # the runs a panel shows: enough for months of nightly runs, few enough to read
POINT_COLOUR = "#4e79a7"
STEP_COLOUR = DECODE_COLOUR
WIDTH, HEIGHT = 4.8, 2.6  # inches


def panels(series: Sequence[Series]) -> list[tuple[Series, str]]:
    """Each series with its panel as SVG, in the order given."""
    return [(one, svg(trend(one))) for one in series]


@matplotlib.rc_context(STYLE)
def trend(one: Series) -> Figure:
    """The last LAST_RUNS values against their run number in the series (1 = its oldest run), with
    the robust spread as a whisker where the run measured one, and each step as a dashed line
    between the runs on either side, labelled with its size."""
    skipped = max(0, len(one.runs) - LAST_RUNS)
    shown = one.runs[skipped:]
    numbers = list(range(skipped + 1, len(one.runs) + 1))
    values = [run["value"] for run in shown]
    whiskers = [run["value"] * (run["spread"] or 0.0) for run in shown]
    figure = Figure(figsize=(WIDTH, HEIGHT), layout="constrained")
    axes = figure.add_subplot()
    yerr = whiskers if any(whiskers) else None
    axes.errorbar(numbers, values, yerr=yerr, color=POINT_COLOUR, marker="o", markersize=3, linewidth=1)
    for step in one.steps:
        if step.index < skipped:
            continue
        line = axes.axvline(step.index + 0.5, color=STEP_COLOUR, linestyle="--", linewidth=1.2)
        line.set_gid(f"step-at-run-{step.index + 1}")
        axes.annotate(
            f"step at run {step.index + 1}: {step_size(step)}",
            xy=(step.index + 0.5, 1),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            va="top",
            fontsize=8,
            color=STEP_COLOUR,
        )
    axes.set_xlabel("run (oldest first)" + (f", the last {LAST_RUNS} of {len(one.runs)}" if skipped else ""))
    axes.set_ylabel(one.unit)
    axes.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # typed on Locator; the default MaxNLocator takes it
    where = f" · {one.fingerprint}" if one.fingerprint else ""
    figure.suptitle(f"{one.item} · {one.metric}{where}", x=0.02, ha="left", fontsize=9, fontweight="bold")
    return figure


def step_size(step: Step | AccuracyStep) -> str:
    if isinstance(step, AccuracyStep):
        return f"{step.delta_points:+.1f} pt (p={step.p_value:.2g})"
    return f"{100 * step.change:+.1f}%"
