"""The results store: every run's rows in one SQLite file (standard library `sqlite3`).

One file, schema versioned with SQLite's `user_version` and brought up to date by `MIGRATIONS`; a
file of a newer schema is refused before anything touches it (it is opened read-only to look).
WAL journal, and every write is one `BEGIN IMMEDIATE` transaction, so one writer at a time and
readers never block; parallel pytest runs queue on the lock (`busy_timeout`) instead of failing.
Runs are keyed by a random id, so merging stores recognises a run it already has.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

SCHEMA_VERSION = 1
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
            fingerprint TEXT NOT NULL, -- hardware+runtime slug for machine-bound figures, else ''
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
        db = sqlite3.connect(path if write else f"{path.resolve().as_uri()}?mode=ro", uri=not write, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
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
            raise HistoryError(f"history store {path} has schema version {version}, newer than {SCHEMA_VERSION}; not changed")
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
        "INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            run.run_id, run.started, run.finished, run.host, run.git_commit, run.git_branch,
            None if run.git_dirty is None else int(run.git_dirty), run.pytest_slm,
            json.dumps(dict(run.versions), sort_keys=True), json.dumps(dict(run.settings), sort_keys=True), run.exitstatus,
        ),
    ).rowcount
    if not inserted:
        return False
    db.executemany(
        "INSERT OR REPLACE INTO measures VALUES (?,?,?,?,?,?,?,?,?)",
        [(run.run_id, m.section, m.item, m.metric, m.value, m.unit, m.spread, m.verdict, m.fingerprint) for m in run.measures],
    )
    db.executemany(
        "INSERT INTO rows VALUES (?,?,?,?)",
        [(run.run_id, seq, section, json.dumps(dict(data), sort_keys=True)) for seq, (section, data) in enumerate(run.rows)],
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
    return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY started, run_id")]


def measures(db: sqlite3.Connection, run_id: str) -> list[Measure]:
    return [
        Measure(*r)
        for r in db.execute(
            "SELECT section, item, metric, value, unit, spread, verdict, fingerprint FROM measures WHERE run_id = ?"
            " ORDER BY section, item, metric",
            (run_id,),
        )
    ]


def outcomes(db: sqlite3.Connection, run_id: str, item: str) -> dict[str, int]:
    return dict(db.execute("SELECT sample, correct FROM outcomes WHERE run_id = ? AND item = ?", (run_id, item)).fetchall())


def read_run(db: sqlite3.Connection, run_id: str) -> RunRecord:
    db.row_factory = sqlite3.Row
    meta = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    db.row_factory = None
    if meta is None:
        raise HistoryError(f"no run {run_id!r} in the store")
    rows = [(s, json.loads(d)) for s, d in db.execute("SELECT section, data FROM rows WHERE run_id = ? ORDER BY seq", (run_id,))]
    found: dict[str, dict[str, int]] = {}
    for item, sample, correct in db.execute("SELECT item, sample, correct FROM outcomes WHERE run_id = ?", (run_id,)):
        found.setdefault(item, {})[sample] = correct
    slugs = {m.fingerprint for m in measures(db, run_id)} - {""}
    fingerprints = {s: json.loads(d) for s, d in db.execute("SELECT slug, data FROM fingerprints") if s in slugs}
    return RunRecord(
        run_id=meta["run_id"], started=meta["started"], finished=meta["finished"], host=meta["host"],
        git_commit=meta["git_commit"], git_branch=meta["git_branch"],
        git_dirty=None if meta["git_dirty"] is None else bool(meta["git_dirty"]), pytest_slm=meta["pytest_slm"],
        versions=json.loads(meta["versions"]), settings=json.loads(meta["settings"]), exitstatus=meta["exitstatus"],
        measures=measures(db, run_id), rows=rows, outcomes=found, fingerprints=fingerprints,
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
