"""What each table of a run shows, cell by cell: one definition for the terminal, Markdown and
the HTML page. Each returns the headers and the rows; a row's last cell is its verdict. The full
table (report.html, and the terminal under -v) has every figure; the brief one (the terminal,
summary.md) keeps what a verdict is read from (the item, its figure, the baseline, the change, the
limit or p, the verdict), so that it fits 120 columns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any, Protocol

from ..measure.machine import metric_depth

Rows = Sequence[dict[str, Any]]
Table = tuple[list[str], list[tuple[str, ...]]]


class SectionTable(Protocol):
    """A section's table: the full one unless `full` is False."""

    def __call__(self, rows: Rows, full: bool = True) -> Table: ...


@dataclass(frozen=True)
class Column:
    """A header, the cell it shows for a row, and which of the two tables it is in."""

    header: str
    cell: Callable[[dict[str, Any]], str]
    full: bool = True  # in the full table
    brief: bool = True  # in the brief one


def _select(columns: Sequence[Column], rows: Rows, full: bool) -> Table:
    shown = [column for column in columns if (column.full if full else column.brief)]
    return [column.header for column in shown], [tuple(column.cell(row) for column in shown) for row in rows]


ITEM = Column("item", itemgetter("item"))
VERDICT = Column("verdict", itemgetter("verdict"))


def accuracy(rows: Rows, full: bool = True) -> Table:
    """Against the baseline (McNemar); with --slm-relative-gate, also against the reference (its
    accuracy and the ratio's interval in the full table only)."""
    gated = any(row.get("gate") is not None for row in rows)
    relative = [
        Column("reference", _gated(lambda row: _or_dash(row.get("reference_accuracy"), "{:.3f}")), brief=False),
        Column("ratio (95% CI)", _gated(_ratio), brief=False),
        Column("gate", _gated(lambda row: f"{row['gate']:g}: {row['gate_verdict']}")),
    ]
    columns = [
        ITEM,
        Column("accuracy", lambda row: f"{row['accuracy']:.3f}"),
        Column("baseline", lambda row: _or_dash(row["baseline"], "{:.3f}")),
        Column("delta", lambda row: _or_dash(row["delta_points"], "{:+.1f} pt")),
        Column("flips -/+", lambda row: "-" if row["regressed"] is None else f"{row['regressed']}/{row['improved']}"),
        Column("p", lambda row: _or_dash(row["p_value"], "{:.3g}")),
        Column("detects", lambda row: _or_dash(row.get("detects_points"), "≥ {:.1f} pt")),
        *(relative if gated else ()),
        VERDICT,
    ]
    return _select(columns, sorted(rows, key=itemgetter("item")), full)


def _gated(cell: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
    """A relative cell, or a dash for an item the gate does not judge (the reference itself)."""
    return lambda row: "-" if row.get("gate") is None else cell(row)


def _ratio(row: dict[str, Any]) -> str:
    return "-" if row.get("ratio") is None else f"{row['ratio']:.3f} [{row['ratio_low']:.3f}, {row['ratio_high']:.3f}]"


def parity(rows: Rows, full: bool = True) -> Table:
    """The distributions, and the task outcomes both runtimes had this session; the brief table
    keeps the two figures parity is judged by, top-1 agreement and mean KL divergence."""
    columns = _distributions(rows, "parity item")
    brief = [
        Column("top-1 agree", lambda row: f"{row['top1_agreement']:.4f}", full=False),
        Column("mean KLD", lambda row: f"{row['mean_kld']:.2e}", full=False),
    ]
    outcomes = Column("task outcomes", itemgetter("task_outcomes"))
    return _select([columns[0], *brief, *columns[1:-1], outcomes, VERDICT], _by_depth(rows), full)


def fidelity(rows: Rows, full: bool = True) -> Table:
    """Each quant against the model's exact float32 values, and the mean KLD its baseline had; a row
    per depth (`item @d2048`: after 2,048 tokens of the depth text in the cache). The brief table
    keeps what a fidelity item is judged by: the mean and the judged tail, their baseline, the change."""
    columns = _distributions(rows, "fidelity item (vs f32)")
    brief = [
        Column("mean KLD", lambda row: f"{row['mean_kld']:.2e}", full=False),
        Column("tail", lambda row: f"{row[_tail_field(row)]:.2e} ({row.get('judged_tail', 'p99')})", full=False),
    ]
    if any("baseline_mean_kld" in row for row in rows):
        brief += [
            Column("baseline mean / tail", _brief_baseline, full=False),
            Column("change", _kld_change, full=False),
        ]
    return _select([columns[0], *brief, *columns[1:]], _by_depth(rows), full)


def _tail_field(row: dict[str, Any]) -> str:
    """The row's field of the percentile its item judges: p99 -> p99_kld."""
    return f"{row.get('judged_tail', 'p99')}_kld"


def _by_depth(rows: Rows) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: (row["item"], row.get("depth", 0)))


