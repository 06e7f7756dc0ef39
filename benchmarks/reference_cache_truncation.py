"""What keeping only the top k of the reference's distribution (pytest_slm/reference_cache.py)
moves the fidelity figures by, against the full float32 logits, for several quants and k:

    .venv/bin/python benchmarks/reference_cache_truncation.py [--quants native q8_0 q2_k] [--k 64 256 1024]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tabulate import tabulate

from pytest_slm import reference_cache
from pytest_slm.backends.base import LoadRequest, default_cache_dir
from pytest_slm.backends.llamacpp import backend as llamacpp
from pytest_slm.fidelity import compare, windows
from pytest_slm.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--quants", nargs="+", default=["native", "q8_0", "q2_k"])
    parser.add_argument("--k", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    gguf = load_registry(ROOT / "suites" / "models.toml")[args.model].gguf_path()
    text = (ROOT / "suites" / "eval" / "text.txt").read_text(encoding="utf-8")

    def logits(quant: str) -> tuple[list[list[int]], list]:
        model = llamacpp.load(LoadRequest(args.model, gguf, None, "cpu", quant, args.threads, cache_dir=default_cache_dir()))
        try:
            chunks = windows(model.tokenize(text), args.window)
            return chunks, [model.logits(chunk) for chunk in chunks]
        finally:
            model.close()

    chunks, reference = logits("f32")
    rows = []
    for quant in args.quants:
        _, candidate = logits(quant)
        full = compare(zip(reference, candidate, chunks))
        for k in args.k:
            kept = [reference_cache.expand(reference_cache.truncate(r, c, k), r.shape[1]) for r, c in zip(reference, chunks)]
            cut = compare(zip(kept, candidate, chunks))
            rows.append((quant, k, f"{full.mean_kld:.5f}", f"{cut.mean_kld:.5f}",
                         f"{(cut.mean_kld - full.mean_kld) / full.mean_kld:+.2%}", f"{cut.p99_kld - full.p99_kld:+.5f}",
                         f"{cut.top1_agreement - full.top1_agreement:+.4f}", f"{cut.reference_perplexity - full.reference_perplexity:+.2e}"))
    print(f"{sum(len(c) for c in chunks)} tokens in windows of {args.window}; reference f32 on llama.cpp CPU")
    print(tabulate(rows, headers=("quant", "k", "mean KLD full", "mean KLD top-k", "relative", "p99 change", "top-1 change",
                                  "ref. ppl change"), disable_numparse=True))


if __name__ == "__main__":
    main()
