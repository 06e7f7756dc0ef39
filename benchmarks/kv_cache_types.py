"""What each KV cache type costs a model on llama.cpp's CPU: next-token distributions on the
evaluation text against the f16 cache (what a kv-typed fidelity item measures), and the bytes it
stores per token against what its layers and the type predict. A quantized cache turns flash
attention on, which sums attention in another order; the f16 cache with flash attention on is
measured too, as the floor of a quantized cache's figure.

    .venv/bin/python benchmarks/kv_cache_types.py [--model smollm2-135m] [--window 256] [--threads 2]
"""

from __future__ import annotations

from tabulate import tabulate
from windows import model_and_text, parse_arguments, window_logits

from pytest_slm.backends.base import LoadRequest
from pytest_slm.backends.llamacpp.backend import LlamaCppModel
from pytest_slm.measure.divergence import compare

PROBE_TOKENS = 512  # what the memory item's stored figure is measured after: bytes per token of the second half


class FlashAttentionF16(LlamaCppModel):
    """The f16 cache with flash attention on."""

    def _set_cache(self, params: object) -> None:
        super()._set_cache(params)
        params.flash_attn_type = self._lib.LLAMA_FLASH_ATTN_TYPE_ENABLED  # type: ignore[attr-defined]


def main() -> None:
    args = parse_arguments(__doc__)
    gguf, text = model_and_text(args.model)

    def run(kind: type[LlamaCppModel], kv: str):
        model = kind(LoadRequest(args.model, gguf, None, "cpu", "native", args.threads, kv_type=kv), gguf)
        chunks, rows, _ = window_logits(model, text, args.window)
        profile = model.memory_profile(model.tokenize(text)[:PROBE_TOKENS])
        model.close()
        return chunks, rows, profile

    chunks, reference, profile = run(LlamaCppModel, "f16")
    table = [
        ["f16", "off", profile.kv_bytes_per_token, f"{profile.kv_bytes_per_token_stored:.0f}", "reference", "", "", ""]
    ]
    for kind, kv, attention in (
        (FlashAttentionF16, "f16", "on"),
        (LlamaCppModel, "q8_0", "on"),
        (LlamaCppModel, "q4_0", "on"),
    ):
        kv_chunks, rows, profile = run(kind, kv)
        assert kv_chunks == chunks
        f = compare(zip(reference, rows, chunks))
        table.append(
            [
                kv,
                attention,
                profile.kv_bytes_per_token,
                f"{profile.kv_bytes_per_token_stored:.0f}",
                f"{f.mean_kld:.2e} ± {f.kld_stderr:.1e}",
                f"{f.p99_kld:.2e}",
                f"{f.top1_agreement:.4f}",
                f"{f.ppl_ratio:.4f}",
            ]
        )
    print(
        f"{args.model} native on llama.cpp CPU, {len(chunks)} windows of {args.window} tokens, against the f16 cache"
        f" without flash attention; stored bytes per token after {PROBE_TOKENS} tokens"
    )
    headers = (
        "KV type",
        "flash attn",
        "KV B/token expected",
        "stored",
        "mean KLD ± se",
        "p99 KLD",
        "top-1 agree",
        "ppl ratio",
    )
    print(tabulate(table, headers=headers, disable_numparse=True))


if __name__ == "__main__":
    main()
