"""Why MLX is slow on Linux CPU, and what pytest-slm makes of it: side by side in one run, on the
embedded model's `native` weights, each configuration in a fresh process (the BLAS is chosen once
per process):

  kernel     MLX's quantized matmul on the GGUF's blocks, or the same values dequantized to float32
  BLAS       the reference BLAS bundled in MLX's Linux wheel, or OpenBLAS through pytest-slm's shim

For each: prefill tokens/s (128-token prompt), decode tokens/s of one row, and tokens/s of 32 rows
generated side by side (how the lm-eval bridge generates); llama.cpp on the same GGUF and threads
for scale. The last row is what pytest-slm's mlx-cpu device runs.

    .venv/bin/python benchmarks/mlx_cpu_speed.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [  # (label, kernel, PYTEST_SLM_MLX_BLAS)
    ("MLX quantized kernel, reference BLAS", "quantized", "reference"),
    ("MLX quantized kernel, OpenBLAS", "quantized", ""),
    ("MLX float32, reference BLAS", "float32", "reference"),
    ("MLX float32, OpenBLAS (pytest-slm's mlx-cpu)", "float32", ""),
]
PROMPT, DECODE, ROWS, ROW_TOKENS = 128, 32, 32, 16


def measure(backend_name: str, kernel: str, threads: int) -> dict[str, float | str]:
    """One configuration, in this process: prefill and decode best of three, generation once."""
    from pytest_slm.backends import llamacpp
    from pytest_slm.backends.base import LoadRequest
    from pytest_slm.backends.mlx import blas as mlx_blas
    from pytest_slm.models.registry import load_registry

    blas = mlx_blas.route_to_openblas() if backend_name == "mlx" else "-"
    if kernel == "quantized":
        import mlx_lm.utils

        mlx_lm.utils.dequantize_model = lambda model: model  # keep MLX's quantized layers
    from pytest_slm.backends import mlx

    gguf = load_registry(ROOT / "suites" / "models.toml")["smollm2-135m"].gguf_path()
    request = LoadRequest("smollm2-135m", gguf, None, "cpu", "native", threads)
    model = (mlx if backend_name == "mlx" else llamacpp).load(request)
    prompt = (model.tokenize((ROOT / "suites" / "eval" / "text.txt").read_text()) * 2)[:PROMPT]
    prefill = min(model.timed_prefill(prompt) for _ in range(3))
    decode = min(model.timed_decode(prompt[:16], DECODE)[1] for _ in range(3))
    prompts = [prompt[i : i + 24] for i in range(ROWS)]  # 32 different prompts, 24 tokens each
    started = time.perf_counter()
    produced = model.generate(prompts, ROW_TOKENS, lambda row, tokens: False)
    batched = sum(map(len, produced)) / (time.perf_counter() - started)
    return {"blas": blas, "prefill": PROMPT / prefill, "decode": DECODE / decode, "batched": batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "KERNEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.threads)))
        return
    rows = []
    runs = [(label, "mlx", kernel, blas) for label, kernel, blas in CONFIGS]
    runs.append((f"llama.cpp (Q4_1 kernels, {args.threads} threads)", "llamacpp", "quantized", ""))
    for label, backend_name, kernel, blas in runs:
        env = {**os.environ, "PYTEST_SLM_MLX_BLAS": blas}
        command = [sys.executable, __file__, "--threads", str(args.threads), "--child", backend_name, kernel]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append([label, figures["blas"], figures["prefill"], figures["decode"], figures["batched"]])
        print(f"measured: {label}", file=sys.stderr)
    headers = [
        "configuration",
        "BLAS MLX ran on",
        f"prefill tok/s @{PROMPT}",
        "decode tok/s (1 row)",
        f"generation tok/s ({ROWS} rows)",
    ]
    print(tabulate(rows, headers, floatfmt=".1f"))


if __name__ == "__main__":
    main()
