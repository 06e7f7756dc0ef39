"""What each quantization of the ladder costs, on llama.cpp, against the exact f32 copy.

Every quant is derived from the model's GGUF by llama.cpp's own quantizer (cached as the plugin
caches it); each is evaluated on the shipped evaluation text in fixed windows from an empty cache.
When the model ships quantized (the embedded one is Q4_1), every rung is a re-quantization of
those Q4_1 values, not of the original float weights.

    .venv/bin/python benchmarks/quant_ladder.py [--model smollm2-135m] [--window 256]
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import gguf
from tabulate import tabulate
from windows import model_and_text, parse_arguments, window_logits

from pytest_slm.backends import llamacpp
from pytest_slm.backends.base import LoadRequest, default_cache_dir
from pytest_slm.backends.llamacpp.quantize import LLAMA_FTYPES, derived_gguf
from pytest_slm.measure.divergence import compare


def tensor_types(path: Path) -> str:
    """What the quantizer chose per 2-D weight: K-quants fall back where rows do not split in 256s."""
    reader = gguf.GGUFReader(path)
    counts = Counter(t.tensor_type.name.lower() for t in reader.tensors if len(t.shape) == 2)
    return " ".join(f"{name}:{count}" for name, count in counts.most_common())


def main() -> None:
    args = parse_arguments(__doc__)
    gguf_path, text = model_and_text(args.model)

    def path(quant: str) -> Path:
        return gguf_path if quant == "native" else derived_gguf(gguf_path, quant, default_cache_dir())

    def run(quant: str):
        model = llamacpp.load(
            LoadRequest(args.model, gguf_path, None, "cpu", quant, args.threads, cache_dir=default_cache_dir())
        )
        chunks, logits, seconds = window_logits(model, text, args.window)
        n_params = model._lib.llama_model_n_params(model._model)
        size = model._lib.llama_model_size(model._model)
        model.close()
        return chunks, logits, seconds, 8 * size / n_params, size

    measured = {"f32": run("f32")}
    chunks, reference = measured["f32"][:2]
    rows = []
    for quant in ["native", *LLAMA_FTYPES]:
        _, logits, seconds, bits, size = measured.get(quant) or run(quant)
        f = compare(zip(reference, logits, chunks))
        rows.append(
            (
                quant,
                f"{size / 2**20:.0f}",
                f"{bits:.2f}",
                f"{f.mean_kld:.2e}",
                f"{f.p99_kld:.2e}",
                f"{f.top1_agreement:.4f}",
                f"{f.perplexity:.2f}",
                f"{f.tokens / seconds:.0f}",
                tensor_types(path(quant)),
            )
        )
    print(
        f"{args.model} on llama.cpp CPU, {args.threads} threads, {len(chunks)} windows of {args.window} tokens, against f32"
    )
    print(
        tabulate(
            rows,
            headers=(
                "quant",
                "MiB",
                "bits/weight",
                "mean KLD",
                "p99 KLD",
                "top-1",
                "perplexity",
                "tokens/s",
                "2-D tensor types",
            ),
            disable_numparse=True,
        )
    )


if __name__ == "__main__":
    main()
