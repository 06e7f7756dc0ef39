"""An app's own checks across the matrix: an answer the app parses as JSON (50 prompts, judged as
an accuracy item), and one answer the app shows as it is (judged against its recorded outcome)."""

import json

from pytest_slm import prompt_set


def replies_with_json(answer, sample):
    """The app reads the reply's first JSON object, and the sample's key in it."""
    try:
        value, _ = json.JSONDecoder().raw_decode(answer.strip())
    except ValueError:
        return False
    return isinstance(value, dict) and sample["key"] in value


test_json_answers = prompt_set("json_answers.jsonl", replies_with_json, max_tokens=48)


def test_names_the_capital(slm_model):
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert "Paris" in slm_model.chat(conversation, max_tokens=32)
