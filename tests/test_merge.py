import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from records import baseline_record as record
from records import latency_record

from pytest_slm.checks import validate_record
from pytest_slm.cli.main import main
from pytest_slm.measure.machine import Fingerprint
from pytest_slm.store import merge as merge_module
from pytest_slm.store.baselines import LOCK_NAME, OLDEST_READABLE, SCHEMA_VERSION, BaselineError, dumps
from pytest_slm.store.merge import MergeError
from pytest_slm.store.merge import merge_trees as merge_with

merge_trees = functools.partial(merge_with, validate=validate_record)

ARITH = "smollm2-135m/llamacpp-cpu/native/slm_arith-5shot.json"
FACTS = "smollm2-135m/llamacpp-cuda/native/slm_facts-0shot.json"
LATENCY = f"smollm2-135m/llamacpp-cpu/native/runtime/{Fingerprint(**latency_record()['fingerprint']).slug}/decode.json"


def facts(accuracy=0.5, **changes):
    return record(accuracy, device="llamacpp-cuda", task="slm_facts", shots=0, **changes)


def tree(root, files):
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else dumps(content), encoding="utf-8")
    return root


def snapshot(root):
    """Every file's text but the writers' lock, which a merge leaves (ignored by git) like any writer."""
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_NAME]
    return {p.relative_to(root).as_posix(): p.read_text() for p in files}


