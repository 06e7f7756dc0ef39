"""Why the parity items compare MLX with llama.cpp running an f32 copy, not the shipped file.

On the shipped evaluation text, in fixed windows from an empty cache, three comparisons of
next-token distributions (KL divergence against the first-named side, top-1 agreement):
  llama.cpp f32    vs  MLX native        the same weight values, float32 arithmetic on both sides
  llama.cpp f32    vs  llama.cpp native  what llama.cpp's 8-bit activations for Q4_1 kernels cost
  llama.cpp native vs  MLX native        what a parity item against the shipped file would see

    .venv/bin/python benchmarks/parity_reference.py [--window 256]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tabulate import tabulate
from windows import model_and_text, parse_arguments, window_logits

from pytest_slm.backends import llamacpp, mlx
from pytest_slm.backends.base import LoadRequest
from pytest_slm.measure.divergence import compare


def main() -> None:
    args = parse_arguments(__doc__)
    gguf, text = model_and_text(args.model)
    logits, seconds = {}, {}
    with tempfile.TemporaryDirectory() as cache:
        for name, backend, quant in [
            ("llama.cpp f32", llamacpp, "f32"),
            ("llama.cpp native", llamacpp, "native"),
            ("MLX native", mlx, "native"),
        ]:
            model = backend.load(LoadRequest(args.model, gguf, None, "cpu", quant, args.threads, cache_dir=Path(cache)))
            chunks, logits[name], seconds[name] = window_logits(model, text, args.window)
            model.close()
    rows = []
    for reference, candidate in [
        ("llama.cpp f32", "MLX native"),
        ("llama.cpp f32", "llama.cpp native"),
        ("llama.cpp native", "MLX native"),
    ]:
        f = compare(zip(logits[reference], logits[candidate], chunks))
        rows.append(
            (
                f"{reference} vs {candidate}",
                f.tokens,
                f"{f.top1_agreement:.4f}",
                f"{f.mean_kld:.2e}",
                f"{f.p99_kld:.2e}",
            )
        )
    print(
        tabulate(rows, headers=("comparison", "positions", "top-1 agree", "mean KLD", "p99 KLD"), disable_numparse=True)
    )
    print("seconds for the text: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
