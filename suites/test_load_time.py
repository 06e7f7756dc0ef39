"""How long the model takes to load on this machine: cold (its file evicted from the page cache),
warm (loaded again from the cache), and the time to the first token from a cold start, each judged
like the latency items against this machine's baseline. The item loads the model itself, apart
from the model the other items share."""

import pytest

pytestmark = pytest.mark.slm_runtime


def test_load_time(slm_case, slm_runtime):
    slm_runtime.load(slm_case)
