"""A pytest plugin that makes llama.cpp itself slower: every `llama_decode` call takes
(1 + $PYTEST_SLM_SLOWDOWN) times as long. What the latency items must catch, injected below them.

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
        time.sleep(slowdown * (time.perf_counter() - started))
        return status

    monkeypatch.setattr(llama_cpp, "llama_decode", slowed)
