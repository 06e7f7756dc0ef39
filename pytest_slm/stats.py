"""Statistics as pure functions on numbers: no I/O, unit-tested with known values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import comb, exp, hypot, lgamma, log, log1p, pi, sqrt
from statistics import median

import numpy as np


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
    p: float = tail / 2**flips  # int ** int is typed Any: a negative exponent would make a float
    return p


def mcnemar_two_sided(first_only: int, second_only: int) -> float:
    """Exact two-sided McNemar p-value that two runs differ either way: twice the larger tail."""
    return min(1.0, 2 * mcnemar_one_sided(max(first_only, second_only), min(first_only, second_only)))


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


DETECTION_POWER = 0.8


def fewest_failing_flips(n: int, alpha: float, min_drop_points: float) -> int:
    """The fewest right->wrong flips, with none the other way, that fail an item of n samples:
    McNemar's p = 2^-flips must fall under alpha, and the drop must reach the minimum."""
    flips = 1
    while mcnemar_one_sided(flips, 0) >= alpha or 100 * flips / n < min_drop_points:
        flips += 1
    return flips


def detectable_drop(
    n: int, correct: int, alpha: float, min_drop_points: float, power: float = DETECTION_POWER
) -> float | None:
    """The smallest accuracy drop, in points, the paired test catches with `power`, for a baseline of
    `correct` right answers out of n: each right answer turns wrong with the same chance, none the
    other way (the most favourable case: churn in both directions needs more). None when no drop can
    fail the item: fewer right answers than the flips a failure needs."""
    needed = fewest_failing_flips(n, alpha, min_drop_points)
    if correct < needed:
        return None
    low, high = 0.0, 1.0
    for _ in range(50):  # bisection on the per-answer chance; the tail grows with it
        middle = (low + high) / 2
        low, high = (low, middle) if _binomial_tail(correct, middle, needed) >= power else (middle, high)
    return 100 * correct * high / n


def _binomial_tail(trials: int, chance: float, at_least: int) -> float:
    """P(X >= at_least) for X ~ Binomial(trials, chance), in log space: comb(trials, k) of a task of
    tens of thousands of samples is past what a float holds."""
    if chance <= 0.0:
        return 0.0 if at_least > 0 else 1.0
    if chance >= 1.0:
        return 1.0 if at_least <= trials else 0.0
    log_p, log_q = log(chance), log1p(-chance)
    below = sum(
        exp(lgamma(trials + 1) - lgamma(k + 1) - lgamma(trials - k + 1) + k * log_p + (trials - k) * log_q)
        for k in range(min(at_least, trials + 1))
    )
    return max(0.0, 1.0 - below)


MAD_TO_SIGMA = 1.4826  # a normal distribution's standard deviation per median absolute deviation
MEDIAN_TO_MEAN_ERROR = sqrt(pi / 2)  # a normal sample's median varies this much more than its mean


@dataclass(frozen=True)
class Spread:
    """Repeated timings summarised robustly: one stalled run moves neither the median nor the MAD."""

    median: float
    minimum: float
    mad: float
    count: int  # how many timings

    @property
    def relative(self) -> float:
        """A robust standard deviation of one timing, as a fraction of the median."""
        return MAD_TO_SIGMA * self.mad / self.median if self.median else 0.0

    @property
    def uncertainty(self) -> float:
        """The median's standard error, as a fraction of it: what two medians are compared with, and
        what more repeats narrow (as one over the square root of their count)."""
        return MEDIAN_TO_MEAN_ERROR * self.relative / sqrt(self.count)


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("no measurements")
    middle = median(values)
    return Spread(middle, min(values), median(abs(v - middle) for v in values), len(values))


@dataclass(frozen=True)
class Slowdown:
    """A timing against its baseline: `change` is how much slower the median is (0.25 = 25%)."""

    change: float
    limit: float  # the change that counts as a regression: max(tolerance, k x combined uncertainty)
    noise: float = (
        0.0  # k x the combined uncertainty (the two medians', the scaling's): what the noise alone would let through
    )

    @property
    def regressed(self) -> bool:
        return self.change > self.limit


def compare_timings(baseline: Spread, current: Spread, tolerance: float, k: float, scaling: float = 0.0) -> Slowdown:
    """Slower beyond both a practical tolerance and the noise of the two medians compared: k times
    their standard errors added in quadrature, so a noisier machine needs more repeats, not a
    looser tolerance, to judge as finely. `scaling` is the relative uncertainty of a factor the
    baseline was scaled by (the speed probe's), added in quadrature as a third error."""
    noise = k * hypot(baseline.uncertainty, current.uncertainty, scaling)
    return Slowdown(change=current.median / baseline.median - 1.0, limit=max(tolerance, noise), noise=noise)


RELATIVE_CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same outcomes always give the same interval, so the same verdict


@dataclass(frozen=True)
class RelativeAccuracy:
    """A run's accuracy as a fraction of a reference's on the same samples, with a paired interval."""

    n: int
    reference_accuracy: float
    accuracy: float
    ratio: float
    low: float
    high: float

    def confidently_below(self, fraction: float) -> bool:
        """The whole interval under `fraction`: sampling noise alone would rarely put it there."""
        return self.high < fraction


def relative_accuracy(reference: Mapping[str, int], current: Mapping[str, int]) -> RelativeAccuracy:
    """accuracy(current) / accuracy(reference) on the samples both have, with a 95% paired
    percentile bootstrap interval: the samples are resampled with replacement, each carrying both
    outcomes, so the correlation between the two runs narrows the interval as pairing should.
    Resampling samples of four kinds (both right, reference only, current only, both wrong) is
    drawing the four counts from a multinomial, which is what is done (10,000 times, fixed seed).
    A resample where the reference got nothing right has no ratio: it counts as if the reference
    had got one right (as high a ratio as any resample can have), or as equal where neither got
    any, so the upper end is never understated and stays finite.
    ValueError without a ratio to speak of: no shared sample, or a reference that got none right."""
    shared = sorted(reference.keys() & current.keys())
    if not shared:
        raise ValueError("the run and the reference share no sample")
    cells = np.zeros(4, dtype=np.int64)  # both right, reference only, current only, both wrong
    for sample in shared:
        cells[(0 if current[sample] else 1) if reference[sample] else (2 if current[sample] else 3)] += 1
    n = len(shared)
    reference_right, current_right = int(cells[0] + cells[1]), int(cells[0] + cells[2])
    if reference_right == 0:
        raise ValueError(f"the reference got none of the {n} samples right: a fraction of its accuracy means nothing")
    draws = np.random.default_rng(BOOTSTRAP_SEED).multinomial(n, cells / n, size=BOOTSTRAP_RESAMPLES)
    numerators, denominators = draws[:, 0] + draws[:, 2], draws[:, 0] + draws[:, 1]
    ratios = np.where((denominators == 0) & (numerators == 0), 1.0, numerators / np.maximum(denominators, 1))
    tail = (1 - RELATIVE_CONFIDENCE) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail], method="inverted_cdf")  # resampled ratios, not between two
    return RelativeAccuracy(
        n, reference_right / n, current_right / n, current_right / reference_right, float(low), float(high)
    )
