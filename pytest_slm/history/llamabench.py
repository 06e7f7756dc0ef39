"""llama-bench's SQL output (`llama-bench -o sql`) as history runs, so llama.cpp's own benchmark
sits in the store beside pytest-slm's timings of the same machine.

The format, from llama.cpp's tools/llama-bench/llama-bench.cpp (`sql_printer`): one
`CREATE TABLE IF NOT EXISTS llama_bench (...)` (named `test` before 2025) with a column per field
of a test, then one `INSERT INTO llama_bench (fields) VALUES ('v', ...)` per test, every value
quoted. The columns differ between versions; the ones read here have been there throughout.

What a row becomes:
- `pp<N>` (n_gen 0) is the series `prefill@N`; `tg<N>` (n_prompt 0) is `decode`; at a depth D > 0
  (`-d`) `@dD` is added. The value is `avg_ts` (llama-bench gives the mean of its repetitions, not
  their median) and the spread `stddev_ts / avg_ts` (a sample standard deviation, not the robust one
  pytest-slm's own timings carry).
- `pp<N>+tg<M>` rows (`-pg`) are not mapped: prompt and generation in one figure, which pytest-slm
  does not measure. They are counted and said.
- The item is the model file's name + `-llama-bench`, with the settings that change a figure when
  they differ from llama-bench's defaults (KV types, batch sizes, flash attention, GPU layers);
  every column of the row is kept in `rows` as it was.
- The fingerprint is pytest-slm's (CPU, threads, accelerator, OS), so a series runs across llama.cpp
  builds on one machine; the build (`llama.cpp: b7100 3f4a9c1`) and its backends (`llama.cpp CPU`,
  as the device `llama-bench`'s runtime build) are the run's provenance, so a step says which build
  it came with; the build's commit is the run's commit, so `compare` takes a build's commit. The OS
  is not in llama-bench's output: it is given on import (default: this machine's).

A run is one llama-bench invocation: the rows of one build on one machine, in file order; a test
seen again starts another run (files appended to by several invocations). Run ids are digests of
the rows, so importing a file twice adds nothing.
"""

from __future__ import annotations

import hashlib
import platform
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..measure.machine import Fingerprint
from .database import RUNTIME_BUILD, HistoryError, Measure, RunRecord
from .record import versions

TABLES = ("llama_bench", "test")  # the table's name now, and before
NEEDED = (
    "build_commit",
    "build_number",
    "cpu_info",
    "gpu_info",
    "model_filename",
    "n_batch",
    "n_ubatch",
    "n_threads",
    "type_k",
    "type_v",
    "n_prompt",
    "n_gen",
    "test_time",
    "avg_ts",
    "stddev_ts",
)
# (column, llama-bench's default, how the item name shows another value)
SETTINGS: tuple[tuple[str, str, Callable[[str], str]], ...] = (
    ("type_k", "f16", lambda v: f"k-{v}"),
    ("type_v", "f16", lambda v: f"v-{v}"),
    ("n_batch", "2048", lambda v: f"b{v}"),
    ("n_ubatch", "512", lambda v: f"ub{v}"),
    ("flash_attn", "", lambda v: "fa" if v in ("1", "true") else ""),
)
OLD_BACKENDS = (
    ("cuda", "CUDA"),
    ("vulkan", "Vulkan"),
    ("kompute", "Kompute"),
    ("metal", "Metal"),
    ("sycl", "SYCL"),
    ("gpu_blas", "GPU BLAS"),
    ("blas", "BLAS"),
)
MIXED = "pp+tg rows (prompt and generation in one figure)"
RUN_FIELDS = ("build_commit", "build_number", "cpu_info", "gpu_info", "backends")  # one invocation's
ALLOWED_ACTIONS = {sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_READ}


Entry = tuple[dict[str, Any], Measure | None, Fingerprint]  # a row, its figure, its machine


@dataclass(frozen=True)
class Imported:
    runs: list[RunRecord]
    unmapped: dict[str, int]  # why -> rows


def read(path: Path, os_name: str | None = None) -> Imported:
    """The runs in a llama-bench SQL file; HistoryError (one line) when it is not one."""
    os_name = os_name or f"{platform.system()} {platform.machine()}"
    unmapped: dict[str, int] = {}
    groups: list[tuple[tuple[str, ...], list[Entry]]] = []
    for number, row in enumerate(_rows(path), start=1):
        try:
            entry = _entry(path, row, os_name)
        except (TypeError, ValueError) as exc:  # a number column holding something else
            raise HistoryError(f"{path}: llama-bench row {number}: {exc}") from None
        measure = entry[1]
        if measure is None:
            unmapped[MIXED] = unmapped.get(MIXED, 0) + 1
        key = tuple(str(row.get(field, "")) for field in RUN_FIELDS)
        seen = {(m.item, m.metric) for _, m, _ in groups[-1][1] if m} if groups else set()
        if not groups or groups[-1][0] != key or (measure and (measure.item, measure.metric) in seen):
            groups.append((key, []))
        groups[-1][1].append(entry)
    runs = [_run(entries) for _, entries in groups if any(measure for _, measure, _ in entries)]
    return Imported(runs, unmapped)


