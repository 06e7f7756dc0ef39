"""The fidelity reference's distributions on the evaluation text (and on the depth text after each
depth), kept in the artifact cache.

The float32 reference is the slowest model a run loads, and its distributions depend only on its
file, the text, the window and the runtime: so they are computed once and reused while those stay
the same. A file keeps, per position, the TOP_K most likely tokens' log-probabilities, the mass left
to the others and the log-probability of the text's next token (`fidelity.TopK`), about 1% of the
full float32 logits; what that truncation moves the fidelity figures by is measured by
benchmarks/reference_cache_truncation.py (docs/notes/evaluation-speed.md). The run that computes
the reference uses the kept form too, so its figures are those of every later run.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..store.atomic import stage_bytes
from .divergence import DEPTH_WINDOWS, TopK, top_k

TOP_K = 1024  # chosen from benchmarks/reference_cache_truncation.py
FORMAT = 2  # bumped when what a file holds changes (2: top k instead of full logits)
FIELDS = ("indices", "log_probs", "rest", "target")


@dataclass(frozen=True)
class KeptReference:
    """What a file holds: the text's tokens, the vocabulary's size, and each window's top k."""

    tokens: list[int]  # the whole text's tokens
    vocabulary: int
    windows: list[TopK]


def cache_key(model_digest: str, runtime: str, text: str, window: int, depth: int = 0) -> str:
    """What the reference's distributions depend on: the reference file's content (through the digest
    it is built from, which covers its vocabulary and weights), the runtime that evaluates it, the
    text, the window and the depth its windows start at (fidelity.depth_windows; at depth 0 the key
    is what it was before depths); and what a file keeps of them (FORMAT, TOP_K, DEPTH_WINDOWS)."""
    text_digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    parts = f"{FORMAT}:{TOP_K}:{model_digest}:{runtime}:{text_digest}:{window}"
    if depth:
        parts += f":depth={depth}:{DEPTH_WINDOWS}"
    return hashlib.sha256(parts.encode()).hexdigest()[:24]


def path_for(cache_dir: Path, model: str, key: str) -> Path:
    return cache_dir / "fidelity-reference" / f"{model}.{key}.npz"


def keep(tokens: Sequence[int], windows: Sequence[Sequence[int]], logits: Sequence[np.ndarray]) -> KeptReference:
    """What a file keeps of the reference's logits."""
    return KeptReference(
        list(tokens), logits[0].shape[1], [top_k(rows, window, TOP_K) for window, rows in zip(windows, logits)]
    )


def load(path: Path) -> KeptReference | None:
    """The kept reference, or None when there is no complete file."""
    try:
        with np.load(path) as data:
            vocabulary = int(data["vocabulary"])
            windows = [TopK(*(data[f"{name}_{i}"] for name in FIELDS)) for i in range(int(data["windows"]))]
            return KeptReference(data["tokens"].tolist(), vocabulary, windows)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None


def save(path: Path, reference: KeptReference) -> None:
    """Written beside its final name, then renamed: a reader never sees half a file."""
    arrays: dict[str, np.ndarray] = {
        "tokens": np.asarray(reference.tokens, dtype=np.int32),
        "vocabulary": np.asarray(reference.vocabulary),
        "windows": np.asarray(len(reference.windows)),
    }
    for i, window in enumerate(reference.windows):
        for name in FIELDS:
            arrays[f"{name}_{i}"] = getattr(window, name)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]  # mypy matches **arrays against allow_pickle: bool too
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = stage_bytes(path, buffer.getvalue())
    try:
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
