"""Runtime baselines keyed by the runtime's version (pytest-slm before the upgrade loop) moved to
keys of the hardware alone: `runtime/<slug>/` where the fingerprint no longer holds the runtime,
which moves to the record's provenance (`runtime_build`), compared across, never a key. The
figures are not touched: only the fingerprint's `runtime` field and the directory change."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .baselines import BaselineError, dumps, loads, root_lock, writable_dir_problem

LEGACY_FIELD = "runtime"
COMMAND = "python -m pytest_slm migrate-baselines"


def start_up_problem(root: Path, update: bool) -> str | None:
    """Why a run cannot use the baselines tree, checked before any item runs: a tree an update cannot
    write, or runtime baselines still keyed by the runtime's version (an upgrade would find none)."""
    if update and (problem := writable_dir_problem(root)):
        return f"--update-baselines: {problem}"
    if legacy := next(legacy_records(root), None):
        return (
            f"{legacy[0]}: runtime baselines are keyed by the runtime's version (an older pytest-slm), so an upgrade"
            f" would find none: move them to keys of the hardware with: {COMMAND} {root}"
        )
    return None


def legacy_records(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Runtime records under `root` whose fingerprint still holds the runtime."""
    for path in sorted(root.glob("*/*/*/runtime/*/*.json")):
        try:
            record = loads(path.read_text(encoding="utf-8"), path)
        except (OSError, UnicodeDecodeError, BaselineError):
            continue  # the item reading it says what is wrong with it
        fingerprint = record.get("fingerprint") if isinstance(record, dict) else None
        if isinstance(fingerprint, dict) and LEGACY_FIELD in fingerprint:
            yield path, record


def migrated(path: Path, record: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Where the record belongs now, and the record with its runtime moved to its provenance."""
    fingerprint = {k: v for k, v in record["fingerprint"].items() if k != LEGACY_FIELD}
    provenance = {"runtime_build": record["fingerprint"][LEGACY_FIELD], **record.get("provenance", {})}
    slug = _slug(fingerprint)
    return path.parent.parent / slug / path.name, {**record, "fingerprint": fingerprint, "provenance": provenance}


def _slug(fingerprint: dict[str, Any]) -> str:
    """runtime.Fingerprint.slug, without importing the runtime-facing module into the store."""
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:10]
    return f"{str(fingerprint['os']).lower().replace(' ', '-')}-{fingerprint['threads']}t-{digest}"


def migrate_tree(root: Path) -> list[tuple[Path, Path]]:
    """Move every legacy record of `root`, under the store's lock; (old, new) per file. Two records
    that land on one key (the same hardware measured under two runtime versions) are a conflict:
    BaselineError naming both, and nothing is moved."""
    with root_lock(root):
        plan = [(path, *migrated(path, record)) for path, record in legacy_records(root)]
        targets: dict[Path, Path] = {}
        for old, new, _ in plan:
            if new in targets or (new.exists() and new not in {o for o, _, _ in plan}):
                other = targets.get(new, new)
                raise BaselineError(
                    f"{old} and {other} both become {new} without the runtime in the key: keep one, then migrate"
                )
            targets[new] = old
        for old, new, record in plan:
            write_text_atomic(new, dumps(record))
            old.unlink()
            if not any(old.parent.iterdir()):
                old.parent.rmdir()
    return [(old, new) for old, new, _ in plan]
