"""Does the plugin's speed probe track the minute-to-minute drift that made Gemma's `prefill@128` fail
falsely at the defaults (docs/notes/latency.md, "The speed probe")?

    .venv/bin/python benchmarks/speed_probe.py --minutes 6

One thread throughout, as the defaults time on two cores. Each sample times, back to back: one
sample of the latency items' speed probe (pytest_slm.measure.machine.SpeedProbe: a fixed float32
matrix product in numpy's own single-thread loop), then llama.cpp's prefill of a 128-token prompt
on Gemma 3 270M (the registry's `gemma3-270m`, from an empty KV cache each time).
If the host's speed is what moves, both move together and prefill / probe is steadier than prefill
alone; if the ratio moves as much, a probe cannot tell a slower host from a slower runtime. The
table gives, per minute, the medians of both and of their ratio, and over the whole run the spread
(max/min - 1 of the per-minute medians) of each and the correlation of their per-sample times.
Raw samples go to benchmarks/data/speed_probe.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path

import numpy as np
from llama_cpp import Llama
from tabulate import tabulate

from pytest_slm.measure.machine import SpeedProbe
from pytest_slm.models.registry import BUILTIN_REGISTRY, load_registry

OUT = Path(__file__).resolve().parent / "data" / "speed_probe.json"
PROMPT = "The history of the river valley begins with the first farmers who settled along its banks. " * 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    args = parser.parse_args()
    path = load_registry(BUILTIN_REGISTRY)["gemma3-270m"].gguf_path()
    llm = Llama(model_path=str(path), n_threads=1, n_threads_batch=1, n_ctx=512, verbose=False)
    tokens = llm.tokenize(PROMPT.encode())[:128]
    probe = SpeedProbe()
    llm.eval(tokens)  # warm-up
    samples = []
    started, end = time.monotonic(), time.monotonic() + 60 * args.minutes
    while time.monotonic() < end:
        probe.sample()
        llm.reset()  # the next eval removes the cache from position 0
        t0 = time.perf_counter()
        llm.eval(tokens)
        samples.append(
            {"t": time.monotonic() - started, "probe_s": probe.samples[-1], "prefill_s": time.perf_counter() - t0}
        )
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
