"""The same weights on llama.cpp and MLX must give the same next-token distributions, up to
numerics: this catches a broken GGUF import or a runtime bug that one runtime's baseline cannot."""

import pytest


@pytest.mark.slm_parity
def test_backend_parity(slm_parity):
    slm_parity.check(slm_parity.measure())
