"""MLX through mlx-lm, in process: an MLX model directory, or a GGUF file imported into MLX
(gguf_import.py: what lets MLX and llama.cpp be compared on the very same weights).

On CPU everything is computed densely in float32, on OpenBLAS (see blas.py): MLX's CPU
quantized matmul is a scalar loop on one thread (10-13 tokens/s of prefill here), and its float16
matmuls are slower than float32. Quantized weights are dequantized once at load, after their
float16 scales and biases are upcast: the weights keep exactly the quantized values, so the quant
axis still means what it says; only the kernels, and 4 bytes of memory per weight, differ.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..base import BackendError, DeviceStatus, LoadRequest, MemoryProfile, ScoreGroup, Unsupported, default_cache_dir
from . import QUANTS, blas
from .gguf_import import load_gguf
from .quantize import BITS, derived_checkpoint, is_checkpoint, is_quantized
from .vocab import Vocab, hf_vocab

INSTALL_HINT = "mlx is not installed (pip install 'pytest-slm[mlx]')"
MAX_BRANCHES = 16  # continuations decoded side by side from one context
GENERATE_ROWS = 32  # prompts generated side by side


# -- devices ----------------------------------------------------------------------------------


def detect_devices(mlx_installed: bool, mlx_lm_installed: bool, metal: bool, cuda: bool) -> list[DeviceStatus]:
    """Which MLX devices can run here, from the probes' results; pure so every platform is unit-testable."""
    if not mlx_installed:
        return [DeviceStatus("mlx-cpu", False, INSTALL_HINT), DeviceStatus("mlx-gpu", False, INSTALL_HINT)]
    if not mlx_lm_installed:
        reason = "mlx-lm is not installed (pip install 'pytest-slm[mlx]')"
        return [DeviceStatus("mlx-cpu", False, reason), DeviceStatus("mlx-gpu", False, reason)]
    gpu = metal or cuda
    gpu_reason = "" if gpu else "MLX has no GPU here: Metal needs macOS on Apple Silicon, CUDA needs mlx[cuda] on Linux"
    return [DeviceStatus("mlx-cpu", True), DeviceStatus("mlx-gpu", gpu, gpu_reason)]


def device_statuses() -> list[DeviceStatus]:
    blas.route_to_openblas()  # before this process's first import of mlx.core
    try:
        import mlx.core as mx
    except ImportError:
        return detect_devices(False, False, False, False)
    return detect_devices(
        True,
        importlib.util.find_spec("mlx_lm") is not None,
        mx.metal.is_available(),
        mx.cuda.is_available(),
    )


# -- loading ----------------------------------------------------------------------------------


def load(request: LoadRequest) -> MlxModel:
    """An MLX directory when the model has one (its own conversion), else its GGUF imported."""
    if request.quant not in QUANTS:
        raise Unsupported(f"MLX cannot make quant {request.quant!r}; its quants: {', '.join(QUANTS)}")
    if request.device not in ("cpu", "gpu"):
        raise Unsupported(f"MLX has no device {request.device!r} (cpu or gpu)")
    cpu_blas = blas.route_to_openblas()
    blas.set_threads(request.threads)
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model

    device = mx.cpu if request.device == "cpu" else mx.gpu
    mx.set_default_device(device)
    if request.mlx_path is not None:
        model, vocab = _load_mlx_dir(Path(request.mlx_path), request)
    elif request.gguf_path is not None:
        model, vocab = load_gguf(Path(request.gguf_path), request.quant)
    else:
        raise Unsupported(f"model {request.model_name!r} has neither an MLX directory nor a GGUF file")
    if request.device == "cpu":
        _upcast_to_float32(model)
        dequantize_model(model)
    mx.eval(model.parameters())
    return MlxModel(model, vocab, device, request, cpu_blas)


