"""The accuracy results of a run: each case's task evaluated once (its accuracy item and every
relative gate measured against it share the run), and the per-sample outcomes parity and the
history read."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pytest

from ..matrix import Case, Matrix, ParityCase
from ..models.handle import SlmModel
from ..models.loader import Loader
from ..stats import PairedComparison, compare_outcomes
from .catalog import AccuracyResult, evaluate

if TYPE_CHECKING:
    from ..options import SlmConfig


@dataclass
class AccuracyResults:
    config: SlmConfig
    matrix: Matrix
    loader: Loader
    outcomes_by_case: dict[str, dict[str, int]] = field(default_factory=dict)  # per accuracy item, for parity
    _results: dict[str, AccuracyResult] = field(default_factory=dict)  # per accuracy case id

    def remember_outcomes(self, case: Case, outcomes: dict[str, int]) -> None:
        self.outcomes_by_case[case.id] = outcomes

    def outcomes(self) -> dict[str, dict[str, int]]:
        """Per accuracy item (case id), its per-sample outcomes: what the history stores."""
        return dict(self.outcomes_by_case)

    def accuracy(self, case: Case, model: SlmModel | None = None) -> AccuracyResult:
        """The case's task run once a session: its accuracy item and the relative gate of every
        quant measured against it share the run, whichever comes first."""
        cached = self._results.get(case.id)
        if cached is None:
            assert case.task is not None
            cached = evaluate(model or self.loader.model(case), case.task, self.config.limit, self.matrix.catalog)
            self._results[case.id] = cached
        return cached

    def reference_accuracy(self, case: Case) -> AccuracyResult:
        """The reference's run of the case's task (same shots, same --slm-limit), for the relative gate."""
        reference = replace(self.matrix.reference_of(case), task=case.task)
        if problem := self.matrix.skip_reason(reference):
            pytest.fail(
                f"{case.id}: the relative gate's reference {reference.model_id} cannot run here: {problem}",
                pytrace=False,
            )
        return self.accuracy(reference)

    def runtime_outcomes(self, case: ParityCase) -> dict[str, PairedComparison]:
        """Both runtimes' outcomes on the shipped file, paired, for the tasks both ran this session."""
        tasks = {}
        for task in self.matrix.tasks():
            mlx_run = self.outcomes_by_case.get(replace(case.sides[1], task=task).id)
            llama_run = self.outcomes_by_case.get(Case(case.model, case.reference, "native", task).id)
            if mlx_run is not None and llama_run is not None:
                tasks[str(task)] = compare_outcomes(llama_run, mlx_run)
        return tasks
