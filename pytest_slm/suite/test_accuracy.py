"""Task accuracy across the matrix: each item runs one lm-eval task and is compared, sample by
sample, with its stored baseline."""

import pytest


@pytest.mark.slm_accuracy
def test_task_accuracy(slm_model, slm_accuracy):
    slm_accuracy.check(slm_accuracy.evaluate(slm_model))