def _distributions(rows: Rows, title: str) -> list[Column]:
    """llama-perplexity's statistics, for the full table: top-1 agreement with its 95% interval, the
    KL divergence's mean with its standard error and its percentiles, Δp (the reference's top
    token's probability lost), perplexities and their ratio; a fidelity item's baseline mean and
    judged tail. The first column is the item, the last the verdict."""
    with_baseline = any("baseline_mean_kld" in row for row in rows)
    percentiles = [
        Column(header, partial(_kld_at, name=name), brief=False)
        for header, name in (
            ("median", "median"),
            ("p90", "p90"),
            ("p95", "p95"),
            ("p99", "p99"),
            ("p99.9", "p999"),
            ("max", "max"),
        )
    ]
    return [
        Column(title, lambda row: row["item"] + (f" @d{row['depth']}" if row.get("depth") else "")),
        Column("positions", lambda row: str(row["tokens"]), brief=False),
        Column(
            "top-1 agree (95% CI)",
            lambda row: f"{row['top1_agreement']:.4f} [{row['top1_low']:.4f}, {row['top1_high']:.4f}]",
            brief=False,
        ),
        Column("mean KLD ± se", lambda row: f"{row['mean_kld']:.2e} ± {row['kld_stderr']:.1e}", brief=False),
        *([Column("baseline mean / tail", _baseline_kld, brief=False)] if with_baseline else []),
        *percentiles,
        Column("Δp mean / RMS", lambda row: f"{row['delta_p_mean']:+.2%} / {row['delta_p_rms']:.2%}", brief=False),
        Column(
            "ppl ref / cand", lambda row: f"{row['reference_perplexity']:.2f} / {row['perplexity']:.2f}", brief=False
        ),
        Column("ppl ratio", lambda row: f"{row['ppl_ratio']:.4f} ± {row['ppl_ratio_stderr']:.4f}", brief=False),
        VERDICT,
    ]


def _baseline_kld(row: dict[str, Any]) -> str:
    if row.get("baseline_mean_kld") is None:
        return "-"
    tail = _or_dash(row.get("baseline_tail_kld"), "{:.2e}")
    return f"{row['baseline_mean_kld']:.2e} / {tail} ({row['judged_tail']})"


def _brief_baseline(row: dict[str, Any]) -> str:
    """The baseline's mean and tail; which tail is the `tail` column's."""
    if row.get("baseline_mean_kld") is None:
        return "-"
    return f"{row['baseline_mean_kld']:.2e} / {_or_dash(row.get('baseline_tail_kld'), '{:.2e}')}"


def _kld_change(row: dict[str, Any]) -> str:
    """The mean's and the tail's change from the baseline, relative, as the margins judge them."""
    if row.get("baseline_mean_kld") is None:
        return "-"
    return f"{_relative(row['mean_kld'], row['baseline_mean_kld'])} / {_relative(row[_tail_field(row)], row.get('baseline_tail_kld'))}"


def _relative(now: float, before: float | None) -> str:
    return "-" if not before else f"{now / before - 1:+.0%}"


