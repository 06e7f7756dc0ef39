"""The page-cache eviction a cold load relies on, on real files: a clean file no process maps
leaves the cache; a mapped one cannot, and evict() says so instead of claiming a cold start. And a
cold figure measured with the cache kept is never judged against an evicted baseline (it could
only pass), nor the reverse."""

from __future__ import annotations

import mmap
import os

from pytest_slm.checks.runtime import LatencyCheck, LatencyRun, LatencySettings
from pytest_slm.matrix import Case
from pytest_slm.measure.cold_load import evict, mapped_model_files, resident
from pytest_slm.measure.machine import Fingerprint, Timing


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


KEPT = "page cache kept: 98% of model.gguf still cached, mapped by a process"


def load_check(confirmation: LatencyRun | None = None) -> LatencyCheck:
    machine = Fingerprint("cpu", 2, "none", "Linux")
    rounds = iter([confirmation] if confirmation else [])
    return LatencyCheck(
        Case("m", "llamacpp-cpu", "native"), "load", machine, LatencySettings({"*": 0.1}, 3.0), rounds.__next__
    )


def load_run(cold: float, warm: float, note: str = "") -> LatencyRun:
    timings = (Timing("load.cold", (cold,) * 5, 0), Timing("load.warm", (warm,) * 5, 0))
    return LatencyRun(timings, 1.0, notes={"load.cold": note} if note else {})


def baseline(note: str = "") -> dict:
    record = load_check().record(load_run(1.0, 0.5, note))
    return {
        **record,
        "metrics": {m: {"seconds": [t] * 5, "tokens": 0} for m, t in (("load.cold", 1.0), ("load.warm", 0.5))},
    }


def test_a_kept_cache_is_not_judged_against_an_evicted_baseline():
    verdict = load_check().judge(load_run(0.2, 0.5, KEPT), baseline())
    assert verdict.failure is None and verdict.not_judged
    reason, message = verdict.not_judged
    assert reason == "unlike conditions"
    assert message.startswith(f"m-llamacpp-cpu-native: load.cold: not judged (now {KEPT}; the baseline's: evicted)")
    assert [(row.metric, row.verdict) for row in verdict.rows] == [("load.cold", "not judged"), ("load.warm", "pass")]
    assert load_check().judge(load_run(0.2, 0.5), baseline(KEPT)).not_judged  # the reverse too


def test_like_conditions_are_judged_and_a_slower_warm_load_still_fails():
    assert load_check().judge(load_run(1.0, 0.5, KEPT), baseline(KEPT)).not_judged is None
    slower_cold = load_run(2.0, 0.5)
    assert "load.cold" in (load_check(slower_cold).judge(slower_cold, baseline()).failure or "")
    slower_warm = load_run(0.2, 1.0, KEPT)
    failure = load_check(slower_warm).judge(slower_warm, baseline()).failure or ""
    assert "load.warm" in failure and "load.cold:" not in failure
