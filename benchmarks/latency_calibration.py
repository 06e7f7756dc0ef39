"""How the latency verdict behaves on this machine: false failures of an unchanged build, and
detection of a real slowdown of llama.cpp (every llama_decode call made 10%, 25%, 50% slower).

    .venv/bin/python benchmarks/latency_calibration.py --runs 20 --slowdown-runs 10
    .venv/bin/python benchmarks/latency_calibration.py --at-defaults --models smollm2-135m,gemma3-270m

The shipped runtime suite's latency items (test_prefill_speed, test_decode_speed: prefill at 128
and 512 tokens, decode of 128 tokens and time to first token, 5 repeats after a warm-up, a
confirmation round before failing) run as ordinary pytest subprocesses, exactly as a user's CI
would run them day after day.

The first form times the embedded model at the given --threads against one baseline written at
the start. An item fails when any of its metrics is slower in every round that judged it; the table counts
failed items, and apart from them the items the busy gate (on, at its defaults, as a user runs it)
ended busy: a busy item is neither a catch nor a false alarm.

`--at-defaults` is the issue's false-failure benchmark: the project's ini names only the device,
so threads, tolerance, k, repeats, the busy gate and the noise ceiling are the plugin's defaults.
Per model, each cycle writes a fresh baseline (`--update-baselines` into an empty baselines/) and
reruns against it; then one baseline and --slowed-runs runs with every llama_decode
--slowdown slower. Each item is counted passed, failed, or not judged by its reason (busy, too
noisy, no baseline where the update wrote none), and an update's refused write (too noisy) apart.
The 1-minute load average is taken before and after every run; raw results, every item's JUnit
properties included, go to benchmarks/data/latency_defaults_<model>.json after every run. The
tables also say how well the speed probe followed each metric over the reruns (`probe_fit`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from tabulate import tabulate

from pytest_slm.checks.core import BUSY, NOT_JUDGED

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
ITEMS = ("test_prefill_speed", "test_decode_speed")
NOT_JUDGED_PREFIX = re.compile(rf"{NOT_JUDGED} \(([^)]+)\): ")
REFUSED = "not written: too noisy"
OTHERS = re.compile(r"other processes (\d+)% \+ steal (\d+)%")


def make_project(directory: Path, threads: int | None) -> None:
    """A user's project: the shipped runtime suite, the registry and the evaluation text where the
    plugin looks for them by default; the ini sets threads only when asked to."""
    (directory / "suites" / "eval").mkdir(parents=True)
    shutil.copy(ROOT / "suites" / "models.toml", directory / "suites" / "models.toml")
    shutil.copy(ROOT / "suites" / "test_runtime.py", directory / "test_runtime.py")
    shutil.copy(ROOT / "suites" / "eval" / "text.txt", directory / "suites" / "eval" / "text.txt")
    ini = '[tool.pytest.ini_options]\nslm_devices = ["llamacpp-cpu"]\n'
    if threads is not None:
        ini += f'slm_threads = "{threads}"\n'
    (directory / "pyproject.toml").write_text(ini)


def outcome(case: ElementTree.Element) -> str:
    """passed, failed, refused (an update that would not write a too-noisy baseline), skipped, or
    `not judged: <reason>` (the plugin's prefix, as pytest_slm.checks.core.unjudged reads it)."""
    failure, skipped = case.find("failure"), case.find("skipped")
    if failure is not None:
        text = (failure.get("message") or "") + (failure.text or "")
        if REFUSED in text:
            return "refused"
        found = NOT_JUDGED_PREFIX.search(text)
        return f"{NOT_JUDGED}: {found.group(1)}" if found else "failed"
    if skipped is not None:
        found = NOT_JUDGED_PREFIX.match((skipped.get("message") or "").removeprefix("Skipped: "))
        return f"{NOT_JUDGED}: {found.group(1)}" if found else "skipped"
    return "passed"


def run(directory: Path, slowdown: float, *extra: str) -> dict[str, dict[str, str]]:
    """One pytest run of the latency items; per item, its outcome and its JUnit properties."""
    return run_recorded(directory, slowdown, *extra)["items"]


def run_recorded(directory: Path, slowdown: float, *extra: str) -> dict[str, Any]:
    """One pytest run of the latency items: per item its outcome, message and JUnit properties, with
    the 1-minute load average before and after and the run's wall time. CI and PYTEST_ADDOPTS are
    left out of its environment: the first makes the plugin strict, the second could change options."""
    junit = directory / "junit.xml"
    junit.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env |= {"PYTHONPATH": str(ROOT / "benchmarks"), "PYTEST_SLM_SLOWDOWN": str(slowdown)}
    command = [sys.executable, "-m", "pytest", "test_runtime.py", "-k", " or ".join(ITEMS), "-p", "slowed_runtime"]
    command += ["-p", "no:cacheprovider", "-q", "-rs", f"--junitxml={junit}", *extra]
    load_before, started = os.getloadavg()[0], time.monotonic()
    done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, check=False)
    seconds, load_after = time.monotonic() - started, os.getloadavg()[0]
    items = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        properties = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        said = case.find("failure") if case.find("failure") is not None else case.find("skipped")
        message = "" if said is None else (said.get("message") or "")
        items[case.get("name", "").split("[")[0]] = {"outcome": outcome(case), "message": message, **properties}
    return {
        "args": extra,
        "slowdown": slowdown,
        "returncode": done.returncode,
        "summary": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "",
        "load_before": load_before,
        "load_after": load_after,
        "seconds": round(seconds, 1),
        "items": items,
    }


