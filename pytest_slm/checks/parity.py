"""Parity items: two runtimes (or a model's GGUF and its MLX checkpoint) compared on the same
text this session, their next-token distributions and the task outcomes both had, judged against
thresholds; nothing stored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from operator import itemgetter
from typing import Any, ClassVar

from ..matrix import SAME_WEIGHTS, ParityCase
from ..measure.divergence import Fidelity
from ..stats import PairedComparison, mcnemar_two_sided
from .columns import VERDICT, Column, Rows, Table, select
from .core import Check, Verdict
from .fidelity import DistributionRow, by_depth, distribution_columns, distribution_figures, validate_distributions
from .kind import Figure, Kind


@dataclass(frozen=True)
class ParityRow(DistributionRow):
    SECTION: ClassVar[str] = "parity"
    task_outcomes: str = "not run"


@dataclass(frozen=True)
class ParitySettings:
    min_top1: float
    max_mean_kld: float
    alpha: float
    min_drop_points: float


@dataclass
class ParityCheck(Check):
    """Judged against thresholds, not a baseline, at depth 0: two runtimes on the same weights must
    agree; a model's GGUF and its MLX checkpoint (two quantizations) must agree within looser ones."""

    case: ParityCase
    settings: ParitySettings
    compare: Callable[[], Fidelity]
    task_outcomes: Callable[[], dict[str, PairedComparison]]
    kind: str = "parity"
    key: None = None

    def __post_init__(self) -> None:
        self.item = self.baseline_of = self.case.id

    def identity(self) -> dict[str, Any]:
        return {
            "model": self.case.model,
            "reference": self.case.sides[0].model_id,
            "candidate": self.case.sides[1].model_id,
        }

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_distributions(record)

    def measure(self) -> Fidelity:
        return self.compare()

    def record(self, fidelity: Fidelity) -> dict[str, Any]:
        return asdict(fidelity)

    def judge(self, fidelity: Fidelity, baseline: Mapping[str, Any] | None) -> Verdict:
        """The distributions, and the task outcomes both runtimes had this session (paired, two-sided)."""
        settings = self.settings
        distributions = []
        if fidelity.top1_agreement < settings.min_top1:
            distributions.append(f"top-1 agreement {fidelity.top1_agreement:.4f} < {settings.min_top1}")
        if fidelity.mean_kld > settings.max_mean_kld:
            distributions.append(f"mean KL divergence {fidelity.mean_kld:.3g} nats > {settings.max_mean_kld}")
        problems = [f"{'; '.join(distributions)} over {fidelity.tokens} positions"] if distributions else []
        tasks = self.task_outcomes()
        flips = 0
        for task, paired in sorted(tasks.items()):
            p = mcnemar_two_sided(len(paired.regressed), len(paired.improved))
            flips += len(paired.regressed) + len(paired.improved)
            if p < settings.alpha and abs(paired.delta_points) >= settings.min_drop_points:
                problems.append(
                    f"{task}: accuracy {paired.accuracy:.3f} vs {paired.baseline_accuracy:.3f} on llama.cpp's"
                    f" shipped weights, {len(paired.regressed)} samples right only on llama.cpp and"
                    f" {len(paired.improved)} only here, two-sided McNemar p = {p:.3g} < {settings.alpha}"
                )
        outcomes = f"{len(tasks)} tasks, {flips} flips" if tasks else "not run"
        row = ParityRow(
            **asdict(fidelity), item=self.item, verdict="FAIL" if problems else "pass", task_outcomes=outcomes
        )
        if not problems:
            return Verdict([row])
        where = "on the same weights" if self.case.kind == SAME_WEIGHTS else "beyond two quantizations of one model"
        return Verdict(
            [row],
            f"{self.item}: the runtimes disagree {where}: {'; '.join(problems)}"
            f" (p99 KLD {fidelity.p99_kld:.3g}, perplexity {fidelity.reference_perplexity:.2f} vs {fidelity.perplexity:.2f})",
        )


class ParityKind(Kind):
    """Two runtimes' next-token distributions on the same weights: compared this session, never
    against a baseline."""

    row = ParityRow
    title = "Parity"

    def table(self, rows: Rows, full: bool = True) -> Table:
        """The distributions, and the task outcomes both runtimes had this session; the brief table
        keeps the two figures parity is judged by, top-1 agreement and mean KL divergence."""
        columns = distribution_columns(rows, "parity item")
        brief = [
            Column("top-1 agree", lambda row: f"{row['top1_agreement']:.4f}", full=False),
            Column("mean KLD", lambda row: f"{row['mean_kld']:.2e}", full=False),
        ]
        outcomes = Column("task outcomes", itemgetter("task_outcomes"))
        return select([columns[0], *brief, *columns[1:-1], outcomes, VERDICT], by_depth(rows), full)

    def figures(self, row: Mapping[str, Any]) -> list[Figure]:
        return distribution_figures(row)
