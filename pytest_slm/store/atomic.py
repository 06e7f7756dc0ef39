"""Atomic file writes: a reader sees the old file or the new one, never half of either.

A write goes to a temporary file beside its target, named `.<name>.pytest-slm-<pid>-<random>.tmp`
so that one `.gitignore` pattern (`.*.pytest-slm-*.tmp`) hides it and the next write in that
directory can tell, from the pid, whether its writer died (kill -9, power loss) and remove it.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import tempfile
import time
from pathlib import Path

MARK = ".pytest-slm-"
STALE_AFTER_S = 3600.0  # a temporary this old is stale even if its pid is alive again (reused)
_TEMPORARY = re.compile(r"^\..+" + re.escape(MARK) + r"(\d+)-[^.]*\.tmp$")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    The caller holds the store's lock where one is needed: this only makes one file's replacement
    atomic, and a compare-then-write (or a multi-file merge) needs the lock around the whole of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    temporary = stage_text(path, text)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def stage_text(path: Path, text: str) -> Path:
    """The first half of an atomic write: `text`, on disk, in a temporary beside `path` (the same
    file system, so the rename cannot turn into a copy)."""
    return stage_bytes(path, text.encode("utf-8"))


def stage_bytes(path: Path, data: bytes) -> Path:
    temporary = temporary_beside(path)
    # O_CREAT's mode goes through the umask (and default ACLs) as a plain open's would; mkstemp's 0600
    # would make every rewritten baseline private to its writer in a shared checkout
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def temporary_beside(path: Path) -> Path:
    """A fresh name that `.gitignore` hides and `remove_stale_temporaries` recognises."""
    return path.parent / f".{path.name}{MARK}{os.getpid()}-{secrets.token_hex(8)}.tmp"


def remove_stale_temporaries(directory: Path) -> None:
    """Remove what writers that died left in `directory`: their pid is gone, or it is an hour old."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or int(match.group(1)) == os.getpid():
            continue
        try:
            if not _alive(int(match.group(1))) or now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S:
                os.unlink(entry.path)
        except OSError:  # another writer removed it first, or it is not ours to remove
            continue


def directory_problem(directory: Path) -> str | None:
    """Why files cannot be written in `directory` (or the directories that would be made for it),
    found without creating or changing anything but a temporary probe."""
    probe = directory
    while not os.path.exists(probe) and probe != probe.parent:  # False, not an error, where stat is denied
        if probe.is_symlink():
            return f"{probe} is a symlink to {os.readlink(probe)}, which does not exist"
        probe = probe.parent
    if not probe.is_dir():
        kind = "a file, not a directory" if probe.is_file() else "not a directory"
        return f"{probe} is {kind}" + ("" if probe == directory else f" (to hold {directory})")
    try:  # a real write: permission bits say nothing to root, or on a read-only mount
        with tempfile.TemporaryFile(dir=probe):
            return None
    except OSError as exc:
        return f"{probe} is not writable: {exc.strerror}"


def sweep_stale_temporaries(root: Path) -> None:
    """Every directory of a tree that holds a temporary of ours: what a killed run left is gone
    after the next run starts, whether or not that run writes there."""
    try:
        directories = {path.parent for path in root.rglob(f".*{MARK}*.tmp")}
    except OSError:  # an unreadable tree: the items that read it say so
        return
    for directory in directories:
        remove_stale_temporaries(directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno != errno.ESRCH  # EPERM: alive, another user's
    return True