def _entry(path: Path, row: dict[str, Any], os_name: str) -> Entry:
    """The row, its figure (None where it is not mapped) and the machine it ran on."""
    found = Fingerprint(
        cpu=row["cpu_info"] or "unknown CPU",
        threads=int(row["n_threads"]),
        accelerator=row["gpu_info"] or "none",
        os=os_name,
    )
    return row, _measure(path, row, found.slug), found


def _measure(path: Path, row: dict[str, Any], slug: str) -> Measure | None:
    """The row's figure; None for a row that is not mapped."""
    metric = _metric(row)
    if metric is None:
        return None
    avg, sd = float(row["avg_ts"]), float(row["stddev_ts"])
    if not avg > 0:
        raise HistoryError(f"{path}: a {metric} row has avg_ts {row['avg_ts']!r}: not a speed")
    return Measure("runtime", _item(row), metric, avg, "tok/s", sd / avg, "imported", slug)


def _rows(path: Path) -> list[dict[str, Any]]:
    """The file run into an in-memory database that may only create tables and insert: SQL from a
    file is not trusted to attach, read or write anything else."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryError(f"cannot read {path}: {exc}") from None
    with closing(sqlite3.connect(":memory:")) as db:
        db.set_authorizer(_authorize)
        try:
            db.executescript(text)
        except sqlite3.Error as exc:
            raise HistoryError(f"{path} is not llama-bench SQL output (llama-bench -o sql): {exc}") from None
        db.set_authorizer(None)
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        table = next((name for name in TABLES if name in names), None)
        if table is None:
            raise HistoryError(f"{path} is not llama-bench SQL output: no table {' or '.join(TABLES)}")
        db.row_factory = sqlite3.Row
        rows = [dict(row) for row in db.execute(f"SELECT * FROM {table} ORDER BY rowid")]
    if not rows:
        raise HistoryError(f"{path} has no llama-bench results (an empty {table} table)")
    if missing := [column for column in NEEDED if column not in rows[0]]:
        raise HistoryError(f"{path}: llama-bench's {table} table lacks {', '.join(missing)}")
    return rows


def _authorize(action: int, name: str | None, *_: object) -> int:
    """Creating a table writes its definition into sqlite_master; nothing else may be changed."""
    allowed = action in ALLOWED_ACTIONS or (action == sqlite3.SQLITE_UPDATE and name == "sqlite_master")
    return sqlite3.SQLITE_OK if allowed else sqlite3.SQLITE_DENY


def _metric(row: dict[str, Any]) -> str | None:
    prompt, gen, depth = int(row["n_prompt"]), int(row["n_gen"]), int(row.get("n_depth") or 0)
    if prompt > 0 and gen == 0:
        metric = f"prefill@{prompt}"
    elif gen > 0 and prompt == 0:
        metric = "decode"
    else:
        return None
    return f"{metric}@d{depth}" if depth else metric


def _backends(row: dict[str, Any]) -> str:
    """The `backends` column; before it, one 0/1 column per backend."""
    if row.get("backends"):
        return str(row["backends"])
    return next((name for column, name in OLD_BACKENDS if str(row.get(column)) == "1"), "CPU")


def _item(row: dict[str, Any]) -> str:
    name = Path(str(row["model_filename"])).name.removesuffix(".gguf")
    parts = [
        shown(str(row[column])) for column, default, shown in SETTINGS if column in row and str(row[column]) != default
    ]
    if row["gpu_info"] and "n_gpu_layers" in row:
        parts.append(f"ngl{row['n_gpu_layers']}")
    return "-".join([name, "llama-bench", *(part for part in parts if part)])


def _run(entries: Sequence[Entry]) -> RunRecord:
    rows = [row for row, _, _ in entries]
    first = rows[0]
    times = sorted(str(row["test_time"]).replace("Z", "+00:00") for row in rows)  # as pytest-slm's runs write it
    digest = hashlib.sha256(repr([sorted(row.items()) for row in rows]).encode()).hexdigest()[:32]
    build = f"b{first['build_number']} {first['build_commit']}"
    return RunRecord(
        run_id=digest,
        started=times[0],
        finished=times[-1],
        host="llama-bench",
        git_commit=str(first["build_commit"]),
        git_branch=None,
        git_dirty=None,
        pytest_slm=versions().get("pytest-slm", "unknown"),
        versions={"llama.cpp": build},
        settings={},
        exitstatus=None,
        measures=[measure for _, measure, _ in entries if measure],
        rows=[("llama-bench", row) for row in rows],
        outcomes={},
        fingerprints={found.slug: asdict(found) for _, measure, found in entries if measure},
        provenance={"llama.cpp": build, f"{RUNTIME_BUILD}llama-bench": f"llama.cpp {_backends(first)}"},
    )
