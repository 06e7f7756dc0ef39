"""What the model costs to run on this machine: prefill and decode speed measured apart (prefill is
compute-bound, decode memory-bound), time to first token, weights and KV cache memory. Timings are
compared only with a baseline measured on the same hardware fingerprint."""

import pytest

pytestmark = pytest.mark.slm_runtime


def test_prefill_speed(slm_model, slm_runtime):
    slm_runtime.prefill(slm_model)


def test_decode_speed(slm_model, slm_runtime):
    slm_runtime.decode(slm_model)


def test_memory(slm_model, slm_runtime):
    slm_runtime.memory(slm_model)
