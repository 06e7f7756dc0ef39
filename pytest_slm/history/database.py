"""The results store: every run's rows in one SQLite file (standard library `sqlite3`).

One file, schema versioned with SQLite's `user_version` and brought up to date by `MIGRATIONS`; a
file of a newer schema is refused before anything touches it (it is opened read-only to look).
WAL journal, and every write is one `BEGIN IMMEDIATE` transaction, so one writer at a time and
readers never block; parallel pytest runs queue on the lock (`busy_timeout`) instead of failing.
Runs are keyed by a random id, so merging stores recognises a run it already has.

A machine-bound figure's `fingerprint` is the slug of the hardware it ran on (CPU, threads,
accelerator, OS). Runs written before schema 2 hashed the runtime and its version in as well; they
are read under the slug of their fingerprint without its `runtime` field, so a series runs across a
runtime upgrade, and that runtime becomes part of what the run recorded (`provenances`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 60_000

# MIGRATIONS[v] takes a store of schema v to v + 1; a new version appends, never edits.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,   -- random, so a merged run is recognised
            started TEXT NOT NULL,     -- ISO 8601, UTC
            finished TEXT NOT NULL,
            host TEXT NOT NULL,
            git_commit TEXT,           -- of the project under test; NULL without git
            git_branch TEXT,
            git_dirty INTEGER,
            pytest_slm TEXT NOT NULL,
            versions TEXT NOT NULL,    -- JSON: runtime packages and their versions
            settings TEXT NOT NULL,    -- JSON: the thresholds the items judged with
            exitstatus INTEGER
        )""",
        """CREATE TABLE measures (
            run_id TEXT NOT NULL REFERENCES runs(run_id),
            section TEXT NOT NULL,     -- items (accuracy), runtime, memory, fidelity, parity
            item TEXT NOT NULL,        -- the case id: model-device-quant[-task:shots]
            metric TEXT NOT NULL,      -- accuracy, decode, prefill@128, weights_bytes, mean_kld...
            value REAL NOT NULL,
            unit TEXT NOT NULL,
            spread REAL,               -- relative robust sd of the repeats (timings)
            verdict TEXT NOT NULL,
            fingerprint TEXT NOT NULL, -- hardware slug for machine-bound figures, else '' (before schema 2: hardware+runtime)
            PRIMARY KEY (run_id, section, item, metric)
        )""",
        """CREATE TABLE rows (
            run_id TEXT NOT NULL REFERENCES runs(run_id),
            seq INTEGER NOT NULL,
            section TEXT NOT NULL,
            data TEXT NOT NULL,        -- JSON: the row exactly as the summary table had it
            PRIMARY KEY (run_id, seq)
        )""",
        """CREATE TABLE outcomes (
            run_id TEXT NOT NULL REFERENCES runs(run_id),
            item TEXT NOT NULL,
            sample TEXT NOT NULL,
            correct INTEGER NOT NULL,
            PRIMARY KEY (run_id, item, sample)
        )""",
        "CREATE TABLE fingerprints (slug TEXT PRIMARY KEY, data TEXT NOT NULL)",
        "CREATE INDEX measures_series ON measures (section, item, metric, fingerprint)",
    ),
    (
        # JSON: what the run's figures depend on besides the hardware (versions, OS release, GPU
        # driver, each device's runtime build); NULL for a run stored before, derived when read
        "ALTER TABLE runs ADD COLUMN provenance TEXT",
    ),
)
assert len(MIGRATIONS) == SCHEMA_VERSION


