"""Fidelity items: a quant's next-token distributions against the model's exact float32 copy,
compared with the quant's own baseline (at depth 0, and after each nonzero --slm-depths of a long
text in the KV cache); and the distribution rows, columns and figures parity items share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, ClassVar

from ..matrix import Case
from ..measure.divergence import KLD_PERCENTILES, Fidelity, tail_field
from ..store.baselines import SCHEMA_VERSION, BaselineKey
from .accuracy import model_identity
from .columns import VERDICT, Column, Rows, Table, or_dash, select
from .core import REFRESH, Check, RecordError, Verdict, require
from .kind import Figure, Kind


@dataclass(frozen=True)
class DistributionRow(Fidelity):
    """The figures of `Fidelity`, for one item of the fidelity or parity table."""

    item: str
    verdict: str


@dataclass(frozen=True)
class FidelityRow(DistributionRow):
    SECTION: ClassVar[str] = "fidelity"
    model: str = ""
    device: str = ""
    quant: str = ""
    baseline_mean_kld: float | None = None
    judged_tail: str = "p99"  # the percentile the gate judged
    baseline_tail_kld: float | None = None
    depth: int = 0  # tokens of the depth text in the cache before the windows (0: the evaluation text's windows)


SCHEMA_2_FIELDS = ("tokens", "mean_kld", "p99_kld", "top1_agreement", "reference_perplexity", "perplexity")
KLD = "a KL divergence is never negative"


def validate_distributions(record: Mapping[str, Any]) -> None:
    """What every distribution comparison stores: finite, in range, ordered, over at least one
    position. A schema-2 record (written before the full statistics) holds only SCHEMA_2_FIELDS."""
    tokens = require(record, "tokens", int, lambda v: v >= 1, "no position was compared")
    mean = require(record, "mean_kld", float, lambda v: v >= 0, KLD)
    require(record, "p99_kld", float, lambda v: v >= 0, KLD)
    agreement = require(record, "top1_agreement", float, _share, "a share is between 0 and 1")
    require(record, "reference_perplexity", float, lambda v: v >= 1, "a perplexity is at least 1")
    require(record, "perplexity", float, lambda v: v >= 1, "a perplexity is at least 1")
    if record.get("schema_version", SCHEMA_VERSION) < 3:
        return
    require(record, "kld_stderr", float, lambda v: v >= 0, "a standard error is never negative")
    tails = [require(record, tail_field(name), float, lambda v: v >= 0, KLD) for name in KLD_PERCENTILES]
    if tails != sorted(tails) or not mean <= tails[-1]:
        raise RecordError(
            f"the KL divergence percentiles {', '.join(KLD_PERCENTILES)} decrease, or the mean is above the max"
        )
    spread = [
        require(record, f"delta_p_{name}", float, lambda v: -1 <= v <= 1, "a probability change is between -1 and 1")
        for name in ("median", "p99", "max")
    ]
    if spread != sorted(spread):
        raise RecordError("the Δp percentiles median, p99, max decrease")
    require(record, "delta_p_mean", float, lambda v: -1 <= v <= 1, "a probability change is between -1 and 1")
    require(record, "delta_p_rms", float, lambda v: 0 <= v <= 1, "an RMS probability change is between 0 and 1")
    low = require(record, "top1_low", float, _share, "a share is between 0 and 1")
    high = require(record, "top1_high", float, _share, "a share is between 0 and 1")
    if not low <= agreement <= high:
        raise RecordError(f"top-1 agreement {agreement} lies outside its interval [{low}, {high}]")
    if low == high and tokens > 1:
        raise RecordError("the top-1 agreement's interval is a point")
    require(record, "ppl_ratio", float, lambda v: v > 0, "a perplexity ratio is positive")
    require(record, "ppl_ratio_stderr", float, lambda v: v >= 0, "a standard error is never negative")


def validate_fidelity(record: Mapping[str, Any]) -> None:
    """A fidelity record: its depth-0 figures at the top level (as before depths), and under `depths`
    those at each nonzero depth ("2048": the same fields), each held to the same rules."""
    validate_distributions(record)
    if "depths" not in record:
        return
    depths = require(record, "depths", dict, bool, "a record without figures at depth leaves the field out")
    for name, figures in depths.items():
        if not (name.isdigit() and name == str(int(name)) and int(name) > 0):
            raise RecordError(f"field 'depths' has the key {name!r}: a depth is a positive whole number of tokens")
        if not isinstance(figures, dict):
            raise RecordError(f"field 'depths.{name}' is not an object")
        try:
            validate_distributions(figures)
        except RecordError as exc:
            raise RecordError(f"at depth {name}: {exc}") from None


def _share(value: float) -> bool:
    return 0 <= value <= 1


@dataclass(frozen=True)
class FidelityGate:
    """How far a quant's figures may move from its baseline, either way: the mean KL divergence,
    and a tail percentile (where quantization damage to a few positions shows first)."""

    margin: float  # relative change of the mean
    tail: str  # a KLD_PERCENTILES name
    tail_margin: float  # relative change of that percentile
    ceiling: float | None  # largest mean KL divergence, baseline or not


@dataclass
class FidelityCheck(Check):
    """Measured at depth 0 always (the record's top level) and at each nonzero --slm-depths (under
    its `depths`); each depth judged with the same gate against the baseline's same depth. A run judges
    the depths it measured; an update keeps the baseline's others."""

    case: Case
    reference: Case
    gate: FidelityGate
    compare: Callable[[], Mapping[int, Fidelity]]  # by depth, 0 included
    nodeid: str = ""  # for the command that writes a depth the baseline lacks
    kind: str = "fidelity"

    def __post_init__(self) -> None:
        self.item = self.baseline_of = self.case.id
        self.key = BaselineKey(self.case.model, self.case.device, self.case.variant, "fidelity")

    def identity(self) -> dict[str, Any]:
        return {**model_identity(self.case), "reference": self.reference.model_id}

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_fidelity(record)

    def measure(self) -> Mapping[int, Fidelity]:
        return self.compare()

    def record(self, measured: Mapping[int, Fidelity]) -> dict[str, Any]:
        deep = {str(depth): asdict(fidelity) for depth, fidelity in sorted(measured.items()) if depth}
        return {**asdict(measured[0]), **({"depths": deep} if deep else {})}

    def kept(self, record: Mapping[str, Any], stored: Mapping[str, Any]) -> Mapping[str, Any]:
        """The baseline's figures at depths this run did not measure stay (as latency's do)."""
        depths = {**stored.get("depths", {}), **record.get("depths", {})}
        return {**record, "depths": dict(sorted(depths.items(), key=lambda item: int(item[0])))} if depths else record

    def judge(self, measured: Mapping[int, Fidelity], baseline: Mapping[str, Any] | None) -> Verdict:
        """Each depth against the baseline's same depth, in both directions: the same build gives
        the same logits, so a large change either way means the quant is not what the baseline
        describes (a new quantizer, a regression, or figures filed under the wrong quant). And
        against a ceiling, at every depth. A depth the baseline lacks fails, naming the command
        that adds it."""
        rows, problems = [], []
        for depth, fidelity in sorted(measured.items()):
            stored = baseline if baseline is None or not depth else baseline.get("depths", {}).get(str(depth))
            found = self._problems(fidelity, stored)
            if baseline is not None and stored is None:
                found.append(
                    f"the baseline has no figures at this depth; add them with: pytest '{self.nodeid}'"
                    f" --slm-depths={depth} --update-baselines (its other depths are kept)"
                )
            problems += [f"at depth {depth}: {problem}" if depth else problem for problem in found]
            rows.append(
                self._row(fidelity, stored, depth, "FAIL" if found else "updated" if baseline is None else "pass")
            )
        return Verdict(rows, f"{self.item}: " + "; ".join(problems) + f". {REFRESH}" if problems else None)

    def _problems(self, fidelity: Fidelity, baseline: Mapping[str, Any] | None) -> list[str]:
        gate, tail = self.gate, tail_field(self.gate.tail)
        problems = []
        if gate.ceiling is not None and fidelity.mean_kld > gate.ceiling:
            problems.append(
                f"mean KL divergence {fidelity.mean_kld:.3g} nats is over the {self.case.quant} ceiling {gate.ceiling}"
            )
        if baseline is not None and baseline["tokens"] != fidelity.tokens:
            problems.append(
                f"the baseline compared {baseline['tokens']} positions, this run {fidelity.tokens} (another text or window)"
            )
        elif baseline is not None:
            problems += _moved("mean KL divergence", fidelity.mean_kld, baseline["mean_kld"], gate.margin)
            if tail not in baseline:
                problems.append(
                    f"the baseline (schema {baseline.get('schema_version')}) has no {gate.tail} KL divergence to judge the tail by"
                )
            else:
                problems += _moved(
                    f"{gate.tail} KL divergence", fidelity.tail(gate.tail), baseline[tail], gate.tail_margin
                )
            if problems:
                problems.append(f"top-1 agreement {fidelity.top1_agreement:.4f} vs {baseline['top1_agreement']:.4f}")
        return problems

    def _row(self, fidelity: Fidelity, baseline: Mapping[str, Any] | None, depth: int, verdict: str) -> FidelityRow:
        tail = tail_field(self.gate.tail)
        return FidelityRow(
            **asdict(fidelity),
            item=self.item,
            verdict=verdict,
            **model_identity(self.case),
            baseline_mean_kld=None if baseline is None else baseline["mean_kld"],
            judged_tail=self.gate.tail,
            baseline_tail_kld=None if baseline is None else baseline.get(tail),
            depth=depth,
        )


