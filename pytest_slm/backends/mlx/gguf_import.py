"""A GGUF file imported into MLX: its tensors as mlx-lm's llama modules, its tokenizer rebuilt.

The GGUF's Q4_0/Q4_1/Q8_0 blocks are MLX affine quantized weights (group 32) bit for bit, so `native`
runs the same numbers llama.cpp runs; the tokenizer is rebuilt from the GGUF's own vocabulary, so
the token ids are llama.cpp's. Q/K rows are un-permuted through the module attribute
`unpermute_qk`, which the parity test replaces with a plausible wrong mapping on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from ..base import BackendError, Unsupported
from .vocab import EOG_TEXTS, Vocab, byte_decoder

GGUF_GROUP_SIZE = 32  # ggml's Q4_0/Q4_1/Q8_0 block size
MLX_GROUP_SIZE = 64  # mlx-lm's default for re-quantization

# llama.cpp's pre-tokenizers, as `tokenizers` pre-tokenizer factories; only those verified id for id
# against llama.cpp are listed, any other GGUF tokenizer is a skip rather than silently different ids.
PRE_TOKENIZERS: dict[str, Callable[[], Any]] = {
    "smollm": lambda: _byte_level_pre(individual_digits=True),
}

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


def load_gguf(path: Path, quant: str) -> tuple[Any, Vocab]:
    """An mlx-lm llama model holding the GGUF's tensors: its own blocks for `native`, else
    dequantized to float16 and, for `mlx-q*`, quantized again by MLX."""
    import mlx.core as mx
    from mlx import nn
    from mlx_lm.models.llama import Model

    try:
        weights, meta = cast("tuple[dict[str, mx.array], dict[str, Any]]", mx.load(str(path), return_metadata=True))
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
        nn.quantize(  # type: ignore[attr-defined]  # mlx.nn re-exports it by a star import mypy does not follow
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
        nn.quantize(model, group_size=MLX_GROUP_SIZE, bits=int(quant[len("mlx-q") :]), class_predicate=quantizable)  # type: ignore[attr-defined]  # as above
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
    rope_scaling: dict[str, float | str] | None = None
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


# -- the tokenizer ----------------------------------------------------------------------------


def _byte_level_pre(individual_digits: bool) -> Any:
    from tokenizers import pre_tokenizers

    steps: list[pre_tokenizers.PreTokenizer] = (
        [pre_tokenizers.Digits(individual_digits=True)] if individual_digits else []
    )
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    return pre_tokenizers.Sequence(steps)


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
    decoder = byte_decoder()
    pieces = []  # as llama.cpp's token_to_piece(special=False): control tokens print nothing
    for text, kind_id in zip(tokens, types):
        if kind_id == TOKEN_NORMAL:
            pieces.append(bytes(decoder[c] for c in text))
        else:
            pieces.append(text.encode() if kind_id == TOKEN_USER_DEFINED else b"")

    def special(key: str) -> int | None:
        return int(meta[key].item()) if key in meta else None

    marked = {i for k in ("eos", "eot", "eom") if (i := special(f"tokenizer.ggml.{k}_token_id")) is not None}
    eos_ids = frozenset(marked | {i for i, t in enumerate(tokens) if t in EOG_TEXTS})
    add_bos = bool(meta["tokenizer.ggml.add_bos_token"].item()) if "tokenizer.ggml.add_bos_token" in meta else False
    return Vocab(
        lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
        pieces,
        special("tokenizer.ggml.bos_token_id"),
        add_bos,
        eos_ids,
        chat_template=str(meta["tokenizer.chat_template"]) if "tokenizer.chat_template" in meta else None,
        bos_text=tokens[bos] if (bos := special("tokenizer.ggml.bos_token_id")) is not None else "",
        eos_text=tokens[eos] if (eos := special("tokenizer.ggml.eos_token_id")) is not None else "",
    )


def quantizable(path: str, module: Any) -> bool:
    """mlx-lm's own rule: layers whose input width is a whole number of groups."""
    weight = getattr(module, "weight", None)
    return hasattr(module, "to_quantized") and weight is not None and weight.shape[-1] % MLX_GROUP_SIZE == 0
