"""Derived model files in the artifact cache, built once per content: what every backend's quant
ladder shares (llama.cpp's GGUF rungs, MLX's quantized checkpoint directories).

An artifact is named by what it is made from (source content, target, runtime version), so a new
source or a new runtime builds anew and an old artifact is never reused by mistake. Safe when several
pytest-xdist workers ask at once (one builds under a lock beside it, the others wait and reuse) and
after a crash: built under a temporary name, renamed when complete; a temporary that a killed build
left is removed by the next one to take the lock. Files are created with the default mode, so they
follow the umask like the rest of a shared cache.

A cache that proves what it holds: the SHA-256 of every artifact (of each file of a directory) is
recorded beside it when it is made and checked before each use, so an artifact changed after it was
made (a disk error, a crash during an old copy, anything else that wrote to a shared cache) is
rebuilt, never trusted because its size looks right. Checking is cheap on repeat: the record keeps
the files' inode, size, mtime and ctime at the last full check, and the artifact is hashed again only
when one of them changed (ctime cannot be set back by a writer, as mtime can).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

from filelock import FileLock

from .base import BackendError

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file

Progress = Callable[[str], None]


def content_digest(path: Path) -> str:
    """A source's SHA-256 (a file's, or a directory's files' together), once per process while its
    files' sizes and mtimes hold (a derived artifact's key and the fidelity reference's key name it)."""
    return _content_digest(path, tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in _files(path)))


@cache
def _content_digest(path: Path, stats: tuple[tuple[str, int, int], ...]) -> str:
    return file_sha256(path)


def derived(
    target: Path,
    build: Callable[[Path], None],
    what: str,
    how: str,
    complete: Callable[[Path], bool],
    progress: Progress = lambda line: None,
) -> Path:
    """`target`, made by `build(temporary)` when missing or bad (`what`, e.g. "q8_0 of x.gguf", made
    with `how`, e.g. "llama.cpp's quantizer", is said while it is made); `complete` is a cheap look
    at an artifact that may be truncated (a magic number, a config file) before its size and hash
    are checked."""
    record = _record_of(target)
    cache_dir = target.parent
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            for leftover in _temporaries(target, record):  # their writers held this lock: they are dead
                progress(f"removing {leftover.name}, left in the cache by an interrupted build")
                _remove(leftover)
            problem = _verify(target, record, complete)
            if problem is None:
                return target
            if target.exists():
                progress(f"{target.name} in the cache {problem}: rebuilding it")
                _remove(target)
            progress(f"making {what} with {how} (once: cached in {cache_dir})")
            started = time.perf_counter()
            temporary = _temporary(target)
            try:
                build(temporary)
                os.replace(temporary, target)
            finally:
                _remove(temporary)
            progress(f"made {what} in {time.perf_counter() - started:.1f} s")
            _write_record(record, {"what": what, "sha256": file_sha256(target), **_stamp(target)})
    except OSError as exc:
        raise BackendError(f"cannot build {what} in the cache {cache_dir}: {exc}") from None
    return target


def file_sha256(path: Path) -> str:
    """A file's SHA-256; a directory's is that of its files' names and SHA-256s."""
    if path.is_dir():
        listing = "".join(f"{f.relative_to(path)}\0{file_sha256(f)}\n" for f in _files(path))
        return hashlib.sha256(listing.encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _record_of(target: Path) -> Path:
    """The record replaces the artifact's suffix: x.gguf -> x.json, a checkpoint x.mlx -> x.json."""
    return target.with_suffix(".json")


def _stamp(path: Path) -> dict[str, int]:
    """What changes whenever the bytes can have: checked before trusting the last hash. A directory's
    fields are summed over its files (sizes), or hashed together (the rest)."""
    stats = [f.stat() for f in _files(path)]
    if not path.is_dir():
        (stat,) = stats
        return {"inode": stat.st_ino, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}
    together = json.dumps([[s.st_ino, s.st_mtime_ns, s.st_ctime_ns] for s in stats]).encode()
    return {
        "size": sum(s.st_size for s in stats),
        "files": len(stats),
        "stats": int(hashlib.sha256(together).hexdigest()[:15], 16),
    }


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in _files(path))


def _verify(target: Path, record: Path, complete: Callable[[Path], bool]) -> str | None:
    """None when `target` holds what its record says; else why not, for the line the user reads.
    A record's stamp is refreshed after a full hash that matched, so the next check is a stat."""
    try:
        fields = json.loads(record.read_text(encoding="utf-8"))
        expected, size = fields["sha256"], fields["size"]
        if not (isinstance(expected, str) and isinstance(size, int)):
            return "has an unreadable record"
        if not target.exists():
            raise FileNotFoundError(target)
        if not complete(target) or _size(target) != size:
            return "is incomplete or corrupt"
        stamp = _stamp(target)
        if all(fields.get(key) == value for key, value in stamp.items()):
            return None
        if file_sha256(target) != expected:
            return "does not match the SHA-256 recorded when it was made"
        _write_record(record, {**fields, **stamp})
        return None
    except FileNotFoundError:
        return "has no record of its SHA-256"
    except (OSError, ValueError, KeyError, TypeError):
        return "has an unreadable record (made by an older pytest-slm, or damaged)"


def _temporary(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: hidden, and named by its writer."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _temporaries(*paths: Path) -> list[Path]:
    """Every process's temporaries for `paths`."""
    prefixes = tuple(f".{path.name}." for path in paths)
    return [p for p in paths[0].parent.iterdir() if p.name.startswith(prefixes) and p.name.endswith(".tmp")]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _write_record(record: Path, fields: dict[str, object]) -> None:
    temporary = _temporary(record)
    try:
        temporary.write_text(json.dumps(fields), encoding="utf-8")
        os.replace(temporary, record)
    finally:
        temporary.unlink(missing_ok=True)


def is_gguf(path: Path) -> bool:
    """Whether `path` starts like a GGUF file: the check a derived or assembled GGUF passes before use."""
    with path.open("rb") as handle:
        return handle.read(4) == GGUF_MAGIC
