"""KV cache types as an axis, end to end: the embedded model on llama.cpp's CPU with a q8_0 cache
(flash attention on) gets its own accuracy, fidelity (against the f16 cache) and memory items, ids
and baseline files; its memory item expects the q8_0 cache's bytes and the runtime stores them; a
second run passes against what the first wrote. (Its latency items are the same code as every
quant's, selected out here to keep the test short.)"""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest
from projects import shipped_project

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

SUITES = ("test_accuracy.py", "test_fidelity.py", "test_runtime.py")
Q8_0_PER_TOKEN = 30 * 3 * (64 + 64) * 34 // 32  # layers x KV heads x (key + value) values, 34 bytes per 32


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """The shipped suites cut short (one task, 4 samples, the first 1500 characters of the
    evaluation text, a short decode for the memory item's peak)."""
    return shipped_project(
        pytester,
        SUITES,
        """
        slm_models = ["smollm2-135m"]
        slm_devices = ["llamacpp-cpu"]
        slm_kv_types = ["f16", "q8_0"]
        slm_threads = "1"
        slm_tasks = ["slm_facts"]
        slm_limit = "4"
        slm_eval_text = "eval.txt"
        slm_eval_window = "128"
        slm_decode_prompt = "32"
        slm_decode_tokens = "16"
        slm_history = "off"
        """,
        registry=False,
        eval_chars=1500,
    )


def test_a_q8_0_cache_gets_its_own_items_and_baselines_and_passes_against_them(project):
    options = ("-k", "kv-q8_0 and not speed", "-p", "no:cacheprovider", "--junitxml=junit.xml")
    written = project.runpytest_inprocess(*options, "--update-baselines")
    written.assert_outcomes(passed=3, deselected=7)  # the f16 cache's items are there, not selected
    root = project.path / "baselines" / "smollm2-135m" / "llamacpp-cpu"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json"))
    assert sorted(Path(f).name for f in files) == ["fidelity.json", "memory.json", "slm_facts-0shot.json"]
    assert all(f.startswith("native-kv-q8_0/") for f in files)
    fidelity = json.loads((root / "native-kv-q8_0" / "fidelity.json").read_text())
    assert fidelity["reference"] == "smollm2-135m-llamacpp-cpu-native" and fidelity["quant"] == "native-kv-q8_0"
    assert 0 < fidelity["mean_kld"] < 0.01  # a q8_0 cache moves the distributions, a little
    assert fidelity["provenance"]["kv_cache"] == "q8_0 keys and values, flash attention on"
    memory = next(json.loads(p.read_text()) for p in root.rglob("memory.json"))
    assert memory["kv_bytes_per_token"] == Q8_0_PER_TOKEN == 12240

    properties = {
        (case.get("name"), p.get("name")): p.get("value")
        for case in ElementTree.parse(project.path / "junit.xml").iter("testcase")
        for p in case.iter("property")
    }
    memory_item = "test_memory[smollm2-135m-llamacpp-cpu-native-kv-q8_0]"
    assert properties[memory_item, "kv_bytes_per_token"] == str(Q8_0_PER_TOKEN)
    assert properties[memory_item, "kv_note"] == ""  # what the runtime stores is what the layers and the type say
    assert properties[memory_item, "kv_bytes@2048"] == str(2048 * Q8_0_PER_TOKEN)
    assert "test_task_accuracy[smollm2-135m-llamacpp-cpu-native-kv-q8_0-slm_facts:0]" in {
        name for name, _ in properties
    }

    again = project.runpytest_inprocess(*options)
    assert again.parseoutcomes() == {"passed": 2, "unjudged": 1, "deselected": 7}  # 4 samples cannot fail accuracy
    again.stdout.fnmatch_lines(["*memory item*", "smollm2-135m-llamacpp-cpu-native-kv-q8_0*12240 B *pass"])


def test_mlx_skips_a_quantized_kv_cache_naming_model_backend_and_why(project):
    result = project.runpytest_inprocess("--slm-devices=mlx-cpu", "--slm-kv-types=q4_0", "-k", "memory", "-rs")
    result.assert_outcomes(skipped=1, deselected=4)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED*smollm2-135m on mlx: no q4_0 KV cache (its KV types: f16; a runtime's own KV quantization, as mlx-lm's kv_bits, is not driven by --slm-kv-types)"
        ]
    )
