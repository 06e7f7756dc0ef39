"""How far one runtime's next-token distributions are from a reference's, on the same tokens:
the statistics llama.cpp's `llama-perplexity --kl-divergence` prints, computed in process from logits.

The reference is either full logits or its top k per position (`TopK`, what the reference cache
keeps): then the tokens outside the top k count as one outcome on both sides, which gives a lower
bound of the full KL divergence (log-sum inequality) that benchmarks/reference_cache_truncation.py
measures against the full one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile
# Windows compared after a nonzero depth: 4 of 256 tokens are 1,020 positions, two thirds of the
# evaluation text's 1,530 at depth 0, at a bounded cost (depth + 1,024 tokens per model).
DEPTH_WINDOWS = 4
EXACT_REST = 1e-6  # a top k leaving less probability than this has the rest summed, not subtracted
# The KL divergence percentiles a record keeps, by the name a tail gate is configured with.
KLD_PERCENTILES = {"median": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9, "max": 100.0}


@dataclass(frozen=True)
class Fidelity:
    tokens: int  # positions compared (each predicts the next token of its window)
    mean_kld: float  # KL(reference || candidate), nats per position
    kld_stderr: float  # standard error of that mean
    median_kld: float
    p90_kld: float
    p95_kld: float
    p99_kld: float
    p999_kld: float
    max_kld: float
    delta_p_mean: float  # probability the reference's top token lost in the candidate (negative: gained)
    delta_p_rms: float
    delta_p_median: float
    delta_p_p99: float
    delta_p_max: float
    top1_agreement: float  # share of positions where both put the same token first
    top1_low: float  # its 95% Wilson interval
    top1_high: float
    reference_perplexity: float
    perplexity: float
    ppl_ratio: float  # perplexity / reference_perplexity
    ppl_ratio_stderr: float  # propagated from the per-position difference of log-likelihoods

    def tail(self, name: str) -> float:
        """A KL divergence percentile by its name in KLD_PERCENTILES ("p99", "max", ...)."""
        value: float = getattr(self, tail_field(name))
        return value


def tail_field(name: str) -> str:
    return f"{name}_kld"


@dataclass(frozen=True)
class TopK:
    """The reference's distribution at each position as kept: the k most likely tokens with their
    log-probabilities, the log of the probability left to all others, and the log-probability of
    the text's next token (so perplexity stays exact)."""

    indices: np.ndarray  # (positions, k) token ids
    log_probs: np.ndarray  # (positions, k)
    rest: np.ndarray  # (positions,) log(1 - sum of the top k's probabilities)
    target: np.ndarray  # (positions,)


Reference = np.ndarray | TopK


@dataclass(frozen=True)
class Positions:
    """Per position: what the statistics are computed from."""

    kld: np.ndarray
    same_top: np.ndarray
    delta_p: np.ndarray
    reference_nll: np.ndarray
    candidate_nll: np.ndarray


def windows(tokens: Sequence[int], size: int) -> list[list[int]]:
    """Fixed, non-overlapping windows (a short tail is dropped), each evaluated from an empty cache,
    so the numbers do not depend on the backend's context handling."""
    return [list(tokens[start : start + size]) for start in range(0, len(tokens) - size + 1, size)]


