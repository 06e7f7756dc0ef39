"""Does a machine-speed probe track the minute-to-minute drift that made Gemma's `prefill@128` fail
falsely at the defaults (docs/notes/latency.md, "At the defaults")?

    .venv/bin/python benchmarks/speed_probe.py --minutes 10

One thread throughout, as the defaults time on two cores. Each sample times, back to back: a fixed
single-thread float32 matrix product (numpy, its BLAS held to one thread), then llama.cpp's prefill
of a 128-token prompt on Gemma 3 270M (the registry's `gemma3-270m`, a fresh KV cache each time).
If the host's speed is what moves, both move together and prefill / probe is steadier than prefill
alone; if the ratio moves as much, a probe cannot tell a slower host from a slower runtime. The
table gives, per minute, the medians of both and of their ratio, and over the whole run the spread
(max/min - 1 of the per-minute medians) of each and the correlation of their per-sample times.
Raw samples go to benchmarks/data/speed_probe.json.
"""

from __future__ import annotations

import os

os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

# after the thread settings, which numpy's BLAS reads on import
import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path

import numpy as np
from llama_cpp import Llama
from tabulate import tabulate

from pytest_slm.models.registry import BUILTIN_REGISTRY, load_registry

OUT = Path(__file__).resolve().parent / "data" / "speed_probe.json"
PROMPT = "The history of the river valley begins with the first farmers who settled along its banks. " * 8


def probe(matrix: np.ndarray, rounds: int = 20) -> float:
    """Seconds for `rounds` products of a fixed 384 x 384 matrix with itself: compute alone."""
    started = time.perf_counter()
    for _ in range(rounds):
        matrix @ matrix
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    path = load_registry(BUILTIN_REGISTRY)["gemma3-270m"].gguf_path()
    llm = Llama(model_path=str(path), n_threads=1, n_threads_batch=1, n_ctx=512, verbose=False)
    tokens = llm.tokenize(PROMPT.encode())[:128]
    matrix = np.random.default_rng(0).standard_normal((384, 384), dtype=np.float32)
    llm.eval(tokens)  # warm-up
    samples = []
    started, end = time.monotonic(), time.monotonic() + 60 * args.minutes
    while time.monotonic() < end:
        probe_s = probe(matrix)
        llm.reset()
        llm._ctx.kv_cache_clear()
        t0 = time.perf_counter()
        llm.eval(tokens)
        samples.append({"t": time.monotonic() - started, "probe_s": probe_s, "prefill_s": time.perf_counter() - t0})
    rows = []
    for minute in range(int(args.minutes + 0.999)):
        inside = [s for s in samples if minute * 60 <= s["t"] < (minute + 1) * 60]
        if inside:
            p = statistics.median(s["probe_s"] for s in inside)
            f = statistics.median(s["prefill_s"] for s in inside)
            r = statistics.median(s["prefill_s"] / s["probe_s"] for s in inside)
            rows.append([minute, len(inside), p, len(tokens) / f, r])

    def drift(column: int) -> str:
        values = [row[column] for row in rows]
        return f"{max(values) / min(values) - 1:.1%}"

    print(tabulate(rows, headers=["minute", "samples", "probe s", "prefill tok/s", "prefill / probe"], floatfmt=".4f"))
    print(f"spread of the per-minute medians: probe {drift(2)}, prefill {drift(3)}, ratio {drift(4)}")
    correlation = float(np.corrcoef([s["probe_s"] for s in samples], [s["prefill_s"] for s in samples])[0, 1])
    print(f"correlation of probe and prefill times over {len(samples)} samples: {correlation:.2f}")
    OUT.write_text(
        json.dumps(
            {
                "command": f".venv/bin/python benchmarks/speed_probe.py --minutes {args.minutes:g}",
                "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "tokens": len(tokens),
                "samples": samples,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
