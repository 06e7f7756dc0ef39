"""What each quantization costs in next-token distributions: KL divergence, top-1 agreement and
perplexity against the model's exact float32 values, on the project's own evaluation text (what
llama.cpp's `llama-perplexity --kl-divergence` reports), compared with the quant's baseline."""

import pytest


@pytest.mark.slm_fidelity
def test_fidelity(slm_model, slm_fidelity):
    slm_fidelity.check(slm_model)
