"""Valid baseline records, for the tests of the store and of the merge CLI."""

from pytest_slm.store.baselines import SCHEMA_VERSION
from pytest_slm.tasks import TASK_PARTS


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
        "fingerprint": {"cpu": "Example CPU", "threads": 2, "accelerator": "none", "os": "Linux x86_64", "runtime": "x 1"},
        "metrics": {"decode": {"seconds": [decode_seconds] * 5, "tokens": 128}},
        "provenance": {"date": "2026-11-22"},
        **changes,
    }
