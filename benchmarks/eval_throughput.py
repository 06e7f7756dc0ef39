"""Evaluation throughput, side by side in one run on the same GGUF, task, samples and threads:

  (a) lm-eval's own `gguf` model type against `python -m llama_cpp.server` (started here, on loopback)
  (b) pytest-slm's llama.cpp bridge, through the same lm-eval task
  (c) a floor: the bare backend decoding exactly as many tokens as (b) decodes, in full 512-token
      batches of short sequences side by side, with logits for as many positions as (b) reads
  (r) a plain reference: every context+continuation re-evaluated from an empty cache with
      llama-cpp-python's `Llama(logits_all=True)`, to check (b)'s log-likelihoods and decisions

and the same GGUF imported into MLX (mlx-cpu), where MLX is installed:

  (m) pytest-slm's MLX path, several questions side by side
  (mo) the same, one question at a time (what it did before)
  (mc) a floor: the bare MLX model forward over as many tokens as (mo) evaluates, in full batches
      of unpadded rows of the task's mean length, the head on as many rows as (m) reads

    .venv/bin/pip install -e '.[bench]'      # llama_cpp.server's web stack, for (a)
    .venv/bin/python benchmarks/eval_throughput.py [--task slm_facts] [--limit 100] [--skip-server] [--skip-mlx]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from pytest_slm.backends.base import LoadRequest, ScoreGroup
from pytest_slm.backends.llamacpp import backend as llamacpp
from pytest_slm.matrix import Case
from pytest_slm.models.handle import SlmModel
from pytest_slm.models.registry import load_registry
from pytest_slm.tasks.bridge import SlmLM
from pytest_slm.tasks.catalog import TaskCatalog

ROOT = Path(__file__).resolve().parents[1]
os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", DISABLE_MULTIPROC="1", TOKENIZERS_PARALLELISM="false")


class Recording(SlmLM):
    """The bridge, counting what the backend decodes for it: tokens, and rows of logits."""

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        self.requests = [req.args for req in requests]
        self.decoded = self.logit_rows = 0
        backend = self.model.backend
        decode = backend._decode

        def counting(entries: Any, read: Any = None) -> None:
            self.decoded += len(entries)
            self.logit_rows += sum(1 for entry in entries if entry[3])
            decode(entries, read)

        backend._decode = counting
        backend.decode_seconds = 0.0
        try:
            self.results = super().loglikelihood(requests)
        finally:
            del backend._decode
        self.decode_seconds = backend.decode_seconds  # inside llama_decode: what batching could still save
        return self.results


class MlxRecording(SlmLM):
    """The bridge on MLX, keeping the groups the backend scored and the time spent inside its score()."""

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        self.requests = [req.args for req in requests]
        self.groups: list[ScoreGroup] = []
        self.score_seconds = 0.0
        backend = self.model.backend
        score = backend.score

        def timed(groups: list[ScoreGroup]) -> list[list[tuple[float, bool]]]:
            self.groups += groups
            started = time.perf_counter()
            try:
                return score(groups)
            finally:
                self.score_seconds += time.perf_counter() - started

        backend.score = timed
        try:
            self.results = super().loglikelihood(requests)
        finally:
            del backend.score
        return self.results


def evaluate(
    lm: Any, task: str, limit: int, catalog: TaskCatalog, **kwargs: Any
) -> tuple[float, dict[int, Any], float]:
    """Wall time, per-sample records by doc id, accuracy."""
    from lm_eval import simple_evaluate

    started = time.perf_counter()
    out = simple_evaluate(
        model=lm,
        tasks=[task],
        limit=limit,
        task_manager=catalog.manager(False),
        log_samples=True,
        bootstrap_iters=0,
        verbosity="ERROR",
        **kwargs,
    )
    seconds = time.perf_counter() - started
    samples = {s["doc_id"]: s for s in out["samples"][task]}
    return seconds, samples, float(np.mean([s["acc"] for s in samples.values()]))


def chosen(sample: dict[str, Any]) -> int:
    scores = [r[0] for r in sample["filtered_resps"]]
    return int(np.argmax(scores))


def floor_seconds(model: llamacpp.LlamaCppModel, tokens: int, logit_rows: int, sequence_length: int) -> float:
    """`tokens` decoded in full batches, as short sequences side by side (the task's own length, so
    attention costs what it costs the task), with logits for `logit_rows` of them."""
    length = max(sequence_length, -(-model.n_batch // (llamacpp.MAX_PARALLEL_SEQUENCES - 1)))
    every = max(1, tokens // logit_rows)
    started = time.perf_counter()
    for start in range(0, tokens, model.n_batch):
        model._lib.llama_memory_clear(model._memory, True)
        count = min(model.n_batch, tokens - start)
        entries = [(1000 + j, j % length, j // length, (start + j) % every == 0) for j in range(count)]
        model._decode(entries, lambda _i, _row: None)
    return time.perf_counter() - started


def mlx_floor_seconds(backend: Any, groups: list[ScoreGroup]) -> float:
    """As many tokens as one-at-a-time scoring evaluates (each context, each continuation but its
    last token), as rows of the groups' mean length with no padding and no cache, SCORE_CELLS cells
    per forward; the head and log-softmax on as many rows as are read."""
    from pytest_slm.backends.mlx import backend as mlx

    mx = backend._mx
    tokens = sum(len(g.context) + sum(max(len(c) - 1, 0) for c in g.continuations) for g in groups)
    reads = sum(len(c) for g in groups for c in g.continuations)
    length = max(1, round(tokens / len(groups)))
    per_batch = max(1, mlx.SCORE_CELLS // length)
    started = time.perf_counter()
    for start in range(0, tokens, per_batch * length):
        rows = min(per_batch, -(-(tokens - start) // length))
        hidden = backend._body(mx.full((rows, length), 1000), None)
        read = max(1, round(reads * rows * length / tokens))
        mx.eval(backend._log_probs(hidden.reshape(-1, hidden.shape[-1])[:read]))
    return time.perf_counter() - started


def mlx_columns(gguf: Path, args: argparse.Namespace, catalog: TaskCatalog) -> tuple[list[tuple[Any, ...]], str]:
    """(m), (mo), (mc), and what (m) and (mo) agree on."""
    from pytest_slm.backends import mlx as mlx_package
    from pytest_slm.backends.mlx import backend as mlx

    backend = mlx_package.load(LoadRequest(args.model, gguf, None, "cpu", "native", args.threads))
    model = SlmModel(Case(args.model, "mlx-cpu", "native"), backend)
    evaluate(MlxRecording(model), args.task, 4, catalog)  # warm-up
    together = MlxRecording(model)
    together_s, together_samples, together_acc = evaluate(together, args.task, args.limit, catalog)
    cells, mlx.SCORE_CELLS = mlx.SCORE_CELLS, 0  # one question per batch
    try:
        alone = MlxRecording(model)
        alone_s, alone_samples, alone_acc = evaluate(alone, args.task, args.limit, catalog)
    finally:
        mlx.SCORE_CELLS = cells
    floor_s = mlx_floor_seconds(backend, together.groups)
    n = len(together.requests)
    tokens = sum(len(g.context) + sum(max(len(c) - 1, 0) for c in g.continuations) for g in together.groups)
    rows = [
        (
            "(m) pytest-slm MLX, questions side by side",
            together_s,
            n / together_s,
            tokens / together_s,
            f"{together_acc:.3f}",
        ),
        ("(mo) pytest-slm MLX, one question at a time", alone_s, n / alone_s, tokens / alone_s, f"{alone_acc:.3f}"),
        ("(mc) floor: bare MLX forward, full batches", floor_s, n / floor_s, tokens / floor_s, "-"),
    ]
    differences = np.abs([a[0] - b[0] for a, b in zip(together.results, alone.results)])
    same = np.mean([chosen(together_samples[d]) == chosen(alone_samples[d]) for d in together_samples])
    line = (
        f"(m) is {alone_s / together_s:.2f}x faster than (mo) and takes {together_s / floor_s:.2f}x the floor (mc)'s time; "
        f"{together.score_seconds:.2f} s of (m) were inside the backend's score(), {together_s - together.score_seconds:.2f} s "
        f"outside it (lm-eval, Python)\n(m) vs (mo): same choice on {same:.1%} of questions; |log-likelihood difference| "
        f"max {differences.max():.2e}, median {np.median(differences):.2e} nats"
    )
    backend.close()
    return rows, line


def plain_reference(
    gguf: Path, threads: int, model: SlmModel, requests: list[tuple[str, str]]
) -> list[tuple[float, bool]]:
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf), n_ctx=2048, n_threads=threads, n_batch=512, logits_all=True, verbose=False)
    results = []
    for context, continuation in requests:
        pair = model.encode_pair(context, continuation)
        tokens = list(pair.context) + list(pair.continuation)
        llm.reset()
        llm.eval(tokens)
        rows = np.asarray(llm.scores[len(pair.context) - 1 : len(tokens) - 1], dtype=np.float64)
        rows -= rows.max(axis=1, keepdims=True)
        log_probs = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        picked = log_probs[np.arange(len(pair.continuation)), list(pair.continuation)]
        results.append((float(picked.sum()), bool((log_probs.argmax(axis=1) == list(pair.continuation)).all())))
    return results


@contextmanager
def llama_cpp_server(gguf: Path, threads: int) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            str(threads),
            "--n_ctx",
            "2048",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="slm_facts")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-server", action="store_true", help="leave out (a), the slowest by far")
    parser.add_argument("--skip-mlx", action="store_true", help="leave out the MLX rows (m), (mo), (mc)")
    args = parser.parse_args()
    gguf = load_registry(ROOT / "suites" / "models.toml")[args.model].gguf_path()
    catalog = TaskCatalog([ROOT / "suites" / "tasks"])
    backend = llamacpp.load(LoadRequest(args.model, gguf, None, "cpu", "native", args.threads))
    model = SlmModel(Case(args.model, "llamacpp-cpu", "native"), backend)

    bridge = Recording(model)
    evaluate(bridge, args.task, args.limit, catalog)  # warm-up: lm-eval's task loading, caches
    bridge = Recording(model)
    ours_s, ours, ours_acc = evaluate(bridge, args.task, args.limit, catalog)
    floor_s = floor_seconds(backend, bridge.decoded, bridge.logit_rows, -(-bridge.decoded // len(ours)))
    reference_started = time.perf_counter()
    reference = plain_reference(gguf, args.threads, model, bridge.requests)
    reference_s = time.perf_counter() - reference_started
    n_requests = len(bridge.requests)

    rows = [
        ("(b) pytest-slm bridge", ours_s, n_requests / ours_s, bridge.decoded / ours_s, f"{ours_acc:.3f}"),
        ("(c) floor: bare backend", floor_s, n_requests / floor_s, bridge.decoded / floor_s, "-"),
        ("(r) plain reference, logits_all", reference_s, n_requests / reference_s, "-", "-"),
    ]
    agreement = ""
    if not args.skip_server:
        with llama_cpp_server(gguf, args.threads) as url:
            peer_s, peer, peer_acc = evaluate("gguf", args.task, args.limit, catalog, model_args=f"base_url={url}")
        rows.insert(0, ("(a) lm-eval gguf + llama_cpp.server", peer_s, n_requests / peer_s, "-", f"{peer_acc:.3f}"))
        same = np.mean([chosen(peer[d]) == chosen(ours[d]) for d in ours])
        agreement = f"(a) and (b) choose the same answer on {same:.1%} of questions; (b) is {peer_s / ours_s:.1f}x faster than (a)\n"
    mlx_lines, mlx_s = "", 0.0
    if not args.skip_mlx:
        mlx_rows, mlx_lines = mlx_columns(gguf, args, catalog)
        rows += mlx_rows
        mlx_s = mlx_rows[0][1]
    print(
        f"{args.task}, {len(ours)} questions, {n_requests} requests, {bridge.decoded} tokens decoded by (b), {args.threads} threads"
    )
    print(
        tabulate(
            [(r[0], f"{r[1]:.1f}", f"{r[2]:.1f}", r[3] if r[3] == "-" else f"{r[3]:.0f}", r[4]) for r in rows],
            headers=("path", "wall s", "requests/s", "tokens/s", "accuracy"),
            disable_numparse=True,
        )
    )
    differences = np.abs([o[0] - r[0] for o, r in zip(bridge.results, reference)])
    by_doc = {}
    for request_index, (o, r) in enumerate(zip(bridge.results, reference)):
        by_doc.setdefault(bridge.requests[request_index][0], []).append((o[0], r[0]))
    decisions = np.mean([np.argmax([o for o, _ in v]) == np.argmax([r for _, r in v]) for v in by_doc.values()])
    print(
        agreement + f"(b) takes {ours_s / floor_s:.2f}x the time of the floor (c); {bridge.decode_seconds:.2f} s of (b)"
        f" were inside llama_decode, {ours_s - bridge.decode_seconds:.2f} s outside it (lm-eval, Python)"
    )
    print(
        f"(b) vs (r): same choice on {decisions:.1%} of questions; |log-likelihood difference| max {differences.max():.4f}, "
        f"99th percentile {np.percentile(differences, 99):.4f}, median {np.median(differences):.5f} nats"
    )
    if mlx_lines:
        print(mlx_lines + f"\n(m) takes {mlx_s / ours_s:.2f}x the time of llama.cpp's (b)")


if __name__ == "__main__":
    main()
