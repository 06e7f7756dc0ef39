"""Valid baseline records, for the tests of the store and of the merge CLI; history runs, for the
tests of the history store and of the report's trend plots."""

import uuid

from pytest_slm.history.database import Measure, RunRecord
from pytest_slm.store.baselines import SCHEMA_VERSION
from pytest_slm.tasks.catalog import TASK_PARTS


def baseline_record(accuracy=0.5, date="2026-11-22", **changes):
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "accuracy",
        "model": "smollm2-135m",
        "device": "llamacpp-cpu",
        "quant": "native",
        "task": "slm_arith",
        "shots": 5,
        "metric": "exact_match",
        "accuracy": accuracy,
        "n": 2,
        "outcomes": {"00000": 1, "00001": 1 if accuracy == 1.0 else 0},
        "task_fingerprint": {part: f"{part}-sha256" for part in TASK_PARTS},
        "tokens_sha256": "t",
        "provenance": {"date": date, "lm_eval": "0.4.13"},
        **changes,
    }


def latency_record(decode_seconds=1.3, **changes):
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "latency",
        "model": "smollm2-135m",
        "device": "llamacpp-cpu",
        "quant": "native",
        "fingerprint": {"cpu": "Example CPU", "threads": 2, "accelerator": "none", "os": "Linux x86_64"},
        "metrics": {"decode": {"seconds": [decode_seconds] * 5, "tokens": 128}},
        "provenance": {"date": "2026-11-22"},
        **changes,
    }


def make_run(
    started: str, decode: float = 100.0, accuracy: dict[str, int] | None = None, commit: str | None = "abc1234"
) -> RunRecord:
    outcomes = accuracy if accuracy is not None else {f"{i:02d}": int(i % 2 == 0) for i in range(40)}
    item = "m-llamacpp-cpu-native-slm_facts:0"
    measures = [
        Measure("items", item, "accuracy", sum(outcomes.values()) / len(outcomes), "share", None, "pass"),
        Measure("runtime", "m-llamacpp-cpu-native", "decode", decode, "tok/s", 0.01, "pass", "linux-2t-x"),
    ]
    return RunRecord(
        run_id=uuid.uuid4().hex,
        started=started,
        finished=started,
        host="h",
        git_commit=commit,
        git_branch="main",
        git_dirty=False,
        pytest_slm="0",
        versions={"pytest": "9"},
        settings={"alpha": 0.05, "min_drop_points": 1.0, "latency_tolerances": {"*": 0.1}, "latency_k": 3.0},
        exitstatus=0,
        measures=measures,
        rows=[("items", {"item": item})],
        outcomes={item: outcomes},
        fingerprints={"linux-2t-x": {"cpu": "c"}},
    )
