"""Why the parity items compare MLX with llama.cpp running an f32 copy, not the shipped file.

On the shipped evaluation text, in fixed windows from an empty cache, three comparisons of
next-token distributions (KL divergence against the first-named side, top-1 agreement):
  llama.cpp f32    vs  MLX native        the same weight values, float32 arithmetic on both sides
  llama.cpp f32    vs  llama.cpp native  what llama.cpp's 8-bit activations for Q4_1 kernels cost
  llama.cpp native vs  MLX native        what a parity item against the shipped file would see

    .venv/bin/python benchmarks/parity_reference.py [--window 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from pytest_slm.backends import llamacpp, mlx
from pytest_slm.backends.base import LoadRequest
from pytest_slm.fidelity import compare, windows
from pytest_slm.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    gguf = load_registry(ROOT / "suites" / "models.toml")[args.model].gguf_path()
    text = (ROOT / "suites" / "eval" / "text.txt").read_text(encoding="utf-8")
    logits, seconds = {}, {}
    with tempfile.TemporaryDirectory() as cache:
        for name, backend, quant in [("llama.cpp f32", llamacpp, "f32"), ("llama.cpp native", llamacpp, "native"), ("MLX native", mlx, "native")]:
            model = backend.load(LoadRequest(args.model, gguf, None, "cpu", quant, args.threads, cache_dir=Path(cache)))
            chunks = windows(model.tokenize(text), args.window)
            started = time.perf_counter()
            logits[name] = [model.logits(chunk) for chunk in chunks]
            seconds[name] = time.perf_counter() - started
            model.close()
    rows = []
    for reference, candidate in [("llama.cpp f32", "MLX native"), ("llama.cpp f32", "llama.cpp native"), ("llama.cpp native", "MLX native")]:
        f = compare(zip(logits[reference], logits[candidate], chunks))
        rows.append((f"{reference} vs {candidate}", f.tokens, f"{f.top1_agreement:.4f}", f"{f.mean_kld:.2e}", f"{f.p99_kld:.2e}"))
    print(tabulate(rows, headers=("comparison", "positions", "top-1 agree", "mean KLD", "p99 KLD"), disable_numparse=True))
    print("seconds for the text: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
