"""Where the busy gate's threshold comes from: the competition (other processes' share of our CPUs'
time, steal included, `pytest_slm.measure.busy`) measured while this process sleeps and while it decodes,
with nothing started by us and with one CPU-bound competitor (`python -c "while True: pass"`), and
the decode speed in each case.

    .venv/bin/python benchmarks/busy_threshold.py --rounds 5

Each round: 1 s asleep, then one decode of --tokens (32) after a 128-token prompt on the embedded model
(llama.cpp, 2 threads), once quiet and once with the competitor. Give `uptime` beside the figures:
"quiet" here means only that this script started no competitor.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from statistics import median

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_slm.backends import backend
from pytest_slm.backends.base import LoadRequest
from pytest_slm.measure import busy
from pytest_slm.measure.machine import measure_decode
from pytest_slm.models.registry import select_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    entry = select_models(ROOT / "suites" / "models.toml", ["smollm2-135m"])["smollm2-135m"]
    model = backend("llamacpp").load(
        LoadRequest("smollm2-135m", entry.gguf_path(), None, "cpu", "native", args.threads)
    )
    tokens = model.tokenize((ROOT / "suites" / "eval" / "text.txt").read_text())
    seen: dict[str, list[tuple[float, float, float]]] = {"quiet": [], "1 competitor": []}
    for _ in range(args.rounds):
        for case, samples in seen.items():
            competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if case != "quiet" else None
            try:
                idle = busy.sample()
                with busy.During() as during:
                    decode = measure_decode(model, tokens, 128, args.tokens, 1)[0]
            finally:
                if competitor:
                    competitor.kill()
                    competitor.wait()
            assert idle and during.result
            samples.append((idle.share, during.result.share, decode.shown(decode.spread.median)))
    model.close()
    rows = [
        (
            case,
            *(
                f"{100 * median(v[i] for v in values):.0f}% ({100 * min(v[i] for v in values):.0f}-{100 * max(v[i] for v in values):.0f})"
                for i in (0, 1)
            ),
            f"{median(v[2] for v in values):.1f}",
        )
        for case, values in seen.items()
    ]
    print(tabulate(rows, headers=["case", "share asleep: median (min-max)", "share decoding", "decode tok/s"]))


if __name__ == "__main__":
    main()
