"""Statistics as pure functions on numbers: no I/O, unit-tested with known values."""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Mapping


def mcnemar_one_sided(regressed: int, improved: int) -> float:
    """Exact one-sided McNemar p-value that the model got worse.

    Only the discordant pairs carry information: under "no change" each flip is equally likely
    to go either way, so the number of right→wrong flips is Binomial(flips, 1/2) and
    p = P(X >= regressed).
    """
    if regressed < 0 or improved < 0:
        raise ValueError("flip counts cannot be negative")
    flips = regressed + improved
    if flips == 0:
        return 1.0
    tail = sum(comb(flips, k) for k in range(regressed, flips + 1))
    return tail / 2**flips


@dataclass(frozen=True)
class PairedComparison:
    """Per-sample outcomes of a run against its baseline, on the samples both have."""

    n: int
    baseline_accuracy: float
    accuracy: float
    regressed: tuple[str, ...]  # sample ids right in the baseline, wrong now
    improved: tuple[str, ...]  # sample ids wrong in the baseline, right now
    p_value: float

    @property
    def delta_points(self) -> float:
        return 100.0 * (self.accuracy - self.baseline_accuracy)

    def is_regression(self, alpha: float, min_drop_points: float) -> bool:
        """Significant (paired, one-sided) and large enough to matter."""
        return self.p_value < alpha and -self.delta_points >= min_drop_points


def compare_outcomes(baseline: Mapping[str, int], current: Mapping[str, int]) -> PairedComparison:
    """Pair the samples by id; accuracies are over the shared samples so the pairing stays exact."""
    shared = sorted(baseline.keys() & current.keys())
    regressed = tuple(s for s in shared if baseline[s] and not current[s])
    improved = tuple(s for s in shared if current[s] and not baseline[s])
    n = len(shared)
    return PairedComparison(
        n=n,
        baseline_accuracy=sum(baseline[s] for s in shared) / n if n else 0.0,
        accuracy=sum(current[s] for s in shared) / n if n else 0.0,
        regressed=regressed,
        improved=improved,
        p_value=mcnemar_one_sided(len(regressed), len(improved)),
    )
