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
from collections.abc import Callable
from typing import Any

import pytest


def spin(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def slowed(decode: Callable[..., int], slowdown: float, wait: Callable[[float], None] = spin) -> Callable[..., int]:
    """`decode` taking (1 + `slowdown`) times as long, the added time waited out by `wait`."""

    def slowed_decode(ctx: Any, batch: Any) -> int:
        started = time.perf_counter()
        status = decode(ctx, batch)
        wait(slowdown * (time.perf_counter() - started))
        return status

    return slowed_decode


@pytest.fixture(autouse=True)
def slowed_llama_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    slowdown = float(os.environ.get("PYTEST_SLM_SLOWDOWN", "0"))
    monkeypatch.setattr(llama_cpp, "llama_decode", slowed(llama_cpp.llama_decode, slowdown))
