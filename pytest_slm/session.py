"""State across one pytest run: its parts (matrix, model loader, texts, accuracy results, fidelity
reference), what was measured and written, what xdist workers send. No verdicts: see `checks/`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .checks.core import CheckContext, Policy
from .checks.kind import ROW_TYPES
from .matrix import Case, Matrix
from .measure.fidelity_reference import FidelityReference
from .measure.texts import Texts, start_up_problem
from .models.errors import RegistryError
from .models.loader import Loader
from .models.registry import select_models
from .options import SlmConfig
from .provenance import Change, counted, system, version
from .store import migrate
from .store.atomic import sweep_stale_temporaries
from .store.baselines import BaselineStore
from .tasks.catalog import TaskCatalog, TaskError
from .tasks.results import AccuracyResults


@dataclass
class SlmSession:
    config: SlmConfig
    matrix: Matrix
    loader: Loader
    texts: Texts
    accuracy_results: AccuracyResults
    fidelity: FidelityReference
    store: BaselineStore
    rows: list[Any] = field(default_factory=list)  # the checks' typed rows, in the order measured
    writes: list[dict[str, Any]] = field(default_factory=list)  # {"path", "changed"}
    changes: dict[str, list[list[str]]] = field(default_factory=dict)  # per item: [name, before, now]

    @classmethod
    def start(cls, config: SlmConfig, progress: Callable[[str], None] = lambda line: None) -> SlmSession:
        """Everything that can be checked without loading a model, checked now: a bad name is a
        usage error before any item runs."""
        try:
            models = select_models(config.registry_path, config.models)
            catalog = TaskCatalog(config.task_paths)
            catalog.check(spec.name for spec in config.tasks or ())
        except (RegistryError, TaskError) as exc:
            raise pytest.UsageError(str(exc)) from None
        problem = start_up_problem(config.eval_text, config.depth_text, config.depths)
        if problem := problem or migrate.start_up_problem(config.baselines_dir, config.update):
            raise pytest.UsageError(problem)
        sweep_stale_temporaries(config.baselines_dir)
        shown = relative_to_root(config.rootdir)
        matrix = Matrix(config, models, catalog)
        loader = Loader(config, models, progress, shown)
        texts = Texts(config.eval_text, config.depth_text)
        fidelity = FidelityReference(config, matrix, loader, texts, progress, shown)
        results = AccuracyResults(config, matrix, loader)
        return cls(config, matrix, loader, texts, results, fidelity, BaselineStore(config.baselines_dir))

    @property
    def loads(self) -> list[dict[str, str]]:
        """{"process", "model"}: one per model load, the workers' included."""
        return self.loader.loads

    # -- what xdist workers send the controller: plain data ----------------------------------

    def shared(self) -> dict[str, Any]:
        rows = [(row.SECTION, asdict(row)) for row in self.rows]
        outcomes = self.accuracy_results.outcomes_by_case
        return {"rows": rows, "writes": self.writes, "loads": self.loads, "outcomes": outcomes, "changes": self.changes}

    def absorb(self, shared: dict[str, Any]) -> None:
        self.rows += [ROW_TYPES[section](**fields) for section, fields in shared.get("rows", [])]
        self.writes += shared.get("writes", [])
        self.loads.extend(shared.get("loads", []))
        self.accuracy_results.outcomes_by_case.update(shared.get("outcomes", {}))
        self.changes.update(shared.get("changes", {}))

    def results(self) -> dict[str, Any]:
        """Everything measured, by report section, as plain data; and the writes and what changed."""
        sections: dict[str, list[dict[str, Any]]] = {section: [] for section in ROW_TYPES}
        for row in self.rows:
            sections[row.SECTION].append(asdict(row))
        return {**sections, "baseline_writes": self.writes, "changed": counted(self.changes)}

    def check_context(
        self,
        item: pytest.Item,
        provenance: Callable[[], dict[str, str]],
        case: Case | None = None,
        lm_eval: bool = False,
    ) -> CheckContext:
        """Rows go to the summary and to the item's own JUnit properties; writes to the summary; what
        changed since the item's baseline to the summary's first line."""
        from .report import junit_properties

        def add_rows(rows: Sequence[Any]) -> None:
            self.rows += rows
            for row in rows:
                item.user_properties += junit_properties(asdict(row))

        def full_provenance() -> dict[str, str]:
            extra = {"lm_eval": version("lm-eval")} if lm_eval else {}
            extra |= self.loader.case_provenance(case) if case is not None else {}
            return {
                **provenance(),
                **extra,
                **system(),
                "pytest_slm": version("pytest-slm"),
                "date": dt.date.today().isoformat(),
            }

        def add_changes(found: Sequence[Change]) -> None:
            self.changes[item.nodeid] = [[c.name, str(c.before), str(c.now)] for c in found]

        config, shown = self.config, self.loader.shown
        return CheckContext(
            store=self.store,
            policy=Policy(config.update, config.strict, config.update_partial, config.first_run),
            nodeid=item.nodeid,
            provenance=full_provenance,
            add_rows=add_rows,
            add_write=lambda path, changed: self.writes.append({"path": shown(path), "changed": changed}),
            add_changes=add_changes,
            shown=shown,
        )


def relative_to_root(rootdir: Path) -> Callable[[Path], str]:
    """A path relative to the rootdir where it lies there: the form a reviewer sees in the diff."""

    def shown(path: Path) -> str:
        try:
            return str(path.relative_to(rootdir))
        except ValueError:
            return str(path)

    return shown
