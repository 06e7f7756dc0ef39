"""Tests written the way a team shipping an app would: the instruct model must keep answering what
the app relies on, in the shape the app parses, on every model, device and quantization."""

import re

import pytest

CHAT = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
END = "<|im_end|>"


def test_answers_capital_question(slm_model):
    answer = slm_model.generate(CHAT.format(question="What is the capital of France?"), max_tokens=32, stop=[END])
    assert "Paris" in answer


# Measured (README, "The quantization ladder"): these quants of the embedded model answer without
# the "- item" lines. Strict: the day one of them follows the format again, the suite says so.
DROPS_THE_BULLET_FORMAT = {"q4_0", "q2_k"}


def test_lists_three_colours_as_bullets(slm_model, request):
    if slm_model.case.quant in DROPS_THE_BULLET_FORMAT:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{slm_model.case.quant} drops the bullet format"))
    answer = slm_model.generate(
        CHAT.format(question="List three colours, separated by commas."), max_tokens=40, stop=[END]
    )
    bullets = re.findall(r"^- (\w+)$", answer, flags=re.MULTILINE)
    assert len(bullets) == 3, answer
