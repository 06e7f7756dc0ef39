"""Merge baseline trees measured on several machines into one, refusing to guess between them.

Each machine refreshes the baselines of its own devices; their trees share one layout
(`<model>/<device>/<quant>/<file>.json`), so files are matched by relative path. Every input is
checked, and every conflict found, before the first write: a bad input or a conflict writes nothing.
The writes themselves are staged beside their targets and renamed last, so an I/O error half-way
also leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .atomic import remove_stale_temporaries, stage_text, temporary_beside
from .baselines import (
    BaselineError,
    NewerSchemaError,
    check_envelope,
    loads,
    one_line_reason,
    root_lock,
    target_problem,
    without_date,
    writable_dir_problem,
)

Prefer = Literal["first", "last"]
Validate = Callable[[dict[str, Any], Path, Path], None]  # record, its file, the file under its tree
_UNREADABLE = object()


class MergeError(Exception):
    """The inputs cannot be merged; `problems` holds one line per bad file or conflict.

    `intact` is False only when a failed write could not be fully undone.
    """

    def __init__(self, problems: list[str], intact: bool = True) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.intact = intact


@dataclass(frozen=True)
class _Version:
    root: Path
    text: str
    record: dict[str, Any]


@dataclass
class MergeReport:
    """Relative paths under the destination, each sorted."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def merge_trees(
    sources: Sequence[Path], into: Path, prefer: Prefer | None = None, *, validate: Validate
) -> MergeReport:
    """Merge every `*.json` under `sources` into `into`; MergeError, and no write, on any problem.

    Identical files merge silently. Two versions of one file conflict unless `prefer` names the
    source (first or last on the command line) that wins. Files only in `into` are kept. Each input
    must have this pytest-slm's schema and pass `validate` (which raises BaselineError); a
    destination file of a newer schema is never overwritten.
    """
    versions, problems = _collect(sources, validate)
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

    try:
        lock = root_lock(into)
    except BaselineError as exc:
        raise MergeError([str(exc)]) from None
    with lock:  # the lock BaselineStore writes under: no refresh interleaves
        report, plan = _plan(chosen, into)
        _install(plan, into)
    return report


def _collect(sources: Sequence[Path], validate: Validate) -> tuple[dict[str, list[_Version]], list[str]]:
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
                record = loads(text, path)
                check_envelope(record, path)
                validate(record, path, path.relative_to(root))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"cannot read {path}: {one_line_reason(exc)}")
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


def _plan(chosen: dict[str, _Version], into: Path) -> tuple[MergeReport, list[tuple[Path, str]]]:
    """What to write where, decided under the lock; MergeError for any destination that refuses."""
    report = MergeReport()
    plan: list[tuple[Path, str]] = []
    problems: list[str] = []
    root = into.resolve()
    for relative, version in chosen.items():
        target = into / relative
        try:
            if not target.resolve().is_relative_to(root):
                raise BaselineError(f"cannot write {target}: it resolves to {target.resolve()}, outside {root}")
            target_problem(target, into)
            existing = _read_existing(target)
        except BaselineError as exc:
            problems.append(str(exc))
            continue
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            problems.append(f"cannot write {target}: {one_line_reason(exc)}")
            continue
        if existing is not _UNREADABLE and without_date(existing) == without_date(version.record):
            report.unchanged.append(relative)
            continue
        (report.changed if target.exists() else report.added).append(relative)
        plan.append((target, version.text))
    if problems:
        raise MergeError(problems)
    return report, plan


def _read_existing(path: Path) -> object:
    """The destination's record; an unreadable or older one equals nothing, so that it is rewritten,
    but a newer one raises: this pytest-slm must not downgrade what it cannot read."""
    try:
        record = loads(path.read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError, BaselineError):
        return _UNREADABLE
    try:
        check_envelope(record, path)
    except NewerSchemaError as exc:
        raise BaselineError(f"{exc} (not overwritten)") from None
    except BaselineError:
        return _UNREADABLE
    return record


def _install(plan: list[tuple[Path, str]], into: Path) -> None:
    """Stage every file (and keep aside each file it replaces), then rename them all into place;
    on any failure undo what was done, so that `into` is as it was."""
    work = _Transaction()
    target = into
    try:
        for target, text in plan:
            work.make_directories(target.parent, into)
            remove_stale_temporaries(target.parent)
            if target.exists():
                work.keep_aside(target)
            work.staged.append((stage_text(target, text), target))
        for temporary, target in work.staged:
            os.replace(temporary, target)
            work.installed.append(target)
    except BaseException as exc:
        intact = work.undo()
        if not isinstance(exc, OSError):
            raise
        problem = f"cannot write {target}: {one_line_reason(exc)}"
        if not intact:
            problem += f"; {into} could not be fully restored"
        raise MergeError([problem], intact) from None
    for backup in work.backups.values():
        backup.unlink(missing_ok=True)


@dataclass
class _Transaction:
    """Everything a merge changed in the destination so far, to undo it."""

    created: list[Path] = field(default_factory=list)  # directories made, outermost first
    backups: dict[Path, Path] = field(default_factory=dict)  # replaced file -> its copy aside
    staged: list[tuple[Path, Path]] = field(default_factory=list)  # temporary, target
    installed: list[Path] = field(default_factory=list)  # targets renamed into place

    def make_directories(self, directory: Path, into: Path) -> None:
        relative = directory.relative_to(into)
        for part in reversed([relative, *relative.parents]):
            path = into / part
            if not path.exists():
                path.mkdir()
                self.created.append(path)

    def keep_aside(self, target: Path) -> None:
        """A hard link to the file about to be replaced costs nothing; a copy where links fail."""
        backup = temporary_beside(target)
        try:
            os.link(target, backup)
        except OSError:
            try:
                shutil.copy2(target, backup)
            except BaseException:
                backup.unlink(missing_ok=True)
                raise
        self.backups[target] = backup

    def undo(self) -> bool:
        """Put back every replaced file, remove every added one, every temporary and every directory
        made; whether all of that worked."""
        intact = True
        for target in reversed(self.installed):
            try:
                if target in self.backups:
                    os.replace(self.backups.pop(target), target)
                else:
                    target.unlink()
            except OSError:
                intact = False
        for path in [temporary for temporary, _ in self.staged] + list(self.backups.values()):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        for directory in reversed(self.created):
            try:
                directory.rmdir()
            except OSError:
                intact = False
        return intact
