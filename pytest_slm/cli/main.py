"""The command line of `python -m pytest_slm`: one parser over every command, and the dispatch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..checks import validate_record
from ..store.baselines import BaselineError
from ..store.merge import MergeError, merge_trees
from ..store.migrate import migrate_tree
from .export_mlx import add_command as add_export_command
from .export_mlx import run as run_export_command
from .history_commands import add_commands as add_history_commands
from .history_commands import run_command as run_history_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_slm", description="Commands beside the pytest-slm plugin that are not a test run."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    merge = commands.add_parser(
        "merge-baselines",
        help="merge baseline trees refreshed on several machines into one",
        description=(
            "Merge every *.json under each SOURCE into --into, matched by path relative to its SOURCE."
            " Identical files merge silently; files only in --into are kept. Every input is checked"
            " first: a corrupt file, a file of another schema version, or two different versions of"
            " one file without --prefer, is a one-line error each, exit status 1, and nothing is"
            " written. A destination file written by a newer pytest-slm is never overwritten, and"
            " an I/O error while writing leaves --into as it was."
        ),
    )
    merge.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="a baselines tree")
    merge.add_argument("--into", required=True, type=Path, metavar="DIR", help="the baselines tree to update")
    merge.add_argument(
        "--prefer",
        choices=("first", "last"),
        help="on a conflict take the version of the first (or last) SOURCE that has the file",
    )
    migrate = commands.add_parser(
        "migrate-baselines",
        help="move runtime baselines keyed by the runtime's version to keys of the hardware alone",
        description=(
            "Runtime baselines (latency, memory, load time) were once keyed by the runtime's version,"
            " so an upgrade found none. Moves each to the key of its hardware, the runtime going to its"
            " provenance; figures unchanged. Two records landing on one key are an error, and nothing moves."
        ),
    )
    migrate.add_argument(
        "root",
        nargs="?",
        default=Path("baselines"),
        type=Path,
        metavar="DIR",
        help="the baselines tree (default: baselines)",
    )
    add_history_commands(commands)
    add_export_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "export-mlx":
        return run_export_command(args)
    if args.command == "migrate-baselines":
        return _migrate(args.root)
    if args.command != "merge-baselines":
        return run_history_command(args)
    try:
        report = merge_trees(args.sources, args.into, args.prefer, validate=validate_record)
    except MergeError as exc:
        for problem in exc.problems:
            print(f"merge-baselines: {problem}", file=sys.stderr)
        if exc.intact:
            print(f"merge-baselines: nothing written to {args.into}", file=sys.stderr)
        return 1
    for relative in report.added:
        print(f"added    {relative}")
    for relative in report.changed:
        print(f"changed  {relative}")
    print(
        f"merged {len(args.sources)} tree(s) into {args.into}: {len(report.added)} added,"
        f" {len(report.changed)} changed, {len(report.unchanged)} unchanged"
    )
    return 0


def _migrate(root: Path) -> int:
    try:
        moved = migrate_tree(root)
    except BaselineError as exc:
        print(f"migrate-baselines: {exc}", file=sys.stderr)
        return 1
    for old, new in moved:
        print(f"moved {old} -> {new}")
    print(f"migrated {len(moved)} runtime baseline(s) under {root}")
    return 0