def depth_windows(tokens: Sequence[int], depth: int, size: int, context_length: int) -> list[list[int]]:
    """The windows compared at `depth`: the text's first `depth` tokens stay in the cache as context,
    and the text continues through up to DEPTH_WINDOWS windows, each after the last (the context
    grows from `depth`), as many as the text and the loaded context hold; none when not one fits."""
    room = min(len(tokens), context_length) - depth
    count = min(DEPTH_WINDOWS, max(0, room // size))
    return [list(tokens[depth + i * size : depth + (i + 1) * size]) for i in range(count)]


def top_k(logits: np.ndarray, tokens: Sequence[int], k: int) -> TopK:
    """What the reference cache keeps of one window's logits (the last position predicts nothing)."""
    log_probs = log_softmax(logits[:-1])
    k = min(k, log_probs.shape[1])
    indices = np.argpartition(-log_probs, k - 1, axis=1)[:, :k]
    kept = np.take_along_axis(log_probs, indices, axis=1)
    rest = _log_rest(log_probs, indices, kept)
    target = log_probs[np.arange(len(log_probs)), np.asarray(tokens[1:])]
    return TopK(indices.astype(np.int32), kept.astype(np.float32), rest.astype(np.float32), target.astype(np.float32))


def positions(reference: Reference, candidate_logits: np.ndarray, tokens: Sequence[int]) -> Positions:
    """One window's per-position figures; `candidate_logits` are full, `reference` full or top-k."""
    candidate = log_softmax(candidate_logits[:-1])
    targets = np.asarray(tokens[1:])
    rows = np.arange(len(targets))
    if isinstance(reference, TopK):
        kept = reference.log_probs.astype(np.float64)
        indices = reference.indices.astype(np.int64)
        candidate_kept = np.take_along_axis(candidate, indices, axis=1)
        candidate_rest = _log_rest(candidate, indices, candidate_kept)
        rest = reference.rest.astype(np.float64)
        with np.errstate(invalid="ignore"):  # no mass left: the term is 0, not 0 * inf
            rest_term = np.where(np.isneginf(rest), 0.0, np.exp(rest) * (rest - candidate_rest))
        kld = (np.exp(kept) * (kept - candidate_kept)).sum(axis=1) + rest_term
        best = kept.argmax(axis=1)
        reference_top, reference_top_p = indices[rows, best], np.exp(kept[rows, best])
        reference_nll = -reference.target.astype(np.float64)
    else:
        full = log_softmax(reference[:-1])
        kld = (np.exp(full) * (full - candidate)).sum(axis=1)
        reference_top = full.argmax(axis=1)
        reference_top_p = np.exp(full[rows, reference_top])
        reference_nll = -full[rows, targets]
    return Positions(
        kld=np.maximum(kld, 0.0),  # rounding can leave -1e-12 where the two are equal
        same_top=reference_top == candidate.argmax(axis=1),
        delta_p=reference_top_p - np.exp(candidate[rows, reference_top]),
        reference_nll=reference_nll,
        candidate_nll=-candidate[rows, targets],
    )


def compare(pairs: Iterable[tuple[Reference, np.ndarray, Sequence[int]]]) -> Fidelity:
    """`pairs`: per window, the reference (logits or top k), the candidate's logits and the window's tokens."""
    return summarize([positions(reference, candidate, tokens) for reference, candidate, tokens in pairs])


def summarize(parts: Sequence[Positions]) -> Fidelity:
    """llama-perplexity's statistics over all positions of all windows."""
    kld = np.concatenate([p.kld for p in parts])
    same = np.concatenate([p.same_top for p in parts])
    delta_p = np.concatenate([p.delta_p for p in parts])
    reference_nll = np.concatenate([p.reference_nll for p in parts])
    candidate_nll = np.concatenate([p.candidate_nll for p in parts])
    n = len(kld)
    percentile = {name: float(np.percentile(kld, q)) for name, q in KLD_PERCENTILES.items()}
    agreement = float(same.mean())
    low, high = wilson_interval(int(same.sum()), n)
    log_ratio = candidate_nll - reference_nll
    ratio = math.exp(float(log_ratio.mean()))
    return Fidelity(
        tokens=n,
        mean_kld=float(kld.mean()),
        kld_stderr=standard_error(kld),
        **{tail_field(name): value for name, value in percentile.items()},
        delta_p_mean=float(delta_p.mean()),
        delta_p_rms=float(np.sqrt((delta_p**2).mean())),
        delta_p_median=float(np.median(delta_p)),
        delta_p_p99=float(np.percentile(delta_p, 99)),
        delta_p_max=float(delta_p.max()),
        top1_agreement=agreement,
        top1_low=low,
        top1_high=high,
        reference_perplexity=math.exp(float(reference_nll.mean())),
        perplexity=math.exp(float(candidate_nll.mean())),
        ppl_ratio=ratio,
        ppl_ratio_stderr=ratio * standard_error(log_ratio),
    )


def standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The binomial share's confidence interval that stays inside [0, 1] near 0 and 1 (where top-1
    agreement lives), unlike the normal one llama-perplexity prints."""
    share = successes / n
    scale = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / scale
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / scale
    # exactly 0 and 1 at the ends, where rounding left 1 - 2e-16 for 1543 of the first 5000 n, and
    # a perfect agreement outside its own interval (a record the fidelity check refuses)
    return 0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    rows = logits.astype(np.float64)
    rows -= rows.max(axis=1, keepdims=True)
    result: np.ndarray = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
    return result


def _log_rest(log_probs: np.ndarray, indices: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Each row's log probability outside `indices` (`kept` its log probabilities there): one minus
    the kept mass, the rows being normalized, which reads k entries instead of the vocabulary; the
    rest summed itself where it is under EXACT_REST, too little for the subtraction to keep its digits."""
    outside = 1.0 - np.exp(kept).sum(axis=1)
    rest: np.ndarray = np.log(np.maximum(outside, EXACT_REST))
    if (small := outside < EXACT_REST).any():
        rest[small] = _log_sum_exp(_without(log_probs[small], indices[small]))
    return rest


def _without(log_probs: np.ndarray, indices: np.ndarray) -> np.ndarray:
    rest = log_probs.copy()
    np.put_along_axis(rest, indices.astype(np.int64), -np.inf, axis=1)
    without: np.ndarray = rest
    return without


def _log_sum_exp(log_values: np.ndarray) -> np.ndarray:
    top = log_values.max(axis=1)
    safe = np.where(np.isneginf(top), 0.0, top)
    with np.errstate(divide="ignore"):
        total: np.ndarray = safe + np.log(np.exp(log_values - safe[:, None]).sum(axis=1))
    return total
