"""How the latency verdict behaves on this machine: false failures of an unchanged build, and
detection of a real slowdown of llama.cpp (every llama_decode call made 10%, 25%, 50% slower).

    .venv/bin/python benchmarks/latency_calibration.py --runs 20 --slowdown-runs 10

The shipped runtime suite's latency items (test_prefill_speed, test_decode_speed: prefill at 128
and 512 tokens, decode of 128 tokens and time to first token, 5 repeats after a warm-up, a
confirmation round before failing) run as ordinary pytest subprocesses on the embedded model,
against one baseline written at the start, exactly as a user's CI would run them day after day.
An item fails when any of its metrics is slower in both rounds; the table counts failed items,
and apart from them the items the busy gate (on, at its defaults, as a user runs it) ended busy:
a busy item is neither a catch nor a false alarm.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

from tabulate import tabulate

from pytest_slm.checks.core import BUSY

ROOT = Path(__file__).resolve().parents[1]
ITEMS = ("test_prefill_speed", "test_decode_speed")


def make_project(directory: Path, threads: int) -> None:
    (directory / "suites").mkdir(parents=True)
    shutil.copy(ROOT / "suites" / "models.toml", directory / "suites" / "models.toml")
    shutil.copy(ROOT / "suites" / "test_runtime.py", directory / "test_runtime.py")
    shutil.copy(ROOT / "suites" / "eval" / "text.txt", directory / "eval.txt")
    (directory / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'slm_devices = ["llamacpp-cpu"]\n'
        f'slm_threads = "{threads}"\n'
        'slm_eval_text = "eval.txt"\n'
    )


def run(directory: Path, slowdown: float, *extra: str) -> dict[str, dict[str, str]]:
    """One pytest run of the latency items; per item, its outcome and its JUnit properties."""
    junit = directory / "junit.xml"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "benchmarks"), "PYTEST_SLM_SLOWDOWN": str(slowdown)}
    command = [sys.executable, "-m", "pytest", "test_runtime.py", "-k", " or ".join(ITEMS), "-p", "slowed_runtime"]
    command += ["-p", "no:cacheprovider", "-q", f"--junitxml={junit}", *extra]
    subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, check=False)
    results = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        properties = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        skipped = case.find("skipped")
        if case.find("failure") is not None:
            outcome = "failed"
        elif skipped is not None:
            outcome = "busy" if BUSY in skipped.get("message", "") else "skipped"
        else:
            outcome = "passed"
        results[case.get("name", "").split("[")[0]] = {"outcome": outcome, **properties}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of the unchanged build")
    parser.add_argument("--slowdown-runs", type=int, default=10, help="runs at each injected slowdown")
    parser.add_argument("--slowdowns", default="0.10,0.25,0.50")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_project(directory, args.threads)
        baseline = run(directory, 0.0, "--update-baselines")
        assert all(baseline[item]["outcome"] == "passed" for item in ITEMS), baseline
        conditions = [(0.0, args.runs)] + [(float(s), args.slowdown_runs) for s in args.slowdowns.split(",")]
        table = []
        for slowdown, runs in conditions:
            failed: Counter[str] = Counter()
            busy: Counter[str] = Counter()
            confirmations: Counter[str] = Counter()
            loads = []
            for index in range(runs):
                results = run(directory, slowdown)
                for item in ITEMS:
                    failed[item] += results[item]["outcome"] == "failed"
                    busy[item] += results[item]["outcome"] == "busy"
                    confirmations[item] += any(k.endswith(".rounds") and v == "2" for k, v in results[item].items())
                loads += [float(v) for item in ITEMS for k, v in results[item].items() if k.endswith(".load")]
                print(f"slowdown {slowdown:.0%} run {index + 1}/{runs}: "
                      + ", ".join(f"{item} {results[item]['outcome']}" for item in ITEMS), flush=True)
            table.append(
                [
                    "none (unchanged build)" if slowdown == 0 else f"{slowdown:.0%} slower llama_decode",
                    runs,
                    *(f"{failed[item]}/{runs}" for item in ITEMS),
                    " / ".join(str(busy[item]) for item in ITEMS),
                    " / ".join(str(confirmations[item]) for item in ITEMS),
                    f"{min(loads):.2f}-{max(loads):.2f}",
                ]
            )
    headers = ["injected", "runs", "prefill item failed", "decode item failed", "busy p/d", "confirmation rounds p/d", "load"]
    print(tabulate(table, headers=headers))


if __name__ == "__main__":
    main()
