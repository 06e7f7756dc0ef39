"""The baseline store: one small JSON file per item, read strictly, written atomically under a lock.

The store owns where a record lives and its envelope (a JSON object with a `schema_version`);
what each kind of record holds is checked by the item that reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from .atomic import directory_problem, write_text_atomic

SCHEMA_VERSION = 3  # 2: accuracy records fingerprint the task whole (task_fingerprint); 3: fidelity records carry llama-perplexity's statistics
# Records this pytest-slm still reads, as they are: a schema-2 record is a schema-3 one without the
# fidelity statistics added in 3, and the item that reads it says which of them it lacks.
OLDEST_READABLE = 2
LOCK_NAME = ".pytest-slm.lock"


class BaselineError(Exception):
    """A baseline file is unreadable, malformed or unsafe to write; one line naming the file."""


@dataclass(frozen=True)
class BaselineKey:
    """Where one item's record lives: baselines/<model>/<device>/<quant>/<name>.json, named for humans
    (`quant`: a Case's variant, `native-kv-q8_0` with a quantized KV cache)."""

    model: str
    device: str
    quant: str
    name: str  # "slm_arith-5shot"; "runtime/<fingerprint>/decode"

    @property
    def relative_path(self) -> Path:
        """The path under the root; BaselineError when a part could climb out of it or is not a name."""
        for field, value in (("model", self.model), ("device", self.device), ("quant", self.quant)):
            _check_component(field, value, value)
        for part in self.name.split("/"):
            _check_component("name", self.name, part)
        return Path(self.model, self.device, self.quant, f"{self.name}.json")


def _check_component(field: str, value: str, part: str) -> None:
    """Model names come from users' registries and file names: none may steer a write elsewhere."""
    if part in ("", ".", "..") or "/" in part or "\\" in part or "\0" in part:
        raise BaselineError(f"unsafe baseline key: {field} {value!r} is not a relative path of plain names")


class BaselineStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: BaselineKey) -> Path:
        """The record's file, refused when it (through a symlink in the tree) lies outside the root."""
        path = self.root / key.relative_path
        try:
            root, resolved = self.root.resolve(), path.resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise BaselineError(f"cannot resolve baseline {path}: {one_line_reason(exc)}") from None
        if not resolved.is_relative_to(root):
            raise BaselineError(f"baseline {path} resolves to {resolved}, outside {root}")
        return path

    def read(self, key: BaselineKey) -> dict[str, Any] | None:
        """The stored record, None when there is none; BaselineError when its envelope cannot be trusted."""
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise BaselineError(f"cannot read baseline {path}: {one_line_reason(exc)}") from None
        record: dict[str, Any] = loads(text, path)
        check_envelope(record, path)  # a dict, or BaselineError
        return record

    def read_existing(self, key: BaselineKey) -> dict[str, Any] | None:
        """What an update would replace: None when missing, corrupt or older (all of which an update
        overwrites); BaselineError for a newer schema, which this pytest-slm must not downgrade."""
        try:
            return self.read(key)
        except NewerSchemaError:
            raise
        except BaselineError:
            return None

    def write(self, key: BaselineKey, record: dict[str, Any]) -> bool:
        """Write atomically under the store's lock; returns whether the file changed.

        A refresh that measures the same thing leaves the file (and its date) untouched, so a
        baseline pull request shows only real changes.
        """
        path = self.path(key)
        text = dumps(record)
        with self.lock():
            target_problem(path, self.root)
            old = self.read_existing(key)
            if old is not None and without_date(old) == without_date(record):
                return False
            try:
                write_text_atomic(path, text)
            except OSError as exc:
                raise BaselineError(f"cannot write baseline {path}: {one_line_reason(exc)}") from None
        return True

    def lock(self) -> FileLock:
        """The writers' lock, beside what it protects; reading takes none, so a read-only run
        creates nothing in the tree."""
        return root_lock(self.root)


class NewerSchemaError(BaselineError):
    """Written by a newer pytest-slm: never read as if it were ours, never overwritten."""


def root_lock(root: Path) -> FileLock:
    """The lock every writer of the tree under `root` takes (an update, a merge); creates `root`."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BaselineError(f"cannot create baselines directory {root}: {one_line_reason(exc)}") from None
    return FileLock(str(root / LOCK_NAME))


def check_envelope(record: object, path: Path) -> None:
    """What the store itself needs to trust a file: an object with this pytest-slm's schema version."""
    if not isinstance(record, dict):
        raise BaselineError(f"baseline {path} is not a JSON object")
    version = record.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BaselineError(f"baseline {path} has no integer schema_version: refresh it with --update-baselines")
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"baseline {path} was written by a newer pytest-slm (schema {version}; this one reads"
            f" {SCHEMA_VERSION}): upgrade pytest-slm"
        )
    if version < OLDEST_READABLE:
        raise BaselineError(
            f"baseline {path} has schema {version}, this pytest-slm reads {SCHEMA_VERSION}:"
            " refresh it with --update-baselines"
        )


def loads(text: str, path: Path) -> Any:
    """JSON as a baseline must be: no NaN or Infinity (every comparison with NaN is false) and no
    key twice (the last one would win silently: two outcomes for one sample)."""

    def no_constant(name: str) -> Any:
        raise BaselineError(f"baseline {path} holds {name}, which is not a number a verdict can use")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        record = dict(pairs)
        if len(record) != len(pairs):
            twice = sorted({k for k, _ in pairs if [key for key, _ in pairs].count(k) > 1})
            raise BaselineError(f"baseline {path} has the key {twice[0]!r} more than once in one object")
        return record

    try:
        return json.loads(text, parse_constant=no_constant, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"baseline {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None


def dumps(record: dict[str, Any]) -> str:
    """Stable text: sorted keys, one value per line, so a refresh is a readable diff."""
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def target_problem(path: Path, root: Path) -> None:
    """BaselineError when a baseline file cannot go at `path`: a directory where the file goes, or a
    file where a directory of the tree goes; said now rather than as an OSError half-way."""
    if path.is_dir():
        raise BaselineError(f"cannot write baseline {path}: a directory is in the way")
    for parent in path.relative_to(root).parents:
        if (root / parent).exists() and not (root / parent).is_dir():
            raise BaselineError(f"cannot write baseline {path}: {root / parent} is a file, not a directory")


def writable_dir_problem(root: Path) -> str | None:
    """Why baselines cannot be written under `root`, checked before any item runs."""
    problem = directory_problem(root)
    return None if problem is None else f"baselines path {problem}"


def without_date(record: object) -> object:
    """What a record measured: a refresh that changes only its provenance date, or the schema
    version of a record both schemas read alike, is no change."""
    if isinstance(record, dict) and isinstance(record.get("provenance"), dict):
        provenance = {k: v for k, v in record["provenance"].items() if k != "date"}
        return {k: v for k, v in record.items() if k != "schema_version"} | {"provenance": provenance}
    return record


def one_line_reason(exc: BaseException) -> str:
    """An OSError's reason without its repr, so the message stays one line."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