class HistoryError(Exception):
    """The store cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class Measure:
    section: str
    item: str
    metric: str
    value: float
    unit: str
    spread: float | None
    verdict: str
    fingerprint: str = ""


@dataclass(frozen=True)
class RunRecord:
    """One run, as appended: its metadata, its flattened figures, its rows and its outcomes."""

    run_id: str
    started: str
    finished: str
    host: str
    git_commit: str | None
    git_branch: str | None
    git_dirty: bool | None
    pytest_slm: str
    versions: Mapping[str, str]
    settings: Mapping[str, Any]
    exitstatus: int | None
    measures: Sequence[Measure]
    rows: Sequence[tuple[str, Mapping[str, Any]]]
    outcomes: Mapping[str, Mapping[str, int]]  # item -> sample id -> 0/1
    fingerprints: Mapping[str, Mapping[str, Any]]  # slug -> fingerprint fields
    # what the figures depend on besides the hardware, flat: {"llama_cpp_python": "0.3.36",
    # "os_release": "Linux 6.8.0", f"{RUNTIME_BUILD}llamacpp-cpu": "llama-cpp-python 0.3.36", ...}
    provenance: Mapping[str, str] = field(default_factory=dict)


RUNTIME_BUILD = "runtime_build:"  # + a device: the key of that device's runtime build in a provenance


def version_problem(path: Path) -> str | None:
    """Why the store at `path` cannot be written by this pytest-slm (None: it can, or it does not
    exist yet). Looks read-only: a refused file is never altered, not even its journal mode."""
    if not path.exists():
        return None
    if path.is_dir():
        return f"history store {path} is a directory, not a SQLite file"
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        return f"history store {path} is not a pytest-slm SQLite store ({exc})"
    if version > SCHEMA_VERSION:
        return (
            f"history store {path} has schema version {version}, newer than this pytest-slm's {SCHEMA_VERSION};"
            " upgrade pytest-slm to use it (the file was not changed)"
        )
    return None


@contextmanager
def connect(path: Path, write: bool = True) -> Iterator[sqlite3.Connection]:
    """The store, migrated to this schema when writing; HistoryError with one line otherwise."""
    if problem := version_problem(path):
        raise HistoryError(problem)
    if not write and not path.exists():
        raise HistoryError(f"history store {path} does not exist (runs write it with --slm-history)")
    try:
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            path if write else f"{path.resolve().as_uri()}?mode=ro",
            uri=not write,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
        )
    except (OSError, sqlite3.Error) as exc:
        raise HistoryError(f"history store {path}: {exc}") from None
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if write:
            db.execute("PRAGMA journal_mode = WAL")
            _migrate(db, path)
        yield db
    except sqlite3.Error as exc:
        raise HistoryError(f"history store {path}: {exc}") from None
    finally:
        db.close()


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    db.execute("BEGIN IMMEDIATE")  # another writer may be migrating: check again under the lock
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:  # written by a newer pytest-slm between our look and the lock
            raise HistoryError(
                f"history store {path} has schema version {version}, newer than {SCHEMA_VERSION}; not changed"
            )
        for steps in MIGRATIONS[version:]:
            for statement in steps:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One writer at a time: the write lock is taken at BEGIN, not at the first write."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def append(path: Path, run: RunRecord) -> None:
    with connect(path) as db, transaction(db):
        _insert(db, run)


def _insert(db: sqlite3.Connection, run: RunRecord) -> bool:
    """False when the store already has this run (a merge seeing it again)."""
    inserted = db.execute(
        "INSERT OR IGNORE INTO runs (run_id, started, finished, host, git_commit, git_branch, git_dirty, pytest_slm,"
        " versions, settings, exitstatus, provenance) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            run.run_id,
            run.started,
            run.finished,
            run.host,
            run.git_commit,
            run.git_branch,
            None if run.git_dirty is None else int(run.git_dirty),
            run.pytest_slm,
            json.dumps(dict(run.versions), sort_keys=True),
            json.dumps(dict(run.settings), sort_keys=True),
            run.exitstatus,
            json.dumps(dict(run.provenance), sort_keys=True),
        ),
    ).rowcount
    if not inserted:
        return False
    db.executemany(
        "INSERT OR REPLACE INTO measures VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (run.run_id, m.section, m.item, m.metric, m.value, m.unit, m.spread, m.verdict, m.fingerprint)
            for m in run.measures
        ],
    )
    db.executemany(
        "INSERT INTO rows VALUES (?,?,?,?)",
        [
            (run.run_id, seq, section, json.dumps(dict(data), sort_keys=True))
            for seq, (section, data) in enumerate(run.rows)
        ],
    )
    db.executemany(
        "INSERT INTO outcomes VALUES (?,?,?,?)",
        [(run.run_id, item, sample, int(v)) for item, samples in run.outcomes.items() for sample, v in samples.items()],
    )
    db.executemany(
        "INSERT OR IGNORE INTO fingerprints VALUES (?,?)",
        [(slug, json.dumps(dict(data), sort_keys=True)) for slug, data in run.fingerprints.items()],
    )
    return True


# -- reading ------------------------------------------------------------------------------------


def runs(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every run, oldest first (by start time, then id for a stable order)."""
    db.row_factory = sqlite3.Row
    found = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY started, run_id")]
    db.row_factory = None
    return found


def hardware_slugs(db: sqlite3.Connection) -> dict[str, str]:
    """Each stored slug whose fingerprint still holds a `runtime` (written before schema 2) -> the
    slug of the same hardware without it, as runs of this pytest-slm write it."""
    from ..measure.machine import Fingerprint

    found = {}
    for slug, data in db.execute("SELECT slug, data FROM fingerprints"):
        fields = json.loads(data)
        if "runtime" in fields:
            try:
                found[slug] = Fingerprint(**{k: v for k, v in fields.items() if k != "runtime"}).slug
            except TypeError:  # fields of no fingerprint this pytest-slm knows: kept apart
                pass
    return found


def measures(db: sqlite3.Connection, run_id: str, slugs: Mapping[str, str] | None = None) -> list[Measure]:
    """The run's figures, each machine-bound one under its hardware slug."""
    slugs = hardware_slugs(db) if slugs is None else slugs
    return [
        Measure(section, item, metric, value, unit, spread, verdict, slugs.get(fingerprint, fingerprint))
        for section, item, metric, value, unit, spread, verdict, fingerprint in db.execute(
            "SELECT section, item, metric, value, unit, spread, verdict, fingerprint FROM measures WHERE run_id = ?"
            " ORDER BY section, item, metric",
            (run_id,),
        )
    ]


