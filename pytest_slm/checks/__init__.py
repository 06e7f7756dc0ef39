"""Item kinds and the one core check they all go through (`core`): each kind says what its
baseline key, record and schema are, how it measures and how it judges, and (`kind.Kind`) how its
rows are reported and kept in the history. The built-in kinds are registered here, in the order a
run shows their tables."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..store.baselines import BaselineError
from .accuracy import AccuracyKind
from .core import RecordError, non_finite, require
from .fidelity import FidelityKind
from .kind import KINDS, Kind, by_record_kind, register, unregister
from .outcome_baseline import OutcomeKind
from .parity import ParityKind
from .runtime import LatencyKind, MemoryKind

__all__ = ["KINDS", "Kind", "register", "unregister", "validate_record"]

for _builtin in (AccuracyKind(), ParityKind(), FidelityKind(), LatencyKind(), MemoryKind(), OutcomeKind()):
    register(_builtin)


def validate_record(record: Mapping[str, Any], path: Path, relative: Path) -> None:
    """A stored record checked whole without its item at hand (the merge CLI): its kind's schema,
    and the model, device and quant its place in the tree says (`<model>/<device>/<quant>/...`)."""
    schemas = by_record_kind()
    try:
        kind = record.get("kind")
        if kind not in schemas:
            raise RecordError(f"field 'kind' is {kind!r}, not one of {', '.join(schemas)}")
        for name, expected in zip(("model", "device", "quant"), relative.parts):
            if record.get(name) != expected:
                raise RecordError(f"field {name!r} is {record.get(name)!r}, but the file lies under {expected!r}")
        require(record, "provenance", dict)
        schemas[kind].validate(record)
        if (expected_name := schemas[kind].file_name(record)) != "/".join(relative.parts[3:]):
            raise RecordError(
                f"a {kind} record of this item lives at {expected_name}, not {'/'.join(relative.parts[3:])}"
            )
        if (where := non_finite(record)) is not None:
            raise RecordError(f"field {where!r} is not a finite number")
    except RecordError as exc:
        raise BaselineError(f"baseline {path}: {exc}") from None
