import json
import re

import pytest
from records import baseline_record as record
from records import latency_record

from pytest_slm.store.baselines import BaselineError, BaselineKey, BaselineStore, lock_path

KEY = BaselineKey("smollm2-135m", "llamacpp-cpu", "native", "slm_arith-5shot")


def test_path_names_model_device_quant_and_task(tmp_path):
    assert BaselineStore(tmp_path).path(KEY) == tmp_path / "smollm2-135m/llamacpp-cpu/native/slm_arith-5shot.json"


def test_round_trip_and_stable_text(tmp_path):
    store = BaselineStore(tmp_path)
    assert store.read(KEY) is None
    assert store.write(KEY, record()) is True
    assert store.read(KEY) == record()
    text = store.path(KEY).read_text()
    assert text == json.dumps(record(), indent=2, sort_keys=True) + "\n"
    assert list(store.path(KEY).parent.iterdir()) == [store.path(KEY)]  # no temporary file left behind


def test_same_measurement_leaves_file_and_date_untouched(tmp_path):
    store = BaselineStore(tmp_path)
    store.write(KEY, record())
    before = store.path(KEY).read_text()
    assert store.write(KEY, record(provenance={"date": "2030-01-01", "lm_eval": "0.4.13"})) is False
    assert store.path(KEY).read_text() == before
    assert store.write(KEY, record(accuracy=0.0, outcomes={"00000": 0, "00001": 0})) is True


def test_lock_file_is_not_in_the_baselines_directory(tmp_path):
    assert not lock_path(tmp_path).startswith(str(tmp_path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON (line 1"),
        ("[1, 2]", "is not a JSON object"),
        (json.dumps(record(schema_version=99)), "has schema version 99, this pytest-slm reads 1"),
        (json.dumps(record(outcomes=None)), "field 'outcomes' is missing or not a dict"),
        (json.dumps(record(outcomes={"00000": 2})), "outcomes must be 0 or 1"),
        (json.dumps(record(kind="speed")), "kind 'speed' is not one of accuracy, latency, memory"),
        (json.dumps(latency_record(fingerprint=None)), "field 'fingerprint' is missing or not a dict"),
    ],
)
def test_corrupt_files_are_detected_with_one_line(tmp_path, text, message):
    store = BaselineStore(tmp_path)
    store.path(KEY).parent.mkdir(parents=True)
    store.path(KEY).write_text(text)
    with pytest.raises(BaselineError, match=re.escape(message)) as info:
        store.read(KEY)
    assert "\n" not in str(info.value)
    assert store.path(KEY).read_text() == text