def runtime(rows: Rows, full: bool = True) -> Table:
    """The brief table leaves out the spread, the load, others' share and energy, and a metric's note."""
    columns = [
        Column("runtime item", itemgetter("item")),
        Column("metric", lambda row: row["metric"] + (f" ({row['note']})" if row.get("note") else ""), brief=False),
        Column("metric", itemgetter("metric"), full=False),
        Column("median", lambda row: f"{row['median']:.4g} {row['unit']}"),
        Column("spread", lambda row: f"±{100 * row['spread']:.1f}%", brief=False),
        Column("baseline", lambda row: _or_dash(row["baseline"], "{:.4g}")),
        Column("change", lambda row: _change(row["change_pct"])),
        Column(
            "limit",
            lambda row: (
                _or_dash(row["limit_pct"], "{:.1f}%") + (f" ({row['rounds']} rounds)" if row["rounds"] > 1 else "")
            ),
        ),
        Column("load", lambda row: _or_dash(row["load"], "{:.2f}"), brief=False),
        Column("others", lambda row: _or_dash(row.get("competition"), "{:.0%}"), brief=False),
        Column("energy", _energy, brief=False),
        VERDICT,
    ]
    return _select(columns, sorted(rows, key=_metric_order), full)


def _metric_order(row: dict[str, Any]) -> tuple[str, str, int]:
    """A metric's depths in order (decode, decode@d512, decode@d2048), not as their names sort."""
    metric, depth = row["metric"], metric_depth(row["metric"])
    return row["item"], metric.removesuffix(f"@d{depth}"), depth


def _energy(row: dict[str, Any]) -> str:
    """Joules per token and average power, or the one-line reason there is no counter."""
    if row.get("watts") is None:
        return row.get("energy_note") or "-"
    per_token = f"{1e3 * row['joules_per_token']:.3g} mJ/tok, " if row.get("joules_per_token") is not None else ""
    return f"{per_token}{row['watts']:.3g} W"


def memory(rows: Rows, full: bool = True) -> Table:
    """Weights, KV cache per token (marked where it is the runtime's measured figure, not the model's
    layers': the row's kv_note says why), and, in the full table, the cache's share of weights +
    cache at each context length and the peak RSS (shown, never judged)."""
    contexts = sorted({kv["context"] for row in rows for kv in row["kv_cache"]})
    columns = [
        Column("memory item", itemgetter("item")),
        Column("weights", lambda row: mib(row["weights_bytes"])),
        Column(
            "KV/token", lambda row: f"{row['kv_bytes_per_token']} B" + (" (measured)" if row.get("kv_note") else "")
        ),
        *(Column(f"KV @{context}", partial(_kv_at, context=context), brief=False) for context in contexts),
        Column(
            "peak RSS", lambda row: "-" if row["peak_rss_bytes"] is None else mib(row["peak_rss_bytes"]), brief=False
        ),
        VERDICT,
    ]
    return _select(columns, sorted(rows, key=itemgetter("item")), full)


def _kld_at(row: dict[str, Any], name: str) -> str:
    return f"{row[f'{name}_kld']:.2e}"


def _kv_at(row: dict[str, Any], context: int) -> str:
    by_context = {kv["context"]: kv for kv in row["kv_cache"]}
    if context not in by_context:
        return "-"
    return f"{mib(by_context[context]['kv_bytes'])} ({100 * by_context[context]['share']:.0f}%)"


# results.json's sections that are tables, in the order a run shows them, with their titles
SECTIONS: dict[str, tuple[str, SectionTable]] = {
    "items": ("Accuracy", accuracy),
    "parity": ("Parity", parity),
    "fidelity": ("Fidelity", fidelity),
    "runtime": ("Runtime", runtime),
    "memory": ("Memory", memory),
}


def _change(percent: float | None) -> str:
    if percent is None:
        return "-"
    return f"{percent:.1f}% slower" if percent >= 0 else f"{-percent:.1f}% faster"


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _or_dash(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)
