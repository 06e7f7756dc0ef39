"""How long a model takes to load, cold (its file evicted from the page cache) and warm (repeated
loads, the file cached), and the time to its first token from a cold start: what an app's user
waits for before anything else. Each load is the item's own, never the session's shared model.

Cold means the page cache, not the process: a warm-up load first pays the process's one-time costs
(imports, the runtime's initialisation), which depend on what ran before in the session and could
be measured once only. Each cold sample evicts the files again with posix_fadvise(DONTNEED), which
needs no root but drops only pages no process maps; mincore() then says whether it worked, and
where it did not the row says "page cache kept" and why."""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..backends.base import LoadedModel
from .machine import Timing, prompt_tokens

WEIGHT_SUFFIXES = (".gguf", ".safetensors")
RESIDENT_LEFT = 0.05  # share of a file's pages still cached after eviction that still counts as cold


def model_files(*sources: Path | None) -> list[Path]:
    """The files a load reads: a GGUF, or every file of a model directory."""
    files: list[Path] = []
    for source in filter(None, sources):
        files += sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    return files


def mapped_model_files(maps: Path = Path("/proc/self/maps")) -> list[Path]:
    """Weight files this process maps now: with a model loaded, the file the runtime really reads
    (a derived quant's cached GGUF, not the model's own file), where Linux says."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return []
    paths = {Path(line.split(maxsplit=5)[5]) for line in lines if len(line.split(maxsplit=5)) == 6}
    return sorted(p for p in paths if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def resident(path: Path) -> float | None:
    """Share of `path`'s pages in the page cache (mincore on a fresh mapping, which itself reads
    nothing), or None where it cannot be asked."""
    size = path.stat().st_size
    if not size or not hasattr(os, "posix_fadvise"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    pages = -(-size // mmap.PAGESIZE)
    vector = (ctypes.c_ubyte * pages)()
    with path.open("rb") as handle:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, handle.fileno(), 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            if libc.mincore(address, size, vector) != 0:
                return None
        finally:
            libc.munmap(address, size)
    return sum(v & 1 for v in vector) / pages


def evict(files: Sequence[Path]) -> str:
    """Drop `files` from the page cache; "" when mincore confirms it, else why they are still cached."""
    if not hasattr(os, "posix_fadvise"):
        return "page cache kept: posix_fadvise is not available here"
    for path in files:
        with path.open("rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    left = [(path, resident(path)) for path in files]
    if any(share is None for _, share in left):
        return "page cache kept?: mincore cannot say whether the eviction worked"
    cached = [(path, share) for path, share in left if share is not None and share > RESIDENT_LEFT]
    if cached:
        path, share = cached[0]
        return f"page cache kept: {100 * share:.0f}% of {path.name} still cached, mapped by a process"
    return ""


def measure_load(
    load: Callable[[], LoadedModel], files: Sequence[Path], text_tokens: Sequence[int], prompt_length: int, repeats: int
) -> tuple[list[Timing], str]:
    """`load.cold` and `ttft.cold` (load, then the first token of a `prompt_length`-token prompt),
    each from `repeats` cold starts (an eviction before each), and `load.warm` from `repeats` loads
    of the cached file, after a warm-up load; and "" or why the cold starts may not have been cold."""
    prompt = prompt_tokens(text_tokens, prompt_length)
    load().close()  # warm-up: the process's one-time costs
    cold, first_token, notes = [], [], set()
    for _ in range(repeats):
        notes.add(evict(files))
        started = time.perf_counter()
        model = load()
        cold.append(time.perf_counter() - started)
        first_token.append(cold[-1] + model.timed_decode(prompt, 2)[0])
        model.close()
    warm = []
    for _ in range(repeats):
        started = time.perf_counter()
        model = load()
        warm.append(time.perf_counter() - started)
        model.close()
    timings = [
        Timing("load.cold", tuple(cold), 0),
        Timing("load.warm", tuple(warm), 0),
        Timing(f"ttft.cold@{prompt_length}", tuple(first_token), 0),
    ]
    return timings, "; ".join(sorted(filter(None, notes)))
