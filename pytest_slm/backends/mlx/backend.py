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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..base import BackendError, DeviceStatus, LoadRequest, MemoryProfile, ScoreGroup, Unsupported, default_cache_dir
from . import KV_TYPES, QUANTS, blas
from .gguf_import import load_gguf
from .quantize import BITS, derived_checkpoint, is_checkpoint, is_quantized
from .vocab import Vocab, hf_vocab

INSTALL_HINT = "mlx is not installed (pip install 'pytest-slm[mlx]')"
# cache cells (rows x padded length) of one batch of questions scored side by side: 4096 cells of
# the embedded model's float32 cache are 190 MB
SCORE_CELLS = 4096
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
    if request.kv_type not in KV_TYPES:
        raise Unsupported(
            f"MLX runs its unquantized KV cache only, not {request.kv_type!r} (mlx-lm's own quantized cache is not driven here)"
        )
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
        model, tokenizer = cast("tuple[Any, Any]", mlx_lm.load(str(path)))  # without return_config: two
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
        self._depth: tuple[tuple[int, ...], list[Any]] | None = None  # the last depth's filled cache
        self.bos_id = vocab.bos_id
        self.add_bos = vocab.add_bos
        self.eos_ids = vocab.eos_ids
        self.chat_template, self.bos_text, self.eos_text = vocab.chat_template, vocab.bos_text, vocab.eos_text
        self.provenance = {
            "backend": "mlx",
            "mlx": mx.__version__,  # type: ignore[attr-defined]  # mlx.core's stubs lack __version__
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

    def _prefill(self, tokens: Sequence[int], cache: list[Any] | None = None) -> tuple[list[Any], Any]:
        """`tokens` added to `cache` (None: a fresh one), in batch-sized chunks; returns the cache and
        the last hidden state."""
        from mlx_lm.models.cache import make_prompt_cache

        mx = self._mx
        mx.set_default_device(self._device)
        cache = make_prompt_cache(self._model) if cache is None else cache
        hidden = None
        for start in range(0, len(tokens), self.n_batch):
            hidden = self._body(mx.array(tokens[start : start + self.n_batch])[None], cache)[:, -1]
            mx.eval(hidden, [c.state for c in cache])
        return cache, hidden

    def _log_probs(self, hidden: Any) -> Any:
        """Log-softmax of the head's logits, in float32 whatever the compute dtype."""
        logits = self._head(hidden).astype(self._mx.float32)
        return logits - self._mx.logsumexp(logits, axis=-1, keepdims=True)

    def logits(self, tokens: Sequence[int], context: Sequence[int] = ()) -> np.ndarray:
        from mlx_lm.models.cache import make_prompt_cache

        mx = self._mx
        mx.set_default_device(self._device)
        cache = self._at_depth(context) or make_prompt_cache(self._model)
        rows = []
        for start in range(0, len(tokens), self.n_batch):
            hidden = self._body(mx.array(tokens[start : start + self.n_batch])[None], cache)[0]
            rows.append(np.array(self._head(hidden).astype(mx.float32)))
        return np.concatenate(rows)

    def score(self, groups: Sequence[ScoreGroup]) -> list[list[tuple[float, bool]]]:
        """Several questions side by side: groups in order of context length (less padding), packed
        into batches of at most SCORE_CELLS cache cells; models whose caches cannot be batched score
        one group at a time."""
        batches: list[list[int]] = []
        for index in sorted(range(len(groups)), key=lambda i: len(groups[i].context)):
            if batches and self._batched and _cells([groups[i] for i in batches[-1] + [index]]) <= SCORE_CELLS:
                batches[-1].append(index)
            else:
                batches.append([index])
        results: list[list[tuple[float, bool]]] = [[] for _ in groups]
        for batch in batches:
            for member, scores in zip(batch, self._score_batch([groups[i] for i in batch])):
                results[member] = scores
        return results

    def _score_batch(self, groups: Sequence[ScoreGroup]) -> list[list[tuple[float, bool]]]:
        """The contexts once, left-padded side by side (a prefix they share evaluated once); then each
        context's cache rows repeated once per continuation, and the continuations right-padded after
        them in one batch.

        Right padding sits after every real token, so causal attention keeps it out of the real rows;
        the head runs only on the hidden states whose next token is read.
        """
        mx = self._mx
        cache, last = self._prefill_rows([g.fitted_context(self.n_ctx) for g in groups], exact=True)
        owners = [i for i, g in enumerate(groups) for _ in g.continuations]
        continuations = [list(c) for g in groups for c in g.continuations]
        # per token read: (its continuation, its row in the stacked hidden states, the token)
        reads = [(j, owners[j], c[0]) for j, c in enumerate(continuations) if c]
        states, stacked = [last], len(groups)
        longer = [j for j, c in enumerate(continuations) if len(c) > 1]  # read past their first token
        if longer:
            for branch, members in self._branches(cache, longer, owners):
                width = max(len(continuations[j]) for j in members) - 1
                padded = mx.array([continuations[j][:-1] + [0] * (width + 1 - len(continuations[j])) for j in members])
                hidden = [self._body(padded[:, s : s + self.n_batch], branch) for s in range(0, width, self.n_batch)]
                states.append(mx.concatenate(hidden, axis=1).reshape(-1, last.shape[-1]))
                reads += [
                    (j, stacked + b * width + k - 1, continuations[j][k])
                    for b, j in enumerate(members)
                    for k in range(1, len(continuations[j]))
                ]
                stacked += len(members) * width
        totals = [0.0] * len(continuations)
        greedy = [True] * len(continuations)
        for (j, _, _), (log_prob, hit) in zip(reads, self._read(mx.concatenate(states), reads)):
            totals[j] += log_prob
            greedy[j] = greedy[j] and hit
        results: list[list[tuple[float, bool]]] = [[] for _ in groups]
        for owner, total, hit in zip(owners, totals, greedy):
            results[owner].append((total, hit))
        return results

    def _branches(self, cache: list[Any], members: list[int], owners: list[int]) -> list[tuple[list[Any], list[int]]]:
        """Caches the continuations `members` run on, with the ones each holds: all on the batch cache,
        its rows repeated per continuation (`owners`: each continuation's row); or, for caches that
        cannot be batched, one deep copy per continuation."""
        if not self._batched:
            return [(copy.deepcopy(cache), [j]) for j in members]
        rows = self._mx.array([owners[j] for j in members])
        for layer in cache:
            layer.filter(rows)
        return [(cache, members)]

    def _read(self, states: Any, reads: list[tuple[int, int, int]]) -> list[tuple[float, bool]]:
        """Per read (continuation, row of `states`, token): the token's log-probability after that row,
        and whether it is the row's argmax; the head runs on n_batch rows at a time."""
        mx = self._mx
        out: list[tuple[float, bool]] = []
        for start in range(0, len(reads), self.n_batch):
            chunk = reads[start : start + self.n_batch]
            log_probs = self._log_probs(states[mx.array([row for _, row, _ in chunk])])
            targets = mx.array([token for _, _, token in chunk])
            values = mx.take_along_axis(log_probs, targets[:, None], axis=1)[:, 0]
            out += zip(values.tolist(), (mx.argmax(log_probs, axis=1) == targets).tolist())
        return out

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
        rows = [list(p)[-(self.n_ctx - max_new_tokens) :] for p in prompts]
        if not all(rows):
            raise BackendError("cannot generate from an empty prompt")
        cache, hidden = self._prefill_rows(rows)
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

    def _prefill_rows(self, rows: list[list[int]], exact: bool = False) -> tuple[list[Any], Any]:
        """Left-padded rows in one batch cache (mlx-lm's BatchKVCache masks the padding and gives each
        row its own positions); returns the cache and each row's last hidden state. `exact`: the
        cache grows by what each call adds, not in mlx-lm's steps of 256 cells per row (made for
        one-token decode steps, they would multiply a scoring batch's memory)."""
        mx = self._mx
        mx.set_default_device(self._device)
        width = max(len(r) for r in rows)
        padding = [width - len(r) for r in rows]
        cache, evaluated = self._batch_cache(rows, padding, exact)
        tokens = mx.array([[0] * pad + r for pad, r in zip(padding, rows)])
        for start in range(evaluated, width, self.n_batch):
            hidden = self._body(tokens[:, start : start + self.n_batch], cache)[:, -1]
            mx.eval(hidden, [c.state for c in cache])
        return cache, hidden

    def _batch_cache(self, rows: list[list[int]], padding: list[int], exact: bool) -> tuple[list[Any], int]:
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
            if exact:
                batch.step = 1  # read by its update_and_fetch when it grows
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

    def timed_prefill(self, tokens: Sequence[int], context: Sequence[int] = ()) -> float:
        return self._timed_prefill(tokens, self._at_depth(context))[0]

    def _timed_prefill(self, tokens: Sequence[int], cache: list[Any] | None = None) -> tuple[float, list[Any], Any]:
        """Seconds to add `tokens` to `cache` (None: a fresh one) and compute the last logits; the
        cache; the logits."""
        started = time.perf_counter()
        cache, hidden = self._prefill(tokens, cache)
        logits = self._head(hidden)
        self._mx.eval(logits)
        return time.perf_counter() - started, cache, logits

    def _at_depth(self, context: Sequence[int]) -> list[Any] | None:
        """A copy of a cache holding `context` (None when empty: a fresh cache), evaluated untimed;
        the filled cache is kept for the next run at the same depth, so a deep context is evaluated
        once per metric, not once per repeat."""
        if not context:
            return None
        if self._depth is None or self._depth[0] != tuple(context):
            self._depth = (tuple(context), self._prefill(context)[0])
        cache = copy.deepcopy(self._depth[1])
        self._mx.eval([c.state for c in cache])  # copied before the clock starts
        return cache

    def timed_decode(self, prompt: Sequence[int], new_tokens: int, context: Sequence[int] = ()) -> tuple[float, float]:
        mx = self._mx
        cache = self._at_depth(context)
        started = time.perf_counter()
        _, cache, logits = self._timed_prefill(prompt, cache)
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
        flat = cast("list[tuple[str, Any]]", tree_flatten(self._model.parameters()))  # no destination: a list
        weights = sum(a.nbytes for _, a in flat)
        return MemoryProfile(weights, per_token, allocated / cache[0].keys.shape[2])

    def close(self) -> None:
        self._model = self._body = self._head = self._depth = None  # type: ignore[assignment]  # released: unused after close
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


def _cells(groups: Sequence[ScoreGroup]) -> int:
    """Cache cells a batch of groups fills once each context is repeated for its continuations."""
    width = max(len(g.context) for g in groups) + max((len(c) for g in groups for c in g.continuations), default=0)
    return width * sum(max(1, len(g.continuations)) for g in groups)


def _is_float(array: Any) -> bool:
    import mlx.core as mx

    return mx.issubdtype(array.dtype, mx.floating)


def _upcast_to_float32(model: Any) -> None:
    """Every floating parameter to float32 (exact): the CPU kernels are fast only in float32."""
    import mlx.core as mx
    from mlx.utils import tree_map

    model.update(tree_map(lambda a: a.astype(mx.float32) if _is_float(a) else a, model.parameters()))
