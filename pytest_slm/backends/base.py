"""The contract every runtime implements: token-level, so the text-level logic lives once."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # backend packages import this module at registry time, before any runtime
    import numpy as np

    from .kv_layout import KvLayout


# The KV cache type every backend runs unless told otherwise (llama.cpp's default; on MLX, its
# unquantized cache): an item without a KV type in its id runs this one.
DEFAULT_KV_TYPE = "f16"


class BackendError(Exception):
    """A backend cannot load or run a model; the message is one line for the user."""


class Unsupported(BackendError):
    """This backend cannot run this combination (architecture, quant): the item skips, it does not fail."""


@dataclass(frozen=True)
class DeviceStatus:
    """Whether a backend-device pair can run here, and if not, why (a skip reason)."""

    name: str  # "llamacpp-cpu", "mlx-gpu", ...
    available: bool
    reason: str = ""


def default_cache_dir() -> Path:
    """Where derived model files are kept when neither --slm-cache nor the request names a place."""
    if env := os.environ.get("PYTEST_SLM_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytest-slm"


CONTEXT_LENGTH = 4096  # tokens a loaded model holds: the deepest latency metric must fit (--slm-depths)


@dataclass(frozen=True)
class LoadRequest:
    """Everything a backend needs to load one (model, device, quant) combination."""

    model_name: str
    gguf_path: Path | None  # the GGUF file, when the model has one
    mlx_path: Path | None  # an MLX model directory, when the model has one
    device: str  # the device part of the pair: "cpu", "cuda", "metal", "gpu"
    quant: str
    threads: int
    seed: int = 1234
    cache_dir: Path | None = None  # where derived files (other quants) are kept
    context_length: int = CONTEXT_LENGTH
    batch_size: int = 512
    kv_type: str = DEFAULT_KV_TYPE  # keys' and values' cache type, one of the backend's KV_TYPES
    progress: Callable[[str], None] = lambda line: None  # a line for the user during a long step


@dataclass(frozen=True)
class ScoreGroup:
    """One shared context and the continuations scored after it (the choices of one question)."""

    context: Sequence[int]
    continuations: Sequence[Sequence[int]]

    def fitted_context(self, n_ctx: int) -> list[int]:
        """The context, cut from the left so the longest continuation still fits, as lm-eval's own
        models do."""
        overflow = len(self.context) + max((len(c) for c in self.continuations), default=0) - n_ctx
        context = list(self.context)[max(0, overflow) :]
        if not context:
            raise BackendError("cannot score a continuation without a context token")
        return context


@dataclass(frozen=True)
class MemoryProfile:
    """What a loaded model costs in memory besides the process around it."""

    weights_bytes: int
    kv_bytes_per_token: int  # from the model's layers and the cache's type; measured where `unpredicted` says why
    kv_bytes_per_token_stored: float  # what the runtime actually keeps per cached token
    kv_layout: KvLayout | None = (
        None  # the per-layer rule (sliding-window layers capped); None: every layer keeps every token
    )
    unpredicted: str = ""  # why the runtime's layout cannot be predicted from the model's metadata


class LoadedModel(Protocol):
    """A model loaded on one device, at one quantization.

    Token ids are the model's own vocabulary; tokenize() adds no special tokens.
    """

    bos_id: int | None
    add_bos: bool  # whether the model expects its BOS before every text
    eos_ids: frozenset[int]
    provenance: dict[str, str]  # backend and library versions, for baselines
    chat_template: str | None  # the model's own Jinja chat template (GGUF tokenizer.chat_template), if any
    bos_text: str  # the BOS and EOS tokens as text, as chat templates receive them ("" when none)
    eos_text: str

    def tokenize(self, text: str) -> list[int]: ...

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes of one token: a multi-byte character may span several tokens."""
        ...

    def score(self, groups: Sequence[ScoreGroup]) -> list[list[tuple[float, bool]]]:
        """Per group, per continuation: (sum of log-probabilities, whether greedy decoding yields it).

        Each context is evaluated once and its continuations branch from its KV cache.
        """
        ...

    def logits(self, tokens: Sequence[int], context: Sequence[int] = ()) -> np.ndarray:
        """Float32 logits after each of `tokens` (shape: tokens x vocabulary), on a cache holding
        `context` (evaluated first, no logits kept; empty: from an empty cache).

        Full distributions, for comparing two runtimes or quantizations position by position; a
        context shows what a filled (perhaps quantized) KV cache does to them.
        """
        ...

    def generate(
        self, prompts: Sequence[Sequence[int]], max_new_tokens: int, finished: Callable[[int, list[int]], bool]
    ) -> list[list[int]]:
        """Greedy decoding of each prompt: its new token ids, until an end-of-sequence token, the
        limit, or `finished(row, tokens so far)` (the caller's stop strings). A backend may decode
        several rows side by side; each row's tokens must not depend on which rows share its batch
        beyond floating-point summation order."""
        ...

    def timed_prefill(self, tokens: Sequence[int], context: Sequence[int] = ()) -> float:
        """Seconds the runtime spends evaluating `tokens` on a cache holding `context` (empty: from an
        empty cache; the context is evaluated first, untimed, as llama-bench's depth), logits of the
        last only, synchronised with the device, with no tokenization or Python work inside."""
        ...

    def timed_decode(self, prompt: Sequence[int], new_tokens: int, context: Sequence[int] = ()) -> tuple[float, float]:
        """Greedy decoding of exactly `new_tokens` (end-of-sequence ignored) after `prompt`, itself
        after `context` (evaluated first, untimed): (seconds to the first new token, seconds the
        runtime spent decoding the new tokens)."""
        ...

    def memory_profile(self, probe_tokens: Sequence[int]) -> MemoryProfile:
        """Weight bytes and KV cache bytes per token, computed and as stored after `probe_tokens`."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """What a backend package declares at module level (see pytest_slm.backends for the registry).

    Importing the package must not import its runtime: listing devices and quants, and `--help`,
    happen before anything is probed. `device_statuses` and `load` import the runtime when called.
    """

    NAME: str  # the devices' prefix: "llamacpp" for "llamacpp-cpu"
    DEVICES: tuple[str, ...]  # every device it can drive somewhere, "<NAME>-<kind>"
    QUANTS: tuple[str, ...]  # "native" (the file as shipped) and what it can derive from it
    KV_TYPES: tuple[str, ...]  # KV cache types it runs, DEFAULT_KV_TYPE first (undeclared: that one only)
    PACKAGE: str  # the distribution whose version is the runtime in a hardware fingerprint
    SOURCES: tuple[str, ...]  # the registry sources it loads ("gguf", "mlx"), preferred first
    UNTHREADED: frozenset[str]  # devices that schedule their own work: --slm-threads is not their speed

    def device_statuses(self) -> list[DeviceStatus]:
        """Each of DEVICES, available here or why not; probes (imports) the runtime."""
        ...

    def load(self, request: LoadRequest) -> LoadedModel: ...

    def runtime_detail(self, device: str) -> str:
        """What else a speed on `device` depends on besides PACKAGE's version, for the fingerprint
        ("" when nothing does)."""
        ...
