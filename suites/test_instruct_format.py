"""Tests written the way a team shipping an app would: the instruct model must keep answering what
the app relies on, in the shape the app parses, on every model, device and quantization. They talk
to the model through its own chat template (`slm_model.chat`), so they hold for any model that has one."""

import re

import pytest

# Measured (docs/notes/kv-cache-types.md): with a q8_0 KV cache the embedded model's first token
# flips and it answers in French, without Paris ("La femme de France, ..."; with q4_0 it rambles in
# French too, but names Paris). Strict, like the quants below. Model, quant, KV cache type:
KV_LOSES_THE_CAPITAL = {("smollm2-135m", "native", "q8_0")}


def test_answers_capital_question(slm_model, request):
    if (slm_model.case.model, slm_model.case.quant, slm_model.case.kv) in KV_LOSES_THE_CAPITAL:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"a {slm_model.case.kv} KV cache loses the answer"))
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    answer = slm_model.chat(conversation, max_tokens=32)
    assert "Paris" in answer


# Measured (README, "The quantization ladder"): these quants of the embedded model answer without
# the "- item" lines. Strict: the day one of them follows the format again, the suite says so.
DROPS_THE_BULLET_FORMAT = {"q4_0", "q2_k"}
KV_DROPS_THE_BULLET_FORMAT = {("smollm2-135m", "native", "q4_0")}  # "1. Red - 1" (docs/notes/kv-cache-types.md)


def test_lists_three_colours_as_bullets(slm_model, request):
    case = slm_model.case
    if case.quant in DROPS_THE_BULLET_FORMAT or (case.model, case.quant, case.kv) in KV_DROPS_THE_BULLET_FORMAT:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{case.variant} drops the bullet format"))
    answer = slm_model.chat(
        [{"role": "user", "content": "Name three colours as a list with '- ' bullets."}], max_tokens=40
    )
    bullets = re.findall(r"^- (\w+)$", answer, flags=re.MULTILINE)
    assert len(bullets) == 3, answer
