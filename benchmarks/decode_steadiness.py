"""Which way of measuring decode speed, at an equal number of decoded tokens, lets `history` show a
25% slowdown after two runs a side: the question tests/test_history_runs.py's end-to-end test asks
of its runs 1 and 2 before it looks for the decode step (it skips, saying why, when it cannot).

    .venv/bin/python benchmarks/decode_steadiness.py --runs 8

Each run is a fresh process, as each pytest run is: it loads the embedded model on llama.cpp and
measures decode with `measure_decode` (one warm-up, then repeats after a 32-token prompt) in every
scheme, in random order so that a busy spell falls on all of them alike:

    5x32       5 repeats of 32 tokens, 2 threads: the suite's default on this 2-core machine
    1t-5x32    5 repeats of 32 tokens, 1 thread: no barrier between two threads on two shared cores
    1t-9x32    9 repeats of 32 tokens, 1 thread: more repeats
    1t-5x64    5 repeats of 64 tokens, 1 thread: longer repeats
    1t-5x32 2x slept, 1t-5x32 2x spun
               1t-5x32 with every llama_decode twice as long, the added time slept (slowed_runtime.py
               before 7 Dec 2026) or spent busy (since): how steady the end-to-end test's slowed runs are

Per scheme: the median speed, the run-to-run robust spread, the runs' median own spread, and
`shown`: the share of four consecutive runs (v1, v2, v3, v4) for which `find_steps`, given
[v1, v2, v3/1.25, v4/1.25] and the runs' own spreads, finds exactly the step at the third: the
end-to-end test's scenario (two runs, then two with llama_decode 25% slower), each side with its
own noise.
Timings depend on the machine's load: run it on a quiet machine and give `uptime` beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slowed_runtime import slowed, spin

from pytest_slm.history.changepoint import find_steps
from pytest_slm.stats import MAD_TO_SIGMA

SCHEMES = {
    "5x32": (2, 5, 32, None),
    "1t-5x32": (1, 5, 32, None),
    "1t-9x32": (1, 9, 32, None),
    "1t-5x64": (1, 5, 64, None),
    "1t-5x32 2x slept": (1, 5, 32, "slept"),
    "1t-5x32 2x spun": (1, 5, 32, "spun"),
}  # threads, repeats, tokens, how llama_decode is made twice as slow (None: it is not)


def one_run() -> dict[str, dict[str, float]]:
    import llama_cpp

    from pytest_slm.backends import backend
    from pytest_slm.backends.base import LoadRequest
    from pytest_slm.measure.machine import measure_decode
    from pytest_slm.models.registry import select_models

    entry = select_models(ROOT / "suites" / "models.toml", ["smollm2-135m"])["smollm2-135m"]
    text = (ROOT / "suites" / "eval" / "text.txt").read_text()
    found = {}
    for name in random.sample(list(SCHEMES), len(SCHEMES)):
        threads, repeats, tokens, how = SCHEMES[name]
        model = backend("llamacpp").load(LoadRequest("smollm2-135m", entry.gguf_path(), None, "cpu", "native", threads))
        original = llama_cpp.llama_decode
        if how:
            llama_cpp.llama_decode = slowed(original, 1.0, time.sleep if how == "slept" else spin)
        try:
            decode = measure_decode(model, model.tokenize(text), 32, tokens, repeats)[0]
        finally:
            llama_cpp.llama_decode = original
        model.close()
        spread = decode.spread
        found[name] = {"tok_s": decode.shown(spread.median), "spread": spread.relative}
    return found


def summary(runs: list[dict[str, dict[str, float]]]) -> list[tuple[str, ...]]:
    rows = []
    for name in SCHEMES:
        values = [run[name]["tok_s"] for run in runs]
        spreads = [run[name]["spread"] for run in runs]
        middle = median(values)
        between = MAD_TO_SIGMA * median(abs(v / middle - 1) for v in values)
        fours = [runs[i : i + 4] for i in range(len(runs) - 3)]
        shown = sum(
            [
                s.index
                for s in find_steps(
                    [r[name]["tok_s"] / (1.25 if i >= 2 else 1) for i, r in enumerate(four)],
                    [r[name]["spread"] for r in four],
                )
            ]
            == [2]
            for four in fours
        )
        rows.append(
            (name, f"{middle:.1f}", f"{100 * between:.1f}%", f"{100 * median(spreads):.1f}%", f"{shown}/{len(fours)}")
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a run's own process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run()))
        return
    runs = []
    for index in range(args.runs):
        done = subprocess.run([sys.executable, __file__, "--one"], capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout))
        shown = ", ".join(f"{name} {r['tok_s']:.1f} ±{100 * r['spread']:.0f}%" for name, r in runs[-1].items())
        print(f"run {index + 1} (load {os.getloadavg()[0]:.1f}): {shown}", file=sys.stderr)
    print(tabulate(summary(runs), headers=("scheme", "tok/s", "between runs", "within a run", "25% step shown")))


if __name__ == "__main__":
    main()
