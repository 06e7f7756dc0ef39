"""The page-cache eviction a cold load relies on, on real files: a clean file no process maps
leaves the cache; a mapped one cannot, and evict() says so instead of claiming a cold start."""

from __future__ import annotations

import mmap
import os

from pytest_slm.load_time import evict, mapped_model_files, resident


def written(path, size: int = 8_000_000):
    with path.open("wb") as handle:
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())  # dirty pages are not dropped: only clean ones
    path.read_bytes()
    return path


def test_an_unmapped_file_is_evicted(tmp_path):
    blob = written(tmp_path / "model.gguf")
    assert resident(blob) == 1.0
    assert evict([blob]) == ""
    assert resident(blob) <= 0.05


def test_a_mapped_file_stays_and_the_reason_is_given(tmp_path):
    blob = written(tmp_path / "model.gguf")
    with blob.open("rb") as handle, mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        sum(mapped[i] for i in range(0, len(mapped), mmap.PAGESIZE))  # map every page, as llama.cpp does
        assert evict([blob]) == "page cache kept: 100% of model.gguf still cached, mapped by a process"


def test_the_files_a_load_maps_are_found(tmp_path):
    """A derived quant's cached GGUF is the file the runtime reads: it is evicted too, found among
    the files the process maps (/proc/self/maps)."""
    blob = written(tmp_path / "model.q8_0.gguf", 1_000_000)
    assert blob not in mapped_model_files()
    with blob.open("rb") as handle, mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ):
        assert blob in mapped_model_files()
