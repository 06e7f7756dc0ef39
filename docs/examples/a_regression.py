"""A real failure to read (docs/guide.md, "Reading a failure"): the embedded model's slm_facts item
on llamacpp-cpu against a copy of its baseline in which 15 samples it gets wrong are marked right,
as if the build that made the baseline had been 7 points better.

    .venv/bin/python docs/examples/a_regression.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ITEM = "suites/test_accuracy.py::test_task_accuracy[smollm2-135m-llamacpp-cpu-native-slm_facts:0]"
FLIPPED = 15

with tempfile.TemporaryDirectory() as tmp:
    baselines = Path(tmp) / "baselines"
    shutil.copytree(ROOT / "baselines", baselines)
    path = baselines / "smollm2-135m" / "llamacpp-cpu" / "native" / "slm_facts-0shot.json"
    record = json.loads(path.read_text())
    wrong = [doc for doc, outcome in sorted(record["outcomes"].items()) if outcome == 0][:FLIPPED]
    record["outcomes"].update(dict.fromkeys(wrong, 1))
    record["accuracy"] = round(sum(record["outcomes"].values()) / record["n"], 6)
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            ITEM,
            f"--slm-baselines={baselines}",
            "--slm-history=off",
            "-p",
            "no:cacheprovider",
            "--tb=short",
        ],
        cwd=ROOT,
        check=False,
    )
    sys.exit(0 if done.returncode == 1 else 1)  # the item must fail
