"""The shipped task data is what tools/generate_tasks.py writes: run offline into an empty folder,
the generator reproduces every committed file byte for byte, and writes no other file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "tools" / "generate_tasks.py"
COMMITTED = ROOT / "pytest_slm" / "data" / "tasks" / "data"


def test_the_generator_writes_the_committed_task_data_byte_for_byte(tmp_path):
    ran = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(path.name for path in COMMITTED.iterdir())
    assert len(written) == 6  # train and test of slm_facts, slm_arith, slm_cloze
    changed = [name for name in written if (tmp_path / name).read_bytes() != (COMMITTED / name).read_bytes()]
    assert not changed, f"{changed} differ from the generator's output: run python tools/generate_tasks.py"
