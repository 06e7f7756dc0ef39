import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
from records import baseline_record as record

from pytest_slm.store.atomic import write_text_atomic
from pytest_slm.store.baselines import (
    LOCK_NAME,
    OLDEST_READABLE,
    SCHEMA_VERSION,
    BaselineError,
    BaselineKey,
    BaselineStore,
    writable_dir_problem,
)

KEY = BaselineKey("smollm2-135m", "llamacpp-cpu", "native", "slm_arith-5shot")
NEWER = SCHEMA_VERSION + 1


def put(store, key, text):
    path = store.path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_path_names_model_device_quant_and_task(tmp_path):
    assert BaselineStore(tmp_path).path(KEY) == tmp_path / "smollm2-135m/llamacpp-cpu/native/slm_arith-5shot.json"
    runtime = BaselineKey("m", "d", "q", "runtime/linux-x86_64-2t-0123/decode")
    assert BaselineStore(tmp_path).path(runtime) == tmp_path / "m/d/q/runtime/linux-x86_64-2t-0123/decode.json"


def test_round_trip_and_stable_text(tmp_path):
    store = BaselineStore(tmp_path)
    assert store.read(KEY) is None
    assert store.write(KEY, record()) is True
    assert store.read(KEY) == record()
    text = store.path(KEY).read_text()
    assert text == json.dumps(record(), indent=2, sort_keys=True) + "\n"
    assert list(store.path(KEY).parent.iterdir()) == [store.path(KEY)]  # no temporary file left behind


def test_same_measurement_leaves_file_and_date_untouched(tmp_path):
    store = BaselineStore(tmp_path)
    store.write(KEY, record())
    before = store.path(KEY).read_text()
    assert store.write(KEY, record(provenance={"date": "2030-01-01", "lm_eval": "0.4.13"})) is False
    assert store.path(KEY).read_text() == before
    assert store.write(KEY, record(accuracy=0.0, outcomes={"00000": 0, "00001": 0})) is True


def test_an_older_readable_record_reads_as_it_is_and_the_same_measurement_keeps_it(tmp_path):
    """Files of an older schema this pytest-slm still reads (other sessions' baselines) load, and a
    refresh that measures the same thing does not rewrite them just to bump the version."""
    store = BaselineStore(tmp_path)
    older = record(schema_version=OLDEST_READABLE)
    text = json.dumps(older, indent=2, sort_keys=True) + "\n"
    put(store, KEY, text)
    assert OLDEST_READABLE < SCHEMA_VERSION and store.read(KEY) == older
    assert store.write(KEY, record()) is False and store.path(KEY).read_text() == text
    assert store.write(KEY, record(accuracy=0.0, outcomes={"00000": 0, "00001": 0})) is True
    assert store.read(KEY)["schema_version"] == SCHEMA_VERSION


# -- where the lock lives -----------------------------------------------------------------------


def test_the_lock_lies_in_the_root_and_only_writers_make_it(tmp_path):
    root = tmp_path / "baselines"
    store = BaselineStore(root)
    temporary_files = set(os.listdir(tempfile.gettempdir()))
    assert store.read(KEY) is None
    assert not root.exists()  # a read-only run changes nothing, not even a lock file
    store.write(KEY, record())
    assert (root / LOCK_NAME).is_file()
    assert store.lock().lock_file == str(root / LOCK_NAME)
    assert not {n for n in os.listdir(tempfile.gettempdir()) if "pytest-slm" in n} - temporary_files


# -- keys that would write elsewhere ------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        BaselineKey("..", "d", "q", "n"),
        BaselineKey("/abs", "d", "q", "n"),
        BaselineKey("", "d", "q", "n"),
        BaselineKey("m", "d/e", "q", "n"),
        BaselineKey("m", "d", "q\\r", "n"),
        BaselineKey("m", "d", ".", "n"),
        BaselineKey("m", "d", "q", "a/../b"),
        BaselineKey("m", "d", "q", "/etc/passwd"),
        BaselineKey("m", "d", "q", "runtime//decode"),
        BaselineKey("m", "d", "q", "n\0"),
    ],
)
def test_unsafe_key_parts_are_refused(tmp_path, key):
    with pytest.raises(BaselineError, match="unsafe baseline key") as info:
        BaselineStore(tmp_path).path(key)
    assert "\n" not in str(info.value)


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    root, outside = tmp_path / "baselines", tmp_path / "elsewhere"
    (root / "smollm2-135m").mkdir(parents=True)
    outside.mkdir()
    (root / "smollm2-135m" / "llamacpp-cpu").symlink_to(outside)
    store = BaselineStore(root)
    with pytest.raises(BaselineError, match="outside"):
        store.write(KEY, record())
    with pytest.raises(BaselineError, match="outside"):
        store.read(KEY)
    assert list(outside.iterdir()) == []


def test_a_symlinked_root_is_fine(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "baselines").symlink_to(tmp_path / "real")
    assert BaselineStore(tmp_path / "baselines").write(KEY, record()) is True
    assert (tmp_path / "real" / KEY.relative_path).is_file()


# -- what is in the way -------------------------------------------------------------------------