def _load_mlx_dir(path: Path, request: LoadRequest) -> tuple[Any, Vocab]:
    """An mlx-lm checkpoint, loaded from the local path only (mlx_lm.load downloads anything else);
    an `mlx-q*` quant is the checkpoint quantized by mlx-lm's converter, from the artifact cache."""
    if not is_checkpoint(path):
        raise BackendError(f"{path} is not an MLX model directory (it needs config.json and *.safetensors weights)")
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_map

    if request.quant in BITS:
        path = derived_checkpoint(path, request.quant, request.cache_dir or default_cache_dir(), request.progress)
    elif request.quant == "f16" and is_quantized(path):
        raise Unsupported(f"{path.name} is already quantized; only quant 'native' runs an MLX-quantized checkpoint")
    try:
        model, tokenizer = mlx_lm.load(str(path))
    except (ValueError, OSError, RuntimeError, KeyError, TypeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "not supported" in message:  # mlx-lm's words for an architecture it has no module for
            raise Unsupported(f"mlx-lm cannot build {path.name}: {message}") from None
        raise BackendError(f"mlx-lm could not load {path.name}: {message}") from None
    if request.quant == "f16":
        model.update(tree_map(lambda a: a.astype(mx.float16) if _is_float(a) else a, model.parameters()))
    return model, hf_vocab(tokenizer)


# -- the loaded model -------------------------------------------------------------------------


class MlxModel:
    """One model on one MLX device; scores and generates greedily, deterministically."""

    def __init__(self, model: Any, vocab: Vocab, device: Any, request: LoadRequest, cpu_blas: str) -> None:
        import mlx.core as mx
        import mlx_lm
        from mlx_lm.models.cache import KVCache, make_prompt_cache

        self._mx = mx
        self._model = model
        self._vocab = vocab
        self._device = device
        self._body, self._head = _split_head(model)
        # plain KV caches can be repeated into a batch; sliding-window and recurrent ones are copied
        self._batched = all(type(c) is KVCache for c in make_prompt_cache(model))
        self.n_ctx = request.context_length
        self.n_batch = request.batch_size
        self.bos_id = vocab.bos_id
        self.add_bos = vocab.add_bos
        self.eos_ids = vocab.eos_ids
        self.chat_template, self.bos_text, self.eos_text = vocab.chat_template, vocab.bos_text, vocab.eos_text
        self.provenance = {
            "backend": "mlx",
            "mlx": mx.__version__,
            "mlx_lm": mlx_lm.__version__,
            "mlx_device": request.device,
            "source": "mlx" if request.mlx_path is not None else "gguf",
        }
        if request.device == "cpu":
            self.provenance["cpu_matmul"] = f"float32, dequantized at load, {cpu_blas}"

    # -- tokens -------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return list(self._vocab.encode(text))

    def token_bytes(self, token: int) -> bytes:
        return self._vocab.pieces[token]

    # -- forward ------------------------------------------------------------------------------

    def _prefill(self, tokens: Sequence[int]) -> tuple[list[Any], Any]:
        """A fresh KV cache holding `tokens`, in batch-sized chunks; returns it and the last hidden state."""
        from mlx_lm.models.cache import make_prompt_cache

        mx = self._mx
        mx.set_default_device(self._device)
        cache = make_prompt_cache(self._model)
        hidden = None
        for start in range(0, len(tokens), self.n_batch):
            hidden = self._body(mx.array(tokens[start : start + self.n_batch])[None], cache)[:, -1]
            mx.eval(hidden, [c.state for c in cache])
        return cache, hidden

    def _branch(self, cache: list[Any], copies: int) -> list[Any]:
        """`copies` batch rows of a prefilled cache, for continuations decoded side by side."""
        from mlx_lm.models.cache import KVCache

        if not self._batched:
            return copy.deepcopy(cache)
        branches = []
        for layer in cache:
            branch = KVCache()
            keys, values = layer.keys[..., : layer.offset, :], layer.values[..., : layer.offset, :]
            branch.keys = self._mx.repeat(keys, copies, axis=0)
            branch.values = self._mx.repeat(values, copies, axis=0)
            branch.offset = layer.offset
            branches.append(branch)
        return branches

    def _log_probs(self, hidden: Any) -> Any:
        """Log-softmax of the head's logits, in float32 whatever the compute dtype."""
        logits = self._head(hidden).astype(self._mx.float32)
        return logits - self._mx.logsumexp(logits, axis=-1, keepdims=True)

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        from mlx_lm.models.cache import make_prompt_cache

        mx = self._mx
        mx.set_default_device(self._device)
        cache = make_prompt_cache(self._model)
        rows = []
        for start in range(0, len(tokens), self.n_batch):
            hidden = self._body(mx.array(tokens[start : start + self.n_batch])[None], cache)[0]
            rows.append(np.array(self._head(hidden).astype(mx.float32)))
        return np.concatenate(rows)

    def score(self, groups: Sequence[ScoreGroup]) -> list[list[tuple[float, bool]]]:
        return [self._score_group(group) for group in groups]

    def _score_group(self, group: ScoreGroup) -> list[tuple[float, bool]]:
        """The context once; then the continuations right-padded into one batch on copies of its cache.

        Padding sits after every real token, so causal attention keeps it out of the real rows; the
        head runs only on the rows whose next token is read.
        """
        mx = self._mx
        continuations = [list(c) for c in group.continuations]
        context = group.fitted_context(self.n_ctx)
        cache, last = self._prefill(context)
        first = self._log_probs(last)[0]
        first_best = int(mx.argmax(first).item())
        results: list[tuple[float, bool]] = []
        step = MAX_BRANCHES if self._batched else 1
        for offset in range(0, len(continuations), step):
            chunk = continuations[offset : offset + step]
            totals = [float(first[c[0]].item()) if c else 0.0 for c in chunk]
            greedy = [first_best == c[0] if c else True for c in chunk]
            width = max(len(c) for c in chunk) - 1
            if width > 0:
                rows = [(j, k) for j, c in enumerate(chunk) for k in range(len(c) - 1)]
                padded = mx.array([c[:-1] + [0] * (width - len(c[:-1])) for c in chunk])
                hidden = self._body(padded, self._branch(cache, len(chunk)))
                flat = hidden.reshape(-1, hidden.shape[-1])[mx.array([j * width + k for j, k in rows])]
                log_probs = self._log_probs(flat)
                targets = mx.array([chunk[j][k + 1] for j, k in rows])
                picked = mx.take_along_axis(log_probs, targets[:, None], axis=1)[:, 0]
                hits = mx.argmax(log_probs, axis=1) == targets
                for (j, _), lp, hit in zip(rows, picked.tolist(), hits.tolist()):
                    totals[j] += lp
                    greedy[j] = greedy[j] and hit
            results += list(zip(totals, greedy))
        return results

    def generate(
        self, prompts: Sequence[Sequence[int]], max_new_tokens: int, finished: Callable[[int, list[int]], bool]
    ) -> list[list[int]]:
        """Up to GENERATE_ROWS rows side by side: one decode step reads the weights once for all of
        them, and on CPU a step costs about what reading the weights costs."""
        produced: list[list[int]] = []
        step = GENERATE_ROWS if self._batched else 1
        for start in range(0, len(prompts), step):
            produced += self._generate_rows(prompts[start : start + step], max_new_tokens, finished, start)
        return produced

    def _generate_rows(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        finished: Callable[[int, list[int]], bool],
        first_row: int,
    ) -> list[list[int]]:
        """Left-padded prompts in one batch (mlx-lm's BatchKVCache masks the padding and gives each
        row its own positions); finished rows leave the batch. Models with other caches: one row."""
        mx = self._mx
        mx.set_default_device(self._device)
        rows = [list(p)[-(self.n_ctx - max_new_tokens) :] for p in prompts]
        if not all(rows):
            raise BackendError("cannot generate from an empty prompt")
        width = max(len(r) for r in rows)
        padding = [width - len(r) for r in rows]
        cache, evaluated = self._batch_cache(rows, padding)
        tokens = mx.array([[0] * pad + r for pad, r in zip(padding, rows)])
        for start in range(evaluated, width, self.n_batch):
            hidden = self._body(tokens[:, start : start + self.n_batch], cache)[:, -1]
            mx.eval(hidden, [c.state for c in cache])
        produced: list[list[int]] = [[] for _ in rows]
        alive = list(range(len(rows)))  # batch position -> row
        for _ in range(max_new_tokens):
            chosen = mx.argmax(self._head(hidden), axis=-1)
            keep = []
            for position, (row, token) in enumerate(zip(alive, chosen.tolist())):
                if token in self.eos_ids:
                    continue
                produced[row].append(token)
                if not finished(first_row + row, produced[row]) and len(produced[row]) < max_new_tokens:
                    keep.append(position)
            if not keep:
                break
            if len(keep) < len(alive):
                for layer in cache:
                    layer.filter(mx.array(keep))
                chosen = chosen[mx.array(keep)]
                alive = [alive[k] for k in keep]
            hidden = self._body(chosen[:, None], cache)[:, -1]
        return produced

    def _batch_cache(self, rows: list[list[int]], padding: list[int]) -> tuple[list[Any], int]:
        """A cache for the left-padded rows, holding the first `slots` of each already.

        The prefix every row shares (a task's few-shot examples) is evaluated once and copied into
        each row behind its padding: the padded rows are identical up to `slots`, where rows with
        less padding still have prefix tokens, and only the columns past it are evaluated.
        """
        from mlx_lm.models.cache import BatchKVCache, make_prompt_cache

        if not self._batched:
            return make_prompt_cache(self._model), 0
        shared = 0
        for column in zip(*rows):
            if len(set(column)) > 1:
                break
            shared += 1
        slots = min(shared, min(len(r) for r in rows) - 1)  # each row still evaluates its last token
        prefix, _ = self._prefill(rows[0][:slots]) if slots > 0 else ([], None)
        caches = []
        for layer in prefix or make_prompt_cache(self._model):
            batch = BatchKVCache(padding)
            if slots > 0:
                keys, values = layer.keys[..., :slots, :], layer.values[..., :slots, :]
                batch.keys, batch.values = (self._behind_padding(a, padding, slots) for a in (keys, values))
                batch.offset = batch.offset + slots
                batch._idx = slots  # mlx-lm's write position; its own update_and_fetch sets it so
            caches.append(batch)
        return caches, slots

    def _behind_padding(self, prefix: Any, padding: list[int], slots: int) -> Any:
        """Per row: its padding (zeros, masked), then as much of the prefix as fits in `slots`."""
        mx = self._mx
        heads, dim = prefix.shape[1], prefix.shape[3]
        rows = []
        for pad in padding:
            blank = mx.zeros((1, heads, min(pad, slots), dim), dtype=prefix.dtype)
            rows.append(mx.concatenate([blank, prefix[..., : max(slots - pad, 0), :]], axis=2))
        return mx.concatenate(rows, axis=0)

    # -- runtime costs -------------------------------------------------------------------------

    def timed_prefill(self, tokens: Sequence[int]) -> float:
        return self._timed_prefill(tokens)[0]

    def _timed_prefill(self, tokens: Sequence[int]) -> tuple[float, list[Any], Any]:
        """Seconds to fill a fresh cache with `tokens` and compute the last logits; the cache; the logits."""
        started = time.perf_counter()
        cache, hidden = self._prefill(tokens)
        logits = self._head(hidden)
        self._mx.eval(logits)
        return time.perf_counter() - started, cache, logits

    def timed_decode(self, prompt: Sequence[int], new_tokens: int) -> tuple[float, float]:
        mx = self._mx
        started = time.perf_counter()
        _, cache, logits = self._timed_prefill(prompt)
        token = mx.argmax(logits, axis=-1, keepdims=True)
        mx.eval(token)
        first_token = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(new_tokens):  # the next step is built from the last lazily: one sync per token
            token = mx.argmax(self._head(self._body(token, cache)[:, -1]), axis=-1, keepdims=True)
            mx.eval(token)
        return first_token, time.perf_counter() - started

    def memory_profile(self, probe_tokens: Sequence[int]) -> MemoryProfile:
        from mlx.utils import tree_flatten

        args = self._model.args
        n_kv_heads = getattr(args, "num_key_value_heads", None) or args.num_attention_heads
        head_dim = getattr(args, "head_dim", None) or args.hidden_size // args.num_attention_heads
        _, cache, _ = self._timed_prefill(probe_tokens)
        itemsize = cache[0].keys.dtype.size
        per_token = 2 * args.num_hidden_layers * n_kv_heads * head_dim * itemsize
        allocated = sum(c.keys.nbytes + c.values.nbytes for c in cache)
        weights = sum(a.nbytes for _, a in tree_flatten(self._model.parameters()))
        return MemoryProfile(weights, per_token, allocated / cache[0].keys.shape[2])

    def close(self) -> None:
        self._model = self._body = self._head = None
        self._mx.clear_cache()


def _split_head(model: Any) -> tuple[Callable[..., Any], Callable[[Any], Any]]:
    """The transformer body and the vocabulary head apart, so logits are computed only where read.

    Only for mlx-lm modules whose __call__ is exactly body-then-head; any other model keeps its
    own __call__ (all logits, then the rows needed).
    """
    body = getattr(model, "model", None)
    args = getattr(model, "args", None)
    if type(model).__module__ in _PLAIN_HEADED and body is not None and args is not None:
        if getattr(args, "tie_word_embeddings", False):
            return body, body.embed_tokens.as_linear
        if hasattr(model, "lm_head"):
            return body, model.lm_head
    return (lambda tokens, cache: model(tokens, cache=cache)), (lambda logits: logits)


_PLAIN_HEADED = frozenset({"mlx_lm.models.llama", "mlx_lm.models.qwen2", "mlx_lm.models.qwen3"})


# -- helpers ----------------------------------------------------------------------------------


def _is_float(array: Any) -> bool:
    import mlx.core as mx

    return mx.issubdtype(array.dtype, mx.floating)


def _upcast_to_float32(model: Any) -> None:
    """Every floating parameter to float32 (exact): the CPU kernels are fast only in float32."""
    import mlx.core as mx
    from mlx.utils import tree_map

    model.update(tree_map(lambda a: a.astype(mx.float32) if _is_float(a) else a, model.parameters()))
