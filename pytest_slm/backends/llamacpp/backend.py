"""llama.cpp through llama-cpp-python's low-level API, in process.

The high-level `Llama` class cannot give what a fast, honest scorer needs: several sequences
sharing one KV cache (one context, many continuations) and logits only at the positions that are
read (`logits_all` computes all 49k-wide rows; with it off, `Llama.scores` goes stale). So this
module drives llama.cpp's batch API directly.
"""

from __future__ import annotations

import ctypes
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import kv_layout
from ..base import (
    DEFAULT_KV_TYPE,
    BackendError,
    DeviceStatus,
    LoadRequest,
    MemoryProfile,
    ScoreGroup,
    Unsupported,
    default_cache_dir,
)
from . import DEVICES, KV_BYTES_PER_VALUE, KV_TYPES, QUANTS
from .quantize import derived_gguf

GPU_LAYERS_ALL = 999  # more than any model has: offload every layer
SWA_CELLS_PAD = 256  # llama.cpp pads a sliding-window cache to this many cells
MAX_PARALLEL_SEQUENCES = 16  # continuations decoded side by side from one context


def detect_devices(system_info: str, gpu_offload: bool, platform: str) -> list[DeviceStatus]:
    """Which llama.cpp devices this build can drive; pure so every platform is unit-testable."""
    has_cuda = gpu_offload and "CUDA" in system_info
    has_metal = gpu_offload and platform == "darwin" and ("Metal" in system_info or "MTL" in system_info)
    return [
        DeviceStatus("llamacpp-cpu", True),
        DeviceStatus(
            "llamacpp-cuda",
            has_cuda,
            "" if has_cuda else "llama-cpp-python was built without CUDA (rebuild with CMAKE_ARGS=-DGGML_CUDA=on)",
        ),
        DeviceStatus(
            "llamacpp-metal",
            has_metal,
            "" if has_metal else "llama.cpp Metal needs macOS on Apple Silicon and a Metal build of llama-cpp-python",
        ),
    ]


def device_statuses() -> list[DeviceStatus]:
    try:
        import llama_cpp
    except ImportError as exc:
        reason = f"llama-cpp-python is not installed ({exc})"
        return [DeviceStatus(device, False, reason) for device in DEVICES]
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    return detect_devices(info, bool(llama_cpp.llama_supports_gpu_offload()), sys.platform)


def load(request: LoadRequest) -> LlamaCppModel:
    if request.quant not in QUANTS:
        raise Unsupported(f"llama.cpp cannot make quant {request.quant!r}; its quants: {', '.join(QUANTS)}")
    if request.kv_type not in KV_TYPES:
        raise Unsupported(f"llama.cpp has no KV cache type {request.kv_type!r} here; its types: {', '.join(KV_TYPES)}")
    if request.gguf_path is None:
        raise Unsupported(f"model {request.model_name!r} has no GGUF file for llama.cpp")
    if request.quant == "native":
        return LlamaCppModel(request, request.gguf_path)
    import llama_cpp

    _silence_llama_logs(llama_cpp)  # the quantizer logs every tensor
    derived = derived_gguf(request.gguf_path, request.quant, request.cache_dir or default_cache_dir(), request.progress)
    return LlamaCppModel(request, derived)


Entry = tuple[int, int, int, bool]  # token, position, sequence id, whether its logits are read
ROW_CELLS_STEP = 256  # the generation context's cells per row grow in these steps
GENERATION_CELLS = 4096  # the generation context's cells for all rows: fewer rows side by side when rows are long


@dataclass
class _Rows:
    """The generation context: one KV stream per row."""

    ctx: Any  # llama_cpp's ctypes handles
    memory: Any
    batch: Any
    cells: int  # per row
    seqs: int  # rows side by side
    sequence: list[int] = field(default_factory=list)  # what stream 0 holds: the last shared prefix


