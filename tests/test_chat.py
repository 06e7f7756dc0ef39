"""`slm_model.chat`: the model's own chat template, the same prompt on llama.cpp and MLX, its
end-of-turn as the stop, and a one-line skip or failure where a chat cannot be had."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_slm.models import chat
from pytest_slm.models.registry import load_registry

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

ROOT = Path(__file__).resolve().parents[1]
KEY = b"tokenizer.chat_template"

# SmolLM2's own template (GGUF tokenizer.chat_template) adds its default system turn before a
# conversation that has none.
SMOLLM2_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
)

USER_TESTS = """
import json
from pathlib import Path

CONVERSATION = [{"role": "user", "content": "What is 2+2?"}]


def test_chat(slm_model, slm_case):
    rendered = slm_model.render_chat(CONVERSATION)
    replies = slm_model.chat_many([CONVERSATION, CONVERSATION], max_tokens=12)
    record = {
        "rendered": rendered,
        "tokens": slm_model.tokenize(rendered),
        "stop": list(slm_model.end_of_turn()),
        "reply": slm_model.chat(CONVERSATION, max_tokens=12),
        "replies": replies,
        "cut": slm_model.chat(CONVERSATION, max_tokens=12, stop=[" "]),
    }
    Path(slm_case.model_id + ".json").write_text(json.dumps(record))


def test_a_conversation_as_a_string(slm_model):
    slm_model.chat("What is 2+2?")


def test_roles_the_template_refuses(slm_model):
    slm_model.chat([{"role": "user"}])
"""


def without_template(source: Path, target: Path) -> Path:
    """The embedded model with its template key renamed (same length, so the GGUF stays valid):
    a model that has no chat template."""
    data = source.read_bytes()
    assert data.count(KEY) == 1
    target.write_bytes(data.replace(KEY, KEY[:-1] + b"X"))
    return target


def test_chat_renders_the_models_own_template_identically_on_both_runtimes(pytester: pytest.Pytester):
    shutil.copy(ROOT / "suites" / "models.toml", pytester.mkdir("suites") / "models.toml")
    gguf = load_registry(ROOT / "suites" / "models.toml")["smollm2-135m"].gguf_path()
    plain = without_template(gguf, pytester.path / "smollm2-plain.gguf")
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_inprocess(
        f"--slm-models=smollm2-135m,{plain}", "--slm-devices=llamacpp-cpu,mlx-cpu", "--slm-threads=1", "-rfs"
    )
    # the embedded model chats on both runtimes; bad conversations fail in one line each
    result.assert_outcomes(passed=2, failed=4, skipped=6)
    result.stdout.fnmatch_lines_random(
        [
            (
                "smollm2-135m-llamacpp-cpu-native: a conversation is a non-empty list of {'role': ..., 'content': ...} messages,"
                " got 'What is 2+2?'"
            ),
            "smollm2-135m-mlx-cpu-native: message 0 (user) needs a 'content' string, got None",
            "SKIPPED * smollm2-plain-llamacpp-cpu-native has no chat template (GGUF tokenizer.chat_template*",
            "SKIPPED * smollm2-plain-mlx-cpu-native has no chat template (GGUF tokenizer.chat_template*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    llama = json.loads((pytester.path / "smollm2-135m-llamacpp-cpu-native.json").read_text())
    mlx = json.loads((pytester.path / "smollm2-135m-mlx-cpu-native.json").read_text())
    assert llama["rendered"] == mlx["rendered"] == SMOLLM2_PROMPT
    assert llama["tokens"] == mlx["tokens"]
    assert llama["tokens"][:2] == [1, 9690]  # <|im_start|> once (this GGUF adds no BOS of its own), then "system"
    assert llama["stop"] == mlx["stop"] == ["<|im_end|>"]
    for side in (llama, mlx):
        assert side["reply"] and "<|im_" not in side["reply"]
        assert side["replies"] == [side["reply"], side["reply"]]  # batched like one at a time
        assert side["cut"] == side["reply"].split(" ")[0]  # a given stop replaces the end-of-turn


def test_render_matches_the_reference_renderers_on_features_templates_use():
    """trim_blocks/lstrip_blocks, loop controls, tojson keeping non-ASCII, bos/eos strings."""
    template = (
        "{{ bos_token }}{% for m in messages %}\n"
        "  {% if m.role == 'tool' %}{% continue %}{% endif %}\n"
        "[{{ m.role }}] {{ m.content | tojson }}{{ eos_token }}\n"
        "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    messages = [{"role": "user", "content": "café"}, {"role": "tool", "content": "x"}]
    assert chat.render(template, messages, "<s>", "</s>") == '<s>[user] "café"</s>\n[assistant] '


def test_a_template_that_raises_is_one_line():
    template = "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    with pytest.raises(
        chat.ChatError, match=r"^the chat template refused the conversation: Conversation roles must alternate"
    ):
        chat.render(template, [{"role": "user", "content": "hi"}], "", "")


def test_the_sandbox_refuses_what_a_template_should_not_reach():
    with pytest.raises(chat.ChatError, match="refused"):
        chat.render(
            "{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}",
            [{"role": "u", "content": ""}],
            "",
            "",
        )


def test_end_of_turn_texts_follow_the_template():
    assert chat.end_of_turn_texts("...<|im_end|>...", "<|im_end|>") == ("<|im_end|>",)
    assert chat.end_of_turn_texts("...<|eot_id|>...", "<|end_of_text|>") == ("<|end_of_text|>", "<|eot_id|>")
    assert chat.end_of_turn_texts("...<end_of_turn>...", "<eos>") == ("<eos>", "<end_of_turn>")
