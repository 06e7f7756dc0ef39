"""Generation throughput, side by side in one run on the same GGUF, task, samples and threads, for
the arithmetic task at 0 and 5 shots:

  (a) lm-eval's own `gguf` model type against `python -m llama_cpp.server` (started here, on loopback)
  (b) pytest-slm's bridge on llama.cpp, rows decoded side by side (`LlamaCppModel.generate`), at
      each of `--rows` rows per `llama_decode` call (the first is the backend's own setting)
  (o) the same bridge, row after row (`generate_row_by_row`: what pytest-slm did before)
  (c) a floor: the bare llama.cpp backend generating exactly the tokens (b) generated, in full
      groups of rows, with no lm-eval, no stop strings, no text
  (m) pytest-slm's bridge on the same GGUF imported into MLX (mlx-cpu), rows side by side
  (mc) MLX's floor: mlx-lm's own `batch_generate` on the same prompts, each row generating as many
      tokens as it did in (m)

and whether (b) and (o) answer every question alike (the same tokens, hence the same exact-match),
and the questions where (a)'s answer differs from (b)'s.

    .venv/bin/pip install -e '.[bench]'      # llama_cpp.server's web stack, for (a)
    .venv/bin/python benchmarks/generation_throughput.py [--limit 180] [--threads 2] [--shots 0 5] \
        [--rows 16 32 64] [--skip-server] [--skip-mlx]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eval_throughput import llama_cpp_server
from tabulate import tabulate

from pytest_slm.backends.base import LoadRequest
from pytest_slm.backends.llamacpp import backend as llamacpp
from pytest_slm.matrix import Case
from pytest_slm.models.handle import SlmModel
from pytest_slm.models.registry import load_registry
from pytest_slm.tasks.bridge import SlmLM
from pytest_slm.tasks.catalog import TaskCatalog

ROOT = Path(__file__).resolve().parents[1]
os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", DISABLE_MULTIPROC="1", TOKENIZERS_PARALLELISM="false")
METRIC = "exact_match,answer-integer"
Calls = list[tuple[list[list[int]], int, list[list[int]]]]


class Recording(SlmLM):
    """The bridge, keeping what the backend was asked and what it produced, and the time spent
    inside the backend's generate() (and, on llama.cpp, inside llama_decode)."""

    def __init__(self, model: SlmModel, row_by_row: bool = False) -> None:
        super().__init__(model)
        self.row_by_row = row_by_row
        self.calls: Calls = []
        self.generate_seconds = self.decode_seconds = 0.0

    def generate_until(self, requests: list[Any]) -> list[str]:
        backend = self.model.backend
        generate = backend.generate_row_by_row if self.row_by_row else backend.generate

        def recording(prompts: Any, max_new_tokens: int, finished: Any) -> list[list[int]]:
            started = time.perf_counter()
            produced = generate(prompts, max_new_tokens, finished)
            self.generate_seconds += time.perf_counter() - started
            self.calls.append(([list(p) for p in prompts], max_new_tokens, produced))
            return produced

        backend.generate = recording
        backend.decode_seconds = 0.0
        try:
            return super().generate_until(requests)
        finally:
            del backend.generate
            self.decode_seconds = backend.decode_seconds


def empty_caches(backend: Any) -> None:
    """No path starts with another's few-shot prefix in llama.cpp's cache (MLX keeps none between calls)."""
    if not isinstance(backend, llamacpp.LlamaCppModel):
        return
    backend._clear()
    if backend._rows is not None:
        backend._lib.llama_memory_clear(backend._rows.memory, True)
        backend._rows.sequence = []


@contextmanager
def rows_per_call(backend: llamacpp.LlamaCppModel, rows: int) -> Iterator[None]:
    """llama.cpp's generation context with `rows` sequences (of ROW_CELLS_STEP cells each, enough
    for the arithmetic task), made afresh; the scoring context keeps its own setting."""
    saved = llamacpp.MAX_PARALLEL_SEQUENCES, llamacpp.GENERATION_CELLS
    llamacpp.MAX_PARALLEL_SEQUENCES, llamacpp.GENERATION_CELLS = rows, rows * llamacpp.ROW_CELLS_STEP
    backend._free_rows()
    try:
        yield
    finally:
        llamacpp.MAX_PARALLEL_SEQUENCES, llamacpp.GENERATION_CELLS = saved
        backend._free_rows()