def test_a_directory_where_the_file_goes_is_one_line(tmp_path):
    store = BaselineStore(tmp_path)
    store.path(KEY).mkdir(parents=True)
    with pytest.raises(BaselineError, match=r"cannot write baseline .*: a directory is in the way$"):
        store.write(KEY, record())


def test_a_file_where_a_directory_goes_is_one_line(tmp_path):
    store = BaselineStore(tmp_path)
    (tmp_path / "smollm2-135m").mkdir()
    (tmp_path / "smollm2-135m" / "llamacpp-cpu").write_text("not a directory")
    with pytest.raises(BaselineError, match=r"llamacpp-cpu is a file, not a directory$"):
        store.write(KEY, record())


def test_writable_dir_problem(tmp_path):
    assert writable_dir_problem(tmp_path / "new" / "baselines") is None
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert writable_dir_problem(tmp_path / "dangling") == (
        f"baselines path {tmp_path / 'dangling'} is a symlink to {tmp_path / 'gone'}, which does not exist"
    )
    (tmp_path / "file").write_text("")
    assert writable_dir_problem(tmp_path / "file") == f"baselines path {tmp_path / 'file'} is a file, not a directory"
    assert writable_dir_problem(tmp_path / "file" / "sub") == (
        f"baselines path {tmp_path / 'file'} is a file, not a directory (to hold {tmp_path / 'file' / 'sub'})"
    )


# -- the envelope and schema versions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON (line 1"),
        ("[1, 2]", "is not a JSON object"),
        (json.dumps(record(schema_version="1")), "has no integer schema_version: refresh it with --update-baselines"),
        (
            json.dumps(record(schema_version=NEWER)),
            f"was written by a newer pytest-slm (schema {NEWER}; this one reads {SCHEMA_VERSION}): upgrade pytest-slm",
        ),
        (
            json.dumps(record(schema_version=0)),
            f"has schema 0, this pytest-slm reads {SCHEMA_VERSION}: refresh it with --update-baselines",
        ),
    ],
)
def test_a_bad_envelope_is_one_line(tmp_path, text, message):
    store = BaselineStore(tmp_path)
    path = put(store, KEY, text)
    with pytest.raises(BaselineError, match=re.escape(message)) as info:
        store.read(KEY)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_text() == text


def test_read_checks_only_the_envelope(tmp_path):
    store = BaselineStore(tmp_path)
    put(store, KEY, json.dumps(record(kind="speed", outcomes=None)))
    assert store.read(KEY)["kind"] == "speed"


@pytest.mark.parametrize("text", ["{not json", "[]", json.dumps(record(schema_version=0))])
def test_an_update_overwrites_a_corrupt_or_older_file(tmp_path, text):
    store = BaselineStore(tmp_path)
    put(store, KEY, text)
    assert store.read_existing(KEY) is None
    assert store.write(KEY, record()) is True
    assert store.read(KEY) == record()


def test_a_newer_file_is_neither_read_nor_overwritten(tmp_path):
    store = BaselineStore(tmp_path)
    text = json.dumps(record(schema_version=NEWER))
    path = put(store, KEY, text)
    for call in (lambda: store.read_existing(KEY), lambda: store.write(KEY, record())):
        with pytest.raises(BaselineError, match="written by a newer pytest-slm"):
            call()
    assert path.read_text() == text


# -- atomic writes ------------------------------------------------------------------------------


def test_a_written_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        BaselineStore(tmp_path).write(KEY, record())
        write_text_atomic(tmp_path / "report.json", "{}")
    finally:
        os.umask(old)
    assert (BaselineStore(tmp_path).path(KEY).stat().st_mode & 0o777) == 0o644
    assert ((tmp_path / "report.json").stat().st_mode & 0o777) == 0o644


def dead_pid():
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=False
    )
    return int(process.stdout)


def test_a_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    """kill -9 in the middle of a write: the target is untouched and the leftover goes on the next write."""
    target = tmp_path / "baseline.json"
    target.write_text("old\n")
    script = textwrap.dedent(
        """
        import os, sys, time
        from pathlib import Path
        from pytest_slm.store import atomic

        def stuck(fd):
            print("writing", flush=True)
            time.sleep(60)
        atomic.os.fsync = stuck
        atomic.write_text_atomic(Path(sys.argv[1]), "new\\n" * 100_000)
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
        [leftover] = [p for p in tmp_path.iterdir() if p != target]
        assert leftover.name.startswith(".baseline.json.pytest-slm-") and leftover.name.endswith(".tmp")
        write_text_atomic(tmp_path / "other.json", "{}")
        assert leftover.exists()  # its writer is alive: not stale
    finally:
        writer.kill()
        writer.wait()
    assert target.read_text() == "old\n"
    write_text_atomic(tmp_path / "other.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json", "other.json"]


def test_stale_temporaries_are_removed_and_others_kept(tmp_path):
    dead = tmp_path / f".a.json.pytest-slm-{dead_pid()}-0123abcd.tmp"
    old = tmp_path / f".b.json.pytest-slm-{os.getppid()}-0123abcd.tmp"
    fresh = tmp_path / f".c.json.pytest-slm-{os.getppid()}-0123abcd.tmp"
    unrelated = tmp_path / ".d.json.tmp"
    for path in (dead, old, fresh, unrelated):
        path.write_text("partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    write_text_atomic(tmp_path / "e.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, unrelated.name, "e.json"])
