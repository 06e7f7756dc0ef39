"""The fidelity reference's distributions on the evaluation text, kept in the artifact cache.

The float32 reference is the slowest model a run loads, and its logits depend only on its file, the
text, the window and the runtime: so they are computed once and reused while those four stay the
same. A file keeps the full float32 logits (TOP_K None): exact, so a run that reads them computes
the figures a run that computed them did. `truncate` / `expand` keep only the k most likely tokens
of each position, the next token, and the rest spread evenly: what that moves the fidelity figures
by is measured by benchmarks/reference_cache_truncation.py: on the shipped text (1,536 tokens) it
took q8_0's mean KL divergence from 0.0042 to 0.32 nats at k=256 (0.10 at k=1024) and q2_k's from
0.41 to 0.67, far past the baselines' 10% margin, so files keep full logits (302 MB for that text;
the float32 GGUF they stand for is larger) and the truncation stays off.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .store.atomic import stage_bytes

TOP_K: int | None = None  # None: full float32 logits; else the top k of each position (see truncate)
FORMAT = 1  # bumped when what a file holds changes


def cache_key(model_digest: str, runtime: str, text: str, window: int) -> str:
    """What the reference's logits depend on: the reference file's content (through the digest it
    is built from), the runtime that evaluates it, the text and the window."""
    text_digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return hashlib.sha256(f"{FORMAT}:{model_digest}:{runtime}:{text_digest}:{window}".encode()).hexdigest()[:24]


def path_for(cache_dir: Path, model: str, key: str) -> Path:
    return cache_dir / "fidelity-reference" / f"{model}.{key}.npz"


def truncate(logits: np.ndarray, tokens: Sequence[int], k: int = 256) -> dict[str, np.ndarray]:
    """Per position: the k most likely tokens and the next token of the window, with their
    log-probabilities, and the log of the probability left to the others."""
    log_probs = _log_softmax(logits)
    top = np.argpartition(-log_probs, k - 1, axis=1)[:, :k]
    following = np.append(np.asarray(tokens[1:], dtype=np.int64), top[-1, 0])  # the last position predicts nothing
    kept = np.concatenate([top, following[:, None]], axis=1)
    kept_log_probs = np.take_along_axis(log_probs, kept, axis=1)
    duplicate = (kept[:, :-1] == kept[:, -1:]).any(axis=1)  # the next token already among the top k
    kept_mass = np.exp(kept_log_probs[:, :-1]).sum(axis=1) + np.where(duplicate, 0.0, np.exp(kept_log_probs[:, -1]))
    rest = np.log(np.clip(1.0 - kept_mass, 1e-30, None))
    return {"indices": kept.astype(np.int32), "log_probs": kept_log_probs.astype(np.float32), "rest": rest}


def expand(part: dict[str, np.ndarray], vocabulary: int) -> np.ndarray:
    """Log-probability rows over the whole vocabulary from a truncated window (what `compare` reads)."""
    if "logits" in part:
        return part["logits"]
    indices, kept = part["indices"], part["log_probs"].astype(np.float64)
    distinct = np.array([len(np.unique(row)) for row in indices])
    rows = np.repeat((part["rest"] - np.log(vocabulary - distinct)).astype(np.float32)[:, None], vocabulary, axis=1)
    np.put_along_axis(rows, indices.astype(np.int64), kept, axis=1)
    return rows


def load(path: Path) -> tuple[list[int], list[np.ndarray]] | None:
    """The tokens and per-window rows, or None when there is no complete file."""
    try:
        with np.load(path) as data:
            tokens = data["tokens"].tolist()
            vocabulary = int(data["vocabulary"])
            count = int(data["windows"])
            names = ("logits",) if "logits_0" in data else ("indices", "log_probs", "rest")
            rows = [expand({name: data[f"{name}_{i}"] for name in names}, vocabulary) for i in range(count)]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    return tokens, rows


def keep(tokens: Sequence[int], windows: Sequence[Sequence[int]], logits: Sequence[np.ndarray]) -> Reference:
    """What a file keeps of the reference's logits, and the rows read back from it: a run that
    computes the reference uses these rows too, so its figures are those of every later run."""
    vocabulary = logits[0].shape[1]
    if TOP_K is None:
        parts = [{"logits": np.asarray(rows, dtype=np.float32)} for rows in logits]
    else:
        parts = [truncate(rows, window, TOP_K) for window, rows in zip(windows, logits)]
    return Reference(list(tokens), vocabulary, parts, [expand(part, vocabulary) for part in parts])


@dataclass(frozen=True)
class Reference:
    tokens: list[int]
    vocabulary: int
    parts: list[dict[str, np.ndarray]]
    rows: list[np.ndarray]


def save(path: Path, reference: Reference) -> None:
    """Written beside its final name, then renamed: a reader never sees half a file."""
    arrays: dict[str, np.ndarray] = {
        "tokens": np.asarray(reference.tokens, dtype=np.int32),
        "vocabulary": np.asarray(reference.vocabulary),
        "windows": np.asarray(len(reference.parts)),
    }
    for i, part in enumerate(reference.parts):
        for name, array in part.items():
            arrays[f"{name}_{i}"] = array
    buffer = io.BytesIO()
    (np.savez if TOP_K is None else np.savez_compressed)(buffer, **arrays)  # float32 logits barely compress
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = stage_bytes(path, buffer.getvalue())
    try:
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    rows = logits.astype(np.float64)
    rows -= rows.max(axis=1, keepdims=True)
    return rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