def evaluate(
    lm: Any, shots: int, limit: int, catalog: TaskCatalog, **kwargs: Any
) -> tuple[float, float, dict[int, Any]]:
    """Wall time, exact match, per-sample records by doc id."""
    from lm_eval import simple_evaluate

    if isinstance(lm, Recording):
        empty_caches(lm.model.backend)
    started = time.perf_counter()
    out = simple_evaluate(
        model=lm,
        tasks=["slm_arith"],
        num_fewshot=shots,
        limit=limit,
        log_samples=True,
        task_manager=catalog.manager(False),
        bootstrap_iters=0,
        verbosity="ERROR",
        **kwargs,
    )
    seconds = time.perf_counter() - started
    samples = {s["doc_id"]: s for s in out["samples"]["slm_arith"]}
    return seconds, float(out["results"]["slm_arith"][METRIC]), samples


def floor_seconds(backend: llamacpp.LlamaCppModel, calls: Calls) -> float:
    """The same prompts, each row generating exactly as many tokens as it did in (b)."""
    empty_caches(backend)
    started = time.perf_counter()
    for prompts, max_new_tokens, produced in calls:
        lengths = [len(p) for p in produced]
        backend.generate(prompts, max_new_tokens, lambda row, tokens, lengths=lengths: len(tokens) >= lengths[row])
    return time.perf_counter() - started


def mlx_floor_seconds(backend: Any, calls: Calls) -> float:
    """mlx-lm's batch_generate on the same prompts, as many rows side by side as (m), each row
    generating exactly as many tokens as it did in (m) (end of sequence still stops a row)."""
    from types import SimpleNamespace

    from mlx_lm import batch_generate

    from pytest_slm.backends.mlx import backend as mlx

    tokenizer = SimpleNamespace(eos_token_ids=sorted(backend.eos_ids), decode=lambda tokens: "")
    started = time.perf_counter()
    for prompts, _, produced in calls:
        batch_generate(
            backend._model,
            tokenizer,
            prompts,
            max_tokens=[max(1, len(p)) for p in produced],
            completion_batch_size=mlx.GENERATE_ROWS,
            prefill_batch_size=mlx.GENERATE_ROWS,
        )
    return time.perf_counter() - started


