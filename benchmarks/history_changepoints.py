"""How `python -m pytest_slm history` finds steps in a timing series, measured on this machine:
false steps on an unchanged series, and detection of an injected 5% slowdown.

    .venv/bin/python benchmarks/history_changepoints.py --runs 40 --save benchmarks/data/decode_runs.json
    .venv/bin/python benchmarks/history_changepoints.py --load benchmarks/data/decode_runs.json

Collecting: the embedded model on llama.cpp (`--threads`, 2), `--runs` runs of the decode item's own
measurement (`measure_decode`: one warm-up, then 5 timed generations of `--tokens` (16) tokens after a 32-token
prompt), one after another, each in a fresh process as pytest runs are, each summarised as the item
summarises it (median tok/s and relative robust spread). The noise is whatever this machine had meanwhile: here, other developers' tests on
the same 2 cores.

Rates (`--load` a saved collection to recompute them): series of `--length` runs are drawn from the measured runs (random order, without
replacement: run-to-run noise without any drift, B draws), and also every contiguous window of the
runs as measured (drift included). False-step rate: the share of series in which `find_steps`
reports any step. Detection: the same series with the second half made `--step` (5%) slower
(tok/s / 1.05, spreads unchanged); detected when a step is found within one run of the true position.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_slm.history.changepoint import DEFAULT_MIN_STEP, find_steps


def one_run(threads: int, new_tokens: int) -> dict[str, float]:
    """One run as the decode item measures it, in a process of its own as each pytest run is."""
    from pytest_slm.backends import backend
    from pytest_slm.backends.base import LoadRequest
    from pytest_slm.measure.machine import measure_decode
    from pytest_slm.models.registry import select_models

    entry = select_models(ROOT / "suites" / "models.toml", ["smollm2-135m"])["smollm2-135m"]
    model = backend("llamacpp").load(LoadRequest("smollm2-135m", entry.gguf_path(), None, "cpu", "native", threads))
    tokens = model.tokenize((ROOT / "suites" / "eval" / "text.txt").read_text())
    decode = measure_decode(model, tokens, 32, new_tokens, 5)[0]
    model.close()
    spread = decode.spread
    return {"tok_s": decode.shown(spread.median), "spread": spread.relative}


def collect(runs: int, threads: int, new_tokens: int) -> list[dict[str, float]]:
    measured = []
    for index in range(runs):
        command = [sys.executable, __file__, "--one", "--threads", str(threads), "--tokens", str(new_tokens)]
        measured.append(json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout))
        print(
            f"run {index + 1} (load {os.getloadavg()[0]:.1f}): {measured[-1]['tok_s']:.2f} tok/s +-{100 * measured[-1]['spread']:.1f}%",
            file=sys.stderr,
        )
    return measured


def rates(
    runs: list[dict[str, float]], length: int, draws: int, k: float, min_step: float, seed: int, step: float
) -> dict[str, float]:
    rng = random.Random(seed)
    half = length // 2

    def stepped(series: list[dict[str, float]]) -> tuple[list[float], list[float]]:
        return [r["tok_s"] / (1 + step if i >= half else 1.0) for i, r in enumerate(series)], [
            r["spread"] for r in series
        ]

    def outcome(series: list[dict[str, float]]) -> tuple[bool, bool]:
        flat = find_steps([r["tok_s"] for r in series], [r["spread"] for r in series], k=k, min_step=min_step)
        steps = find_steps(*stepped(series), k=k, min_step=min_step)
        return bool(flat), any(abs(s.index - half) <= 1 for s in steps)

    shuffled = [outcome(rng.sample(runs, length)) for _ in range(draws)]
    windows = [outcome(runs[i : i + length]) for i in range(len(runs) - length + 1)]
    return {
        "false (shuffled)": sum(f for f, _ in shuffled) / len(shuffled),
        "detected (shuffled)": sum(d for _, d in shuffled) / len(shuffled),
        "false (windows)": sum(f for f, _ in windows) / len(windows) if windows else float("nan"),
        "detected (windows)": sum(d for _, d in windows) / len(windows) if windows else float("nan"),
        "windows": len(windows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=16, help="tokens generated per timed run")
    parser.add_argument("--save", type=Path)
    parser.add_argument("--load", type=Path)
    parser.add_argument("--lengths", default="6,10,20")
    parser.add_argument("--ks", default="3,4,5,6")
    parser.add_argument("--min-step", type=float, default=DEFAULT_MIN_STEP)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument(
        "--step", type=float, default=0.05, help="the injected slowdown: 0.05 = every run after the middle 5%% slower"
    )
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a run's own process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.threads, args.tokens)))
        return
    runs = json.loads(args.load.read_text()) if args.load else collect(args.runs, args.threads, args.tokens)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(runs, indent=1) + "\n")
    values = sorted(r["tok_s"] for r in runs)
    spreads = sorted(r["spread"] for r in runs)
    print(
        f"{len(runs)} runs: decode median {values[len(values) // 2]:.2f} tok/s (range {values[0]:.2f}-{values[-1]:.2f}),"
        f" within-run spread median {100 * spreads[len(spreads) // 2]:.1f}%; min step {100 * args.min_step:.0f}%"
    )
    table = []
    for length in map(int, args.lengths.split(",")):
        for k in map(float, args.ks.split(",")):
            r = rates(runs, length, args.draws, k, args.min_step, args.seed, args.step)
            table.append(
                (
                    length,
                    k,
                    f"{100 * r['false (shuffled)']:.1f}%",
                    f"{100 * r['detected (shuffled)']:.1f}%",
                    f"{100 * r['false (windows)']:.1f}%",
                    f"{100 * r['detected (windows)']:.1f}%",
                    r["windows"],
                )
            )
    shown = f"{100 * args.step:g}%"
    headers = (
        "runs/series",
        "k",
        "false steps",
        f"{shown} detected",
        "false (windows)",
        f"{shown} detected (windows)",
        "windows",
    )
    print(tabulate(table, headers=headers))


if __name__ == "__main__":
    main()