def hashes(root):
    """Every entry under `root`, directories and temporaries included: what a failed merge must not change."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
        if p.name != LOCK_NAME
    }


def test_disjoint_trees_are_united_and_identical_files_merge_silently(tmp_path):
    a = tree(tmp_path / "a", {ARITH: record(), LATENCY: latency_record()})
    b = tree(tmp_path / "b", {ARITH: record(), FACTS: facts()})
    into = tmp_path / "baselines"

    report = merge_trees([a, b], into)

    assert report.added == [LATENCY, ARITH, FACTS]
    assert report.changed == report.unchanged == []
    assert snapshot(into) == {**snapshot(a), **snapshot(b)}


def test_existing_files_are_changed_unchanged_or_kept(tmp_path):
    into = tree(tmp_path / "baselines", {ARITH: record(0.5), FACTS: facts(), LATENCY: latency_record()})
    before = snapshot(into)
    source = tree(tmp_path / "run", {ARITH: record(1.0), FACTS: facts(date="2030-01-01")})

    report = merge_trees([source], into)

    assert (report.added, report.changed, report.unchanged) == ([], [ARITH], [FACTS])
    assert json.loads((into / ARITH).read_text())["accuracy"] == 1.0
    assert (into / FACTS).read_text() == before[FACTS]  # only the date differs: left untouched, date included
    assert (into / LATENCY).read_text() == before[LATENCY]  # only in the destination: kept


def test_a_conflict_names_the_file_and_writes_nothing(tmp_path):
    a = tree(tmp_path / "a", {ARITH: record(0.5), FACTS: facts()})
    b = tree(tmp_path / "b", {ARITH: record(1.0), LATENCY: latency_record()})
    c = tree(tmp_path / "c", {ARITH: record(0.5, date="2030-01-01"), LATENCY: latency_record(1.4)})
    into = tree(tmp_path / "baselines", {FACTS: facts(1.0)})
    before = snapshot(into)

    with pytest.raises(MergeError) as raised:
        merge_trees([a, b, c], into)

    assert raised.value.problems == [
        f"conflict: {LATENCY} differs between {b}, {c} (choose with --prefer=first|last)",
        f"conflict: {ARITH} differs between {a}, {b} (choose with --prefer=first|last)",
    ]
    assert snapshot(into) == before


@pytest.mark.parametrize(("prefer", "winner"), [("first", 0.5), ("last", 1.0)])
def test_prefer_picks_the_side_that_wins(tmp_path, prefer, winner):
    a = tree(tmp_path / "a", {ARITH: record(0.5)})
    b = tree(tmp_path / "b", {ARITH: record(1.0)})
    into = tmp_path / "baselines"

    merge_trees([a, b], into, prefer=prefer)

    assert json.loads((into / ARITH).read_text())["accuracy"] == winner


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON (line 1"),
        (dumps({**record(), "outcomes": {"00000": 2, "00001": 0}}), "outcomes' must hold 0 or 1"),
        (dumps({**record(), "schema_version": SCHEMA_VERSION + 1}), "was written by a newer pytest-slm"),
        (dumps({**record(), "schema_version": OLDEST_READABLE - 1}), "refresh it with --update-baselines"),
        (b"\xff\xfe", "cannot read"),
    ],
)
def test_a_corrupt_input_is_one_line_and_changes_nothing(tmp_path, content, message):
    good = tree(tmp_path / "good", {FACTS: facts()})
    bad = tmp_path / "bad" / ARITH
    bad.parent.mkdir(parents=True)
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    into = tree(tmp_path / "baselines", {LATENCY: latency_record()})
    before = snapshot(into)

    with pytest.raises(MergeError) as raised:
        merge_trees([good, tmp_path / "bad"], into, prefer="last")

    [problem] = raised.value.problems
    assert message in problem and str(bad) in problem and "\n" not in problem
    assert snapshot(into) == before


def test_a_missing_source_is_an_error(tmp_path):
    with pytest.raises(MergeError, match="is not a directory"):
        merge_trees([tmp_path / "nowhere"], tmp_path / "baselines")
    assert not (tmp_path / "baselines").exists()


def test_main_prints_a_short_report(tmp_path, capsys):
    into = tree(tmp_path / "baselines", {ARITH: record(0.5), FACTS: facts()})
    source = tree(tmp_path / "run", {ARITH: record(1.0), FACTS: facts(), LATENCY: latency_record()})

    assert main(["merge-baselines", str(source), "--into", str(into)]) == 0

    assert capsys.readouterr().out.splitlines() == [
        f"added    {LATENCY}",
        f"changed  {ARITH}",
        f"merged 1 tree(s) into {into}: 1 added, 1 changed, 1 unchanged",
    ]


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "pytest_slm", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_merges_and_refuses_conflicts(tmp_path):
    tree(tmp_path / "linux", {ARITH: record(0.5)})
    tree(tmp_path / "mac", {ARITH: record(1.0), FACTS: facts()})

    refused = run_cli("merge-baselines", "linux", "mac", "--into", "baselines", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"merge-baselines: conflict: {ARITH} differs between linux, mac (choose with --prefer=first|last)",
        "merge-baselines: nothing written to baselines",
    ]
    assert not (tmp_path / "baselines").exists()

    merged = run_cli("merge-baselines", "linux", "mac", "--into", "baselines", "--prefer=last", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout.splitlines()[-1] == "merged 2 tree(s) into baselines: 2 added, 0 changed, 0 unchanged"
    assert snapshot(tmp_path / "baselines") == snapshot(tmp_path / "mac")


def test_cli_help_and_usage_errors(tmp_path):
    help_text = run_cli("merge-baselines", "--help", cwd=tmp_path)
    assert help_text.returncode == 0 and "--prefer {first,last}" in help_text.stdout
    assert run_cli("merge-baselines", "a", cwd=tmp_path).returncode == 2  # --into is required
    assert run_cli("merge-baselines", "a", "--into", "b", "--prefer=both", cwd=tmp_path).returncode == 2


def test_the_validator_is_the_callers(tmp_path):
    source = tree(tmp_path / "run", {ARITH: record()})

    def refuse(record, path, relative):
        raise BaselineError(f"baseline {path}: refused by the caller")

    with pytest.raises(MergeError, match="refused by the caller"):
        merge_with([source], tmp_path / "baselines", validate=refuse)
    assert not (tmp_path / "baselines").exists()


def test_a_newer_destination_file_is_not_overwritten(tmp_path):
    newer = dumps({**record(), "schema_version": SCHEMA_VERSION + 1})
    into = tree(tmp_path / "baselines", {ARITH: newer})
    source = tree(tmp_path / "run", {ARITH: record(), FACTS: facts()})

    with pytest.raises(MergeError) as raised:
        merge_trees([source], into)

    [problem] = raised.value.problems
    assert "was written by a newer pytest-slm" in problem and "not overwritten" in problem
    assert snapshot(into) == {ARITH: newer}


def test_an_older_or_corrupt_destination_file_is_replaced(tmp_path):
    into = tree(tmp_path / "baselines", {ARITH: dumps({**record(), "schema_version": 0}), FACTS: "{not json"})
    source = tree(tmp_path / "run", {ARITH: record(), FACTS: facts()})
    assert merge_trees([source], into).changed == [ARITH, FACTS]
    assert snapshot(into) == snapshot(source)


def test_a_directory_in_the_way_is_one_line(tmp_path):
    into = tmp_path / "baselines"
    (into / ARITH).mkdir(parents=True)
    with pytest.raises(MergeError, match="a directory is in the way"):
        merge_trees([tree(tmp_path / "run", {ARITH: record()})], into)


def fail_on_call(monkeypatch, name, n):
    """`os.<name>` as the merge module sees it, raising an I/O error on its n-th call."""
    real = getattr(os, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(merge_module.os, name, failing)


@pytest.mark.parametrize(("name", "n"), [("replace", 1), ("replace", 2), ("replace", 3), ("fsync", 2), ("mkdir", 3)])
def test_an_io_error_half_way_leaves_the_destination_as_it_was(tmp_path, monkeypatch, name, n):
    """Staged in order LATENCY, ARITH (both replacing a file), FACTS (two new directories): each
    failure point leaves every file, directory and temporary as it was."""
    into = tree(tmp_path / "baselines", {ARITH: record(0.5), LATENCY: latency_record()})
    source = tree(tmp_path / "run", {ARITH: record(1.0), FACTS: facts(), LATENCY: latency_record(1.4)})
    before = hashes(into)
    if name == "mkdir":  # the first call makes sure the destination exists, for its lock
        monkeypatch.setattr(merge_module.Path, "mkdir", _failing_mkdir(merge_module.Path.mkdir, n))
    else:
        fail_on_call(monkeypatch, name, n)

    with pytest.raises(MergeError) as raised:
        merge_trees([source], into)

    [problem] = raised.value.problems
    assert "No space left on device" in problem and raised.value.intact
    assert hashes(into) == before


def _failing_mkdir(real, n):
    calls = []

    def mkdir(self, *args, **kwargs):
        calls.append(self)
        if len(calls) == n:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    return mkdir


def test_the_cli_reports_an_io_error_in_one_line(tmp_path, monkeypatch, capsys):
    into = tree(tmp_path / "baselines", {ARITH: record(0.5)})
    source = tree(tmp_path / "run", {ARITH: record(1.0), FACTS: facts()})
    before = snapshot(into)
    fail_on_call(monkeypatch, "replace", 2)

    assert main(["merge-baselines", str(source), "--into", str(into)]) == 1

    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"merge-baselines: cannot write {into / FACTS}: No space left on device",
        f"merge-baselines: nothing written to {into}",
    ]
    assert snapshot(into) == before


def test_a_symlink_out_of_the_destination_is_refused(tmp_path):
    into, outside = tmp_path / "baselines", tmp_path / "elsewhere"
    (into / "smollm2-135m").mkdir(parents=True)
    outside.mkdir()
    (into / "smollm2-135m" / "llamacpp-cpu").symlink_to(outside)
    with pytest.raises(MergeError, match="outside"):
        merge_trees([tree(tmp_path / "run", {ARITH: record()})], into)
    assert list(outside.iterdir()) == []


def test_every_committed_baseline_is_a_record_the_merge_accepts_where_it_lies():
    """Each kind's file name follows from the record (decode at any depth, load, memory), so the
    committed tree merges as it is."""
    root = Path(__file__).resolve().parents[1] / "baselines"
    files = sorted(root.rglob("*.json"))
    assert any(p.name == "load.json" for p in files) and any("@d2048" in p.read_text() for p in files)
    for path in files:
        validate_record(json.loads(path.read_text()), path, path.relative_to(root))
