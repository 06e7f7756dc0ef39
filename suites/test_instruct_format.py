"""Tests written the way a team shipping an app would: the instruct model must keep answering what
the app relies on, in the shape the app parses, on every model, device and quantization. They talk
to the model through its own chat template (`slm_model.chat`), so they hold for any model that has one.

Each is judged against the outcome recorded with the baselines (`--update-baselines`): a rung that
already failed an assert when they were written is a known failure, one that passed and fails now
is a regression. What each rung did is in baselines/<model>/<device>/<quant>/outcomes/."""

import re


def test_answers_capital_question(slm_model):
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    answer = slm_model.chat(conversation, max_tokens=32)
    assert "Paris" in answer


def test_lists_three_colours_as_bullets(slm_model):
    answer = slm_model.chat(
        [{"role": "user", "content": "Name three colours as a list with '- ' bullets."}], max_tokens=40
    )
    bullets = re.findall(r"^- (\w+)$", answer, flags=re.MULTILINE)
    assert len(bullets) == 3, answer
