"""The upgrade loop in the history, on synthetic runs: a series is keyed by the hardware, so it runs
across a runtime upgrade and its step lands on the upgrade, saying what changed; runs stored before
(their slug hashed the runtime in) join the same series; `compare` says what changed first."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from dataclasses import asdict
from pathlib import Path

from pytest_slm.cli.main import main
from pytest_slm.history import changes, database, record, trends
from pytest_slm.history.compare import compare_runs
from pytest_slm.history.database import Measure, RunRecord
from pytest_slm.measure.machine import Fingerprint

MACHINE = Fingerprint(cpu="Example CPU", threads=2, accelerator="none", os="Linux x86_64")
ITEM = "m-llamacpp-cpu-native"
SETTINGS = {"alpha": 0.05, "min_drop_points": 1.0, "latency_tolerances": {"*": 0.1}, "latency_k": 3.0}
# runs 1-2 on llama-cpp-python 0.3.36; from run 3 on 0.3.40, whose decode takes 30% longer
DECODE = [100.0, 101.0, 100.5 / 1.3, 99.8 / 1.3, 100.9 / 1.3, 100.2 / 1.3]
VERSIONS = ["0.3.36", "0.3.36", "0.3.40", "0.3.40", "0.3.40", "0.3.40"]


def old_slug(fields: dict) -> str:
    """The slug pytest-slm wrote before the runtime left the fingerprint (runtime.py, schema 1)."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    return f"{fields['os'].lower().replace(' ', '-')}-{fields['threads']}t-{digest}"


def run_on(index: int, llama: str, *, os_release: str = "Linux 6.8.0", old_style: bool = False) -> RunRecord:
    """Run `index` (0-based) of the series: a decode figure and an accuracy figure that never moves."""
    fields = asdict(MACHINE) | ({"runtime": f"llama-cpp-python {llama}"} if old_style else {})
    slug = old_slug(fields) if old_style else MACHINE.slug
    outcomes = {f"{i:02d}": int(i % 2 == 0) for i in range(40)}
    versions = {"llama-cpp-python": llama, "pytest": "9"}
    return RunRecord(
        run_id=uuid.uuid4().hex,
        started=f"2026-03-0{index + 1}T02:00:00+00:00",
        finished=f"2026-03-0{index + 1}T02:03:00+00:00",
        host="h",
        git_commit=f"{index}abc1234",
        git_branch="main",
        git_dirty=False,
        pytest_slm="0.1.0",
        versions=versions,
        settings=SETTINGS,
        exitstatus=0,
        measures=[
            Measure("items", f"{ITEM}-slm_facts:0", "accuracy", 0.5, "share", None, "pass"),
            Measure("runtime", ITEM, "decode", DECODE[index], "tok/s", 0.01, "pass", slug),
        ],
        rows=[
            ("items", {"item": f"{ITEM}-slm_facts:0", "device": "llamacpp-cpu"}),
            ("runtime", {"item": ITEM, "device": "llamacpp-cpu"}),
        ],
        outcomes={f"{ITEM}-slm_facts:0": outcomes},
        fingerprints={slug: fields},
        provenance={}
        if old_style
        else record.provenance_of(
            {"pytest-slm": "0.1.0", **versions},
            {"os_release": os_release},
            {"llamacpp-cpu": f"llama-cpp-python {llama}"},
        ),
    )


def schema_1_store(path: Path, runs: list[RunRecord]) -> None:
    """A store as pytest-slm wrote it before schema 2: no provenance column."""
    with sqlite3.connect(path) as db:
        for statement in database.MIGRATIONS[0]:
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        for run in runs:
            db.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run.run_id,
                    run.started,
                    run.finished,
                    run.host,
                    run.git_commit,
                    run.git_branch,
                    0,
                    run.pytest_slm,
                    json.dumps(dict(run.versions)),
                    json.dumps(dict(run.settings)),
                    0,
                ),
            )
            db.executemany(
                "INSERT INTO measures VALUES (?,?,?,?,?,?,?,?,?)",
                [(run.run_id, *asdict(m).values()) for m in run.measures],
            )
            db.executemany(
                "INSERT INTO rows VALUES (?,?,?,?)",
                [(run.run_id, seq, s, json.dumps(d)) for seq, (s, d) in enumerate(run.rows)],
            )
            db.executemany(
                "INSERT INTO outcomes VALUES (?,?,?,?)",
                [
                    (run.run_id, item, sample, v)
                    for item, samples in run.outcomes.items()
                    for sample, v in samples.items()
                ],
            )
            db.executemany(
                "INSERT OR IGNORE INTO fingerprints VALUES (?,?)",
                [(s, json.dumps(d)) for s, d in run.fingerprints.items()],
            )


