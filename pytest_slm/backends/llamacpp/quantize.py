"""Derived model files: a GGUF rewritten by llama.cpp's own quantizer, built once per content.

Named by what they are made from (source content, target type, llama.cpp version), so a new
source or a new llama.cpp builds anew and an old file is never reused by mistake. Safe when several
pytest-xdist workers ask at once (one builds under a lock beside the file, the others wait and
reuse) and after a crash: built under a temporary name, renamed when complete; a temporary that a
killed build left is removed by the next one to take the lock. Files are created with the default
mode, so they follow the umask like the rest of a shared cache.

A cache that proves what it holds: the SHA-256 of every file is recorded beside it when it is made
and checked before each use, so a file changed after it was made (a disk error, a crash during an
old copy, anything else that wrote to a shared cache) is rebuilt, never trusted because its size
looks right. Checking is cheap on repeat: the record keeps the file's inode, size, mtime and ctime
at its last full check, and the file is hashed again only when one of them changed (ctime cannot be
set back by a writer, as mtime can).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

from filelock import FileLock

from ...registry import GGUF_MAGIC
from ..base import BackendError

# quant name -> llama.cpp file type. `f32` is exact for every ggml block type, so it is the
# reference other quantizations and runtimes are compared with; the rest is the ladder a team
# chooses from (llama.cpp falls back to a near type for a tensor whose rows a K-quant cannot split).
LLAMA_FTYPES = {
    "f32": "LLAMA_FTYPE_ALL_F32",
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
}


def content_digest(path: Path) -> str:
    """A source GGUF's SHA-256, once per process while its size and mtime hold (a derived file's
    key and the fidelity reference's key both name it)."""
    stat = path.stat()
    return _content_digest(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=None)
def _content_digest(path: Path, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def derived_gguf(
    source: Path, quant: str, cache_dir: Path, progress: Callable[[str], None] = lambda line: None
) -> Path:
    """The cached `quant` version of `source`, built with llama_model_quantize when missing or bad;
    `progress` hears about a build, which takes seconds to minutes."""
    import llama_cpp

    key = hashlib.sha256(
        f"{content_digest(source)}:{quant}:{llama_cpp.__version__}".encode()
    ).hexdigest()[:16]
    target = cache_dir / f"{source.stem}.{quant}.{key}.gguf"
    record = target.with_suffix(".json")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            for leftover in _temporaries(target, record):  # their writers held this lock: they are dead
                progress(f"removing {leftover.name}, left in the cache by an interrupted build")
                leftover.unlink(missing_ok=True)
            problem = _verify(target, record)
            if problem is None:
                return target
            if target.exists():
                progress(f"{target.name} in the cache {problem}: rebuilding it")
                target.unlink()
            progress(f"making {quant} of {source.name} with llama.cpp's quantizer (once: cached in {cache_dir})")
            started = time.perf_counter()
            _quantize(llama_cpp, source, target, quant)
            progress(f"made {quant} of {source.name} in {time.perf_counter() - started:.1f} s")
            digest = file_sha256(target)
            _write_record(record, {"source": str(source), "quant": quant, "sha256": digest, **_stamp(target)})
    except OSError as exc:
        raise BackendError(f"cannot build {quant} of {source.name} in the cache {cache_dir}: {exc}") from None
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> dict[str, int]:
    """What changes whenever the file's bytes can have: checked before trusting the last hash."""
    stat = path.stat()
    return {"inode": stat.st_ino, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}


def _verify(target: Path, record: Path) -> str | None:
    """None when `target` holds what its record says; else why not, for the line the user reads.
    A record's stamp is refreshed after a full hash that matched, so the next check is a stat."""
    try:
        fields = json.loads(record.read_text(encoding="utf-8"))
        expected, size = fields["sha256"], fields["size"]
        if not (isinstance(expected, str) and isinstance(size, int)):
            return "has an unreadable record"
        with target.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC or target.stat().st_size != size:
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


def _write_record(record: Path, fields: dict[str, object]) -> None:
    temporary = _temporary(record)
    try:
        temporary.write_text(json.dumps(fields), encoding="utf-8")
        os.replace(temporary, record)
    finally:
        temporary.unlink(missing_ok=True)


def _quantize(llama_cpp, source: Path, target: Path, quant: str) -> None:
    temporary = _temporary(target)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_FTYPES[quant])
    params.allow_requantize = True  # the source may itself be quantized: dequantize, then convert
    params.nthread = max(1, os.cpu_count() or 1)
    try:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(temporary).encode(), params)
        if status != 0 or not temporary.exists():
            raise BackendError(f"llama.cpp could not make {quant} from {source.name} (status {status})")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
