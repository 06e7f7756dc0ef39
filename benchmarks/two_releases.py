"""A real llama-cpp-python upgrade, end to end: baselines written under an earlier release, the
suite then run under the pinned one (requirements.txt) against them, both compiled from source.

    .venv/bin/python benchmarks/two_releases.py --earlier 0.3.35 --reverse

Each release is built into a wheel by pip with the Makefile's portable flags (pip's wheel cache
keeps it: only the first build compiles, 7-10 minutes on two cores), installed into a directory of
its own (`pip install --no-deps --target`), and put first on PYTHONPATH for pytest, so that
`import llama_cpp` and importlib.metadata see that release and everything else comes from the
venv; the baselines' provenance (`llama_cpp_python`) and the comparing run's "changed" line show
which release each run really used. The project is a copy of the shipped suites (accuracy,
fidelity, runtime, load time) on the embedded model, llama.cpp CPU, one thread. The comparing run
must judge every item against the other release's baselines; the table gives each figure under
both releases, the change, the item's limit and its verdict. With --reverse, the same the other
way round (baselines under the pinned release, the earlier one compared). Before each timed run
it waits for the 1-minute load average to drop below --quiet-load (at most --max-wait seconds)
and records the load either way. Prints Markdown; saves JSON under benchmarks/data/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"
SUITE_FILES = ("test_accuracy.py", "test_fidelity.py", "test_runtime.py", "test_load_time.py")
PACKAGE = "llama-cpp-python"
# The Makefile's: llama.cpp's -march=native build dies with SIGILL on these VMs.
PORTABLE = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
NO_BASELINE = "no baseline"  # in the reason of an item that was not judged for want of one
OUTCOMES = {"failure": "failed", "error": "error", "skipped": "skipped"}  # JUnit's element -> pytest's outcome


def pinned_version() -> str:
    found = re.search(rf"^{PACKAGE}==(\S+)", (ROOT / "requirements.txt").read_text(encoding="utf-8"), re.MULTILINE)
    if found is None:
        sys.exit(f"requirements.txt pins no {PACKAGE}")
    return found.group(1)


def wheel(version: str, directory: Path) -> Path:
    """The release's wheel: pip builds it, or takes it from its wheel cache."""
    env = dict(os.environ)
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        env.setdefault("CMAKE_ARGS", PORTABLE)
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", f"{PACKAGE}=={version}", "-w", str(directory)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    [built] = directory.glob(f"llama_cpp_python-{version}-*.whl")
    print(f"{built.name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return built


def install(built: Path, target: Path) -> str:
    """Install into `target` alone; the release Python then sees first on that PYTHONPATH."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(built)],
        check=True,
        capture_output=True,
        text=True,
    )
    probe = "import llama_cpp; from importlib import metadata; print(metadata.version('llama-cpp-python'), llama_cpp.__file__)"
    shown = subprocess.run(
        [sys.executable, "-c", probe], env=env_for(target), check=True, capture_output=True, text=True
    )
    version, module = shown.stdout.split()
    if not Path(module).is_relative_to(target):
        sys.exit(f"{target}: Python imported llama_cpp from {module}")
    return version


def env_for(target: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])])}


def make_project(directory: Path, tasks: list[str]) -> None:
    """A user's project: the shipped suite files, the registry, the evaluation text (the task files
    are the plugin's built-in ones)."""
    (directory / "suites").mkdir(parents=True)
    shutil.copy(SUITES / "models.toml", directory / "suites" / "models.toml")
    for name in SUITE_FILES:
        shutil.copy(SUITES / name, directory / name)
    shutil.copy(SUITES / "eval" / "text.txt", directory / "eval.txt")
    (directory / "pyproject.toml").write_text(
        f'[tool.pytest.ini_options]\nslm_tasks = {json.dumps(tasks)}\nslm_eval_text = "eval.txt"\nslm_history = "off"\n'
    )


class Quiet:
    """Waits for the 1-minute load average to drop below `below` before a timed run, `most` seconds
    at most over the whole benchmark, and says what the load was either way."""

    def __init__(self, below: float, most: float) -> None:
        self.below, self.left = below, most

    def wait(self) -> dict[str, float | bool]:
        started = time.monotonic()
        while (load := os.getloadavg()[0]) >= self.below and time.monotonic() - started < self.left:
            print(
                f"load {load:.2f} >= {self.below}: waiting ({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(20)
        waited = time.monotonic() - started
        self.left = max(0.0, self.left - waited)
        return {"load": round(load, 2), "quiet": load < self.below, "waited_s": round(waited)}


def run_suite(project: Path, target: Path, name: str, *extra: str) -> dict[str, Any]:
    """One pytest run of the project under the release in `target`: its command, outcomes per item
    (with a skip's reason), results.json, the load before and after."""
    report, junit = project / f"report-{name}", project / f"junit-{name}.xml"
    command = [
        "python",
        "-m",
        "pytest",
        ".",
        "--slm-models=smollm2-135m",
        "--slm-devices=llamacpp-cpu",
        "--slm-threads=1",
        f"--slm-report={report.name}",
        *extra,
    ]
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, *command[1:], "-p", "no:cacheprovider", "-q", f"--junitxml={junit}"],
        cwd=project,
        env=env_for(target),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    (project / f"pytest-{name}.log").write_text(done.stdout + done.stderr)
    if not junit.exists():
        sys.exit(f"{name}: pytest wrote no results\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    outcomes = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        found = next((case.find(tag) for tag in ("failure", "error", "skipped") if case.find(tag) is not None), None)
        outcome = "passed" if found is None else OUTCOMES[found.tag]
        reason = "" if found is None else (found.get("message") or "")
        item = f"{case.get('classname', '').rpartition('.')[2]}::{case.get('name')}"
        outcomes[item] = {"outcome": outcome, "reason": reason[:400]}
    results = json.loads((report / "results.json").read_text())
    return {
        "command": " ".join(command),
        "exit": done.returncode,
        "seconds": round(seconds),
        "outcomes": outcomes,
        "results": results,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def baseline_versions(project: Path) -> dict[str, list[str]]:
    """The release each written baseline file records having been measured under."""
    found: dict[str, list[str]] = {}
    for path in sorted((project / "baselines").rglob("*.json")):
        provenance = json.loads(path.read_text()).get("provenance") or {}
        found.setdefault(provenance.get("llama_cpp_python", "none recorded"), []).append(str(path.relative_to(project)))
    return found


def figures(results: dict[str, Any], stored_memory: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per judged figure: its value, the baseline it was compared with, the change, the limit (the
    item's own: the defaults of --slm-latency-tolerance and -k, --slm-memory-tolerance,
    --slm-fidelity-margin, --slm-alpha and --slm-min-drop), the verdict."""
    found = {}
    for row in results.get("runtime", []):
        test = row["item"].split("[")[0].rpartition("::")[2]
        found[f"{test}: {row['metric']} ({row['unit']})"] = {
            "value": row["median"],
            "baseline": row["baseline"],
            "change": _pct(row["change_pct"], "slower"),
            "limit": _pct(row["limit_pct"]),
            "verdict": row["verdict"],
        }
    for row in results.get("memory", []):
        for key, label in (("kv_bytes_per_token", "KV cache (bytes/token)"), ("weights_bytes", "weights (bytes)")):
            before = stored_memory.get(key)
            found[f"test_memory: {label}"] = {
                "value": row[key],
                "baseline": before,
                "change": "-" if not before else f"{row[key] / before - 1:+.1%}",
                "limit": "+1% growth",
                "verdict": row["verdict"],
            }
    for row in results.get("items", []):
        found[f"test_task_accuracy: {row['task']}"] = {
            "value": row["accuracy"],
            "baseline": row["baseline"],
            "change": _signed(row["delta_points"], " pt"),
            "limit": "drop of 1 pt at p<0.05" + ("" if row["p_value"] is None else f" (p={row['p_value']:.3g})"),
            "verdict": row["verdict"],
        }
    for row in results.get("fidelity", []):
        before = row.get("baseline_mean_kld")
        found[f"test_fidelity: {row['quant']} mean KLD vs f32 (nats)"] = {
            "value": row["mean_kld"],
            "baseline": before,
            "change": "-" if not before else f"{row['mean_kld'] / before - 1:+.1%}",
            "limit": "+10% (and p99 +10%)",
            "verdict": row["verdict"],
        }
    return found


def stored_memory(project: Path) -> dict[str, Any]:
    """The memory baseline's figures as written (results.json's memory rows carry no baseline)."""
    for path in (project / "baselines").rglob("memory.json"):
        return json.loads(path.read_text())
    return {}


def _pct(value: float | None, sign: str = "") -> str:
    if value is None:
        return "-"
    if not sign:
        return f"{value:.1f}%"
    return f"{value:.1f}% slower" if value >= 0 else f"{-value:.1f}% faster"


def _signed(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:+.1f}{unit}"


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3e}" if abs(value) < 0.01 else f"{value:.4g}"
    return str(value)


def leg(
    before: str, after: str, targets: dict[str, Path], tasks: list[str], quiet: Quiet, workdir: Path, marker: str
) -> dict[str, Any]:
    """Baselines under `before`, then the suite under `after` against them."""
    project = workdir / f"{before}-then-{after}"
    make_project(project, tasks)
    waited = quiet.wait()
    selected = ("-m", marker) if marker else ()
    baseline = run_suite(project, targets[before], "baseline", "--update-baselines", *selected)
    written = baseline_versions(project)
    if set(written) != {before}:
        sys.exit(f"the baselines were written under {sorted(written)}, not {before}")
    waited_after = quiet.wait()
    compared = run_suite(project, targets[after], "compared", *selected)
    results = compared["results"]
    unjudged = sorted(
        i for i, o in compared["outcomes"].items() if o["outcome"] != "passed" and NO_BASELINE in o["reason"]
    )
    memory = stored_memory(project)
    then, now = figures(baseline["results"], memory), figures(results, memory)
    rows = [{"figure": key, before: then.get(key, {}).get("value"), after: f["value"], **f} for key, f in now.items()]
    for run in (baseline, compared):
        run.pop("results")
    return {
        "before": before,
        "after": after,
        "quiet": [waited, waited_after],
        "baseline_run": baseline,
        "compared_run": compared,
        "baseline_versions": sorted(written),
        "changed": results.get("changed", []),
        "not_judged": unjudged,
        "rows": rows,
    }


def table(found: dict[str, Any]) -> str:
    before, after = found["before"], found["after"]
    headers = [
        "figure",
        f"under {before} (baseline run)",
        f"under {after}",
        "baseline compared with",
        "change",
        "limit",
        "verdict",
    ]
    rows = [
        (r["figure"], _shown(r[before]), _shown(r[after]), _shown(r["baseline"]), r["change"], r["limit"], r["verdict"])
        for r in found["rows"]
    ]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--earlier", default="0.3.35", help="the earlier release (default 0.3.35)")
    parser.add_argument("--pinned", default=pinned_version(), help="the later release (default: requirements.txt's)")
    parser.add_argument(
        "--reverse",
        action="store_true",
        help="also write baselines under the pinned release and compare the earlier one",
    )
    parser.add_argument(
        "--tasks",
        default="slm_facts,slm_cloze,slm_arith:0,slm_arith:5",
        help="the accuracy tasks (default: the repository's)",
    )
    parser.add_argument("--marker", default="", help="only the items of this pytest -m expression: slm_runtime")
    parser.add_argument(
        "--quiet-load", type=float, default=1.5, help="1-minute load average to wait for before each timed run"
    )
    parser.add_argument("--max-wait", type=float, default=1200, help="seconds to wait for it at most, over all runs")
    parser.add_argument("--wheels", type=Path, default=Path(tempfile.gettempdir()) / "pytest-slm-wheels")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "pytest-slm-two-releases",
        help="the installed releases; the projects with baselines, reports, logs (emptied first)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "data" / "two_releases.json")
    args = parser.parse_args()

    args.wheels.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.workdir, ignore_errors=True)
    targets = {}
    for version in (args.earlier, args.pinned):
        targets[version] = args.workdir / f"llama-cpp-python-{version}"
        reported = install(wheel(version, args.wheels), targets[version])
        if reported != version:
            sys.exit(f"{targets[version]} reports {PACKAGE} {reported}, not {version}")
    quiet = Quiet(args.quiet_load, args.max_wait)
    orders = [(args.earlier, args.pinned)] + ([(args.pinned, args.earlier)] if args.reverse else [])
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "os": platform.platform()}
    legs = []
    for before, after in orders:
        found = leg(before, after, targets, args.tasks.split(","), quiet, args.workdir, args.marker)
        legs.append(found)
        args.output.write_text(json.dumps({"machine": machine, "legs": legs}, indent=1, sort_keys=True) + "\n")
        show(found)
    print(
        f"\nsaved {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output};"
        f" projects, reports and logs in {args.workdir}"
    )


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    return platform.processor() or platform.machine()


def show(found: dict[str, Any]) -> None:
    """One order's runs, what they used and saw, and its table, as Markdown."""
    print(f"\n### baselines under {found['before']}, compared under {found['after']}\n")
    for name, key, quiet in zip(("baseline run", "comparing run"), ("baseline_run", "compared_run"), found["quiet"]):
        run = found[key]
        state = f"{'quiet' if quiet['quiet'] else 'NOT quiet'} after {quiet['waited_s']} s"
        print(
            f"- {name}: `{run['command']}` (exit {run['exit']}, {run['seconds']} s); 1-minute load"
            f" {run['load_before']} before ({state}), {run['load_after']} after"
        )
    print(f"- baselines' provenance llama_cpp_python: {', '.join(found['baseline_versions'])}")
    print(f"- changed: {'; '.join(found['changed']) or 'nothing'}")
    outcomes = [o["outcome"] for o in found["compared_run"]["outcomes"].values()]
    print(
        f"- comparing run: {', '.join(f'{outcomes.count(o)} {o}' for o in sorted(set(outcomes)))}; "
        f"not judged for want of a baseline: {', '.join(found['not_judged']) or 'none'}"
    )
    for name, key in (("baseline run", "baseline_run"), ("comparing run", "compared_run")):
        for item, outcome in found[key]["outcomes"].items():
            if outcome["outcome"] != "passed":
                reason = outcome["reason"].splitlines()[0] if outcome["reason"] else ""
                print(f"  - {name}, {item}: {outcome['outcome']}: {reason}")
    print()
    print(table(found), flush=True)


if __name__ == "__main__":
    main()
