"""What the distribution benchmarks share: the model and text they run on, logits in fixed windows."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from pytest_slm.measure.divergence import windows
from pytest_slm.models.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]


def parse_arguments(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def model_and_text(model: str) -> tuple[Path, str]:
    """The registered model's GGUF and the shipped evaluation text."""
    gguf = load_registry(ROOT / "suites" / "models.toml")[model].gguf_path()
    return gguf, (ROOT / "suites" / "eval" / "text.txt").read_text(encoding="utf-8")


def window_logits(model: Any, text: str, size: int) -> tuple[list[list[int]], list[np.ndarray], float]:
    """The text's windows, each one's logits from an empty cache, and the seconds that took."""
    chunks = windows(model.tokenize(text), size)
    started = time.perf_counter()
    logits = [model.logits(chunk) for chunk in chunks]
    return chunks, logits, time.perf_counter() - started
