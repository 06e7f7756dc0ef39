"""llama-bench's SQL output imported beside pytest-slm's runs. The fixtures in tests/data were
written by hand in the two shapes llama-bench's `sql_printer` prints (tools/llama-bench/llama-bench.cpp):
the current table `llama_bench` (build 7100) and the earlier table `test` with one column per
backend (build 4000), both from one 2-thread CPU machine."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from records import make_run

from pytest_slm.cli.main import main
from pytest_slm.history import database, llamabench
from pytest_slm.history.database import HistoryError

DATA = Path(__file__).parent / "data"
OLD, NEW = DATA / "llama-bench-b4000-old.sql", DATA / "llama-bench-b7100.sql"
ITEM = "SmolLM2-135M-Instruct.Q4_1-llama-bench"


def query(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_pp_and_tg_rows_become_prefill_and_decode_series_and_pp_tg_is_said(capsys, tmp_path):
    path = tmp_path / "history.sqlite"
    assert main(["import-llama-bench", str(NEW), "--into", str(path), "--os", "Linux x86_64"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{NEW}: 1 run(s), 3 figure(s); 1 pp+tg rows (prompt and generation in one figure) not mapped",
        f"imported into {path}: 1 run(s) added, 0 already there",
    ]
    assert sorted(query(path, "SELECT item, metric, value, unit, round(spread, 4), verdict FROM measures")) == [
        (ITEM, "decode", 100.0, "tok/s", 0.01, "imported"),
        (ITEM, "prefill@512", 500.0, "tok/s", 0.02, "imported"),
        (f"{ITEM}-k-q8_0-v-q8_0-fa", "decode@d4096", 80.0, "tok/s", 0.02, "imported"),
    ]
    [(commit, started, finished, versions)] = query(path, "SELECT git_commit, started, finished, versions FROM runs")
    assert (commit, started, finished) == ("3f4a9c1", "2026-11-20T10:00:00+00:00", "2026-11-20T10:00:21+00:00")
    assert json.loads(versions) == {"llama.cpp": "b7100 3f4a9c1"}
    [(data,)] = query(path, "SELECT data FROM fingerprints")
    # pytest-slm's own fingerprint fields, the hardware only: the same machine's runs sit beside these
    assert json.loads(data) == {
        "cpu": "Example CPU @ 2.40GHz",
        "threads": 2,
        "accelerator": "none",
        "os": "Linux x86_64",
    }
    [(provenance,)] = query(path, "SELECT provenance FROM runs")  # the build is what a step is explained by
    assert json.loads(provenance) == {"llama.cpp": "b7100 3f4a9c1", "runtime_build:llama-bench": "llama.cpp CPU"}
    assert len(query(path, "SELECT * FROM rows")) == 4  # every row kept as llama-bench printed it, pp+tg included


def test_builds_in_both_shapes_make_one_series_across_builds_and_importing_twice_adds_nothing(capsys, tmp_path):
    path = tmp_path / "history.sqlite"
    database.append(path, make_run("2026-11-21"))  # pytest-slm's own run in the same store
    args = ["import-llama-bench", str(OLD), str(NEW), "--into", str(path), "--os", "Linux x86_64"]
    assert main(args) == 0
    before = {
        table: query(path, f"SELECT * FROM {table} ORDER BY 1, 2")
        for table in ("runs", "measures", "rows", "fingerprints")
    }
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"imported into {path}: 0 run(s) added, 2 already there"
    assert {table: query(path, f"SELECT * FROM {table} ORDER BY 1, 2") for table in before} == before
    assert len(before["runs"]) == 3
    assert query(
        path,
        f"SELECT r.git_commit, m.value FROM measures m JOIN runs r USING (run_id) WHERE m.item = '{ITEM}' AND m.metric = 'decode' ORDER BY r.started",
    ) == [("8a1d0c2", 102.0), ("3f4a9c1", 100.0)]
    assert main(["history", "--store", str(path), "--item", ITEM]) == 0
    assert f"{ITEM}  decode (tok/s) on linux-x86_64-2t-" in capsys.readouterr().out


def test_a_test_seen_again_starts_another_run(tmp_path):
    """A file two invocations of one build appended to: two runs, not one with a figure replaced."""
    text = NEW.read_text()
    twice = tmp_path / "twice.sql"
    inserts = [line for line in text.splitlines() if line.startswith("INSERT")]
    twice.write_text(
        text
        + "\n".join(line.replace("10:00:", "11:00:").replace("'100.000000'", "'90.000000'") for line in inserts)
        + "\n"
    )
    runs = llamabench.read(twice, "Linux x86_64").runs
    assert [sorted((m.metric, m.value) for m in run.measures) for run in runs] == [
        [("decode", 100.0), ("decode@d4096", 80.0), ("prefill@512", 500.0)],
        [("decode", 90.0), ("decode@d4096", 80.0), ("prefill@512", 500.0)],
    ]
    assert len({run.run_id for run in runs}) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "| model | size |\n| --- | --- |\n",
            'is not llama-bench SQL output (llama-bench -o sql): near "|": syntax error',
        ),
        ("CREATE TABLE other (x TEXT);\n", "is not llama-bench SQL output: no table llama_bench or test"),
        (
            "CREATE TABLE test (build_commit TEXT, avg_ts REAL);\nINSERT INTO test (build_commit, avg_ts) VALUES ('a', '1.0');\n",
            "llama-bench's test table lacks build_number, cpu_info",
        ),
        ("CREATE TABLE llama_bench (avg_ts REAL);\n", "has no llama-bench results (an empty llama_bench table)"),
        (
            "ATTACH DATABASE 'attached.sqlite' AS other;\n",
            "is not llama-bench SQL output (llama-bench -o sql): not authorized",
        ),
    ],
)
def test_a_file_that_is_not_llama_bench_output_is_one_line_and_changes_nothing(
    capsys, tmp_path, monkeypatch, text, message
):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "history.sqlite"
    database.append(path, make_run("2026-11-21"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    bad = tmp_path / "bad.sql"
    bad.write_text(text)
    assert main(["import-llama-bench", str(NEW), str(bad), "--into", str(path)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"import-llama-bench: {bad}") and message in line, line
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # the good file before it was not imported either
    assert not (tmp_path / "attached.sqlite").exists()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("'100.000000'", "'0.000000'", r"a decode row has avg_ts 0.0: not a speed"),
        (
            "'2048', '512', '2',",
            "'2048', '512', 'two',",
            r"llama-bench row 1: invalid literal for int\(\) with base 10: 'two'",
        ),
    ],
)
def test_a_row_without_a_speed_or_a_number_is_refused_in_one_line(tmp_path, old, new, message):
    bad = tmp_path / "bad.sql"
    bad.write_text(NEW.read_text().replace(old, new, 1))
    with pytest.raises(HistoryError, match=message):
        llamabench.read(bad)