class LlamaCppModel:
    """One GGUF loaded on one device; scores and generates deterministically."""

    def __init__(self, request: LoadRequest, path: Path) -> None:
        import llama_cpp

        self._lib = llama_cpp
        llama_cpp.llama_backend_init()
        _silence_llama_logs(llama_cpp)
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0 if request.device == "cpu" else GPU_LAYERS_ALL
        _LOG_LINES.clear()
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise _load_error(path, llama_cpp.__version__)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.n_ctx = request.context_length
        self.n_batch = request.batch_size

        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = request.context_length
        ctx_params.n_batch = request.batch_size
        ctx_params.n_ubatch = request.batch_size
        ctx_params.n_seq_max = MAX_PARALLEL_SEQUENCES
        ctx_params.kv_unified = True  # sequences share one cache, so a copied context costs nothing
        ctx_params.n_threads = request.threads
        ctx_params.n_threads_batch = request.threads
        ctx_params.no_perf = False
        self._kv_type = request.kv_type
        self._set_cache(ctx_params)
        self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise BackendError(
                f"llama.cpp could not create a context for {path} (n_ctx={self.n_ctx}, KV cache {self._kv_type})"
            )
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)  # what llama.cpp made: it pads a small request up
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._threads = request.threads
        self._rows: _Rows | None = None  # the generation context, made at the first generate()
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, MAX_PARALLEL_SEQUENCES)
        self._sequence: list[int] = []  # the tokens sequence 0 holds in the KV cache, for prefix reuse
        self.decode_seconds = 0.0  # time inside llama_decode, the only part the runtime items time

        bos = llama_cpp.llama_vocab_bos(self._vocab)
        self.bos_id = bos if bos >= 0 else None
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.eos_ids = frozenset(t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t))
        template = llama_cpp.llama_model_chat_template(self._model, None)  # GGUF tokenizer.chat_template
        self.chat_template = template.decode("utf-8", errors="replace") if template else None
        self.bos_text, self.eos_text = (
            llama_cpp.llama_vocab_get_text(self._vocab, t).decode("utf-8", errors="replace") if t >= 0 else ""
            for t in (bos, llama_cpp.llama_vocab_eos(self._vocab))
        )
        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self._model, desc, len(desc))
        self.provenance = {
            "backend": "llama.cpp",
            "llama_cpp_python": llama_cpp.__version__,
            "model_desc": desc.value.decode(errors="replace"),
        }
        assert request.gguf_path is not None  # load() refuses a model without one
        if path != request.gguf_path:  # say so when a reference was made from a quantized file
            self.provenance["derived_from"] = f"{request.gguf_path.name} by llama_model_quantize"
        if self._kv_type != DEFAULT_KV_TYPE:
            self.provenance["kv_cache"] = f"{self._kv_type} keys and values, flash attention on"

    def _set_cache(self, params: object) -> None:
        """The KV cache type of keys and values (its ggml type: llama_cpp's GGML_TYPE_<NAME>). llama.cpp
        refuses a quantized V cache without flash attention, so a quantized cache turns it on; the
        default cache keeps it off, as every baseline before KV types was measured."""
        lib, kv = self._lib, self._kv_type
        params.type_k = params.type_v = getattr(lib, f"GGML_TYPE_{kv.upper()}")  # type: ignore[attr-defined]
        quantized = kv != DEFAULT_KV_TYPE
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if quantized else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED  # type: ignore[attr-defined]

    # -- tokens -------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buffer = (self._lib.llama_token * capacity)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buffer, capacity, False, True)
        if n < 0:  # buffer too small: llama.cpp returns the negated size it needs
            capacity = -n
            buffer = (self._lib.llama_token * capacity)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buffer, capacity, False, True)
        return list(buffer[:n])

    def token_bytes(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:n]

    # -- decoding -----------------------------------------------------------------------------

    def _decode(
        self, entries: Sequence[Entry], read: Callable[[int, np.ndarray], None] | None = None, rows: _Rows | None = None
    ) -> None:
        """Decode entries in batch-sized chunks; `read(entry_index, logits)` sees each flagged row.

        Rows are views into llama.cpp's buffer, valid only until the next decode. `rows`: the
        generation context instead of the main one.
        """
        ctx, batch = (self._ctx, self._batch) if rows is None else (rows.ctx, rows.batch)
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start : start + self.n_batch]
            for i, (token, pos, seq, wants_logits) in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = wants_logits
            batch.n_tokens = len(chunk)
            started = time.perf_counter()
            status = self._lib.llama_decode(ctx, batch)
            self._lib.llama_synchronize(ctx)  # a GPU decode returns before it is done
            self.decode_seconds += time.perf_counter() - started
            if status != 0:
                raise BackendError(f"llama_decode failed with status {status} (context of {self.n_ctx} tokens full?)")
            if read is not None:
                for i, entry in enumerate(chunk):
                    if entry[3]:
                        read(start + i, self._logits(i, ctx))

    def _logits(self, batch_index: int, ctx: object = None) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(ctx or self._ctx, batch_index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def _prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """`tokens` on sequence 0, reusing the longest prefix already there (few-shot examples and
        a question's shared context are decoded once); returns a copy of the last position's logits."""
        reused = 0
        for cached, token in zip(self._sequence, tokens[:-1]):  # the last token is always decoded: its logits
            if cached != token:
                break
            reused += 1
        for seq in range(1, MAX_PARALLEL_SEQUENCES):  # branches of an earlier context
            self._lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
        self._lib.llama_memory_seq_rm(self._memory, 0, reused, -1)
        last: list[np.ndarray] = []
        entries = [(tok, pos, 0, pos == len(tokens) - 1) for pos, tok in enumerate(tokens) if pos >= reused]
        self._sequence = []  # unknown until the decode succeeds
        self._decode(entries, lambda _, logits: last.append(logits.copy()))
        self._sequence = list(tokens)
        return last[0]

    def logits(self, tokens: Sequence[int], context: Sequence[int] = ()) -> np.ndarray:
        if context:
            depth = self._at_depth(context)
        else:
            self._clear()
            depth = 0
        rows = np.empty((len(tokens), self.n_vocab), dtype=np.float32)

        def read(index: int, row: np.ndarray) -> None:
            rows[index] = row

        self._decode([(tok, depth + pos, 0, True) for pos, tok in enumerate(tokens)], read)
        return rows

    def score(self, groups: Sequence[ScoreGroup]) -> list[list[tuple[float, bool]]]:
        return [self._score_group(group) for group in groups]

    def _score_group(self, group: ScoreGroup) -> list[tuple[float, bool]]:
        """Decode the context once on sequence 0, then the continuations side by side on copies of it."""
        continuations = [list(c) for c in group.continuations]
        context = group.fitted_context(self.n_ctx)
        first_row = self._prefill(context)
        first_best = int(np.argmax(first_row))
        results: list[tuple[float, bool]] = []
        for offset in range(0, len(continuations), MAX_PARALLEL_SEQUENCES - 1):
            chunk = continuations[offset : offset + MAX_PARALLEL_SEQUENCES - 1]
            self._lib.llama_memory_seq_rm(self._memory, -1, len(context), -1)  # drop earlier branches
            per_token = [[(_log_prob(first_row, c[0]), first_best == c[0])] if c else [] for c in chunk]
            entries: list[Entry] = []
            targets: list[tuple[int, int]] = []  # per entry: (continuation in chunk, token it predicts)
            for j, cont in enumerate(chunk):
                self._lib.llama_memory_seq_cp(self._memory, 0, j + 1, -1, -1)
                for k, token in enumerate(cont[:-1]):
                    entries.append((token, len(context) + k, j + 1, True))
                    targets.append((j, cont[k + 1]))

            def read(index: int, logits: np.ndarray) -> None:  # called within this iteration only
                j, target = targets[index]  # noqa: B023
                per_token[j].append((_log_prob(logits, target), int(np.argmax(logits)) == target))  # noqa: B023

            self._decode(entries, read)
            results += [(sum(lp for lp, _ in scores), all(g for _, g in scores)) for scores in per_token]
        return results

    def generate(
        self, prompts: Sequence[Sequence[int]], max_new_tokens: int, finished: Callable[[int, list[int]], bool]
    ) -> list[list[int]]:
        """Up to MAX_PARALLEL_SEQUENCES rows per `llama_decode` call, one sequence id each: a decode
        step reads the weights once for all of them. The prefix every row shares (a few-shot
        task's examples) is decoded once and copied to the other rows; it stays in the cache for
        the next group of rows and the next call. Each row's tokens are those it gets alone
        (tested on the shipped tasks)."""
        rows = [list(p)[-(self.n_ctx - max_new_tokens) :] for p in prompts]
        if not all(rows):
            raise BackendError("cannot generate from an empty prompt")
        shared = _common_prefix(rows)
        context = self._rows_context(max(len(r) for r in rows) + max_new_tokens)
        produced: list[list[int]] = []
        for start in range(0, len(rows), context.seqs):
            produced += self._generate_rows(
                context,
                rows[start : start + context.seqs],
                shared,
                max_new_tokens,
                _shifted(finished, start),
            )
        return produced

    def _rows_context(self, cells: int) -> _Rows:
        """The generation context, with at least `cells` KV cells per row, and as many rows as
        GENERATION_CELLS allows (MAX_PARALLEL_SEQUENCES at most).

        Its own context, not the main one: each sequence gets its own stream of the cache
        (`kv_unified` off), so a row's keys and values lie exactly where they lie when the row is
        decoded alone, and attention sums them in the same order; in a unified cache the rows'
        cells interleave and greedy picks of near-tied tokens moved (7 of 48 arithmetic rows here).
        """
        cells = -(-cells // ROW_CELLS_STEP) * ROW_CELLS_STEP
        seqs = max(1, min(MAX_PARALLEL_SEQUENCES, GENERATION_CELLS // cells))
        if self._rows is not None and self._rows.cells >= cells and self._rows.seqs >= seqs:
            return self._rows
        self._free_rows()
        lib = self._lib
        params = lib.llama_context_default_params()
        params.n_ctx = cells * seqs
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max = seqs
        params.kv_unified = False
        params.n_threads = params.n_threads_batch = self._threads
        params.no_perf = False
        self._set_cache(params)
        ctx = lib.llama_init_from_model(self._model, params)
        if not ctx:
            raise BackendError(f"llama.cpp could not create a generation context of {seqs} x {cells} cells")
        self._rows = _Rows(ctx, lib.llama_get_memory(ctx), lib.llama_batch_init(self.n_batch, 0, seqs), cells, seqs)
        return self._rows

    def _free_rows(self) -> None:
        if self._rows is not None:
            self._lib.llama_batch_free(self._rows.batch)
            self._lib.llama_free(self._rows.ctx)
            self._rows = None

    def _generate_rows(
        self,
        context: _Rows,
        rows: list[list[int]],
        shared: int,
        max_new_tokens: int,
        finished: Callable[[int, list[int]], bool],
    ) -> list[list[int]]:
        """One group of rows, each on its own sequence: the shared prefix is decoded once on
        sequence 0 (what it already holds from the last group is kept) and copied to the others;
        then every row's own tokens, then one token per live row per `llama_decode` call."""
        lib = self._lib
        memory = context.memory
        slots = min(shared, min(len(r) for r in rows) - 1)  # each row still decodes its last token: its logits
        reused = 0
        for cached, token in zip(context.sequence, rows[0][:slots]):
            if cached != token:
                break
            reused += 1
        lib.llama_memory_seq_rm(memory, 0, reused, -1)
        context.sequence = []  # unknown until the decode succeeds
        self._decode([(rows[0][pos], pos, 0, False) for pos in range(reused, slots)], rows=context)
        context.sequence = rows[0][:slots]
        for seq in range(1, len(rows)):
            lib.llama_memory_seq_rm(memory, seq, -1, -1)
            lib.llama_memory_seq_cp(memory, 0, seq, -1, -1)
        chosen: dict[int, int] = {}  # row (its sequence id) -> its next token
        entries: list[Entry] = []

        def read(index: int, logits: np.ndarray) -> None:
            chosen[entries[index][2]] = int(np.argmax(logits))

        try:
            for seq, row in enumerate(rows):  # one call per row, as alone: prompts of unequal lengths
                # decoded in one call gave one row of 18 another first token (the tests' arithmetic rows)
                entries = [(row[pos], pos, seq, pos == len(row) - 1) for pos in range(slots, len(row))]
                self._decode(entries, read, context)
            produced: list[list[int]] = [[] for _ in rows]
            alive = list(range(len(rows)))
            while True:
                step: list[Entry] = []
                for seq in alive:
                    token = chosen[seq]
                    if token in self.eos_ids:
                        continue
                    produced[seq].append(token)
                    if finished(seq, produced[seq]) or len(produced[seq]) == max_new_tokens:
                        continue
                    step.append((token, len(rows[seq]) + len(produced[seq]) - 1, seq, True))
                if not step:
                    return produced
                alive = [entry[2] for entry in step]
                entries = step
                self._decode(step, read, context)
        finally:  # keep the shared prefix for the next rows; drop everything past it
            for seq in range(context.seqs):
                lib.llama_memory_seq_rm(memory, seq, slots if seq == 0 else -1, -1)

    def generate_row_by_row(
        self, prompts: Sequence[Sequence[int]], max_new_tokens: int, finished: Callable[[int, list[int]], bool]
    ) -> list[list[int]]:
        """Row after row, each alone in the cache: what `generate` did before it batched rows; kept as
        the reference the batched rows are tested and benchmarked against."""
        return [self._generate_row(row, prompt, max_new_tokens, finished) for row, prompt in enumerate(prompts)]

    def _generate_row(
        self, row: int, prompt: Sequence[int], max_new_tokens: int, finished: Callable[[int, list[int]], bool]
    ) -> list[int]:
        tokens = list(prompt)[-(self.n_ctx - max_new_tokens) :]
        logits = self._prefill(tokens)
        produced: list[int] = []
        rows: list[np.ndarray] = []
        for position in range(len(tokens), len(tokens) + max_new_tokens):
            token = int(np.argmax(logits))
            if token in self.eos_ids:
                break
            produced.append(token)
            if finished(row, produced) or len(produced) == max_new_tokens:
                break
            rows.clear()
            self._decode([(token, position, 0, True)], lambda _, logits_row: rows.append(logits_row))
            self._sequence.append(token)
            logits = rows[0]
        return produced

    # -- runtime costs -------------------------------------------------------------------------

    def timed_prefill(self, tokens: Sequence[int], context: Sequence[int] = ()) -> float:
        depth = self._at_depth(context)
        self.decode_seconds = 0.0
        self._decode([(tok, depth + i, 0, i == len(tokens) - 1) for i, tok in enumerate(tokens)])
        return self.decode_seconds

    def timed_decode(self, prompt: Sequence[int], new_tokens: int, context: Sequence[int] = ()) -> tuple[float, float]:
        depth = self._at_depth(context)
        started = time.perf_counter()
        rows: list[np.ndarray] = []
        self._decode(
            [(tok, depth + i, 0, i == len(prompt) - 1) for i, tok in enumerate(prompt)], lambda _, r: rows.append(r)
        )
        token = int(np.argmax(rows[-1]))
        first_token = time.perf_counter() - started
        self.decode_seconds = 0.0
        for position in range(depth + len(prompt), depth + len(prompt) + new_tokens):
            self._decode([(token, position, 0, True)], lambda _, r: rows.append(r))
            token = int(np.argmax(rows[-1]))
        return first_token, self.decode_seconds

    def _at_depth(self, context: Sequence[int]) -> int:
        """The model alone (see _alone) with `context` in its cache, evaluated untimed; a context
        already there from the last timed run is kept and what followed it dropped, so a deep one is
        evaluated once per metric, not once per repeat. Returns the first free position."""
        if context and self._sequence == list(context):
            self._free_rows()
            self._lib.llama_memory_seq_rm(self._memory, -1, len(context), -1)
        else:
            self._alone()
            self._decode([(tok, pos, 0, False) for pos, tok in enumerate(context)])
            self._sequence = list(context)
        return len(context)

    def memory_profile(self, probe_tokens: Sequence[int]) -> MemoryProfile:
        """The expected figure from the GGUF's layers (backends/kv_layout.py); the stored one from the
        state llama.cpp saves for sequence 0, per token of the probe's second half."""
        lib, model = self._lib, self._model
        half = len(probe_tokens) // 2
        self._alone()
        self._decode([(tok, pos, 0, False) for pos, tok in enumerate(probe_tokens[:half])])
        first = lib.llama_state_seq_get_size(self._ctx, 0)
        self._decode([(tok, pos, 0, False) for pos, tok in enumerate(probe_tokens) if pos >= half])
        stored = (lib.llama_state_seq_get_size(self._ctx, 0) - first) / (len(probe_tokens) - half)
        self._clear()
        weights = lib.llama_model_size(model)
        try:
            layout = self.predicted_kv_layout()
        except kv_layout.Unpredictable as exc:
            return MemoryProfile(weights, round(stored), stored, unpredicted=str(exc))
        return MemoryProfile(weights, layout.per_token, stored, layout)

    def predicted_kv_layout(self) -> kv_layout.KvLayout:
        """The KV cache this model's metadata predicts for the context's cache type. A
        sliding-window layer keeps pad(window + n_ubatch, 256) cells for one sequence when the
        cache is not full-size (swa_full off, llama-server's default): llama.cpp's
        llama_kv_cache_iswa makes size_swa = GGML_PAD(min(n_ctx, n_swa + n_ubatch), 256)
        (src/llama-kv-cache-iswa.cpp), since a ubatch's tokens each need their own window.
        Raises kv_layout.Unpredictable."""
        lib, model = self._lib, self._model
        if lib.llama_model_is_recurrent(model) or lib.llama_model_is_hybrid(model):
            raise kv_layout.Unpredictable("the model has recurrent state beside (or instead of) attention")
        keys = kv_layout.metadata_keys(self._metadata("general.architecture") or "")
        metadata = {key: value for key, value in zip(keys, map(self._metadata, keys)) if value is not None}
        pad = SWA_CELLS_PAD
        return kv_layout.predict(
            metadata, KV_BYTES_PER_VALUE[self._kv_type], lambda window: -(-(window + self.n_batch) // pad) * pad
        )

    def _metadata(self, key: str) -> str | None:
        """A GGUF metadata value as llama.cpp prints it (an array as "[1, 2]"), None when absent."""
        size = 1 << 12
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = self._lib.llama_model_meta_val_str(self._model, key.encode(), buffer, size)
            if n < 0:
                return None
            if n < size:
                return buffer.value.decode("utf-8", errors="replace")
            size = n + 1

    def _alone(self) -> None:
        """Costs are measured with the model as an app holds it: an empty cache, and no generation
        context beside it (alive, it made decode 15% slower here: 109.5 vs 124.7 tok/s, its threads
        and cache competing); the next generate() makes it again."""
        self._free_rows()
        self._clear()

    def _clear(self) -> None:
        self._lib.llama_memory_clear(self._memory, True)
        self._sequence = []

    def close(self) -> None:
        self._free_rows()
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._lib.llama_model_free(self._model)
            self._ctx = self._model = None


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    shared = 0
    for column in zip(*rows):
        if len(set(column)) > 1:
            break
        shared += 1
    return shared


def _shifted(finished: Callable[[int, list[int]], bool], start: int) -> Callable[[int, list[int]], bool]:
    """`finished` for a group of rows whose first is row `start` of the whole call."""
    return lambda row, tokens: finished(start + row, tokens)


def _log_prob(logits: np.ndarray, token: int) -> float:
    """log softmax(logits)[token], stable in float64."""
    row = logits.astype(np.float64)
    peak = row.max()
    return float(row[token] - peak - np.log(np.exp(row - peak).sum()))


def _load_error(path: Path, version: str) -> BackendError:
    """Why llama.cpp refused a file, from its log: an architecture this build does not know is this
    backend's limit (the item skips), anything else a broken file."""
    for line in _LOG_LINES:
        if match := UNKNOWN_ARCHITECTURE.search(line):
            return Unsupported(
                f"llama.cpp (llama-cpp-python {version}) does not know the architecture {match.group(1)!r} of {path.name}"
            )
    return BackendError(f"llama.cpp could not load {path} (truncated or corrupt GGUF?)")


UNKNOWN_ARCHITECTURE = re.compile(r"unknown model architecture: '([^']*)'")
_LOG_LINES: deque[str] = deque(maxlen=64)  # llama.cpp's last log lines: a failed load says why only there
_LOG_CALLBACK = None


def _silence_llama_logs(llama_cpp: Any) -> None:  # the llama_cpp module
    """llama.cpp logs every load to stderr; a test report should not drown in it. The last lines
    are kept for the error a failed load raises."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = llama_cpp.llama_log_callback(
            lambda level, text, user_data: _LOG_LINES.append(text.decode("utf-8", errors="replace"))
        )
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