def provenances(db: sqlite3.Connection, run_ids: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """Each run's provenance (of `run_ids`, else every run). A run stored before schema 2 has none
    of its own; it is rebuilt from what that run did store: its versions and pytest-slm, and each
    device's runtime as its fingerprints held it (the same text `runtime_build` gives now)."""
    wanted = None if run_ids is None else set(run_ids)
    found: dict[str, dict[str, str]] = {}
    older: dict[str, tuple[str, str, str]] = {}
    columns = {name for _, name, *_ in db.execute("PRAGMA table_info(runs)")}
    stored_as = "provenance" if "provenance" in columns else "NULL"  # a schema-1 store read as it is
    query = f"SELECT run_id, {stored_as}, versions, pytest_slm, host FROM runs"
    for run_id, stored, versions, pytest_slm, host in db.execute(query):
        if wanted is not None and run_id not in wanted:
            continue
        if stored is not None:
            found[run_id] = json.loads(stored)
        else:
            older[run_id] = (versions, pytest_slm, host)
    if not older:
        return found
    runtimes = {}
    for slug, data in db.execute("SELECT slug, data FROM fingerprints"):
        if "runtime" in (fields := json.loads(data)):
            runtimes[slug] = fields["runtime"]
    devices: dict[str, dict[str, str]] = {}
    for run_id, data in db.execute("SELECT run_id, data FROM rows"):
        if run_id in older:
            row = json.loads(data)
            if isinstance(row, dict) and row.get("device") and row.get("item"):
                devices.setdefault(run_id, {})[row["item"]] = row["device"]
    builds: dict[str, dict[str, str]] = {}
    for run_id, item, slug in db.execute("SELECT run_id, item, fingerprint FROM measures WHERE fingerprint != ''"):
        if run_id in older and slug in runtimes:
            device = devices.get(run_id, {}).get(item) or item
            builds.setdefault(run_id, {})[RUNTIME_BUILD + device] = runtimes[slug]
    for run_id, (versions, pytest_slm, host) in older.items():
        derived = {name.replace("-", "_"): version for name, version in json.loads(versions).items()}
        if host != "llama-bench":  # an import's pytest-slm measured nothing
            derived["pytest_slm"] = pytest_slm
        found[run_id] = derived | builds.get(run_id, {})
    return found


def outcomes(db: sqlite3.Connection, run_id: str, item: str) -> dict[str, int]:
    return dict(
        db.execute("SELECT sample, correct FROM outcomes WHERE run_id = ? AND item = ?", (run_id, item)).fetchall()
    )


def read_run(db: sqlite3.Connection, run_id: str) -> RunRecord:
    db.row_factory = sqlite3.Row
    meta = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    db.row_factory = None
    if meta is None:
        raise HistoryError(f"no run {run_id!r} in the store")
    rows = [
        (s, json.loads(d))
        for s, d in db.execute("SELECT section, data FROM rows WHERE run_id = ? ORDER BY seq", (run_id,))
    ]
    found: dict[str, dict[str, int]] = {}
    for item, sample, correct in db.execute("SELECT item, sample, correct FROM outcomes WHERE run_id = ?", (run_id,)):
        found.setdefault(item, {})[sample] = correct
    hardware = hardware_slugs(db)
    figures = measures(db, run_id, hardware)
    slugs = {m.fingerprint for m in figures} - {""}
    fingerprints = {}
    for slug, data in db.execute("SELECT slug, data FROM fingerprints"):
        if hardware.get(slug, slug) in slugs:
            fingerprints[hardware.get(slug, slug)] = {k: v for k, v in json.loads(data).items() if k != "runtime"}
    return RunRecord(
        run_id=meta["run_id"],
        started=meta["started"],
        finished=meta["finished"],
        host=meta["host"],
        git_commit=meta["git_commit"],
        git_branch=meta["git_branch"],
        git_dirty=None if meta["git_dirty"] is None else bool(meta["git_dirty"]),
        pytest_slm=meta["pytest_slm"],
        versions=json.loads(meta["versions"]),
        settings=json.loads(meta["settings"]),
        exitstatus=meta["exitstatus"],
        measures=figures,
        rows=rows,
        outcomes=found,
        fingerprints=fingerprints,
        provenance=provenances(db, [run_id])[run_id],
    )


def merge(sources: Sequence[Path], into: Path) -> tuple[int, int]:
    """Every run of every source into `into`: (added, already there)."""
    for source in sources:
        if problem := version_problem(source):
            raise HistoryError(problem)
        if not source.is_file():
            raise HistoryError(f"history store {source} does not exist")
    found = []
    for source in sources:
        with connect(source, write=False) as src:
            found += [read_run(src, meta["run_id"]) for meta in runs(src)]
    return add_runs(into, found)


def add_runs(into: Path, found: Sequence[RunRecord]) -> tuple[int, int]:
    """The runs into `into`, in one transaction: (added, already there). A run already in `into`
    (same id) is recognised and left alone, so adding the same runs twice adds nothing."""
    with connect(into) as db, transaction(db):
        added = sum(_insert(db, run) for run in found)
    return added, len(found) - added