def decode_series(path: Path) -> list[trends.Series]:
    with database.connect(path, write=False) as db:
        return [one for one in trends.analyse(db) if one.metric == "decode"]


def test_a_runtime_upgrade_is_one_series_whose_step_lands_on_it_and_names_it(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    runs = [run_on(index, llama) for index, llama in enumerate(VERSIONS)]
    for run in runs:
        database.append(path, run)
    [series] = decode_series(path)  # one series, not one per runtime version
    assert series.fingerprint == MACHINE.slug and len(series.runs) == 6
    [step] = series.steps
    assert step.index == 2 and abs(step.change - (1 / 1.3 - 1)) < 0.01
    # the package's version is named once: the runtime build says the same and is not repeated
    assert series.changed_at(step) == ["llama-cpp-python 0.3.36 → 0.3.40"]
    assert [run["changed"] for run in series.runs] == [[], [], ["llama-cpp-python 0.3.36 → 0.3.40"], [], [], []]

    assert main(["history", "--store", str(path), "--item", "decode"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  STEP at run 3 ("))
    assert "-23.2%" in lines[at] and lines[at + 1] == "    changed at run 3: llama-cpp-python 0.3.36 → 0.3.40"
    assert sum("STEP" in line for line in lines) == 1

    assert main(["compare", runs[1].run_id, runs[2].run_id, "--store", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "changed between the runs: llama-cpp-python 0.3.36 → 0.3.40"
    [decode_row] = [line for line in out if line.startswith(f"{ITEM} ") and " decode " in line]
    assert "30.6% slower" in decode_row and decode_row.split()[-1] == "FAIL"  # compared across the upgrade, not skipped


def test_runs_stored_with_the_runtime_in_their_fingerprint_join_the_hardware_series(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    old = [run_on(index, VERSIONS[index], old_style=True) for index in range(2)]
    schema_1_store(path, old)
    assert old[0].measures[1].fingerprint != MACHINE.slug  # the runtime was hashed in
    assert main(["history", "--store", str(path)]) == 0  # read as it is, and left at schema 1
    assert f"decode (tok/s) on {MACHINE.slug}: 2 run(s)" in capsys.readouterr().out
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    for index in range(2, 6):
        database.append(path, run_on(index, VERSIONS[index]))  # this pytest-slm, same machine
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == database.SCHEMA_VERSION == 2
        assert db.execute("SELECT count(*) FROM runs WHERE provenance IS NULL").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM fingerprints").fetchone()[0] == 2  # the old row is kept as written

    [series] = decode_series(path)
    assert series.fingerprint == MACHINE.slug and len(series.runs) == 6
    [step] = series.steps
    # the old runs' runtime, read back from their fingerprint, is what changed at run 3
    assert step.index == 2 and series.changed_at(step) == ["llama-cpp-python 0.3.36 → 0.3.40"]

    with database.connect(path, write=False) as db:
        second = database.read_run(db, old[1].run_id)
    assert second.measures[1].fingerprint == MACHINE.slug and second.fingerprints == {MACHINE.slug: asdict(MACHINE)}
    assert second.provenance == {
        "llama_cpp_python": "0.3.36",
        "pytest": "9",
        "pytest_slm": "0.1.0",
        "runtime_build:llamacpp-cpu": "llama-cpp-python 0.3.36",
    }

    # merged elsewhere, the old runs arrive under the hardware slug with their provenance
    merged = tmp_path / "merged.sqlite"
    assert main(["merge-history", str(path), "--into", str(merged)]) == 0
    [again] = decode_series(merged)
    assert len(again.runs) == 6 and [s.index for s in again.steps] == [2]
    assert again.changed_at(again.steps[0]) == ["llama-cpp-python 0.3.36 → 0.3.40"]
    capsys.readouterr()
    assert main(["compare", old[1].run_id, series.runs[2]["run_id"], "--store", str(path)]) == 1
    assert capsys.readouterr().out.splitlines()[2] == "changed between the runs: llama-cpp-python 0.3.36 → 0.3.40"


def test_compare_says_what_changed_between_the_runs_before_its_rows(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    before, after = run_on(0, "0.3.36", os_release="Linux 6.1.0"), run_on(1, "0.3.40", os_release="Linux 6.8.0")
    same = run_on(1, "0.3.40", os_release="Linux 6.8.0")  # as fast as `after`
    for run in (before, after, same):
        database.append(path, run)
    assert main(["compare", before.run_id, after.run_id, "--store", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[2] == "changed between the runs: llama-cpp-python 0.3.36 → 0.3.40; OS release Linux 6.1.0 → Linux 6.8.0"
    )
    assert lines[3].split() == ["item", "metric", "A", "B", "change", "verdict"]
    assert {c.metric: c.verdict for c in compare_runs(before, after)} == {"accuracy": "pass", "decode": "pass"}
    assert main(["compare", after.run_id, same.run_id, "--store", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[2] == "nothing recorded changed between the runs"


def test_a_runtime_build_is_named_where_its_version_does_not_say_it_and_a_device_not_measured_is_no_change():
    before = {
        "mlx": "0.32.4",
        "runtime_build:mlx-cpu": "mlx 0.32.4 on OpenBLAS 0.3.30",
        "runtime_build:llamacpp-cpu": "llama-cpp-python 0.3.36",
    }
    blas = {"mlx": "0.32.4", "runtime_build:mlx-cpu": "mlx 0.32.4 on OpenBLAS 0.3.34"}
    assert changes.between(before, blas) == [
        "runtime build on mlx-cpu mlx 0.32.4 on OpenBLAS 0.3.30 → mlx 0.32.4 on OpenBLAS 0.3.34"
    ]
    upgraded = {"mlx": "0.33.0", "runtime_build:mlx-cpu": "mlx 0.33.0 on OpenBLAS 0.3.30"}
    assert changes.between(before, upgraded) == ["mlx 0.32.4 → 0.33.0"]
    assert changes.line(before, before) == "nothing recorded changed between the runs"


def test_a_run_records_its_provenance_and_its_hardware_slug(tmp_path):
    """What the plugin's append builds, from the summary's rows: session.results()'s `changed`
    (strings, not rows) is no section of figures."""
    row = {
        "item": ITEM,
        "device": "llamacpp-cpu",
        "metric": "decode",
        "median": 80.0,
        "unit": "tok/s",
        "spread": 0.01,
        "verdict": "pass",
    }
    results = {
        "runtime": [row],
        "items": [],
        "baseline_writes": [],
        "changed": ["llama-cpp-python 0.3.36 → 0.3.40 (1 item)"],
    }
    run = record.build(
        results,
        {},
        started=record.now(),
        root=tmp_path,
        settings=SETTINGS,
        exitstatus=0,
        fingerprint_of=lambda device: MACHINE,
        runtime_of=lambda device: f"{device} runtime 1.0",
        system={"os_release": "Linux 6.8.0", "gpu_driver": "550.1"},
    )
    assert [m.fingerprint for m in run.measures] == [MACHINE.slug] and run.fingerprints == {
        MACHINE.slug: asdict(MACHINE)
    }
    assert run.provenance["runtime_build:llamacpp-cpu"] == "llamacpp-cpu runtime 1.0"
    assert (run.provenance["os_release"], run.provenance["gpu_driver"]) == ("Linux 6.8.0", "550.1")
    assert run.provenance["pytest_slm"] == run.pytest_slm and "pytest-slm" not in run.versions
    assert run.provenance["pytest"] == run.versions["pytest"]
    path = tmp_path / "h.sqlite"
    database.append(path, run)
    with database.connect(path, write=False) as db:
        assert database.read_run(db, run.run_id) == run
