"""How much each fidelity statistic moves between runs that should give the same figures, and
between adjacent rungs of the quantization ladder: what the fidelity gate's margins
(--slm-fidelity-margin for the mean, --slm-fidelity-tail-margin for the tail) are calibrated on.

    .venv/bin/python benchmarks/fidelity_calibration.py [--quants f16 q8_0 native q4_k_m q4_0 q2_k]

Each quant is evaluated three times against one f32 reference: twice with the same settings, each
from a fresh load, and once with one thread instead of two (the same build on a machine with
another core count: llama.cpp splits its sums differently).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from tabulate import tabulate

from pytest_slm.backends.base import LoadRequest, default_cache_dir
from pytest_slm.backends.llamacpp import backend as llamacpp
from pytest_slm.measure.divergence import Fidelity, compare, top_k, windows
from pytest_slm.measure.reference import TOP_K
from pytest_slm.models.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
STATISTICS = (
    "mean_kld",
    "median_kld",
    "p90_kld",
    "p95_kld",
    "p99_kld",
    "p999_kld",
    "max_kld",
    "delta_p_mean",
    "delta_p_rms",
    "top1_agreement",
    "ppl_ratio",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--quants", nargs="+", default=["f16", "q8_0", "native", "q4_k_m", "q4_0", "q2_k"])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    gguf = load_registry(ROOT / "suites" / "models.toml")[args.model].gguf_path()
    text = (ROOT / "suites" / "eval" / "text.txt").read_text(encoding="utf-8")

    def logits(quant: str, threads: int) -> tuple[list[list[int]], list[np.ndarray]]:
        model = llamacpp.load(LoadRequest(args.model, gguf, None, "cpu", quant, threads, cache_dir=default_cache_dir()))
        try:
            chunks = windows(model.tokenize(text), args.window)
            return chunks, [model.logits(chunk) for chunk in chunks]
        finally:
            model.close()

    chunks, full = logits("f32", args.threads)
    reference = [top_k(rows, chunk, TOP_K) for rows, chunk in zip(full, chunks)]  # as the cache keeps it
    del full
    runs: dict[str, list[Fidelity]] = {}
    for quant in args.quants:
        runs[quant] = [
            compare(zip(reference, logits(quant, threads)[1], chunks)) for threads in (args.threads, args.threads, 1)
        ]

    print(f"{sum(len(c) - 1 for c in chunks)} positions, windows of {args.window}, reference f32 top-{TOP_K}")
    print("\nfigures (first run):")
    print(
        tabulate(
            [(q, *(f"{getattr(r[0], s):.4g}" for s in STATISTICS)) for q, r in runs.items()],
            headers=("quant", *STATISTICS),
            disable_numparse=True,
        )
    )
    print(f"\nlargest relative change between runs of the same build (same threads | {args.threads} vs 1 thread):")
    print(
        tabulate(
            [
                (q, *(f"{_change(r[0], r[1], s):.1e} | {_change(r[0], r[2], s):.1e}" for s in STATISTICS))
                for q, r in runs.items()
            ],
            headers=("quant", *STATISTICS),
            disable_numparse=True,
        )
    )
    ladder = sorted(runs, key=lambda q: runs[q][0].mean_kld)
    print("\nrelative change between adjacent rungs (ordered by mean KLD):")
    print(
        tabulate(
            [
                (f"{a} -> {b}", *(f"{_change(runs[a][0], runs[b][0], s):+.1%}" for s in STATISTICS))
                for a, b in itertools.pairwise(ladder)
            ],
            headers=("rungs", *STATISTICS),
            disable_numparse=True,
        )
    )


def _change(before: Fidelity, after: Fidelity, statistic: str) -> float:
    old, new = getattr(before, statistic), getattr(after, statistic)
    return 0.0 if new == old else (new - old) / abs(old) if old else float("inf")


if __name__ == "__main__":
    main()
