"""Item kinds and the one core check they all go through (`core`): each kind says what its
baseline key, record and schema are, how it measures and how it judges; nothing else."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..measure.machine import Fingerprint
from ..store.baselines import BaselineError
from .accuracy import validate_accuracy
from .core import RecordError, non_finite, require
from .fidelity import validate_fidelity
from .runtime import validate_latency, validate_memory

SCHEMAS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "accuracy": validate_accuracy,
    "fidelity": validate_fidelity,
    "latency": validate_latency,
    "memory": validate_memory,
}


def file_name(record: Mapping[str, Any]) -> str:
    """Where under <model>/<device>/<quant>/ a valid record belongs, from its own fields."""
    kind = record["kind"]
    if kind == "accuracy":
        return f"{require(record, 'task', str)}-{require(record, 'shots', int)}shot.json"
    if kind == "fidelity":
        return "fidelity.json"
    try:
        slug = Fingerprint(**require(record, "fingerprint", dict)).slug
    except TypeError:
        raise RecordError(f"field 'fingerprint' needs exactly {', '.join(Fingerprint.__dataclass_fields__)}") from None
    name = "memory" if kind == "memory" else _latency_item(record["metrics"])
    return f"runtime/{slug}/{name}.json"


def _latency_item(metrics: Mapping[str, Any]) -> str:
    """The latency item a record's metrics belong to: `decode` (at any depth: `decode@d512`),
    `load` (`load.cold`, `load.warm`, `ttft.cold@128`), else `prefill`."""
    families = {metric.split("@")[0].split(".")[0] for metric in metrics}
    return "decode" if "decode" in families else "load" if "load" in families else "prefill"


def validate_record(record: Mapping[str, Any], path: Path, relative: Path) -> None:
    """A stored record checked whole without its item at hand (the merge CLI): its kind's schema,
    and the model, device and quant its place in the tree says (`<model>/<device>/<quant>/...`)."""
    try:
        kind = record.get("kind")
        if kind not in SCHEMAS:
            raise RecordError(f"field 'kind' is {kind!r}, not one of {', '.join(SCHEMAS)}")
        for name, expected in zip(("model", "device", "quant"), relative.parts):
            if record.get(name) != expected:
                raise RecordError(f"field {name!r} is {record.get(name)!r}, but the file lies under {expected!r}")
        require(record, "provenance", dict)
        SCHEMAS[kind](record)
        if (expected_name := file_name(record)) != "/".join(relative.parts[3:]):
            raise RecordError(
                f"a {kind} record of this item lives at {expected_name}, not {'/'.join(relative.parts[3:])}"
            )
        if (where := non_finite(record)) is not None:
            raise RecordError(f"field {where!r} is not a finite number")
    except RecordError as exc:
        raise BaselineError(f"baseline {path}: {exc}") from None
