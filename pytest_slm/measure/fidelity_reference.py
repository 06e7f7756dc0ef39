"""The fidelity items' distributions: the float32 reference's on the evaluation text (and on the
depth text after each depth), computed once a run and kept in the artifact cache between runs
(see reference.py), and a candidate's, always in full; then the figures of one against the other."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from ..backends import backend
from ..backends.artifacts import content_digest
from ..backends.base import CONTEXT_LENGTH, DEFAULT_KV_TYPE
from ..matrix import REFERENCE_QUANT, Case, Matrix
from ..models.errors import RegistryError
from ..models.loader import Loader
from ..provenance import version
from . import reference
from .divergence import Fidelity, Reference, TopK, compare, depth_windows, windows
from .texts import Texts

if TYPE_CHECKING:
    import numpy as np

    from ..options import SlmConfig


@dataclass
class FidelityReference:
    config: SlmConfig
    matrix: Matrix
    loader: Loader
    texts: Texts
    progress: Callable[[str], None]
    shown: Callable[[Path], str]
    _logits: dict[tuple[str, int], tuple[list[int], list[Reference]]] = field(default_factory=dict)  # by (model, depth)

    def against_reference(
        self, item: str, candidate: Case, reference: Case, depths: Sequence[int] = (0,)
    ) -> dict[int, Fidelity]:
        """The figures at each depth. The candidate first, at every depth, since its items have just
        run and it is still loaded; then the reference, loaded only the first time."""
        if problem := self.matrix.skip_reason(reference):
            pytest.skip(f"the reference {reference.model_id} cannot run here: {problem}")
        measured = {depth: self._windows_logits(candidate, depth, full=True) for depth in depths}
        figures = {}
        for depth, (tokens, candidate_logits) in measured.items():
            reference_tokens, reference_logits = self._windows_logits(reference, depth)
            self._logits.setdefault(
                (reference.model_id, depth), (reference_tokens, reference_logits)
            )  # for every quant
            if reference_tokens != tokens:
                pytest.fail(
                    f"{item}: the two runtimes tokenize the {'depth' if depth else 'evaluation'} text differently",
                    pytrace=False,
                )
            full_logits = cast("list[np.ndarray]", candidate_logits)  # full=True: never a kept top k
            figures[depth] = compare(zip(reference_logits, full_logits, self._windows(item, tokens, depth)))
        return figures

    def _windows_logits(self, case: Case, depth: int = 0, full: bool = False) -> tuple[list[int], list[Reference]]:
        """The text's tokens and each window's logits (the cached reference's: its top k): the
        evaluation text's windows at depth 0, the depth text's after `depth` of its tokens otherwise
        (see `_windows`); a reference's are kept for the session, since every quant of the model is
        compared with them. `full`: a candidate's, always every logit (an f32 candidate on another
        device than the reference's is measured, not read from the reference's top-k cache)."""
        cached = self._logits.get((case.model_id, depth))
        if cached is not None and not (full and any(isinstance(window, TopK) for window in cached[1])):
            return cached
        shown = case.model_id + (f" at depth {depth}" if depth else "")
        # the f32 reference, cached on disk
        is_reference = not full and case.quant == REFERENCE_QUANT and case.kv == DEFAULT_KV_TYPE
        stored_at = self._cache_path(case, depth) if is_reference else None
        if stored_at is not None and (stored := reference.load(stored_at)) is not None:
            self.progress(f"fidelity reference {shown}: reused from the cache ({self.shown(stored_at)})")
            self._logits[case.model_id, depth] = stored.tokens, list(stored.windows)
            return self._logits[case.model_id, depth]
        started = time.perf_counter()
        backend_model = self.loader.model(case).backend
        tokens = backend_model.tokenize(self.texts.depth_text if depth else self.texts.eval_text)
        chunks = self._windows(case.model_id, tokens, depth)
        if depth:  # one pass: the context once, then the windows, each continuing the last
            rows = backend_model.logits([token for chunk in chunks for token in chunk], context=tokens[:depth])
            logits = [rows[i * len(chunk) : (i + 1) * len(chunk)] for i, chunk in enumerate(chunks)]
        else:
            logits = [backend_model.logits(chunk) for chunk in chunks]
        measured: tuple[list[int], list[Reference]] = tokens, list(logits)
        if stored_at is not None:
            kept = reference.keep(tokens, chunks, logits)
            measured = tokens, list(kept.windows)  # the figures every later run, reading the file, computes
            try:
                reference.save(stored_at, kept)
            except OSError as exc:
                self.progress(f"fidelity reference {shown}: cannot cache it in {self.shown(stored_at)}: {exc}")
            else:
                seconds = time.perf_counter() - started
                self.progress(
                    f"fidelity reference {shown}: computed in {seconds:.1f} s, cached in {self.shown(stored_at)}"
                )
        if is_reference:
            self._logits[case.model_id, depth] = measured
        return measured

    def _windows(self, item: str, tokens: list[int], depth: int) -> list[list[int]]:
        """The windows compared at `depth`: at 0, the evaluation text's, each from an empty cache; at
        a nonzero depth, the depth text's first `depth` tokens as context, then up to
        divergence.DEPTH_WINDOWS windows continuing it (divergence.depth_windows)."""
        size = self.config.eval_window
        if not depth:
            if not (chunks := windows(tokens, size)):
                pytest.fail(
                    f"{item}: the evaluation text has {len(tokens)} tokens, fewer than one window of {size} (--slm-eval-window)",
                    pytrace=False,
                )
            return chunks
        if not (chunks := depth_windows(tokens, depth, size, CONTEXT_LENGTH)):
            pytest.fail(
                f"{item}: fidelity at depth {depth} needs {depth + size} tokens (the depth, then one window of"
                f" --slm-eval-window={size}) within the {CONTEXT_LENGTH} a model is loaded with; the depth text"
                f" {self.shown(self.config.depth_text)} (--slm-depth-text) has {len(tokens)}",
                pytrace=False,
            )
        return chunks

    def _cache_path(self, case: Case, depth: int) -> Path | None:
        """Where the reference's logits on the text are kept between runs: named by the content of
        the GGUF its float32 copy is made from, the quant, the runtime's version, the text, the
        window and the depth (see reference.py)."""
        try:
            gguf = self.matrix.models[case.model].gguf_path(self.config.cache_dir)
        except RegistryError:
            return None
        if gguf is None or not gguf.is_file():
            return None
        digest = f"{content_digest(gguf)}:{case.quant}"
        runtime = version(backend(case.backend).PACKAGE)
        text = self.texts.depth_text if depth else self.texts.eval_text
        key = reference.cache_key(digest, runtime, text, self.config.eval_window, depth)
        return reference.path_for(self.config.cache_dir, case.model, key)
