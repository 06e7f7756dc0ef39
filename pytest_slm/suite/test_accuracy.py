"""Task accuracy across the matrix: each item runs one lm-eval task and is compared, sample by
sample, with its stored baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_slm.fixtures import Accuracy
    from pytest_slm.models.handle import SlmModel


@pytest.mark.slm_accuracy
def test_task_accuracy(slm_model: SlmModel, slm_accuracy: Accuracy) -> None:
    slm_accuracy.check(slm_accuracy.evaluate(slm_model))
