"""MLX through mlx-lm, in process: an MLX model directory, or a GGUF file imported into MLX.

The GGUF import is what lets MLX and llama.cpp be compared on the very same weights: the GGUF's
Q4_0/Q4_1/Q8_0 blocks are MLX affine quantized weights (group 32) bit for bit, so `native` runs the
same numbers llama.cpp runs; the tokenizer is rebuilt from the GGUF's own vocabulary, so the token
ids are llama.cpp's.

On CPU everything is computed densely in float32, on OpenBLAS (see mlx_blas.py): MLX's CPU
quantized matmul is a scalar loop on one thread (10-13 tokens/s of prefill here), and its float16
matmuls are slower than float32. Quantized weights are dequantized once at load, after their
float16 scales and biases are upcast: the weights keep exactly the quantized values, so the quant
axis still means what it says; only the kernels, and 4 bytes of memory per weight, differ.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import mlx_blas
from .base import BackendError, DeviceStatus, LoadRequest, MemoryProfile, ScoreGroup, Unsupported

INSTALL_HINT = "mlx is not installed (pip install 'pytest-slm[mlx]')"
QUANTS = ("native", "f16", "mlx-q8", "mlx-q6", "mlx-q4", "mlx-q3", "mlx-q2")
GGUF_GROUP_SIZE = 32  # ggml's Q4_0/Q4_1/Q8_0 block size
MLX_GROUP_SIZE = 64  # mlx-lm's default for re-quantization
MAX_BRANCHES = 16  # continuations decoded side by side from one context
GENERATE_ROWS = 32  # prompts generated side by side

# llama.cpp's pre-tokenizers, as `tokenizers` pre-tokenizer factories; only those verified id for id
# against llama.cpp are listed, any other GGUF tokenizer is a skip rather than silently different ids.
PRE_TOKENIZERS: dict[str, Callable[[], Any]] = {
    "smollm": lambda: _byte_level_pre(individual_digits=True),
}

# Token texts llama.cpp treats as end of generation besides the GGUF's eos/eot/eom ids (its vocab
# loader detects end-of-turn and fill-in-the-middle pad/repo/separator tokens by text).
EOG_TEXTS = frozenset(
    {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>",
        "_<EOT>", "<｜end▁of▁sentence｜>", "<|end_of_text|>", "<|return|>", "<|call|>",
        "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
        "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
    }
)  # fmt: skip

TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4  # GGUF tokenizer.ggml.token_type values

# GGUF tensor name pieces -> mlx_lm llama module paths.
_GGUF_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


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
    mlx_blas.route_to_openblas()  # before this process's first import of mlx.core
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
    blas = mlx_blas.route_to_openblas()
    mlx_blas.set_threads(request.threads)
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model

    device = mx.cpu if request.device == "cpu" else mx.gpu
    mx.set_default_device(device)
    if request.mlx_path is not None:
        model, vocab = _load_mlx_dir(Path(request.mlx_path), request.quant)
    elif request.gguf_path is not None:
        model, vocab = _load_gguf(Path(request.gguf_path), request.quant)
    else:
        raise Unsupported(f"model {request.model_name!r} has neither an MLX directory nor a GGUF file")
    if request.device == "cpu":
        _upcast_to_float32(model)
        dequantize_model(model)
    mx.eval(model.parameters())
    return MlxModel(model, vocab, device, request, blas)


@dataclass(frozen=True)
class Vocab:
    """Tokenization and special tokens, from whichever source the weights came from."""

    encode: Callable[[str], list[int]]
    pieces: list[bytes]  # per token id, as llama.cpp's token_to_piece(special=False) prints it
    bos_id: int | None
    add_bos: bool
    eos_ids: frozenset[int]


def _load_mlx_dir(path: Path, quant: str) -> tuple[Any, Vocab]:
    """An mlx-lm model directory, loaded from the local path only (mlx_lm.load downloads anything else)."""
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise BackendError(f"{path} is not an MLX model directory (it needs config.json and *.safetensors weights)")
    import mlx.core as mx
    import mlx.nn as nn
    import mlx_lm
    from mlx.utils import tree_map

    try:
        model, tokenizer = mlx_lm.load(str(path))
    except (ValueError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "not supported" in message:  # mlx-lm's words for an architecture it has no module for
            raise Unsupported(f"mlx-lm cannot build {path.name}: {message}") from None
        raise BackendError(f"mlx-lm could not load {path}: {message}") from None
    quantized = any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())
    if quant != "native":
        if quantized:
            raise Unsupported(f"{path.name} is already quantized; only quant 'native' runs an MLX-quantized directory")
        if quant == "f16":
            model.update(tree_map(lambda a: a.astype(mx.float16) if _is_float(a) else a, model.parameters()))
        else:
            nn.quantize(model, group_size=MLX_GROUP_SIZE, bits=int(quant[len("mlx-q") :]), class_predicate=_quantizable)
    return model, _hf_vocab(tokenizer)


def _load_gguf(path: Path, quant: str) -> tuple[Any, Vocab]:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models.llama import Model

    try:
        weights, meta = mx.load(str(path), return_metadata=True)
    except (RuntimeError, ValueError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "gguf_tensor_to_f16" in message or "unsupported" in message.lower():  # e.g. K-quant blocks
            raise Unsupported(f"MLX reads only F32/F16/Q4_0/Q4_1/Q8_0 GGUF tensors, not those of {path.name}") from None
        raise BackendError(f"MLX could not read GGUF {path}: {message}") from None
    args, n_heads, n_kv_heads = _gguf_model_args(meta, weights, path.name)
    vocab = _gguf_vocab(meta, path.name)
    model = Model(args)
    loaded: dict[str, Any] = {}
    bits: dict[str, int] = {}  # module path -> bits of its GGUF blocks
    for name, array in weights.items():
        module, suffix = _mlx_name(name, path.name)
        loaded[f"{module}.{suffix}"] = array
        if suffix == "scales":
            bits[module] = weights[name.replace(".scales", ".weight")].shape[-1] // array.shape[-1]
    for key in [k for k in loaded if k.endswith(("q_proj.weight", "k_proj.weight"))]:
        module = key[: -len(".weight")]
        heads = n_heads if module.endswith("q_proj") else n_kv_heads
        for name in [f"{module}.{s}" for s in ("weight", "scales", "biases", "bias") if f"{module}.{s}" in loaded]:
            loaded[name] = unpermute_qk(loaded[name], heads)

    if quant == "native":
        nn.quantize(
            model,
            class_predicate=lambda p, _: {"group_size": GGUF_GROUP_SIZE, "bits": bits[p]} if p in bits else False,
        )
        model.load_weights(list(loaded.items()), strict=True)
        return model, vocab
    for module, b in bits.items():
        w, s, z = (loaded.pop(f"{module}.{k}") for k in ("weight", "scales", "biases"))
        s, z = s.astype(mx.float32), z.astype(mx.float32)  # exact, and 3x faster than float16 on CPU
        loaded[f"{module}.weight"] = mx.dequantize(w, s, z, group_size=GGUF_GROUP_SIZE, bits=b)
    for name, array in loaded.items():  # every matrix in float16; norms keep their precision
        if array.ndim == 2:
            loaded[name] = array.astype(mx.float16)
    model.load_weights(list(loaded.items()), strict=True)
    if quant != "f16":
        nn.quantize(model, group_size=MLX_GROUP_SIZE, bits=int(quant[len("mlx-q") :]), class_predicate=_quantizable)
    return model, vocab


def unpermute_qk(rows: Any, n_heads: int) -> Any:
    """Undo llama.cpp's converter, which interleaves each head's Q/K rows for its RoPE.

    The converter maps HF rows with reshape(n_heads, 2, d/2, ...).swapaxes(1, 2); the inverse is the
    same with (d/2, 2). Applying the forward mapping again instead is a plausible, silent bug (top-1
    agreement with llama.cpp drops to ~0.67), which is why the parity test breaks this on purpose.
    """
    out_dim = rows.shape[0]
    return rows.reshape(n_heads, out_dim // n_heads // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _mlx_name(gguf_name: str, filename: str) -> tuple[str, str]:
    """'blk.3.attn_q.scales' -> ('model.layers.3.self_attn.q_proj', 'scales')."""
    stem, _, suffix = gguf_name.rpartition(".")
    parts = stem.split(".")
    if parts[0] == "blk" and len(parts) == 3 and parts[2] in _GGUF_NAMES:
        return f"model.layers.{parts[1]}.{_GGUF_NAMES[parts[2]]}", suffix
    if len(parts) == 1 and parts[0] in _GGUF_NAMES:
        return _GGUF_NAMES[parts[0]], suffix
    raise Unsupported(f"MLX's GGUF import does not know tensor {gguf_name!r} in {filename}")


def _gguf_model_args(meta: dict[str, Any], weights: dict[str, Any], filename: str) -> tuple[Any, int, int]:
    from mlx_lm.models.llama import ModelArgs

    arch = meta.get("general.architecture")
    if arch != "llama":
        raise Unsupported(f"MLX's GGUF import builds llama-architecture models only, not {arch!r} ({filename})")
    if "llama.expert_count" in meta:
        raise Unsupported(f"MLX's GGUF import does not build mixture-of-experts models ({filename})")

    def number(key: str, default: float | None = None) -> Any:
        if key in meta:
            return meta[key].item()
        if default is None:
            raise BackendError(f"GGUF {filename} lacks metadata {key!r}")
        return default

    hidden = int(number("llama.embedding_length"))
    n_heads = int(number("llama.attention.head_count"))
    n_kv_heads = int(number("llama.attention.head_count_kv", n_heads))
    head_dim = int(number("llama.attention.key_length", hidden // n_heads))
    if int(number("llama.rope.dimension_count", head_dim)) != head_dim:
        raise Unsupported(f"MLX's GGUF import does not support partial rotary embeddings ({filename})")
    scaling = meta.get("llama.rope.scaling.type", "none")
    if scaling not in ("none", "linear") or "rope_freqs.weight" in weights:
        raise Unsupported(f"MLX's GGUF import does not support RoPE scaling {scaling!r} / rope_freqs ({filename})")
    rope_scaling = None
    if scaling == "linear":
        rope_scaling = {"type": "linear", "factor": float(number("llama.rope.scaling.factor"))}
    args = ModelArgs(
        model_type="llama",
        hidden_size=hidden,
        num_hidden_layers=int(number("llama.block_count")),
        intermediate_size=int(number("llama.feed_forward_length")),
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        head_dim=head_dim,
        rms_norm_eps=float(number("llama.attention.layer_norm_rms_epsilon")),
        vocab_size=int(weights["token_embd.weight"].shape[0]),
        max_position_embeddings=int(number("llama.context_length", 4096)),
        rope_theta=float(number("llama.rope.freq_base", 10000.0)),
        rope_scaling=rope_scaling,
        attention_bias="blk.0.attn_q.bias" in weights,
        mlp_bias="blk.0.ffn_up.bias" in weights,
        tie_word_embeddings="output.weight" not in weights,
    )
    return args, n_heads, n_kv_heads


# -- vocabularies -----------------------------------------------------------------------------


def _byte_level_pre(individual_digits: bool) -> Any:
    from tokenizers import pre_tokenizers

    steps = [pre_tokenizers.Digits(individual_digits=True)] if individual_digits else []
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    return pre_tokenizers.Sequence(steps)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte <-> printable-character table, inverted: how byte-level BPE spells raw bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def gguf_tokenizer(meta: dict[str, Any], filename: str) -> Any:
    """A `tokenizers` BPE built from the GGUF's own tokens and merges, so ids are llama.cpp's."""
    from tokenizers import AddedToken, Tokenizer, decoders, models

    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2" or pre not in PRE_TOKENIZERS:
        raise Unsupported(
            f"MLX's GGUF import does not reproduce tokenizer {kind!r}/{pre!r} ({filename}); "
            f"supported: gpt2 with {', '.join(PRE_TOKENIZERS)}"
        )
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta["tokenizer.ggml.token_type"].tolist()
    # llama.cpp splits a merge at the first space after its first character
    merges = [(m[: m.index(" ", 1)], m[m.index(" ", 1) + 1 :]) for m in meta["tokenizer.ggml.merges"]]
    tokenizer = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tokenizer.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == TOKEN_CONTROL]
    )
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t, k in zip(tokens, types) if k == TOKEN_USER_DEFINED])
    return tokenizer


def _gguf_vocab(meta: dict[str, Any], filename: str) -> Vocab:
    tokenizer = gguf_tokenizer(meta, filename)
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta["tokenizer.ggml.token_type"].tolist()
    decoder = _byte_decoder()
    pieces = []  # as llama.cpp's token_to_piece(special=False): control tokens print nothing
    for text, kind_id in zip(tokens, types):
        if kind_id == TOKEN_NORMAL:
            pieces.append(bytes(decoder[c] for c in text))
        else:
            pieces.append(text.encode() if kind_id == TOKEN_USER_DEFINED else b"")

    def special(key: str) -> int | None:
        return int(meta[key].item()) if key in meta else None

    marked = {special(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")} - {None}
    eos_ids = frozenset(marked | {i for i, t in enumerate(tokens) if t in EOG_TEXTS})
    add_bos = bool(meta["tokenizer.ggml.add_bos_token"].item()) if "tokenizer.ggml.add_bos_token" in meta else False
    return Vocab(
        lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
        pieces,
        special("tokenizer.ggml.bos_token_id"),
        add_bos,
        eos_ids,
    )


def _hf_vocab(wrapper: Any) -> Vocab:
    """The vocabulary of an mlx-lm TokenizerWrapper (a Hugging Face tokenizer underneath)."""
    tokenizer = wrapper._tokenizer
    specials = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    byte_level = type(tokenizer.backend_tokenizer.decoder).__name__ == "ByteLevel"
    decoder = _byte_decoder()
    pieces = []
    for i, text in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if i in specials or text is None:
            pieces.append(b"")
        elif byte_level:
            pieces.append(bytes(decoder[c] for c in text) if all(c in decoder for c in text) else text.encode())
        elif text.startswith("<0x") and text.endswith(">") and len(text) == 6:  # sentencepiece byte fallback
            pieces.append(bytes([int(text[3:5], 16)]))
        else:
            pieces.append(text.replace("\u2581", " ").encode())
    bos = tokenizer.bos_token_id
    with_specials = tokenizer.encode("a", add_special_tokens=True)
    return Vocab(
        lambda text: tokenizer.encode(text, add_special_tokens=False),
        pieces,
        bos,
        bos is not None and bool(with_specials) and with_specials[0] == bos,
        # plus llama.cpp's end-of-generation texts, so both backends stop generating at the same tokens
        frozenset(wrapper.eos_token_ids) | {i for i in specials if tokenizer.convert_ids_to_tokens(i) in EOG_TEXTS},
    )


# -- the loaded model -------------------------------------------------------------------------


class MlxModel:
    """One model on one MLX device; scores and generates greedily, deterministically."""

    def __init__(self, model: Any, vocab: Vocab, device: Any, request: LoadRequest, blas: str) -> None:
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
        self.provenance = {
            "backend": "mlx",
            "mlx": mx.__version__,
            "mlx_lm": mlx_lm.__version__,
            "mlx_device": request.device,
            "source": "mlx" if request.mlx_path is not None else "gguf",
        }
        if request.device == "cpu":
            self.provenance["cpu_matmul"] = f"float32, dequantized at load, {blas}"

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


def _quantizable(path: str, module: Any) -> bool:
    """mlx-lm's own rule: layers whose input width is a whole number of groups."""
    weight = getattr(module, "weight", None)
    return hasattr(module, "to_quantized") and weight is not None and weight.shape[-1] % MLX_GROUP_SIZE == 0


def _is_float(array: Any) -> bool:
    import mlx.core as mx

    return mx.issubdtype(array.dtype, mx.floating)


def _upcast_to_float32(model: Any) -> None:
    """Every floating parameter to float32 (exact): the CPU kernels are fast only in float32."""
    import mlx.core as mx
    from mlx.utils import tree_map

    model.update(tree_map(lambda a: a.astype(mx.float32) if _is_float(a) else a, model.parameters()))
