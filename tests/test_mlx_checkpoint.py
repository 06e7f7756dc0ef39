"""An MLX checkpoint directory by path on the command line, made offline from the embedded model:
its items run on mlx-cpu, its chat uses the tokenizer's own template, llama.cpp items skip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pytest_slm.registry import BUILTIN_REGISTRY, load_registry

USER_TEST = """
import json
from pathlib import Path

def test_chat(slm_model, slm_case):
    conversation = [{"role": "user", "content": "What is 2+2?"}]
    record = {"rendered": slm_model.render_chat(conversation), "reply": slm_model.chat(conversation, max_tokens=8)}
    Path(slm_case.model_id + ".json").write_text(json.dumps(record))
"""


def mlx_checkpoint(directory: Path) -> Path:
    """The embedded model saved in mlx-lm's format (float16 weights, its tokenizer and chat template)."""
    import mlx.core as mx
    from mlx_lm.utils import save_model

    from pytest_slm.backends.mlx import gguf_import

    gguf = load_registry(BUILTIN_REGISTRY)["smollm2-135m"].gguf_path()
    _, meta = mx.load(str(gguf), return_metadata=True)
    imported, _ = gguf_import.load_gguf(gguf, "f16")
    directory.mkdir()
    save_model(directory, imported)
    config = {k: v for k, v in dataclasses.asdict(imported.args).items() if k != "layer_types"}
    (directory / "config.json").write_text(json.dumps(config))
    gguf_import.gguf_tokenizer(meta, gguf.name).save(str(directory / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "chat_template": str(meta["tokenizer.chat_template"]),
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory


def test_an_mlx_checkpoint_directory_runs_by_path(pytester: pytest.Pytester):
    pytest.importorskip("mlx_lm")
    checkpoint = mlx_checkpoint(pytester.path / "smollm2-mlx")
    pytester.makepyfile(test_app=USER_TEST)
    result = pytester.runpytest_subprocess(f"--slm-models={checkpoint}", "--slm-devices=mlx-cpu,llamacpp-cpu", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*smollm2-mlx-llamacpp-cpu-native*has no GGUF file for llama.cpp*"])
    record = json.loads((pytester.path / "smollm2-mlx-mlx-cpu-native.json").read_text())
    assert record["rendered"].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert record["rendered"].endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert record["reply"] and "<|im_" not in record["reply"]


def test_a_directory_that_is_not_a_checkpoint_is_one_line(pytester: pytest.Pytester):
    pytester.mkdir("not-a-model")
    result = pytester.runpytest_subprocess("--slm-models=not-a-model")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: */not-a-model is a directory but not an MLX checkpoint (it needs config.json and *.safetensors weights)"]
    )
