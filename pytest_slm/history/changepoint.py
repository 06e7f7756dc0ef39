"""Step changes in a run-by-run series, as pure functions on numbers (no I/O).

Figures (timings, memory, KL divergence): binary segmentation with a robust two-sample test. For a
segment, every split leaving at least `min_segment` runs a side is tried; each side is summarised
by its median, and the relative change between the medians is compared with the noise of a median:

    change = median(after) / median(before) - 1
    sigma  = max(1.4826 x MAD of every run's relative residual from its side's median,  # between runs
                 median relative spread of the repeats inside each run)               # measured noise
    se     = 1.2533 x sigma x sqrt(1/n_before + 1/n_after)                            # of two medians

The split is placed where the two sides' medians fit best (least absolute deviation, the L1 cost
of robust change-point methods); it is a step when |change| >= min_step (too small to matter
otherwise) and |change| >= k x se (too large to be noise); then both sides are searched again.
k was calibrated on this machine's own decode timings (benchmarks/history_changepoints.py; the
rates are in docs/history.md).

Accuracy: a step between two consecutive runs is the paired test the items use, two-sided
(McNemar exact on the samples both runs answered), with the same alpha and minimum change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import inf, sqrt
from statistics import median

from ..stats import MAD_TO_SIGMA, compare_outcomes, mcnemar_two_sided

MEDIAN_EFFICIENCY = 1.2533  # sd of a normal sample's median per (sigma / sqrt(n)): sqrt(pi / 2)
DEFAULT_K = 6.0
DEFAULT_MIN_STEP = 0.03
DEFAULT_MIN_SEGMENT = 2


@dataclass(frozen=True)
class Step:
    index: int  # the first run after the step
    before: float  # median of the runs before (within the segment searched)
    after: float
    change: float  # relative: after / before - 1
    noise: float  # the standard error `change` was compared with

    @property
    def score(self) -> float:
        return abs(self.change) / self.noise if self.noise else inf


def find_steps(
    values: Sequence[float],
    spreads: Sequence[float | None] | None = None,
    k: float = DEFAULT_K,
    min_step: float = DEFAULT_MIN_STEP,
    min_segment: int = DEFAULT_MIN_SEGMENT,
) -> list[Step]:
    """Every step in `values` (oldest first), ordered by position. `spreads` are each run's own
    relative spread (None where a run measured once)."""
    if min_segment < 1:
        raise ValueError("min_segment must be at least 1")
    steps: list[Step] = []

    def search(lo: int, hi: int) -> None:
        best = _best_split(values, lo, hi, min_segment, spreads)
        if best is None:
            return
        if abs(best.change) >= min_step and abs(best.change) >= k * best.noise:
            steps.append(best)
            search(lo, best.index)
            search(best.index, hi)

    search(0, len(values))
    return sorted(steps, key=lambda s: s.index)


def _best_split(
    values: Sequence[float], lo: int, hi: int, min_segment: int, spreads: Sequence[float | None] | None
) -> Step | None:
    best: Step | None = None
    best_cost = inf
    for t in range(lo + min_segment, hi - min_segment + 1):
        before, after = values[lo:t], values[t:hi]
        mb, ma = median(before), median(after)
        if mb <= 0 or ma <= 0:
            continue
        residuals = [abs(v / mb - 1) for v in before] + [abs(v / ma - 1) for v in after]
        cost = sum(residuals)
        if cost >= best_cost:
            continue
        sigma = MAD_TO_SIGMA * median(residuals)
        inside = [s for s in (spreads or [])[lo:hi] if s is not None]
        if inside:
            sigma = max(sigma, median(inside))
        noise = MEDIAN_EFFICIENCY * sigma * sqrt(1 / len(before) + 1 / len(after))
        best, best_cost = Step(t, mb, ma, ma / mb - 1, noise), cost
    return best


@dataclass(frozen=True)
class AccuracyStep:
    index: int  # the run after the step
    before: float  # accuracy over the samples both runs share
    after: float
    n: int
    worse: int  # right before, wrong after
    better: int
    p_value: float  # McNemar exact, two-sided

    @property
    def delta_points(self) -> float:
        return 100 * (self.after - self.before)


def accuracy_steps(runs: Sequence[Mapping[str, int]], alpha: float, min_change_points: float) -> list[AccuracyStep]:
    """Consecutive runs paired sample by sample; a step where they differ significantly and by at
    least `min_change_points`. Runs without outcomes (empty) are compared with the last that had some."""
    steps = []
    previous: Mapping[str, int] | None = None
    for index, current in enumerate(runs):
        if not current:
            continue
        if previous is not None:
            paired = compare_outcomes(previous, current)
            if paired.n:
                p = mcnemar_two_sided(len(paired.regressed), len(paired.improved))
                if p < alpha and abs(paired.delta_points) >= min_change_points:
                    steps.append(
                        AccuracyStep(
                            index,
                            paired.baseline_accuracy,
                            paired.accuracy,
                            paired.n,
                            len(paired.regressed),
                            len(paired.improved),
                            p,
                        )
                    )
        previous = current
    return steps
