"""The KV cache a GGUF's metadata predicts, layer by layer: what the memory item expects a runtime
to store, and what the cache costs at a context length.

A layer keeps, per cached token, `n_head_kv(layer) x (key_length + value_length)` values of the
cache's type (`n_head_kv` may be one number or one per layer; the lengths default to
embedding_length / head_count). A sliding-window layer attends to its last `sliding_window`
tokens only, so its cache stops growing there; which layers slide is not in every GGUF: llama.cpp
hard-codes it per architecture (`hparams.set_swa_pattern(n)` in src/llama-model.cpp: layer `il`
slides when `il % n < n - 1`). Where the layout cannot be predicted (recurrent or hybrid layers, a
compressed MLA cache, a window without a known pattern, a cache type without a fixed size), the
item reports the measured figure and says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

# llama.cpp's hard-coded patterns (src/llama-model.cpp, load_hparams): every n-th layer attends
# globally, the others slide. Another architecture with a window but no
# `<arch>.attention.sliding_window_pattern` key is not predicted.
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6}
ATTENTION_KEYS = (
    "head_count",
    "head_count_kv",
    "key_length",
    "value_length",
    "sliding_window",
    "sliding_window_pattern",
    "kv_lora_rank",
)


class Unpredictable(Exception):
    """The metadata does not say what the runtime stores; the message says why, in a few words."""


@dataclass(frozen=True)
class KvLayout:
    """Bytes per cached token summed over each kind of layer, and the cells a sliding-window
    layer keeps at most (`window_cells`: the runtime's rule, at least the window)."""

    layers: int
    global_layers: int
    global_bytes: int  # per cached token, over the layers that attend to the whole context
    window_bytes: int  # per cached token, over the sliding-window layers
    window: int  # their window, tokens (0: no sliding layer)
    window_cells: int  # cells the runtime gives a sliding layer (0: no sliding layer)

    @property
    def per_token(self) -> int:
        """What one more token costs while the context is within the window: every layer keeps it."""
        return self.global_bytes + self.window_bytes

    def at(self, context: int) -> int:
        """KV bytes at `context` tokens: sliding layers hold min(context, window_cells) cells."""
        return self.global_bytes * context + self.window_bytes * min(context, self.window_cells or context)

    def describe(self) -> str:
        if not self.window:
            return f"{self.layers} layers, all global"
        return (
            f"{self.layers} layers: {self.global_layers} global, {self.layers - self.global_layers} sliding"
            f" (window {self.window}, {self.window_cells} cells kept)"
        )


def metadata_keys(arch: str) -> list[str]:
    """The GGUF keys `predict` reads."""
    names = ("block_count", "embedding_length", *(f"attention.{n}" for n in ATTENTION_KEYS))
    return ["general.architecture", *(f"{arch}.{name}" for name in names)]


def predict(metadata: Mapping[str, str], value_bytes: float | None, window_cells: Callable[[int], int]) -> KvLayout:
    """The layout `metadata` (GGUF keys, values as llama.cpp prints them: "[1, 2]" for an array)
    predicts, for a cache of `value_bytes` per value (None: a type without a fixed size);
    `window_cells(window)` is the runtime's rule for how many cells a sliding layer keeps.
    Raises Unpredictable."""
    arch = metadata.get("general.architecture", "")
    key = f"{arch}.attention"
    if value_bytes is None:
        raise Unpredictable("the KV cache type has no fixed size per value")
    if f"{key}.kv_lora_rank" in metadata:
        raise Unpredictable(f"{arch} keeps a compressed (MLA) KV cache")
    layers = _integer(metadata, f"{arch}.block_count")
    heads = _per_layer(metadata, f"{key}.head_count", layers)
    kv_heads = _per_layer(metadata, f"{key}.head_count_kv", layers) if f"{key}.head_count_kv" in metadata else heads
    if 0 in kv_heads:
        raise Unpredictable(f"{arch} has layers without attention (recurrent or hybrid)")
    if heads[0] == 0:
        raise Unpredictable(f"{arch}'s first layer has no attention heads")
    head = _integer(metadata, f"{arch}.embedding_length") // heads[0]
    key_length = _integer(metadata, f"{key}.key_length") if f"{key}.key_length" in metadata else head
    value_length = _integer(metadata, f"{key}.value_length") if f"{key}.value_length" in metadata else key_length
    window = _integer(metadata, f"{key}.sliding_window") if f"{key}.sliding_window" in metadata else 0
    sliding = _sliding_layers(metadata, arch, layers) if window else [False] * layers
    per_layer = [round(n * (key_length + value_length) * value_bytes) for n in kv_heads]
    window_bytes = sum(b for b, slides in zip(per_layer, sliding) if slides)
    window = window if window_bytes else 0
    return KvLayout(
        layers=layers,
        global_layers=sliding.count(False),
        global_bytes=sum(per_layer) - window_bytes,
        window_bytes=window_bytes,
        window=window,
        window_cells=window_cells(window) if window else 0,
    )


def _sliding_layers(metadata: Mapping[str, str], arch: str, layers: int) -> list[bool]:
    """Which layers slide: the GGUF's pattern key (a period, or one flag per layer), else llama.cpp's
    hard-coded period for the architecture."""
    pattern_key = f"{arch}.attention.sliding_window_pattern"
    if pattern_key in metadata:
        value = _parsed(metadata, pattern_key)
        if isinstance(value, list):
            if len(value) != layers or not all(isinstance(v, bool) for v in value):
                raise Unpredictable(f"{pattern_key} is not one flag per layer")
            return value
        period = value
    elif arch in SWA_PATTERNS:
        period = SWA_PATTERNS[arch]
    else:
        raise Unpredictable(f"{arch} has a sliding window but no known layer pattern")
    if not isinstance(period, int) or isinstance(period, bool) or period < 0:
        raise Unpredictable(f"{pattern_key} is not a layer period")
    return [period == 0 or il % period < period - 1 for il in range(layers)]


def _parsed(metadata: Mapping[str, str], key: str) -> object:
    try:
        return json.loads(metadata[key])
    except (KeyError, ValueError):
        raise Unpredictable(f"the metadata has no readable {key}") from None


def _integer(metadata: Mapping[str, str], key: str) -> int:
    value = _parsed(metadata, key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise Unpredictable(f"the metadata's {key} is not a positive integer")
    return value


def _per_layer(metadata: Mapping[str, str], key: str, layers: int) -> list[int]:
    """One number for every layer, or one per layer."""
    value = _parsed(metadata, key)
    values = value if isinstance(value, list) else [value] * layers
    if len(values) != layers or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise Unpredictable(f"the metadata's {key} is not a count per layer")
    return cast("list[int]", values)  # each checked above
