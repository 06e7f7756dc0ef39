"""What each table of a run shows, cell by cell: one definition for the terminal, Markdown and
the HTML page. Each returns the headers and the rows; a row's last cell is its verdict."""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Callable, Sequence

from ..runtime import metric_depth

Rows = Sequence[dict[str, Any]]
Table = tuple[list[str], list[tuple[str, ...]]]


def accuracy(rows: Rows) -> Table:
    """Against the baseline (McNemar); with --slm-relative-gate, also against the reference."""
    gated = any(row.get("gate") is not None for row in rows)
    relative = ["reference", "ratio (95% CI)", "gate"] if gated else []
    headers = ["item", "accuracy", "baseline", "delta", "flips -/+", "p", *relative, "verdict"]
    body = [
        (
            row["item"],
            f"{row['accuracy']:.3f}",
            _or_dash(row["baseline"], "{:.3f}"),
            _or_dash(row["delta_points"], "{:+.1f} pt"),
            "-" if row["regressed"] is None else f"{row['regressed']}/{row['improved']}",
            _or_dash(row["p_value"], "{:.3g}"),
            *(_relative(row) if gated else ()),
            row["verdict"],
        )
        for row in sorted(rows, key=itemgetter("item"))
    ]
    return headers, body


def _relative(row: dict[str, Any]) -> tuple[str, str, str]:
    """The reference's accuracy, the ratio with its interval, and the gate's own verdict."""
    if row.get("gate") is None:
        return "-", "-", "-"
    ratio = "-" if row.get("ratio") is None else f"{row['ratio']:.3f} [{row['ratio_low']:.3f}, {row['ratio_high']:.3f}]"
    return _or_dash(row.get("reference_accuracy"), "{:.3f}"), ratio, f"{row['gate']:g}: {row['gate_verdict']}"


def parity(rows: Rows) -> Table:
    """The distributions, and the task outcomes both runtimes had this session."""
    headers, body = _distributions(rows, "parity item")
    outcomes = [row["task_outcomes"] for row in sorted(rows, key=itemgetter("item"))]
    return [*headers[:-1], "task outcomes", headers[-1]], [(*b[:-1], o, b[-1]) for b, o in zip(body, outcomes)]


def fidelity(rows: Rows) -> Table:
    """Each quant against the model's exact float32 values, and the mean KLD its baseline had; a row
    per depth (`item @d2048`: after 2,048 tokens of the depth text in the cache)."""
    return _distributions(rows, "fidelity item (vs f32)")


def _distributions(rows: Rows, title: str) -> Table:
    """llama-perplexity's statistics: top-1 agreement with its 95% interval, the KL divergence's
    mean with its standard error and its percentiles, Δp (the reference's top token's probability
    lost), perplexities and their ratio; a fidelity item's baseline mean and judged tail."""
    with_baseline = any("baseline_mean_kld" in row for row in rows)
    baseline = ["baseline mean / tail"] if with_baseline else []
    headers = [title, "positions", "top-1 agree (95% CI)", "mean KLD ± se", *baseline, "median", "p90", "p95", "p99",
               "p99.9", "max", "Δp mean / RMS", "ppl ref / cand", "ppl ratio", "verdict"]
    body = [
        (
            row["item"] + (f" @d{row['depth']}" if row.get("depth") else ""),
            str(row["tokens"]),
            f"{row['top1_agreement']:.4f} [{row['top1_low']:.4f}, {row['top1_high']:.4f}]",
            f"{row['mean_kld']:.2e} ± {row['kld_stderr']:.1e}",
            *([_baseline_kld(row)] if with_baseline else []),
            *(f"{row[f'{name}_kld']:.2e}" for name in ("median", "p90", "p95", "p99", "p999", "max")),
            f"{row['delta_p_mean']:+.2%} / {row['delta_p_rms']:.2%}",
            f"{row['reference_perplexity']:.2f} / {row['perplexity']:.2f}",
            f"{row['ppl_ratio']:.4f} ± {row['ppl_ratio_stderr']:.4f}",
            row["verdict"],
        )
        for row in sorted(rows, key=lambda row: (row["item"], row.get("depth", 0)))
    ]
    return headers, body


def _baseline_kld(row: dict[str, Any]) -> str:
    if row.get("baseline_mean_kld") is None:
        return "-"
    tail = _or_dash(row.get("baseline_tail_kld"), "{:.2e}")
    return f"{row['baseline_mean_kld']:.2e} / {tail} ({row['judged_tail']})"


def runtime(rows: Rows) -> Table:
    headers = ["runtime item", "metric", "median", "spread", "baseline", "change", "limit", "load", "others", "energy", "verdict"]
    body = [
        (
            row["item"],
            row["metric"] + (f" ({row['note']})" if row.get("note") else ""),
            f"{row['median']:.4g} {row['unit']}",
            f"±{100 * row['spread']:.1f}%",
            _or_dash(row["baseline"], "{:.4g}"),
            _change(row["change_pct"]),
            _or_dash(row["limit_pct"], "{:.1f}%") + (f" ({row['rounds']} rounds)" if row["rounds"] > 1 else ""),
            _or_dash(row["load"], "{:.2f}"),
            _or_dash(row.get("competition"), "{:.0%}"),
            _energy(row),
            row["verdict"],
        )
        for row in sorted(rows, key=_metric_order)
    ]
    return headers, body


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


def memory(rows: Rows) -> Table:
    """Weights, KV cache per token (marked where it is the runtime's measured figure, not the model's
    layers': the row's kv_note says why), and the cache's share of weights + cache at each context length."""
    contexts = sorted({kv["context"] for row in rows for kv in row["kv_cache"]})
    headers = ["memory item", "weights", "KV/token", *(f"KV @{c}" for c in contexts), "peak RSS", "verdict"]
    body = []
    for row in sorted(rows, key=itemgetter("item")):
        by_context = {kv["context"]: kv for kv in row["kv_cache"]}
        cells = [
            f"{mib(by_context[c]['kv_bytes'])} ({100 * by_context[c]['share']:.0f}%)" if c in by_context else "-"
            for c in contexts
        ]
        peak = "-" if row["peak_rss_bytes"] is None else mib(row["peak_rss_bytes"])
        per_token = f"{row['kv_bytes_per_token']} B" + (" (measured)" if row.get("kv_note") else "")
        body.append((row["item"], mib(row["weights_bytes"]), per_token, *cells, peak, row["verdict"]))
    return headers, body


# results.json's sections that are tables, in the order a run shows them, with their titles
SECTIONS: dict[str, tuple[str, Callable[[Rows], Table]]] = {
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
