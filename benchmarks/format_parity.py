"""How far a model's GGUF on llama.cpp and its MLX checkpoint on MLX are apart, each at its own
quantizations: what the `formats` parity thresholds (--slm-formats-kld, --slm-formats-top1) must fit.

The checkpoint is the embedded GGUF exported offline (python -m pytest_slm export-mlx), so its
weights are the GGUF's Q4_1 values in float16; llama.cpp's rungs and mlx-lm's quants are each a
re-quantization of those values. llama.cpp is the reference side, as in the parity item.

    .venv/bin/python -m pytest_slm export-mlx smollm2-135m .pytest-slm/checkpoints/smollm2-135m-mlx
    .venv/bin/python benchmarks/format_parity.py [--checkpoint .pytest-slm/checkpoints/smollm2-135m-mlx]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tabulate import tabulate
from windows import ROOT, model_and_text, window_logits

from pytest_slm.backends import llamacpp, mlx
from pytest_slm.backends.base import LoadRequest, default_cache_dir
from pytest_slm.measure.divergence import compare

LLAMA_QUANTS = ("native", "q8_0", "q4_k_m", "q4_0")
MLX_QUANTS = ("native", "mlx-q8", "mlx-q4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / ".pytest-slm" / "checkpoints" / "smollm2-135m-mlx")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    gguf, text = model_and_text(args.model)
    cache = default_cache_dir()

    def logits(backend, request: LoadRequest):
        model = backend.load(request)
        chunks, rows, _ = window_logits(model, text, args.window)
        model.close()
        return chunks, rows

    candidates = {
        quant: logits(mlx, LoadRequest(args.model, None, args.checkpoint, "cpu", quant, args.threads, cache_dir=cache))
        for quant in MLX_QUANTS
    }
    table = []
    for quant in LLAMA_QUANTS:
        chunks, reference = logits(
            llamacpp, LoadRequest(args.model, gguf, None, "cpu", quant, args.threads, cache_dir=cache)
        )
        row = [quant]
        for mlx_quant in MLX_QUANTS:
            mlx_chunks, rows = candidates[mlx_quant]
            assert mlx_chunks == chunks, "the two formats tokenize the text differently"
            f = compare(zip(reference, rows, chunks))
            row.append(f"{f.mean_kld:.4f} / {f.top1_agreement:.4f}")
        table.append(row)
    print(
        f"{args.model}: llama.cpp GGUF (rows) vs MLX checkpoint {args.checkpoint.name} (columns), CPU, "
        f"{len(chunks)} windows of {args.window} tokens; mean KLD (nats) / top-1 agreement"
    )
    print(tabulate(table, headers=("llama.cpp", *MLX_QUANTS), disable_numparse=True))


if __name__ == "__main__":
    main()
