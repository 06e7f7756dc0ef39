"""What keeping only the top k of the reference's distribution per position (the reference cache,
pytest_slm/measure/reference.py) moves the fidelity figures by, against the full float32 logits,
and how large the cached file is for each k:

    .venv/bin/python benchmarks/reference_cache_truncation.py [--quants q8_0 q2_k] [--k 32 64 128 256 1024]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from tabulate import tabulate

from pytest_slm.backends.base import LoadRequest, default_cache_dir
from pytest_slm.backends.llamacpp import backend as llamacpp
from pytest_slm.measure.divergence import compare, positions, top_k, windows
from pytest_slm.models.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--quants", nargs="+", default=["q8_0", "q2_k"])
    parser.add_argument("--k", type=int, nargs="+", default=[32, 64, 128, 256, 1024])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    gguf = load_registry(ROOT / "suites" / "models.toml")[args.model].gguf_path()
    text = (ROOT / "suites" / "eval" / "text.txt").read_text(encoding="utf-8")

    def logits(quant: str) -> tuple[list[list[int]], list[np.ndarray]]:
        model = llamacpp.load(
            LoadRequest(args.model, gguf, None, "cpu", quant, args.threads, cache_dir=default_cache_dir())
        )
        try:
            chunks = windows(model.tokenize(text), args.window)
            return chunks, [model.logits(chunk) for chunk in chunks]
        finally:
            model.close()

    chunks, reference = logits("f32")
    full_bytes = sum(r.astype(np.float32).nbytes for r in reference)
    kept = {k: [top_k(r, c, k) for r, c in zip(reference, chunks)] for k in args.k}
    rows = []
    for quant in args.quants:
        _, candidate = logits(quant)
        full = compare(zip(reference, candidate, chunks))
        exact = np.concatenate([positions(r, c, t).kld for r, c, t in zip(reference, candidate, chunks)])
        for k in args.k:
            cut = compare(zip(kept[k], candidate, chunks))
            bound = np.concatenate([positions(r, c, t).kld for r, c, t in zip(kept[k], candidate, chunks)])
            rows.append(
                (
                    quant,
                    k,
                    f"{full.mean_kld:.5f}",
                    f"{cut.mean_kld:.5f}",
                    f"{(cut.mean_kld - full.mean_kld) / full.mean_kld:+.3%}",
                    f"{(cut.p99_kld - full.p99_kld) / full.p99_kld:+.3%}",
                    f"{(cut.max_kld - full.max_kld) / full.max_kld:+.3%}",
                    f"{(exact - bound).max():.2e}",
                    f"{cut.top1_agreement - full.top1_agreement:+.4f}",
                    f"{cut.delta_p_mean - full.delta_p_mean:+.1e}",
                    f"{cut.reference_perplexity - full.reference_perplexity:+.1e}",
                )
            )
    print(f"{sum(len(c) - 1 for c in chunks)} positions in windows of {args.window}; reference f32 on llama.cpp CPU")
    print(
        tabulate(
            rows,
            headers=(
                "quant",
                "k",
                "mean KLD full",
                "mean KLD top-k",
                "mean",
                "p99",
                "max",
                "worst position (nats)",
                "top-1",
                "Δp mean",
                "ref. ppl",
            ),
            disable_numparse=True,
        )
    )
    sizes = [(k, f"{_npz_bytes(parts) / 1e6:.2f} MB") for k, parts in kept.items()]
    print(f"\nfull float32 logits: {full_bytes / 1e6:.1f} MB")
    print(tabulate(sizes, headers=("k", "cached file (compressed npz)"), disable_numparse=True))


def _npz_bytes(parts: list) -> int:
    buffer = io.BytesIO()
    arrays = {
        f"{name}_{i}": getattr(part, name)
        for i, part in enumerate(parts)
        for name in ("indices", "log_probs", "rest", "target")
    }
    np.savez_compressed(buffer, **arrays)
    return len(buffer.getvalue())


if __name__ == "__main__":
    main()