def _moved(what: str, current: float, stored: float, margin: float) -> list[str]:
    """The problem, if `current` is more than `margin` (relative) away from `stored`, either way."""
    change = 0.0 if current == stored else current / stored - 1 if stored else float("inf")
    if abs(change) <= margin:
        return []
    direction = "worse" if change > 0 else "better"
    return [
        (
            f"{what} to the reference is {current:.3g} nats, {direction} than the baseline's {stored:.3g}"
            f" by {100 * abs(change):.0f}% (margin {100 * margin:.0f}%)"
        )
    ]


class FidelityKind(Kind):
    """Each quant's distributions against the model's exact float32 values, judged against its baseline."""

    row = FidelityRow
    title = "Fidelity"
    record_kind = "fidelity"
    chart_order = 3

    def table(self, rows: Rows, full: bool = True) -> Table:
        """Each quant against the model's exact float32 values, and the mean KLD its baseline had; a row
        per depth (`item @d2048`: after 2,048 tokens of the depth text in the cache). The brief table
        keeps what a fidelity item is judged by: the mean and the judged tail, their baseline, the change."""
        columns = distribution_columns(rows, "fidelity item (vs f32)")
        brief = [
            Column("mean KLD", lambda row: f"{row['mean_kld']:.2e}", full=False),
            Column("tail", lambda row: f"{row[_judged_tail(row)]:.2e} ({row.get('judged_tail', 'p99')})", full=False),
        ]
        if any("baseline_mean_kld" in row for row in rows):
            brief += [
                Column("baseline mean / tail", _brief_baseline, full=False),
                Column("change", _kld_change, full=False),
            ]
        return select([columns[0], *brief, *columns[1:]], by_depth(rows), full)

    def charts(self, rows: Rows) -> list[tuple[str, str, list[Any]]]:
        from ..report import charts  # matplotlib: only when the page is drawn

        return [
            (
                "kld",
                "KL divergence to the float32 reference per quantization: how many positions lose how much",
                charts.kld(rows),
            ),
            (
                "kld-depth",
                "KL divergence to the reference against the depth its windows start at (--slm-depths)",
                charts.kld_depth(rows),
            ),
        ]

    def figures(self, row: Mapping[str, Any]) -> list[Figure]:
        return distribution_figures(row)

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_fidelity(record)

    def file_name(self, record: Mapping[str, Any]) -> str:
        return "fidelity.json"


