"""Generation throughput on llama.cpp, side by side in one run on the same GGUF, task, samples and
threads, for the arithmetic task at 0 and 5 shots:

  (b) pytest-slm's bridge, rows decoded side by side (`LlamaCppModel.generate`)
  (o) the same bridge, row after row (`generate_row_by_row`: what pytest-slm did before)
  (c) a floor: the bare backend generating exactly the tokens (b) generated, in full groups of
      rows, with no lm-eval, no stop strings, no text

and whether (b) and (o) answer every question alike (the same tokens, hence the same exact-match).

    .venv/bin/python benchmarks/generation_throughput.py [--limit 180] [--threads 2] [--shots 0 5]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

from pytest_slm.backends.base import LoadRequest
from pytest_slm.backends.llamacpp import backend as llamacpp
from pytest_slm.bridge import SlmLM
from pytest_slm.matrix import Case
from pytest_slm.model import SlmModel
from pytest_slm.registry import load_registry
from pytest_slm.tasks import TaskCatalog

ROOT = Path(__file__).resolve().parents[1]
os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", DISABLE_MULTIPROC="1", TOKENIZERS_PARALLELISM="false")


class Recording(SlmLM):
    """The bridge, keeping what the backend was asked and what it produced."""

    def __init__(self, model: SlmModel, row_by_row: bool) -> None:
        super().__init__(model)
        self.row_by_row = row_by_row
        self.calls: list[tuple[list[list[int]], int, list[list[int]]]] = []

    def generate_until(self, requests: list[Any]) -> list[str]:
        backend = self.model.backend
        generate = backend.generate_row_by_row if self.row_by_row else backend.generate

        def recording(prompts: Any, max_new_tokens: int, finished: Any) -> list[list[int]]:
            produced = generate(prompts, max_new_tokens, finished)
            self.calls.append(([list(p) for p in prompts], max_new_tokens, produced))
            return produced

        backend.generate = recording
        backend.decode_seconds = 0.0
        try:
            return super().generate_until(requests)
        finally:
            del backend.generate
            self.decode_seconds = backend.decode_seconds


def empty_caches(backend: llamacpp.LlamaCppModel) -> None:
    """No path starts with another's few-shot prefix in the cache."""
    backend._clear()
    if backend._rows is not None:
        backend._lib.llama_memory_clear(backend._rows.memory, True)
        backend._rows.sequence = []


def evaluate(lm: Recording, shots: int, limit: int, catalog: TaskCatalog) -> tuple[float, float]:
    from lm_eval import simple_evaluate

    empty_caches(lm.model.backend)
    started = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=["slm_arith"], num_fewshot=shots, limit=limit,
                          task_manager=catalog.manager(False), bootstrap_iters=0, verbosity="ERROR")
    seconds = time.perf_counter() - started
    return seconds, float(out["results"]["slm_arith"]["exact_match,answer-integer"])


def floor_seconds(backend: llamacpp.LlamaCppModel, calls: list[tuple[list[list[int]], int, list[list[int]]]]) -> float:
    """The same prompts, each row generating exactly as many tokens as it did in (b)."""
    empty_caches(backend)
    started = time.perf_counter()
    for prompts, max_new_tokens, produced in calls:
        lengths = [len(p) for p in produced]
        backend.generate(prompts, max_new_tokens, lambda row, tokens, lengths=lengths: len(tokens) >= lengths[row])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=180)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 5])
    args = parser.parse_args()
    gguf = load_registry(ROOT / "suites" / "models.toml")[args.model].gguf_path()
    catalog = TaskCatalog([ROOT / "suites" / "tasks"])
    backend = llamacpp.load(LoadRequest(args.model, gguf, None, "cpu", "native", args.threads))
    model = SlmModel(Case(args.model, "llamacpp-cpu", "native"), backend)
    evaluate(Recording(model, False), 0, 4, catalog)  # warm-up: lm-eval's task loading, caches

    rows = []
    for shots in args.shots:
        batched, one_by_one = Recording(model, False), Recording(model, True)
        batched_s, batched_acc = evaluate(batched, shots, args.limit, catalog)
        one_s, one_acc = evaluate(one_by_one, shots, args.limit, catalog)
        floor_s = floor_seconds(backend, batched.calls)
        same = sum(a == b for (_, _, x), (_, _, y) in zip(batched.calls, one_by_one.calls) for a, b in zip(x, y))
        total = sum(len(p) for _, _, p in batched.calls)
        tokens = sum(len(t) for _, _, p in batched.calls for t in p)
        rows += [
            (f"{shots}-shot (b) pytest-slm, rows side by side", batched_s, tokens / batched_s, batched_acc,
             f"{batched.decode_seconds:.1f}"),
            (f"{shots}-shot (o) pytest-slm, row after row", one_s, tokens / one_s, one_acc, f"{one_by_one.decode_seconds:.1f}"),
            (f"{shots}-shot (c) floor: bare backend, side by side", floor_s, tokens / floor_s, None, "-"),
        ]
        print(f"slm_arith {shots}-shot, {total} questions, {tokens} tokens generated, {args.threads} threads: "
              f"(b) is {one_s / batched_s:.2f}x faster than (o) and takes {batched_s / floor_s:.2f}x the floor (c)'s time; "
              f"(b) and (o) generate the same tokens for {same}/{total} questions")
    print(tabulate([(r[0], f"{r[1]:.1f}", f"{r[2]:.1f}", "-" if r[3] is None else f"{r[3]:.3f}", r[4]) for r in rows],
                   headers=("path", "wall s", "tokens/s", "exact match", "s in llama_decode"), disable_numparse=True))


if __name__ == "__main__":
    main()
