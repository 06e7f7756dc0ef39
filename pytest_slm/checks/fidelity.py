"""Fidelity items: a quant's next-token distributions against the model's exact float32 copy,
compared with the quant's own baseline, and parity items: two runtimes on the same weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Mapping

from ..fidelity import Fidelity
from ..matrix import Case, ParityCase
from ..stats import PairedComparison, mcnemar_two_sided
from ..store.baselines import BaselineKey
from .accuracy import model_identity
from .core import REFRESH, Check, Verdict, require


@dataclass(frozen=True)
class DistributionRow:
    """The figures of `Fidelity`, for one item of the fidelity or parity table."""

    item: str
    tokens: int
    mean_kld: float
    p99_kld: float
    top1_agreement: float
    reference_perplexity: float
    perplexity: float
    verdict: str


@dataclass(frozen=True)
class FidelityRow(DistributionRow):
    SECTION: ClassVar[str] = "fidelity"
    model: str = ""
    device: str = ""
    quant: str = ""
    baseline_mean_kld: float | None = None


@dataclass(frozen=True)
class ParityRow(DistributionRow):
    SECTION: ClassVar[str] = "parity"
    task_outcomes: str = "not run"


def validate_distributions(record: Mapping[str, Any]) -> None:
    """What every distribution comparison stores: finite, in range, over at least one position."""
    require(record, "tokens", int, lambda v: v >= 1, "no position was compared")
    require(record, "mean_kld", float, lambda v: v >= 0, "a KL divergence is never negative")
    require(record, "p99_kld", float, lambda v: v >= 0, "a KL divergence is never negative")
    require(record, "top1_agreement", float, lambda v: 0 <= v <= 1, "a share is between 0 and 1")
    require(record, "reference_perplexity", float, lambda v: v >= 1, "a perplexity is at least 1")
    require(record, "perplexity", float, lambda v: v >= 1, "a perplexity is at least 1")


class DistributionCheck(Check):
    """What fidelity and parity share: both measure `Fidelity` by calling `compare`."""

    compare: Callable[[], Fidelity]

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_distributions(record)

    def measure(self) -> Fidelity:
        return self.compare()

    def record(self, fidelity: Fidelity) -> dict[str, Any]:
        return asdict(fidelity)


@dataclass
class FidelityCheck(DistributionCheck):
    case: Case
    reference: Case
    margin: float
    ceiling: float | None
    compare: Callable[[], Fidelity]
    kind: str = "fidelity"

    def __post_init__(self) -> None:
        self.item = self.baseline_of = self.case.id
        self.key = BaselineKey(self.case.model, self.case.device, self.case.quant, "fidelity")

    def identity(self) -> dict[str, Any]:
        return {**model_identity(self.case), "reference": self.reference.model_id}

    def judge(self, fidelity: Fidelity, baseline: Mapping[str, Any] | None) -> Verdict:
        """Against the quant's own baseline, in both directions: the same build gives the same
        logits, so a large change either way means the quant is not what the baseline describes (a
        new quantizer, a regression, or figures filed under the wrong quant). And against a ceiling."""
        problems = []
        if self.ceiling is not None and fidelity.mean_kld > self.ceiling:
            problems.append(f"mean KL divergence {fidelity.mean_kld:.3g} nats is over the {self.case.quant} ceiling {self.ceiling}")
        if baseline is not None and baseline["tokens"] != fidelity.tokens:
            problems.append(f"the baseline compared {baseline['tokens']} positions, this run {fidelity.tokens} (another text or window)")
        elif baseline is not None:
            change = fidelity.mean_kld / baseline["mean_kld"] - 1 if baseline["mean_kld"] else float("inf")
            if fidelity.mean_kld == baseline["mean_kld"]:
                change = 0.0
            if abs(change) > self.margin:
                direction = "worse" if change > 0 else "better"
                problems.append(
                    f"mean KL divergence to the reference is {fidelity.mean_kld:.3g} nats, {direction} than the baseline's"
                    f" {baseline['mean_kld']:.3g} by {100 * abs(change):.0f}% (margin {100 * self.margin:.0f}%);"
                    f" top-1 agreement {fidelity.top1_agreement:.4f} vs {baseline['top1_agreement']:.4f}"
                )
        verdict = "FAIL" if problems else "updated" if baseline is None else "pass"
        row = FidelityRow(
            self.item,
            **asdict(fidelity),
            verdict=verdict,
            **model_identity(self.case),
            baseline_mean_kld=None if baseline is None else baseline["mean_kld"],
        )
        return Verdict([row], f"{self.item}: " + "; ".join(problems) + f". {REFRESH}" if problems else None)


@dataclass(frozen=True)
class ParitySettings:
    min_top1: float
    max_mean_kld: float
    alpha: float
    min_drop_points: float


@dataclass
class ParityCheck(DistributionCheck):
    """Judged against thresholds, not a baseline: two runtimes on the same weights must agree."""

    case: ParityCase
    settings: ParitySettings
    compare: Callable[[], Fidelity]
    task_outcomes: Callable[[], dict[str, PairedComparison]]
    kind: str = "parity"
    key: None = None

    def __post_init__(self) -> None:
        self.item = self.baseline_of = self.case.id

    def identity(self) -> dict[str, Any]:
        return {"model": self.case.model, "reference": self.case.sides[0].model_id, "candidate": self.case.sides[1].model_id}

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
        row = ParityRow(self.item, **asdict(fidelity), verdict="FAIL" if problems else "pass", task_outcomes=outcomes)
        if not problems:
            return Verdict([row])
        return Verdict(
            [row],
            f"{self.item}: the runtimes disagree on the same weights: {'; '.join(problems)}"
            f" (p99 KLD {fidelity.p99_kld:.3g}, perplexity {fidelity.reference_perplexity:.2f} vs {fidelity.perplexity:.2f})",
        )
