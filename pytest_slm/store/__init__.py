"""The baseline store: where records live on disk, how they are read, written and merged.

One package for everything that touches the baselines tree, so that paths, locks, atomic writes
and schema checks have one owner.
"""

from __future__ import annotations

from .baselines import SCHEMA_VERSION, BaselineError, BaselineKey, BaselineStore, NewerSchemaError, writable_dir_problem
from .merge import MergeError, MergeReport, merge_trees

__all__ = [
    "SCHEMA_VERSION",
    "BaselineError",
    "BaselineKey",
    "BaselineStore",
    "MergeError",
    "MergeReport",
    "NewerSchemaError",
    "merge_trees",
    "writable_dir_problem",
]
