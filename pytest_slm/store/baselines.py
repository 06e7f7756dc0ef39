"""The baseline store: one small JSON file per item, read strictly, written atomically under a lock."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from .atomic import write_text_atomic

SCHEMA_VERSION = 1
COMMON_FIELDS = {
    "schema_version": int,
    "kind": str,
    "model": str,
    "device": str,
    "quant": str,
    "provenance": dict,
}
# what each kind of item stores besides the common fields
KIND_FIELDS = {
    "accuracy": {
        "task": str,
        "shots": int,
        "metric": str,
        "accuracy": float,
        "n": int,
        "outcomes": dict,
        "prompts_sha256": str,
        "tokens_sha256": str,
    },
    "latency": {"fingerprint": dict, "metrics": dict},
    "memory": {"fingerprint": dict, "weights_bytes": int, "kv_bytes_per_token": int},
    "fidelity": {"reference": str, "tokens": int, "mean_kld": float, "p99_kld": float, "top1_agreement": float},
}


class BaselineError(Exception):
    """A baseline file is unreadable or malformed; one line naming the file."""


@dataclass(frozen=True)
class BaselineKey:
    """Where one item's record lives: baselines/<model>/<device>/<quant>/<name>.json, named for humans."""

    model: str
    device: str
    quant: str
    name: str  # "slm_arith-5shot"; "runtime/<fingerprint>/decode"

    @property
    def relative_path(self) -> Path:
        return Path(self.model, self.device, self.quant, f"{self.name}.json")


class BaselineStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: BaselineKey) -> Path:
        return self.root / key.relative_path

    def read(self, key: BaselineKey) -> dict[str, Any] | None:
        """The stored record, None when there is none; BaselineError when it cannot be trusted."""
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise BaselineError(f"cannot read baseline {path}: {exc}") from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BaselineError(f"baseline {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        validate(record, path)
        return record

    def write(self, key: BaselineKey, record: dict[str, Any]) -> bool:
        """Write atomically under the store's lock; returns whether the file changed.

        A refresh that measures the same thing leaves the file (and its date) untouched, so a
        baseline pull request shows only real changes.
        """
        path = self.path(key)
        text = dumps(record)
        with FileLock(lock_path(self.root)):
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
            if old is not None and without_date(old) == without_date(record):
                return False
            write_text_atomic(path, text)
        return True


def validate(record: object, path: Path) -> None:
    if not isinstance(record, dict):
        raise BaselineError(f"baseline {path} is not a JSON object")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BaselineError(
            f"baseline {path} has schema version {version!r}, this pytest-slm reads {SCHEMA_VERSION}"
            " (refresh it with --update-baselines)"
        )
    kind = record.get("kind")
    if kind not in KIND_FIELDS:
        raise BaselineError(f"baseline {path}: kind {kind!r} is not one of {', '.join(KIND_FIELDS)}")
    for name, expected in {**COMMON_FIELDS, **KIND_FIELDS[kind]}.items():
        value = record.get(name)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or isinstance(value, bool):
            raise BaselineError(f"baseline {path}: field {name!r} is missing or not a {expected.__name__}")
    if kind == "accuracy" and not all(v in (0, 1) for v in record["outcomes"].values()):
        raise BaselineError(f"baseline {path}: outcomes must be 0 or 1 per sample")


def dumps(record: dict[str, Any]) -> str:
    """Stable text: sorted keys, one value per line, so a refresh is a readable diff."""
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def lock_path(root: Path) -> str:
    """Outside the baselines directory, so no lock file is ever committed with the baselines."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"pytest-slm-baselines-{digest}.lock")


def writable_dir_problem(root: Path) -> str | None:
    """Why baselines cannot be written under `root`, checked before any item runs."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"baselines path {probe} is not a directory"
    try:  # a real write: permission bits say nothing to root, or on a read-only mount
        with tempfile.TemporaryFile(dir=probe):
            return None
    except OSError as exc:
        return f"baselines directory {probe} is not writable ({exc.strerror})"


def without_date(record: object) -> object:
    """What a record measured: a refresh that changes only its provenance date is no change."""
    if isinstance(record, dict) and isinstance(record.get("provenance"), dict):
        provenance = {k: v for k, v in record["provenance"].items() if k != "date"}
        return {**record, "provenance": provenance}
    return record
