"""A pytest plugin that makes llama.cpp itself slower: every `llama_decode` call takes
(1 + $PYTEST_SLM_SLOWDOWN) times as long. What the latency items must catch, injected below them.

The added time is spent busy, as a slower runtime would spend it: a sleep there let the virtual
machine deschedule the process and added its own wake-up jitter (`decode_steadiness.py --runs 6`,
7 Dec 2026, load average 0.6-1.0: the slowed runs' repeats spread 3.1% in the median run and up to
9% with a sleep, 1.4% and up to 3% spinning).

Load it with `-p slowed_runtime` and this directory on PYTHONPATH.
"""

import os
import time

import pytest


@pytest.fixture(autouse=True)
def slowed_llama_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    slowdown = float(os.environ.get("PYTEST_SLM_SLOWDOWN", "0"))
    decode = llama_cpp.llama_decode

    def slowed(ctx, batch):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        status = decode(ctx, batch)
        until = time.perf_counter() + slowdown * (time.perf_counter() - started)
        while time.perf_counter() < until:
            pass
        return status

    monkeypatch.setattr(llama_cpp, "llama_decode", slowed)
