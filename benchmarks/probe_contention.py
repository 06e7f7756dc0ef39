"""What the speed probe sees of a slower machine, and what it misses (docs/notes/latency.md, "The
speed probe"): the embedded model's decode and prefill on llama.cpp, one thread, beside the probe.

    .venv/bin/python benchmarks/probe_contention.py phases --seconds 75
    .venv/bin/python benchmarks/probe_contention.py processes --count 12
    .venv/bin/python benchmarks/probe_contention.py blocks --count 6 [--fresh]
    .venv/bin/python benchmarks/probe_contention.py track --minutes 20 [--model gemma3-270m]

`phases`: four phases of `--seconds` each, sampling back to back one probe sample, one sweep over
128 MiB (a memory-bound probe the plugin does not have), a 128-token prefill and 32 decoded tokens:
quiet, then with a process streaming memory on the other core, then with one spinning on it, then
quiet again. Per phase the medians, and their change from the first quiet phase.

`processes`: `--count` processes in a row, each loading the model, then 7 times: decoding 64 tokens,
prefilling 128 and 512 tokens, and a probe sample. Per process the medians, decode's max/min spread
and prefill@128 over prefill@512 (a ratio the machine's speed cannot move). Speed that differs
between processes of one build, unseen by the probe, fails a rerun falsely.

`blocks`: `--count` blocks, each the plugin's own measurement of prefill at 128 and 512 tokens and of
decode (`measure_prefill`, `measure_decode`, 3 repeats each): all on one load of the model, or with
`--fresh` each on a load of its own. Per metric the blocks' robust spread and range: whether what
moves a process's figures is its load of the model or the minute it was timed in.

`track`: the machine left as it is, for `--minutes` in windows of `--window` seconds, samples back
to back as `phases` does (the probe, the 128 MiB sweep, prefill of 128 tokens, decode of 32) on one
thread. Per window each measure's median and its change from the windows' median; then, for prefill
and decode against each probe, the correlation of their changes and the spread of the runtime's
window medians before and after dividing by the probe: which probe follows what moves the runtime
from one minute to the next.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from llama_cpp import Llama

from pytest_slm.backends import backend
from pytest_slm.backends.base import LoadRequest
from pytest_slm.measure.machine import SpeedProbe, measure_decode, measure_prefill
from pytest_slm.models.registry import BUILTIN_REGISTRY, load_registry
from pytest_slm.stats import spread

TEXT = ("The history of the river valley begins with the first farmers who settled along its banks. " * 8).encode()
HOGS = {
    "memory hog": "import numpy as np\na = np.ones(64 * 2**20, np.float32)\nb = np.empty_like(a)\n"
    "while True: np.copyto(b, a)",
    "cpu hog": "while True: pass",
}


def model(name: str = "smollm2-135m") -> tuple[Llama, list[int]]:
    path = load_registry(BUILTIN_REGISTRY)[name].gguf_path()
    llm = Llama(model_path=str(path), n_threads=1, n_threads_batch=1, n_ctx=1024, verbose=False)
    return llm, llm.tokenize(TEXT * 6)[:512]


def decode_seconds(llm: Llama, tokens: list[int], count: int) -> float:
    """`count` tokens decoded one at a time after a 16-token prompt."""
    llm.reset()
    llm.eval(tokens[:16])
    started = time.perf_counter()
    for _ in range(count):
        llm.eval([tokens[5]])
    return time.perf_counter() - started


def prefill_seconds(llm: Llama, prompt: list[int]) -> float:
    llm.reset()
    started = time.perf_counter()
    llm.eval(prompt)
    return time.perf_counter() - started


def sampler(name: str = "smollm2-135m") -> Callable[[], tuple[float, float, float, float]]:
    """One sample's seconds, back to back: the plugin's probe, a sweep over 128 MiB (far past the
    32 MiB L3), a 128-token prefill and 32 decoded tokens; warmed up once."""
    llm, tokens = model(name)
    probe = SpeedProbe()
    memory = np.ones(32 * 2**20, dtype=np.float32)

    def one_sample() -> tuple[float, float, float, float]:
        probe.samples.clear()
        probe.sample()
        started = time.perf_counter()
        memory.sum()
        swept = time.perf_counter() - started
        return probe.samples[0], swept, prefill_seconds(llm, tokens[:128]), decode_seconds(llm, tokens, 32)

    one_sample()
    return one_sample


def phases(seconds: float) -> None:
    one_sample = sampler()
    medians = {}
    for name in ("quiet", "memory hog", "cpu hog", "quiet again"):
        hog = subprocess.Popen([sys.executable, "-c", HOGS[name]]) if name in HOGS else None
        time.sleep(2)
        samples, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(one_sample())
        if hog:
            hog.kill()
            hog.wait()
        medians[name] = [statistics.median(s[i] for s in samples) for i in range(4)], len(samples)
    first = medians["quiet"][0]
    print("phase, samples, then per measure: median ms (change from the first quiet phase)")
    print("measures: probe, 128 MiB sweep, prefill of 128 tokens, decode of 32 tokens")
    for name, (values, count) in medians.items():
        shown = "  ".join(f"{1000 * v:7.1f} ({100 * (v / f - 1):+5.1f}%)" for v, f in zip(values, first))
        print(f"{name:12} {count:4d}  {shown}")


def track(minutes: float, window: float, name: str) -> None:
    one_sample = sampler(name)
    windows: list[list[float]] = []
    for _ in range(round(60 * minutes / window)):
        samples, end = [], time.monotonic() + window
        while time.monotonic() < end:
            samples.append(one_sample())
        windows.append([statistics.median(s[i] for s in samples) for i in range(4)])
    middle = [statistics.median(w[i] for w in windows) for i in range(4)]
    change = [[100 * (w[i] / middle[i] - 1) for i in range(4)] for w in windows]
    print(f"{name}, {len(windows)} windows of {window:.0f} s: each measure's median, change from the windows' median")
    print("window    probe    sweep  prefill   decode")
    for number, values in enumerate(change, 1):
        print(f"{number:6d} " + " ".join(f"{v:+7.1f}%" for v in values))
    columns = list(zip(*change))
    for runtime, label in ((2, "prefill@128"), (3, "decode 32")):
        for by, probe_name in ((0, "probe (einsum)"), (1, "128 MiB sweep")):
            scaled = [100 * ((1 + r / 100) / (1 + q / 100) - 1) for r, q in zip(columns[runtime], columns[by])]
            print(
                f"{label:11} against {probe_name:14}: correlation {statistics.correlation(columns[runtime], columns[by]):+.2f},"
                f" spread {statistics.stdev(columns[runtime]):.1f}% unscaled, {statistics.stdev(scaled):.1f}% scaled"
            )


def one_process() -> None:
    llm, tokens = model()
    probe = SpeedProbe()
    decode_seconds(llm, tokens, 64)  # warm-up
    speeds, short, long = [], [], []
    for _ in range(7):
        speeds.append(64 / decode_seconds(llm, tokens, 64))
        short.append(128 / prefill_seconds(llm, tokens[:128]))
        long.append(512 / prefill_seconds(llm, tokens))
        probe.sample()
    assert probe.seconds is not None
    decode_spread = max(speeds) / min(speeds) - 1  # max/min, not the robust `spread`
    p128, p512 = statistics.median(short), statistics.median(long)
    print(
        f"decode {statistics.median(speeds):5.1f} tok/s (spread {100 * decode_spread:4.1f}%), prefill@128 {p128:5.1f},"
        f" prefill@512 {p512:5.1f} tok/s, 128/512 {p128 / p512:.3f}, probe {1000 * probe.seconds:.2f} ms"
    )


def blocks(count: int, fresh: bool) -> None:
    root = Path(__file__).resolve().parents[1]
    path = load_registry(BUILTIN_REGISTRY)["smollm2-135m"].gguf_path()
    request = LoadRequest("smollm2-135m", path, None, "cpu", "native", 1)
    text = (root / "suites" / "eval" / "text.txt").read_text()
    loaded = None if fresh else backend("llamacpp").load(request)
    found: dict[str, list[float]] = {}
    for _ in range(count):
        model = loaded or backend("llamacpp").load(request)
        tokens = model.tokenize(text)
        for timing in measure_prefill(model, tokens, (128, 512), 3) + measure_decode(model, tokens, 128, 32, 3):
            found.setdefault(timing.metric, []).append(timing.shown(timing.spread.median))
        if fresh:
            model.close()
    print(f"{count} blocks, {'each on a fresh load' if fresh else 'all on one load'}:")
    for metric, values in found.items():
        middle = statistics.median(values)
        low, high = min(values) / middle - 1, max(values) / middle - 1
        print(
            f"  {metric:12} median {middle:7.2f}, robust spread {100 * spread(values).relative:4.1f}%,"
            f" range {100 * low:+5.1f}% to {100 * high:+5.1f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("phases").add_argument("--seconds", type=float, default=75.0)
    commands.add_parser("processes").add_argument("--count", type=int, default=12)
    commands.add_parser("one-process")  # what `processes` starts
    track_command = commands.add_parser("track")
    track_command.add_argument("--minutes", type=float, default=20.0)
    track_command.add_argument("--window", type=float, default=60.0, help="seconds")
    track_command.add_argument("--model", default="gemma3-270m")
    blocks_command = commands.add_parser("blocks")
    blocks_command.add_argument("--count", type=int, default=6)
    blocks_command.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    if args.command == "phases":
        phases(args.seconds)
    elif args.command == "track":
        if round(60 * args.minutes / args.window) < 2:  # a correlation needs two windows
            track_command.error("needs at least two windows (--minutes x 60 / --window): their medians are compared")
        track(args.minutes, args.window, args.model)
    elif args.command == "blocks":
        blocks(args.count, args.fresh)
    elif args.command == "processes":
        for _ in range(args.count):
            subprocess.run([sys.executable, __file__, "one-process"], check=True)
    else:
        one_process()


if __name__ == "__main__":
    main()