def calibrate_threads(args: argparse.Namespace) -> None:
    """The first form: one baseline of the embedded model at --threads, then the slowdowns."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_project(directory, args.threads)
        baseline = run(directory, 0.0, "--slm-models=smollm2-135m", "--update-baselines")
        assert all(baseline[item]["outcome"] == "passed" for item in ITEMS), baseline
        conditions = [(0.0, args.runs)] + [(float(s), args.slowdown_runs) for s in args.slowdowns.split(",")]
        table = []
        for slowdown, runs in conditions:
            failed: Counter[str] = Counter()
            busy: Counter[str] = Counter()
            confirmations: Counter[str] = Counter()
            loads = []
            for index in range(runs):
                results = run(directory, slowdown, "--slm-models=smollm2-135m")
                for item in ITEMS:
                    failed[item] += results[item]["outcome"] == "failed"
                    busy[item] += results[item]["outcome"] == f"{NOT_JUDGED}: {BUSY}"
                    confirmations[item] += any(k.endswith(".rounds") and v != "1" for k, v in results[item].items())
                loads += [float(v) for item in ITEMS for k, v in results[item].items() if k.endswith(".load")]
                print(
                    f"slowdown {slowdown:.0%} run {index + 1}/{runs}: "
                    + ", ".join(f"{item} {results[item]['outcome']}" for item in ITEMS),
                    flush=True,
                )
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
    headers = [
        "injected",
        "runs",
        "prefill item failed",
        "decode item failed",
        "busy p/d",
        "confirmation rounds p/d",
        "load",
    ]
    print(tabulate(table, headers=headers))


def fresh_update(directory: Path, model: str, slowdown: float = 0.0) -> dict[str, Any]:
    """`--update-baselines` into an empty baselines/, so the rerun judges against this write only."""
    shutil.rmtree(directory / "baselines", ignore_errors=True)
    return run_recorded(directory, slowdown, f"--slm-models={model}", "--update-baselines")


def at_defaults(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """The false-failure cycles, then the detection runs, of one model at the plugin's defaults."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = Path(args.out or DATA / f"latency_defaults_{model}.json")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    data: dict[str, Any] = {
        "model": model,
        "command": " ".join([".venv/bin/python", "benchmarks/latency_calibration.py", *sys.argv[1:]]),
        "commit": commit,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "slowdown": args.slowdown,
        "cycles": [],
        "detection": {"baseline": [], "runs": []},
    }

    def save() -> None:
        data["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_project(directory, None)
        for index in range(args.cycles):
            update = fresh_update(directory, model)
            rerun = run_recorded(directory, 0.0, f"--slm-models={model}")
            data["cycles"].append({"update": update, "rerun": rerun})
            save()
            print(
                f"{model} cycle {index + 1}/{args.cycles}: "
                + ", ".join(
                    f"{item} {update['items'][item]['outcome']} -> {rerun['items'][item]['outcome']}" for item in ITEMS
                )
                + f" (load {update['load_before']:.1f}-{rerun['load_after']:.1f})",
                flush=True,
            )
        if args.slowed_runs:
            for _ in range(args.baseline_tries):  # a detection run needs a baseline; a busy or noisy write is retried
                update = fresh_update(directory, model)
                data["detection"]["baseline"].append(update)
                save()
                print(
                    f"{model} detection baseline: " + ", ".join(f"{i} {update['items'][i]['outcome']}" for i in ITEMS),
                    flush=True,
                )
                if all(update["items"][item]["outcome"] == "passed" for item in ITEMS):
                    break
            for index in range(args.slowed_runs):
                slowed = run_recorded(directory, args.slowdown, f"--slm-models={model}")
                data["detection"]["runs"].append(slowed)
                save()
                print(
                    f"{model} {args.slowdown:.0%} slower, run {index + 1}/{args.slowed_runs}: "
                    + ", ".join(f"{item} {slowed['items'][item]['outcome']}" for item in ITEMS)
                    + f" (load {slowed['load_before']:.1f}-{slowed['load_after']:.1f})",
                    flush=True,
                )
    return data


def compared(run: dict[str, Any], item: str) -> list[tuple[str, float, float, float]]:
    """Each metric of `item` a run compared with its baseline: (metric, the probe's change, the
    change unscaled, the change as judged against the baseline the probe scaled), in %, + slower."""
    figures = run["items"][item]
    found = []
    for key, value in figures.items():
        metric = key.removesuffix(".change_pct")
        if metric != key and f"{metric}.host_change_pct" in figures:
            probe, judged = float(figures[f"{metric}.host_change_pct"]), float(value)
            found.append((metric, probe, 100 * ((1 + judged / 100) * (1 + probe / 100) - 1), judged))
    return found


def probe_fit(runs: list[dict[str, Any]], tablefmt: str) -> str:
    """How well the speed probe followed each metric over the reruns: the correlation of the probe's
    change with the metric's unscaled change, and the spread (standard deviation) of the change
    against the baseline before and after the probe scaled it. A probe that followed the runtime
    would correlate near 1 and shrink the spread; one blind to what moved it would not."""
    by_metric: dict[str, list[tuple[float, float, float]]] = {}
    for run in runs:
        for item in ITEMS:
            for metric, probe, unscaled, judged in compared(run, item):
                by_metric.setdefault(metric, []).append((probe, unscaled, judged))
    rows = []
    for metric, changes in sorted(by_metric.items()):
        probes, unscaled, judged = zip(*changes)
        no_correlation = len(changes) < 3 or len(set(probes)) < 2 or len(set(unscaled)) < 2
        rows.append(
            [
                metric,
                len(changes),
                "-" if no_correlation else f"{statistics.correlation(probes, unscaled):+.2f}",
                "-" if len(changes) < 2 else f"{statistics.stdev(unscaled):.1f}%",
                "-" if len(changes) < 2 else f"{statistics.stdev(judged):.1f}%",
            ]
        )
    headers = ["metric", "reruns compared", "probe vs change: correlation", "change's spread, unscaled", "scaled"]
    return tabulate(rows, headers=headers, tablefmt=tablefmt) if rows else ""


def probe_error(datas: list[dict[str, Any]]) -> str:
    """How far the runtime's change strayed from the speed probe's, over every compared run of
    these files (the reruns, and the slowed runs less their injected slowdown): per metric family,
    the least-squares fit of error^2 = a^2 + c^2 x probe^2, where the error is the change the probe's
    scaling left (log ratios). `a` is what any run strays; `c` is what scaling by the probe adds per
    unit of the probe's change: the plugin's PROBE_SCALING_ERROR (docs/notes/latency.md)."""
    import numpy as np

    by_family: dict[str, list[tuple[float, float]]] = {}
    for data in datas:
        runs = [cycle["rerun"] for cycle in data["cycles"]] + (data.get("detection") or {}).get("runs", [])
        for run in runs:
            for item in run["items"]:
                for metric, probe, unscaled, _ in compared(run, item):
                    probed = math.log1p(probe / 100)
                    error = math.log((1 + unscaled / 100) / (1 + run["slowdown"])) - probed
                    for family in (metric.split("@")[0], "all"):
                        by_family.setdefault(family, []).append((probed, error))
    rows = []
    for family, pairs in sorted(by_family.items()):
        probed, error = np.array(pairs).T
        (a2, c2), *_ = np.linalg.lstsq(np.vstack([np.ones_like(probed), probed**2]).T, error**2, rcond=None)
        far = np.abs(probed) >= math.log1p(0.1)
        rows.append(
            [
                family,
                len(pairs),
                f"{100 * math.sqrt(max(a2, 0)):.1f}%",
                f"{math.sqrt(max(c2, 0)):.2f}",
                f"{100 * np.sqrt(np.mean(error[~far] ** 2)):.1f}% ({(~far).sum()})",
                f"{100 * np.sqrt(np.mean(error[far] ** 2)):.1f}% ({far.sum()})" if far.any() else "-",
            ]
        )
    headers = ["metric", "runs compared", "a", "c", "error, probe within 10% (runs)", "beyond 10%"]
    return tabulate(rows, headers=headers)


FAILED_ROUNDS = re.compile(r"(\S+): .*? slower by (.*?) \(rounds\)")  # a failure's line per metric
UNCONFIRMED_ROUNDS = re.compile(
    r"in \d+ of \d+ (?:quiet rounds|rounds that judged it) \((.*?)\)"
)  # a passing row's note


def rounds(data: dict[str, Any]) -> str:
    """What the confirmation's pause rests on (docs/notes/latency.md): each rerun that timed a
    confirmation, with its rounds' changes (failed: slower in both), and how a run's median relates
    to the next run's a minute later (update, rerun, next update, ...), per metric; then each slowed
    run an item did not catch, with what its last round compared."""
    lines = [f"{data['model']}, {data['started']}: reruns that timed a confirmation (changes by round)"]
    for number, cycle in enumerate(data["cycles"], 1):
        for figures in cycle["rerun"]["items"].values():
            for key, note in figures.items():
                if key.endswith(".note") and (found := UNCONFIRMED_ROUNDS.search(note)):
                    lines.append(f"  cycle {number:2d} {key.removesuffix('.note'):12} passed unconfirmed: {found[1]}")
            for metric, changes in FAILED_ROUNDS.findall(figures.get("message", "")):
                lines.append(f"  cycle {number:2d} {metric:12} failed: {changes}")
    medians: dict[str, list[float | None]] = {}
    for cycle in data["cycles"]:
        for run in (cycle["update"], cycle["rerun"]):
            figures = run["items"].get("test_prefill_speed", {})
            for metric in ("prefill@128", "prefill@512"):
                value = figures.get(f"{metric}.median")
                medians.setdefault(metric, []).append(float(value) if value else None)
    for metric, values in medians.items():
        pairs = [(a, b) for a, b in pairwise(values) if a and b]
        if len(pairs) > 2:
            correlation = statistics.correlation(*zip(*pairs))
            lines.append(
                f"  {metric}: each run's median against the next run's, {len(pairs)} pairs: correlation {correlation:+.2f}"
            )
    for number, run in enumerate(data["detection"]["runs"], 1):
        for item, figures in run["items"].items():
            if figures["outcome"] != "failed":
                lines.append(f"  slowed run {number:2d} {item}: {figures['outcome']} {figures['message'][:160]}")
                for metric, probe, unscaled, judged in compared(run, item):
                    found = UNCONFIRMED_ROUNDS.search(figures[f"{metric}.note"])
                    lines.append(
                        f"    {metric:12} {judged:+.1f}% against the scaled baseline, limit"
                        f" {float(figures[f'{metric}.limit_pct']):.1f}%; probe {probe:+.1f}%, unscaled {unscaled:+.1f}%"
                        + (f"; rounds {found[1]}" if found else "")
                    )
    return "\n".join(lines)


def tables(data: dict[str, Any], tablefmt: str = "simple") -> str:
    """The false-failure and detection tables of one model's raw results (tablefmt "github": Markdown)."""

    def counts(runs: list[dict[str, Any]], item: str) -> Counter[str]:
        return Counter(run["items"][item]["outcome"] for run in runs)

    def others(runs: list[dict[str, Any]], item: str) -> str:
        """Others' share of our CPUs (steal included) the busy gate reported, where it ended the item busy."""
        shares = [int(a) + int(b) for run in runs for a, b in OTHERS.findall(run["items"][item]["message"])]
        return f"{min(shares)}-{max(shares)}%" if shares else "-"

    def probed(runs: list[dict[str, Any]], item: str) -> str:
        """How much slower (+) or faster (-) the speed probe found the machine than at the baseline,
        over the runs that compared (the lowest and highest), and in how many beyond 10%: one figure
        a run, every metric's row showing the same round's."""
        found = [
            float(next(v for k, v in run["items"][item].items() if k.endswith(".host_change_pct")))
            for run in runs
            if any(k.endswith(".host_change_pct") for k in run["items"][item])
        ]
        if not found:
            return "-"
        beyond = sum(abs(v) > 10 for v in found)
        return f"{min(found):+.1f}% to {max(found):+.1f}% ({beyond} beyond 10%)"

    def largest(runs: list[dict[str, Any]], item: str) -> str:
        """The largest change of any metric against its baseline as judged (the baseline scaled by
        the probe), and what it would have been unscaled."""
        changes = [(judged, unscaled) for run in runs for _, _, unscaled, judged in compared(run, item)]
        if not changes:
            return "-"
        return f"{max(c for c, _ in changes):+.1f}% ({max(u for _, u in changes):+.1f}%)"

    def loads(runs: list[dict[str, Any]]) -> str:
        values = [v for run in runs for v in (run["load_before"], run["load_after"])]
        return f"{min(values):.1f}-{max(values):.1f}" if values else "-"

    updates = [c["update"] for c in data["cycles"]]
    reruns = [c["rerun"] for c in data["cycles"]]
    rows = []
    for item in ITEMS:
        written, judged = counts(updates, item), counts(reruns, item)
        unjudged = {k.removeprefix(f"{NOT_JUDGED}: "): v for k, v in judged.items() if k.startswith(NOT_JUDGED)}
        rows.append(
            [
                item,
                len(reruns),
                written["passed"],
                written["refused"],
                written[f"{NOT_JUDGED}: {BUSY}"],
                judged["passed"],
                judged["failed"],
                ", ".join(f"{k} {v}" for k, v in sorted(unjudged.items())) or "0",
                probed(reruns, item),
                largest(reruns, item),
                others(updates + reruns, item),
                loads(updates),
                loads(reruns),
            ]
        )
    headers = [
        "item",
        "cycles",
        "written",
        "refused (too noisy)",
        "busy (not written)",
        "rerun passed",
        "rerun FAILED (false)",
        "rerun not judged",
        "speed probe, reruns",
        "largest rerun change (unscaled)",
        "others when busy",
        "load, updates",
        "load, reruns",
    ]
    out = f"{data['model']}: unchanged build\n" + tabulate(rows, headers=headers, tablefmt=tablefmt)
    fit = probe_fit(reruns, tablefmt)
    if fit:  # runs from before the speed probe have no probe figures
        out += f"\n\n{data['model']}: how the speed probe followed the reruns\n{fit}"
    slowed = data["detection"]["runs"]
    if slowed:
        rows = []
        for item in ITEMS:
            seen = counts(slowed, item)
            unjudged = {k.removeprefix(f"{NOT_JUDGED}: "): v for k, v in seen.items() if k.startswith(NOT_JUDGED)}
            rows.append(
                [
                    item,
                    len(slowed),
                    seen["failed"],
                    seen["passed"],
                    ", ".join(f"{k} {v}" for k, v in sorted(unjudged.items())) or "0",
                    probed(slowed, item),
                    others(slowed, item),
                    loads(slowed),
                ]
            )
        headers = [
            "item", "runs", "caught (failed)", "missed (passed)", "not judged", "speed probe", "others when busy", "load"
        ]  # fmt: skip
        out += f"\n\n{data['model']}: every llama_decode {data['slowdown']:.0%} slower\n" + tabulate(
            rows, headers=headers, tablefmt=tablefmt
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of the unchanged build")
    parser.add_argument("--slowdown-runs", type=int, default=10, help="runs at each injected slowdown")
    parser.add_argument("--slowdowns", default="0.10,0.25,0.50")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--at-defaults",
        action="store_true",
        help="the false-failure cycles and detection runs at the plugin's defaults",
    )
    parser.add_argument(
        "--models", default="smollm2-135m,gemma3-270m", help="with --at-defaults: registry names, one after another"
    )
    parser.add_argument("--cycles", type=int, default=20, help="with --at-defaults: update-then-rerun cycles per model")
    parser.add_argument(
        "--slowed-runs", type=int, default=10, help="with --at-defaults: runs with every llama_decode --slowdown slower"
    )
    parser.add_argument("--slowdown", type=float, default=0.25)
    parser.add_argument(
        "--baseline-tries", type=int, default=3, help="with --at-defaults: updates tried for the detection baseline"
    )
    parser.add_argument(
        "--out",
        help="with --at-defaults and one model: the JSON file (default benchmarks/data/latency_defaults_<model>.json)",
    )
    parser.add_argument("--table", nargs="*", help="print the tables of these saved JSON files, in Markdown, and stop")
    parser.add_argument("--rounds", nargs="*", help="print the confirmation rounds of these saved JSON files, and stop")
    parser.add_argument(
        "--probe-error", nargs="*", help="fit the speed probe's scaling error over these saved JSON files, and stop"
    )
    args = parser.parse_args()

    if args.probe_error:
        print(probe_error([json.loads(Path(p).read_text()) for p in args.probe_error]))
    elif args.rounds:
        print("\n\n".join(rounds(json.loads(Path(p).read_text())) for p in args.rounds))
    elif args.table:
        print("\n\n".join(tables(json.loads(Path(p).read_text()), "github") for p in args.table))
    elif args.at_defaults:
        for model in args.models.split(","):
            print(tables(at_defaults(args, model)), flush=True)
    else:
        calibrate_threads(args)


if __name__ == "__main__":
    main()
