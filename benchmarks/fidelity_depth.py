"""Fidelity at depth: how far quantized KV caches (q8_0, q4_0) and, as a contrast, a weight quant
(q8_0 against f32) move the next-token distributions when the compared windows sit 0, 512 or 2,048
tokens deep in a long text (the shipped depth text): what the fidelity items at --slm-depths measure.

    .venv/bin/python benchmarks/fidelity_depth.py [--depths 0 512 2048] [--window 256] [--threads 2]

Two layouts, each row 4 windows (1,020 positions) against its reference:
- "as the items": at depth D, the text's first D tokens as context, then the 4 windows continuing
  it (fidelity.depth_windows; at depth 0 the text's first 4 windows, continuous, which is not what
  a fidelity item's depth-0 figure is: that one is the evaluation text's windows, each alone).
  Each depth scores other tokens of the text.
- "same windows": the windows after the deepest depth, scored after the D tokens that precede them
  in the text: only the cache's fill changes between depths, not the tokens scored.
KV caches: the candidate is the native quant with that cache, the reference the native quant with
the f16 cache (as the kv items); the f16 cache with flash attention on (which a quantized cache
turns on) is the floor of a quantized cache's figure. Weights: q8_0 against f32, both f16 caches.
The references' full logits are used (an item's f32 reference keeps its top 1,024 per position).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from pytest_slm.backends.base import CONTEXT_LENGTH, LoadRequest, default_cache_dir
from pytest_slm.backends.llamacpp import backend as llamacpp
from pytest_slm.measure.divergence import compare, depth_windows
from pytest_slm.models.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
Layout = list[tuple[str, int, list[int], list[list[int]]]]  # (layout, depth, context, windows)


class FlashAttentionF16(llamacpp.LlamaCppModel):
    """The f16 cache with flash attention on."""

    def _set_cache(self, params: object) -> None:
        super()._set_cache(params)
        params.flash_attn_type = self._lib.LLAMA_FLASH_ATTN_TYPE_ENABLED  # type: ignore[attr-defined]


def layouts(tokens: Sequence[int], depths: Sequence[int], window: int) -> Layout:
    deepest = max(depths)
    fixed = depth_windows(tokens, deepest, window, CONTEXT_LENGTH)
    settings = [("as the items", d, list(tokens[:d]), depth_windows(tokens, d, window, CONTEXT_LENGTH)) for d in depths]
    settings += [("same windows", d, list(tokens[deepest - d : deepest]), fixed) for d in depths if d != deepest]
    return settings


def logits(model: Any, settings: Layout) -> list[list[np.ndarray]]:
    """Per setting, each window's logits: the context, then the windows in one pass."""
    per_setting = []
    for _, _, context, chunks in settings:
        rows = model.logits([t for chunk in chunks for t in chunk], context=context)
        per_setting.append([rows[i * len(c) : (i + 1) * len(c)] for i, c in enumerate(chunks)])
    return per_setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--depths", type=int, nargs="+", default=[0, 512, 2048])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    gguf = load_registry(ROOT / "suites" / "models.toml")[args.model].gguf_path()
    text = (ROOT / "suites" / "eval" / "depth.txt").read_text(encoding="utf-8")
    started, load_before = time.perf_counter(), os.getloadavg()[0]

    def run(
        quant: str, kv: str = "f16", kind: type = llamacpp.LlamaCppModel
    ) -> tuple[list[int], list[list[np.ndarray]]]:
        request = LoadRequest(
            args.model, gguf, None, "cpu", quant, args.threads, cache_dir=default_cache_dir(), kv_type=kv
        )
        model = llamacpp.load(request) if kind is llamacpp.LlamaCppModel else kind(request, gguf)
        try:
            tokens = model.tokenize(text)
            return tokens, logits(model, layouts(tokens, args.depths, args.window))
        finally:
            model.close()

    table = []
    for reference, candidates in (
        (
            ("native", "f16", llamacpp.LlamaCppModel),
            [
                ("native", "f16", FlashAttentionF16),
                ("native", "q8_0", llamacpp.LlamaCppModel),
                ("native", "q4_0", llamacpp.LlamaCppModel),
            ],
        ),
        (("f32", "f16", llamacpp.LlamaCppModel), [("q8_0", "f16", llamacpp.LlamaCppModel)]),
    ):
        tokens, reference_rows = run(*reference)
        settings = layouts(tokens, args.depths, args.window)
        for quant, kv, kind in candidates:
            candidate_tokens, rows = run(quant, kv, kind)
            assert candidate_tokens == tokens
            what = f"{quant} weights, {kv} cache" + (
                ", flash attention" if kind is FlashAttentionF16 or kv != "f16" else ""
            )
            for (layout, depth, _, chunks), ref, cand in zip(settings, reference_rows, rows):
                f = compare(zip(ref, cand, chunks))
                table.append(
                    [
                        what,
                        f"{reference[0]}, f16",
                        layout,
                        depth,
                        f.tokens,
                        f"{f.mean_kld:.2e} ± {f.kld_stderr:.1e}",
                        f"{f.p99_kld:.2e}",
                        f"{f.top1_agreement:.4f}",
                        f"{f.ppl_ratio:.4f}",
                    ]
                )
    print(
        f"{args.model} on llama.cpp CPU ({args.threads} threads), depth text {len(tokens)} tokens, windows of {args.window};"
        f" {time.perf_counter() - started:.0f} s, load average {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    )
    headers = (
        "candidate",
        "reference",
        "layout",
        "depth",
        "positions",
        "mean KLD ± se",
        "p99 KLD",
        "top-1 agree",
        "ppl ratio",
    )
    print(tabulate(sorted(table, key=lambda r: (r[0], r[2], r[3])), headers=headers, disable_numparse=True))


if __name__ == "__main__":
    main()
