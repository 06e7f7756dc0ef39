"""The KV cache per layer, predicted and real: for each model, the memory item's expected bytes per
token (pytest_slm/backends/kv_layout.py, from the GGUF's metadata) beside what llama.cpp stores per token
(its sequence state), and the KV-at-context figure beside what llama.cpp allocates for one
sequence at that context (its own log line per cache, sliding-window cache not full-size) and what
it keeps for the sequence once the context is past the window.

    .venv/bin/python benchmarks/kv_cache_layout.py --models smollm2-135m,gemma3-270m
"""

from __future__ import annotations

import argparse
import ctypes
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_slm.backends.base import LoadRequest, default_cache_dir
from pytest_slm.backends.llamacpp import backend
from pytest_slm.models.registry import load_registries

UBATCH = 512
KV_SIZE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB")


def allocated_kv_bytes(lib, model, context: int) -> float:
    """What llama.cpp allocates for the KV cache of one sequence at `context` (swa_full off, as
    llama-server runs), summed from the line it logs for each cache it makes."""
    lines: list[str] = []
    callback = lib.llama_log_callback(lambda level, text, data: lines.append(text.decode(errors="replace")))
    lib.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = context, UBATCH, UBATCH, 1
        params.swa_full = False
        ctx = lib.llama_init_from_model(model, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {context} tokens")
        lib.llama_free(ctx)
    finally:
        lib.llama_log_set(backend._LOG_CALLBACK, ctypes.c_void_p(0))  # the backend's silence again
    return sum(float(size) for size in KV_SIZE.findall("".join(lines))) * 2**20


def stored_bytes(lib, model, tokens: list[int]) -> int:
    """The state llama.cpp saves for one sequence after decoding `tokens` (KV cells plus 12 bytes
    of position and sequence per cell and cache, and a small header)."""
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = len(tokens), UBATCH, UBATCH, 1
    params.swa_full = False
    ctx = lib.llama_init_from_model(model, params)
    batch = lib.llama_batch_init(UBATCH, 0, 1)
    try:
        for start in range(0, len(tokens), UBATCH):
            chunk = tokens[start : start + UBATCH]
            for i, token in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = (
                    token,
                    start + i,
                    1,
                    i == len(chunk) - 1,
                )
                batch.seq_id[i][0] = 0
            batch.n_tokens = len(chunk)
            if lib.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
        return lib.llama_state_seq_get_size(ctx, 0)
    finally:
        lib.llama_batch_free(batch)
        lib.llama_free(ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--contexts", default="512,2048,8192")
    parser.add_argument("--past-window", type=int, default=1280, help="tokens decoded for the stored figure")
    args = parser.parse_args()
    registry, _ = load_registries(None)
    text = (ROOT / "pytest_slm" / "data" / "eval" / "text.txt").read_text(encoding="utf-8")
    import llama_cpp as lib

    for name in args.models.split(","):
        model = backend.load(LoadRequest(name, registry[name].gguf_path(default_cache_dir()), None, "cpu", "native", 2))
        tokens = model.tokenize(text)
        layout = model.predicted_kv_layout()
        profile = model.memory_profile(tokens[:64])
        print(f"{name}: {layout.describe()}")
        print(
            f"  per token: expected {profile.kv_bytes_per_token} B, llama.cpp stores {profile.kv_bytes_per_token_stored:.0f} B"
        )
        for context in map(int, args.contexts.split(",")):
            allocated = allocated_kv_bytes(lib, model._model, context)
            print(
                f"  at {context}: rule {layout.at(context) / 2**20:.2f} MiB, llama.cpp allocates {allocated / 2**20:.2f} MiB"
            )
        past = (tokens * (args.past_window // len(tokens) + 1))[: args.past_window]
        window = min(len(past), layout.window or len(past))
        kept = layout.global_bytes * len(past) + layout.window_bytes * window
        stored = stored_bytes(lib, model._model, past)
        print(
            f"  after {len(past)} tokens: stored {stored} B; global layers x {len(past)} + sliding x {window} = {kept} B"
        )
        model.close()


if __name__ == "__main__":
    main()
