"""Runtime baselines keyed by the runtime's version (before the upgrade loop) moved to keys of the
hardware alone. The committed records as they were before the move (tests/data/legacy-baselines)
migrate to exactly the committed files of today, figures unchanged; a tree still holding such a
record is a usage error naming the command, and changes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_slm.measure.machine import Fingerprint
from pytest_slm.store.baselines import BaselineError
from pytest_slm.store.migrate import legacy_records, migrate_tree

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "tests" / "data" / "legacy-baselines"


def records(root: Path) -> dict[str, dict]:
    return {p.relative_to(root).as_posix(): json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))}


def test_the_committed_runtime_baselines_are_the_legacy_ones_migrated_with_their_figures_unchanged(tmp_path):
    shutil.copytree(LEGACY, tmp_path / "baselines")
    before = records(tmp_path / "baselines")
    moved = migrate_tree(tmp_path / "baselines")
    assert len(moved) == len(before) == 7
    after = records(tmp_path / "baselines")
    committed = ROOT / "baselines"
    for (old, new), (old_name, record) in zip(moved, sorted(before.items())):
        migrated = after[new.relative_to(tmp_path / "baselines").as_posix()]
        fingerprint = {k: v for k, v in record["fingerprint"].items() if k != "runtime"}
        assert new.parent.name == Fingerprint(**fingerprint).slug  # the hardware's key, as the items compute it
        assert migrated == {
            **record,
            "fingerprint": fingerprint,
            "provenance": {**record["provenance"], "runtime_build": record["fingerprint"]["runtime"]},
        }
        path = committed / new.relative_to(tmp_path / "baselines")
        stored = json.loads(path.read_text())
        if stored["provenance"]["date"] == record["provenance"]["date"]:
            assert migrated == stored
        else:  # refreshed on this machine since the migration: the same key, newer figures
            assert stored["provenance"]["date"] > record["provenance"]["date"]
            assert stored["fingerprint"] == fingerprint and "runtime_build" in stored["provenance"]
    assert not list(legacy_records(committed))
    assert migrate_tree(tmp_path / "baselines") == []  # a migrated tree has nothing left to move


def test_two_records_landing_on_one_key_move_nothing(tmp_path):
    shutil.copytree(LEGACY, tmp_path / "baselines")
    native = tmp_path / "baselines" / "smollm2-135m" / "llamacpp-cpu" / "native" / "runtime"
    [source] = [p for p in native.iterdir() if p.name.endswith("-1t-36b8b2f9b4")]
    twin = native / "linux-x86_64-1t-0000000000"
    shutil.copytree(source, twin)
    for path in twin.iterdir():
        record = json.loads(path.read_text())
        path.write_text(
            json.dumps({**record, "fingerprint": {**record["fingerprint"], "runtime": "llama-cpp-python 0.3.35"}})
        )
    before = records(tmp_path / "baselines")
    with pytest.raises(BaselineError, match="both become .* without the runtime in the key"):
        migrate_tree(tmp_path / "baselines")
    assert records(tmp_path / "baselines") == before


def test_a_legacy_tree_is_a_usage_error_naming_the_command_and_the_command_moves_it(pytester):
    shutil.copytree(LEGACY, pytester.path / "baselines")
    before = records(pytester.path / "baselines")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            (
                "ERROR: */runtime/*.json: runtime baselines are keyed by the runtime's version (an older pytest-slm),"
                " so an upgrade would find none: move them to keys of the hardware with: python -m pytest_slm migrate-baselines *baselines"
            )
        ]
    )
    assert records(pytester.path / "baselines") == before

    done = subprocess.run(
        [sys.executable, "-m", "pytest_slm", "migrate-baselines", "baselines"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "migrated 7 runtime baseline(s) under baselines"
    pytester.runpytest_inprocess().assert_outcomes(passed=1)
