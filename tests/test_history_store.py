"""The results store, its step finder and its comparisons, on synthetic runs: no model needed.
The real plugin writing the store is tested in test_history_runs.py."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from records import make_run

from pytest_slm.cli.main import main
from pytest_slm.history import database
from pytest_slm.history.changepoint import accuracy_steps, find_steps
from pytest_slm.history.compare import compare_runs
from pytest_slm.history.database import HistoryError
from pytest_slm.stats import compare_outcomes


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_a_run_round_trips_with_its_schema_version_and_wal(tmp_path):
    path = tmp_path / "h.sqlite"
    run = make_run("2026-01-01T00:00:00+00:00")
    database.append(path, run)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == database.SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with database.connect(path, write=False) as db:
        assert database.read_run(db, run.run_id) == run


def test_a_newer_schema_is_refused_in_one_line_and_never_altered(tmp_path):
    path = tmp_path / "newer.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (x)")
        db.execute(f"PRAGMA user_version = {database.SCHEMA_VERSION + 1}")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(HistoryError) as refused:
        database.append(path, make_run("2026-01-01"))
    assert "\n" not in str(refused.value) and f"schema version {database.SCHEMA_VERSION + 1}, newer" in str(
        refused.value
    )
    with pytest.raises(HistoryError):
        database.merge([path], tmp_path / "into.sqlite")
    with pytest.raises(HistoryError):
        database.merge([tmp_path / "into.sqlite"], path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newer.sqlite"]  # no -wal, no -shm: not opened for writing


def test_a_file_that_is_not_a_store_is_one_line(tmp_path):
    path = tmp_path / "h.sqlite"
    path.write_text("not sqlite at all, but long enough to have a header" * 10)
    problem = database.version_problem(path)
    assert problem is not None and "is not a pytest-slm SQLite store" in problem


def _append_many(path: str, runs: int) -> None:
    for index in range(runs):
        database.append(Path(path), make_run(f"2026-01-01T00:00:{index:02d}"))


def test_parallel_writers_lose_no_run(tmp_path):
    """Eight processes appending at once (pytest runs sharing one store): every run and row lands."""
    path = tmp_path / "h.sqlite"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_many, args=(str(path), 10)) for _ in range(8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert [w.exitcode for w in writers] == [0] * 8
    assert (count(path, "runs"), count(path, "measures"), count(path, "outcomes")) == (80, 160, 80 * 40)


def test_merging_twice_adds_nothing(tmp_path, capsys):
    first, second, into = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "all.sqlite"
    for index in range(3):
        database.append(first, make_run(f"2026-01-0{index + 1}"))
    for index in range(2):
        database.append(second, make_run(f"2026-02-0{index + 1}"))
    assert main(["merge-history", str(first), str(second), "--into", str(into)]) == 0
    assert "5 run(s) added, 0 already there" in capsys.readouterr().out
    tables = ("runs", "measures", "rows", "outcomes", "fingerprints")
    after_once = {t: count(into, t) for t in tables}
    assert after_once == {"runs": 5, "measures": 10, "rows": 5, "outcomes": 200, "fingerprints": 1}
    assert main(["merge-history", str(first), str(second), "--into", str(into)]) == 0
    assert "0 run(s) added, 5 already there" in capsys.readouterr().out
    assert {t: count(into, t) for t in tables} == after_once
    database.merge([into], first)  # a runner merging the whole history back gets the other runner's runs only
    assert count(first, "runs") == 5


def test_a_flat_series_has_no_step_and_a_25_percent_step_is_found_where_it_is():
    flat = [100.0, 101.0, 99.5, 100.4, 99.8, 100.9, 100.1, 99.7]
    assert find_steps(flat, [0.01] * 8) == []
    slowed = flat[:5] + [v / 1.25 for v in flat[5:]]
    [step] = find_steps(slowed, [0.01] * 8)
    assert step.index == 5 and step.change == pytest.approx(1 / 1.25 - 1, abs=0.01)
    # a step smaller than the runs' own measured noise is not one: 5% against a 10% spread over 2+2 runs
    assert find_steps([100, 101, 95.5, 96], [0.10] * 4) == []
    assert find_steps([100, 101, 95.5, 96], [0.005] * 4) != []


def test_an_accuracy_step_is_the_paired_test_between_consecutive_runs():
    base = {f"{i:02d}": 1 for i in range(30)} | {f"{i:02d}": 0 for i in range(30, 60)}
    same = dict(base)
    worse = {**base, **{f"{i:02d}": 0 for i in range(12)}}  # 12 right answers lost, none gained
    steps = accuracy_steps([base, same, worse, worse], alpha=0.05, min_change_points=1.0)
    assert [(s.index, s.worse, s.better) for s in steps] == [(2, 12, 0)]
    assert steps[0].p_value == pytest.approx(2 * 0.5**12)
    assert accuracy_steps([base, {**base, "00": 0}], 0.05, 1.0) == []  # one flip is no evidence


def test_compare_gives_the_items_verdicts():
    before = make_run("2026-01-01")
    lost = {f"{i:02d}": 0 for i in range(0, 20, 2)}  # 10 of the 20 right answers lost
    after = make_run(
        "2026-01-02", decode=75.0, accuracy={**before.outcomes["m-llamacpp-cpu-native-slm_facts:0"], **lost}
    )
    found = {c.metric: c for c in compare_runs(before, after)}
    paired = compare_outcomes(
        before.outcomes["m-llamacpp-cpu-native-slm_facts:0"], after.outcomes["m-llamacpp-cpu-native-slm_facts:0"]
    )
    assert paired.is_regression(0.05, 1.0)
    assert found["accuracy"].verdict == "FAIL" and "flips 10/0" in found["accuracy"].change
    assert found["decode"].verdict == "FAIL" and found["decode"].change.startswith("33.3% slower")  # 100/75 - 1
    unchanged = compare_runs(before, make_run("2026-01-03", decode=98.0))
    assert {c.metric: c.verdict for c in unchanged} == {"accuracy": "pass", "decode": "pass"}


def test_the_cli_names_runs_by_id_commit_or_date(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    first, second = (
        make_run("2026-01-01T10:00:00", commit="aaaa1111"),
        make_run("2026-01-02T10:00:00", decode=70.0, commit="bbbb2222"),
    )
    database.append(path, first)
    database.append(path, second)
    assert main(["compare", first.run_id[:8], "bbbb2222", "--store", str(path)]) == 1
    out = capsys.readouterr().out
    assert "decode" in out and "FAIL" in out and "1 regression(s)" in out
    assert main(["compare", "2026-01-01", "2026-01-02", "--store", str(path)]) == 1
    assert main(["compare", "zzzz", "2026-01-02", "--store", str(path)]) == 1
    assert "compare: no run matches 'zzzz'" in capsys.readouterr().err
