"""A prompt set's samples read strictly, with no model: each way the file or list can be wrong is
one line naming it, said when the item runs (tests/test_prompt_sets.py runs the model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_slm import prompt_set
from pytest_slm.tasks.catalog import TaskError
from pytest_slm.tasks.prompt_set import PromptSet


def spec(source: Path | tuple[dict, ...]) -> PromptSet:
    return PromptSet("answers", source, lambda answer, sample: True, 16, None)


def test_ids_are_line_numbers_or_the_samples_own(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b", "key": 1}\n')
    assert spec(path).samples() == {"00001": {"prompt": "a"}, "00003": {"prompt": "b", "key": 1}}
    assert list(spec(({"prompt": "a", "id": "first"}, {"prompt": "b"})).samples()) == ["first", "00002"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"prompt": "a"}\n{"prompt": ', "line 2 is not JSON (Expecting value)"),
        ('{"question": "a"}\n', 'sample 1 is not an object with a non-empty "prompt" string'),
        ('["a"]\n', 'sample 1 is not an object with a non-empty "prompt" string'),
        ('{"prompt": "a", "id": 7}\n{"prompt": "b", "id": "7"}\n', "two samples have the id '7'"),
        ("\n", "no samples"),
    ],
    ids=["not-json", "no-prompt", "not-an-object", "id-twice", "empty"],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path, text, said):
    path = tmp_path / "answers.jsonl"
    path.write_text(text)
    with pytest.raises(TaskError) as raised:
        spec(path).samples()
    assert str(raised.value) == f"prompt set {path}: {said}"


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(TaskError, match=r"^prompt set .*missing.jsonl: cannot read it: .*No such file"):
        spec(tmp_path / "missing.jsonl").samples()


def test_a_file_is_found_beside_the_test_file_and_names_the_item():
    test = prompt_set("answers.jsonl", lambda answer, sample: True)
    cell = test.__closure__[0].cell_contents  # the PromptSet the test function carries
    assert cell.source == Path(__file__).parent / "answers.jsonl" and cell.name == "answers"
    assert test.pytestmark[0].name == "slm_accuracy"