def row(name: str, seconds: float, tokens: int, accuracy: float | None, inside: str) -> tuple[str, ...]:
    return (name, f"{seconds:.1f}", f"{tokens / seconds:.1f}", "-" if accuracy is None else f"{accuracy:.3f}", inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=180)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 5])
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[llamacpp.MAX_PARALLEL_SEQUENCES],
        help="rows per llama_decode call for (b) and (c), each measured",
    )
    parser.add_argument("--skip-server", action="store_true", help="leave out (a), the slowest by far")
    parser.add_argument("--skip-mlx", action="store_true", help="leave out the MLX rows (m), (mc)")
    args = parser.parse_args()
    gguf = load_registry(ROOT / "suites" / "models.toml")[args.model].gguf_path()
    catalog = TaskCatalog([ROOT / "suites" / "tasks"])
    backend = llamacpp.load(LoadRequest(args.model, gguf, None, "cpu", "native", args.threads))
    model = SlmModel(Case(args.model, "llamacpp-cpu", "native"), backend)
    evaluate(Recording(model), 0, 4, catalog)  # warm-up: lm-eval's task loading, caches
    mlx_model = None
    if not args.skip_mlx:
        from pytest_slm.backends import mlx as mlx_package

        mlx_backend = mlx_package.load(LoadRequest(args.model, gguf, None, "cpu", "native", args.threads))
        mlx_model = SlmModel(Case(args.model, "mlx-cpu", "native"), mlx_backend)
        evaluate(Recording(mlx_model), 0, 4, catalog)

    table = []
    for shots in args.shots:
        one_by_one = Recording(model, row_by_row=True)
        one_s, one_acc, one_samples = evaluate(one_by_one, shots, args.limit, catalog)
        total = sum(len(p) for _, _, p in one_by_one.calls)
        tokens = sum(len(t) for _, _, p in one_by_one.calls for t in p)
        lines = [f"slm_arith {shots}-shot, {total} questions, {tokens} tokens generated by (o), {args.threads} threads"]
        for rows in args.rows:
            with rows_per_call(backend, rows):
                batched = Recording(model)
                batched_s, batched_acc, samples = evaluate(batched, shots, args.limit, catalog)
                floor_s = floor_seconds(backend, batched.calls)
            same = sum(a == b for (_, _, x), (_, _, y) in zip(batched.calls, one_by_one.calls) for a, b in zip(x, y))
            table += [
                row(
                    f"{shots}-shot (b) pytest-slm llama.cpp, {rows} rows side by side",
                    batched_s,
                    tokens,
                    batched_acc,
                    f"{batched.generate_seconds:.1f} ({batched.decode_seconds:.1f})",
                ),
                row(f"{shots}-shot (c) floor: bare llama.cpp, {rows} rows", floor_s, tokens, None, "-"),
            ]
            lines.append(
                f"  {rows} rows: (b) is {one_s / batched_s:.2f}x faster than (o), takes {batched_s / floor_s:.2f}x "
                f"the floor (c)'s time; (b) and (o) generate the same tokens for {same}/{total} questions"
            )
        table.append(
            row(
                f"{shots}-shot (o) pytest-slm llama.cpp, row after row",
                one_s,
                tokens,
                one_acc,
                f"{one_by_one.generate_seconds:.1f} ({one_by_one.decode_seconds:.1f})",
            )
        )
        if mlx_model is not None:
            ours = Recording(mlx_model)
            mlx_s, mlx_acc, mlx_samples = evaluate(ours, shots, args.limit, catalog)
            mlx_floor_s = mlx_floor_seconds(mlx_model.backend, ours.calls)
            mlx_tokens = sum(len(t) for _, _, p in ours.calls for t in p)
            table += [
                row(
                    f"{shots}-shot (m) pytest-slm MLX, rows side by side",
                    mlx_s,
                    mlx_tokens,
                    mlx_acc,
                    f"{ours.generate_seconds:.1f}",
                ),
                row(f"{shots}-shot (mc) floor: mlx-lm batch_generate", mlx_floor_s, mlx_tokens, None, "-"),
            ]
            same = sum(mlx_samples[d]["filtered_resps"] == one_samples[d]["filtered_resps"] for d in one_samples)
            lines.append(
                f"  MLX: (m) takes {mlx_s / mlx_floor_s:.2f}x the floor (mc)'s time, {mlx_s / one_s:.2f}x (o)'s; "
                f"the same answer as llama.cpp's (o) on {same}/{total} questions"
            )
        if not args.skip_server:
            with llama_cpp_server(gguf, args.threads) as url:
                peer_s, peer_acc, peer = evaluate("gguf", shots, args.limit, catalog, model_args=f"base_url={url}")
            table.append(row(f"{shots}-shot (a) lm-eval gguf + llama_cpp.server", peer_s, tokens, peer_acc, "-"))
            lines.append(
                f"  (a) takes {peer_s / batched_s:.1f}x the time of (b) at {args.rows[-1]} rows; answers that differ:"
            )
            lines += [
                f"    doc {d}: (a) {peer[d]['resps'][0][0]!r} -> {peer[d][METRIC.split(',')[0]]}, (b) "
                f"{samples[d]['resps'][0][0]!r} -> {samples[d][METRIC.split(',')[0]]}"
                for d in sorted(samples)
                if peer[d]["filtered_resps"] != samples[d]["filtered_resps"]
            ]
        print("\n".join(lines), flush=True)
    print(
        f"{args.model}, slm_arith, {args.limit} questions; tokens/s counts the tokens (o) generated, (m)'s own for MLX"
    )
    print(
        tabulate(
            table,
            headers=("path", "wall s", "tokens/s", "exact match", "s in generate() (in llama_decode)"),
            disable_numparse=True,
        )
    )


if __name__ == "__main__":
    main()
