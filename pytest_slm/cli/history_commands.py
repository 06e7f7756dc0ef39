"""`python -m pytest_slm history | compare | merge-history`: reading and merging stores."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..history import changes, database, llamabench, trends
from ..history.bisect import BisectError, bisect
from ..history.changepoint import DEFAULT_K, DEFAULT_MIN_STEP
from ..history.compare import compare_runs, resolve

DEFAULT_PATH = Path(".pytest-slm/history.sqlite")


def add_commands(commands: Any) -> None:
    shown = commands.add_parser(
        "history",
        help="per series (item x metric on one machine): recent values and step changes",
        description=(
            "Every series in the store, oldest run first, with the step changes found: figures by"
            " binary segmentation (a step is at least --min-step and at least --k standard errors of"
            " the two sides' medians, the noise measured between runs and within each run); accuracy"
            " by the items' paired test (McNemar, two-sided) between consecutive runs. A series runs across"
            " runtime upgrades on one machine; a step says what changed at the run where it lands."
        ),
    )
    shown.add_argument("--store", type=Path, default=DEFAULT_PATH, help=f"the store (default {DEFAULT_PATH})")
    shown.add_argument("--item", help="only series whose item or metric contains this")
    shown.add_argument("--recent", type=int, default=8, help="values shown per series (default 8)")
    shown.add_argument(
        "--k", dest="k", type=float, default=DEFAULT_K, help=f"standard errors a step must exceed (default {DEFAULT_K})"
    )
    shown.add_argument(
        "--min-step",
        type=float,
        default=DEFAULT_MIN_STEP,
        help=f"smallest relative step reported (default {DEFAULT_MIN_STEP})",
    )
    shown.add_argument("--alpha", type=float, default=0.05, help="significance of the accuracy test (default 0.05)")
    shown.add_argument("--min-change", type=float, default=1.0, help="smallest accuracy change, points (default 1.0)")

    compare = commands.add_parser(
        "compare",
        help="two stored runs, item by item, with the items' own verdict logic",
        description=(
            "A and B: a run id or its prefix, a git commit (its latest run), or a date YYYY-MM-DD (the latest"
            " run by then). Says first what changed between them besides the code (runtime and package"
            " versions, runtime builds, OS release, GPU driver)."
        ),
    )
    compare.add_argument("before", metavar="A")
    compare.add_argument("after", metavar="B")
    compare.add_argument("--store", type=Path, default=DEFAULT_PATH, help=f"the store (default {DEFAULT_PATH})")

    walk = commands.add_parser(
        "bisect",
        help="the first commit at which the selected items fail (git bisect run, in a temporary worktree)",
        description=(
            "Walks the commits between --good and --bad, running `python -m pytest PYTEST_ARGS` at each in a"
            " temporary worktree (the checkout is not touched): exit status 0 is good, 1 bad, anything else"
            " skips the commit. Where the history store (--slm-history in PYTEST_ARGS, else the repository's"
            " .pytest-slm/history.sqlite) has a run at a commit from a clean tree, with these runtime versions,"
            " a figure for every selected item and this machine's fingerprint, its verdicts are used instead"
            " and the line says so. Names the first bad commit."
        ),
    )
    walk.add_argument("--good", required=True, metavar="REV", help="a commit where the items pass")
    walk.add_argument("--bad", required=True, metavar="REV", help="a later commit where they fail")
    walk.add_argument("--repo", type=Path, default=Path("."), help="the project's git repository (default: here)")
    walk.add_argument("pytest_args", nargs="*", metavar="PYTEST_ARGS", help="after --: what pytest runs at each commit")

    merge = commands.add_parser(
        "merge-history",
        help="merge stores from several runners into one; runs it has already are recognised, not doubled",
    )
    merge.add_argument("sources", nargs="+", type=Path, metavar="SOURCE")
    merge.add_argument(
        "--into", required=True, type=Path, metavar="FILE", help="the store to add to (created if missing)"
    )

    bench = commands.add_parser(
        "import-llama-bench",
        help="add llama-bench's SQL output (llama-bench -o sql) to a store, beside pytest-slm's runs",
        description=(
            "pp<N> rows become the series prefill@N, tg<N> rows decode (@d<D> at a depth), one run per"
            " llama-bench invocation with the build's commit as the run's commit; pp+tg rows are not"
            " mapped and are counted. Importing a file twice adds nothing."
        ),
    )
    bench.add_argument("files", nargs="+", type=Path, metavar="FILE", help="what `llama-bench -o sql` printed")
    bench.add_argument(
        "--into", type=Path, default=DEFAULT_PATH, metavar="STORE", help=f"the store (default {DEFAULT_PATH})"
    )
    bench.add_argument(
        "--os",
        dest="os_name",
        metavar="OS",
        help="the OS the benchmark ran on, as pytest-slm's fingerprint writes it (default: this machine's, e.g. 'Linux x86_64')",
    )


def run_command(args: argparse.Namespace) -> int:
    try:
        if args.command == "history":
            return _history(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "bisect":
            return _bisect(args)
        if args.command == "import-llama-bench":
            return _import_llama_bench(args)
        added, known = database.merge(args.sources, args.into)
        print(f"merged {len(args.sources)} store(s) into {args.into}: {added} run(s) added, {known} already there")
        return 0
    except (database.HistoryError, BisectError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1


def _history(args: argparse.Namespace) -> int:
    with database.connect(args.store, write=False) as db:
        series = trends.analyse(db, args.item, args.k, args.min_step, args.alpha, args.min_change)
        count = len(database.runs(db))
    print(f"{args.store}: {count} run(s), {len(series)} series, {sum(len(s.steps) for s in series)} step(s)")
    for one in series:
        print("\n".join(trends.describe(one, args.recent)))
    return 0


def _compare(args: argparse.Namespace) -> int:
    with database.connect(args.store, write=False) as db:
        before, after = (database.read_run(db, resolve(db, ref)) for ref in (args.before, args.after))
    found = compare_runs(before, after)
    print(f"A = run {before.run_id[:12]} ({before.started}, commit {(before.git_commit or '-')[:10]})")
    print(f"B = run {after.run_id[:12]} ({after.started}, commit {(after.git_commit or '-')[:10]})")
    print(changes.line(before.provenance, after.provenance))
    table = [(c.item, c.metric, f"{c.before:.4g}", f"{c.after:.4g}", c.change, c.verdict) for c in found]
    print(tabulate(table, headers=("item", "metric", "A", "B", "change", "verdict")))
    failed = sum(c.verdict == "FAIL" for c in found)
    print(f"{len(found)} figure(s) compared, {failed} regression(s)")
    return 1 if failed else 0


def _import_llama_bench(args: argparse.Namespace) -> int:
    """Every file read before the store is touched: a bad file changes nothing."""
    found = [(path, llamabench.read(path, args.os_name)) for path in args.files]
    added, known = database.add_runs(args.into, [run for _, imported in found for run in imported.runs])
    for path, imported in found:
        skipped = "".join(f"; {count} {why} not mapped" for why, count in imported.unmapped.items())
        print(
            f"{path}: {len(imported.runs)} run(s), {sum(len(run.measures) for run in imported.runs)} figure(s){skipped}"
        )
    print(f"imported into {args.into}: {added} run(s) added, {known} already there")
    return 0


def _bisect(args: argparse.Namespace) -> int:
    result = bisect(args.repo, args.good, args.bad, args.pytest_args)
    for line in result.reused:
        print(line)
    if result.first_bad is None:
        print(result.log.rstrip())
        print("bisect: no single first bad commit (skipped commits, or --good fails too)", file=sys.stderr)
        return 1
    print(f"first bad commit: {result.first_bad} {result.subject}")
    return 0
