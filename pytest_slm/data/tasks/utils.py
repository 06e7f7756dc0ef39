"""Data loading for pytest-slm's own lm-eval tasks.

Each task YAML here says `custom_dataset: !function utils.load_slm_dataset` with
`dataset_kwargs: {slm_data: <task name>}`. lm-eval resolves `!function utils.X` against the
directory of the YAML file and calls the function with the task's metadata and dataset_kwargs as
keyword arguments; the function reads `data/<name>.<split>.jsonl` next to this file. So the tasks
load from any working directory, offline, and the data is read afresh on every load (no datasets
cache that could serve stale rows after `tools/generate_tasks.py` rewrites the files).
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("train", "test")


def data_path(slm_data: str, split: str, data_dir: Path = DATA_DIR) -> Path:
    """Where a task's split lives: the one naming rule for this loader and the generator that writes it."""
    return data_dir / f"{slm_data}.{split}.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_slm_dataset(slm_data: str, **_ignored):
    """Return a datasets.DatasetDict with the splits of `slm_data` found in data/.

    `_ignored` takes what lm-eval passes besides: the task's metadata (version, config_source,
    and any --metadata given at run time).
    """
    import datasets  # lm-eval's own dependency; imported lazily so the generator stays stdlib-only

    splits = {}
    for split in SPLITS:
        path = data_path(slm_data, split)
        if path.exists():
            splits[split] = datasets.Dataset.from_list(read_jsonl(path))
    if "test" not in splits:
        raise FileNotFoundError(f"no test split for {slm_data!r} in {DATA_DIR} (tools/generate_tasks.py writes it)")
    return datasets.DatasetDict(splits)
