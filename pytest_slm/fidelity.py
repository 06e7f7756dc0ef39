"""How far one runtime's next-token distributions are from a reference's, on the same tokens:
what llama.cpp's `llama-perplexity --kl-divergence` reports, computed in process from logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Fidelity:
    tokens: int  # positions compared (each predicts the next token of its window)
    mean_kld: float  # KL(reference || candidate), nats per position
    p99_kld: float
    top1_agreement: float  # share of positions where both put the same token first
    reference_perplexity: float
    perplexity: float


def windows(tokens: Sequence[int], size: int) -> list[list[int]]:
    """Fixed, non-overlapping windows (a short tail is dropped), each evaluated from an empty cache,
    so the numbers do not depend on the backend's context handling."""
    return [list(tokens[start : start + size]) for start in range(0, len(tokens) - size + 1, size)]


def compare(pairs: Iterable[tuple[np.ndarray, np.ndarray, Sequence[int]]]) -> Fidelity:
    """`pairs`: per window, the reference's and the candidate's logits and the window's tokens."""
    klds, agreements, reference_nll, candidate_nll = [], [], [], []
    for reference_logits, candidate_logits, tokens in pairs:
        reference = _log_softmax(reference_logits[:-1])
        candidate = _log_softmax(candidate_logits[:-1])
        targets = np.asarray(tokens[1:])
        rows = np.arange(len(targets))
        klds.append((np.exp(reference) * (reference - candidate)).sum(axis=1))
        agreements.append(reference.argmax(axis=1) == candidate.argmax(axis=1))
        reference_nll.append(-reference[rows, targets])
        candidate_nll.append(-candidate[rows, targets])
    kld = np.concatenate(klds)
    return Fidelity(
        tokens=len(kld),
        mean_kld=float(kld.mean()),
        p99_kld=float(np.percentile(kld, 99)),
        top1_agreement=float(np.concatenate(agreements).mean()),
        reference_perplexity=float(np.exp(np.concatenate(reference_nll).mean())),
        perplexity=float(np.exp(np.concatenate(candidate_nll).mean())),
    )


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    rows = logits.astype(np.float64)
    rows -= rows.max(axis=1, keepdims=True)
    return rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