def distribution_figures(row: Mapping[str, Any]) -> list[Figure]:
    """What the history keeps of a distribution comparison; a row at a depth: mean_kld@d2048."""
    at = f"@d{row['depth']}" if row.get("depth") else ""
    return [
        Figure(name + at, row[name], unit)
        for name, unit in (("mean_kld", "nats"), ("top1_agreement", "share"), ("perplexity", "ppl"))
    ]


def _judged_tail(row: dict[str, Any]) -> str:
    """The row's field of the percentile its item judges: p99 -> p99_kld."""
    return tail_field(row.get("judged_tail", "p99"))


def by_depth(rows: Rows) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: (row["item"], row.get("depth", 0)))


def distribution_columns(rows: Rows, title: str) -> list[Column]:
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


def _kld_at(row: dict[str, Any], name: str) -> str:
    return f"{row[f'{name}_kld']:.2e}"


def _baseline_kld(row: dict[str, Any]) -> str:
    if row.get("baseline_mean_kld") is None:
        return "-"
    tail = or_dash(row.get("baseline_tail_kld"), "{:.2e}")
    return f"{row['baseline_mean_kld']:.2e} / {tail} ({row['judged_tail']})"


def _brief_baseline(row: dict[str, Any]) -> str:
    """The baseline's mean and tail; which tail is the `tail` column's."""
    if row.get("baseline_mean_kld") is None:
        return "-"
    return f"{row['baseline_mean_kld']:.2e} / {or_dash(row.get('baseline_tail_kld'), '{:.2e}')}"


def _kld_change(row: dict[str, Any]) -> str:
    """The mean's and the tail's change from the baseline, relative, as the margins judge them."""
    if row.get("baseline_mean_kld") is None:
        return "-"
    return f"{_relative(row['mean_kld'], row['baseline_mean_kld'])} / {_relative(row[_judged_tail(row)], row.get('baseline_tail_kld'))}"


def _relative(now: float, before: float | None) -> str:
    return "-" if not before else f"{now / before - 1:+.0%}"
