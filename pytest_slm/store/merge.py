"""Merge baseline trees measured on several machines into one, refusing to guess between them.

Each machine refreshes the baselines of its own devices; their trees share one layout
(`<model>/<device>/<quant>/<file>.json`), so files are matched by relative path. Every input is
checked, and every conflict found, before the first write: a bad input or a conflict writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from filelock import FileLock

from .atomic import write_text_atomic
from .baselines import BaselineError, lock_path, validate, without_date, writable_dir_problem

Prefer = Literal["first", "last"]
_UNREADABLE = object()


class MergeError(Exception):
    """The inputs cannot be merged; `problems` holds one line per bad file or conflict."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class _Version:
    root: Path
    text: str
    record: object


@dataclass
class MergeReport:
    """Relative paths under the destination, each sorted."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def merge_trees(sources: Sequence[Path], into: Path, prefer: Prefer | None = None) -> MergeReport:
    """Merge every `*.json` under `sources` into `into`; MergeError, and no write, on any problem.

    Identical files merge silently. Two versions of one file conflict unless `prefer` names the
    source (first or last on the command line) that wins. Files only in `into` are kept.
    """
    versions, problems = _collect(sources)
    chosen: dict[str, _Version] = {}
    for relative, found in sorted(versions.items()):
        distinct = _distinct(found)
        if len(distinct) > 1 and prefer is None:
            roots = ", ".join(str(version.root) for version in distinct)
            problems.append(f"conflict: {relative} differs between {roots} (choose with --prefer=first|last)")
        chosen[relative] = found[-1] if prefer == "last" else found[0]
    problem = writable_dir_problem(into)
    if problem:
        problems.append(problem)
    if problems:
        raise MergeError(problems)

    report = MergeReport()
    with FileLock(lock_path(into)):  # the lock BaselineStore writes under: no refresh interleaves
        for relative, version in chosen.items():
            target = into / relative
            exists = target.exists()
            if exists and without_date(_read_existing(target)) == without_date(version.record):
                report.unchanged.append(relative)
                continue
            (report.changed if exists else report.added).append(relative)
            write_text_atomic(target, version.text)
    return report


def _collect(sources: Sequence[Path]) -> tuple[dict[str, list[_Version]], list[str]]:
    """Every JSON file of every source, by relative path in source order, and the inputs' problems."""
    versions: dict[str, list[_Version]] = {}
    problems: list[str] = []
    for root in sources:
        if not root.is_dir():
            problems.append(f"{root} is not a directory")
            continue
        for path in sorted(p for p in root.rglob("*.json") if p.is_file()):
            try:
                text = path.read_text(encoding="utf-8")
                record = json.loads(text)
                validate(record, path)
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"cannot read {path}: {exc}")
            except json.JSONDecodeError as exc:
                problems.append(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})")
            except BaselineError as exc:
                problems.append(str(exc))
            else:
                versions.setdefault(path.relative_to(root).as_posix(), []).append(_Version(root, text, record))
    return versions, problems


def _distinct(found: list[_Version]) -> list[_Version]:
    """The first version of each different measurement, in source order."""
    distinct: list[_Version] = []
    for version in found:
        if all(without_date(version.record) != without_date(seen.record) for seen in distinct):
            distinct.append(version)
    return distinct


def _read_existing(path: Path) -> object:
    """The destination's record; an unreadable one equals nothing, so that it is rewritten."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _UNREADABLE

