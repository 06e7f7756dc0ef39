"""The text-level model handle that tests receive as `slm_model`: one API over every backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from ..backends.base import LoadedModel, ScoreGroup
from ..matrix import Case
from . import chat


@dataclass(frozen=True)
class EncodedPair:
    context: tuple[int, ...]
    continuation: tuple[int, ...]


class SlmModel:
    """A loaded (model, device, quant): greedy generation, log-likelihoods and tokenization."""

    def __init__(self, case: Case, backend: LoadedModel) -> None:
        self.case = case
        self.backend = backend
        self._tokens: dict[str, tuple[int, ...]] = {}

    def __repr__(self) -> str:
        return f"<SlmModel {self.case.model_id}>"

    @property
    def provenance(self) -> dict[str, str]:
        return dict(self.backend.provenance)

    def tokenize(self, text: str) -> list[int]:
        """The model's token ids for `text`, without special tokens."""
        return list(self._encode(text))

    def _encode(self, text: str) -> tuple[int, ...]:
        if text not in self._tokens:
            self._tokens[text] = tuple(self.backend.tokenize(text))
        return self._tokens[text]

    def encode_pair(self, context: str, continuation: str) -> EncodedPair:
        """Split like lm-eval: trailing context spaces move to the continuation, and the
        continuation's tokens are those of the whole text past the context's, so a merge across
        the boundary does not change the context."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self._encode(context + continuation)
        context_tokens = self._encode(context) if context else ()
        start = self._start_tokens()
        return EncodedPair(start + context_tokens, whole[len(context_tokens) :])

    def _start_tokens(self) -> tuple[int, ...]:
        """What the model puts before any text: its BOS when it wants one, else a document
        boundary, so an empty context still has a position to predict from."""
        if self.backend.bos_id is not None and self.backend.add_bos:
            return (self.backend.bos_id,)
        return ()

    def boundary_token(self) -> int:
        if self.backend.bos_id is not None:
            return self.backend.bos_id
        return min(self.backend.eos_ids)

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(log P(continuation | context), is greedy) per request; each distinct context is evaluated once."""
        pairs = [self.encode_pair(c, x) for c, x in requests]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, pair in enumerate(pairs):
            context = pair.context or (self.boundary_token(),)
            groups.setdefault(context, []).append(index)
        ordered = list(groups.items())
        scored = self.backend.score(
            [ScoreGroup(context, [pairs[i].continuation for i in members]) for context, members in ordered]
        )
        results: list[tuple[float, bool]] = [(0.0, True)] * len(pairs)
        for (_, members), scores in zip(ordered, scored):
            for index, score in zip(members, scores):
                results[index] = score
        return results

    def loglikelihood(self, context: str, continuation: str) -> float:
        return self.loglikelihoods([(context, continuation)])[0][0]

    def generate(self, prompt: str, max_tokens: int = 64, stop: Sequence[str] = ()) -> str:
        """Greedy completion of `prompt`, cut before the first stop string."""
        return self.generate_many([prompt], max_tokens, stop)[0]

    def generate_many(self, prompts: Sequence[str], max_tokens: int = 64, stop: Sequence[str] = ()) -> list[str]:
        """Greedy completions, each cut before its first stop string; the backend may batch them."""

        def text(tokens: list[int]) -> str:
            return b"".join(self.backend.token_bytes(t) for t in tokens).decode("utf-8", errors="ignore")

        encoded = [self._start_tokens() + self._encode(prompt) for prompt in prompts]
        produced = self.backend.generate(
            encoded, max_tokens, lambda _, tokens: _first_stop(text(tokens), stop) is not None
        )
        return [_cut(text(tokens), stop) for tokens in produced]

    # -- chat: the model's own template -------------------------------------------------------

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt text the model's own chat template makes of `messages`, up to where the
        assistant's reply begins. A model without a template skips the test that asks."""
        __tracebackhide__ = True
        template = getattr(self.backend, "chat_template", None)
        if not template:
            pytest.skip(
                f"{self.case.model_id} has no chat template (GGUF tokenizer.chat_template / tokenizer_config.json)"
            )
        bos_text = getattr(self.backend, "bos_text", "")
        try:
            text = chat.render(template, messages, bos_text, getattr(self.backend, "eos_text", ""))
        except chat.ChatError as exc:
            pytest.fail(f"{self.case.model_id}: {exc}", pytrace=False)  # the item fails with the message alone
        if bos_text and self._start_tokens() and text.startswith(bos_text):
            text = text[len(bos_text) :]  # generation puts the BOS token first itself: not twice
        return text

    def chat(
        self, messages: Sequence[Mapping[str, Any]], max_tokens: int = 64, stop: Sequence[str] | None = None
    ) -> str:
        """The model's greedy reply to a conversation ([{"role": "user", "content": ...}, ...]),
        rendered with its own chat template; it ends at the model's end-of-turn unless `stop` says
        otherwise."""
        __tracebackhide__ = True
        return self.chat_many([messages], max_tokens, stop)[0]

    def chat_many(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        max_tokens: int = 64,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        """Replies to several conversations; the backend may batch them like `generate_many`."""
        __tracebackhide__ = True
        prompts = [self.render_chat(messages) for messages in conversations]
        if stop is None:
            stop = self.end_of_turn()
        return self.generate_many(prompts, max_tokens, stop)

    def end_of_turn(self) -> tuple[str, ...]:
        """The stop strings a reply ends at: the EOS text and the end-of-turn texts the template
        writes (their tokens already end generation; a text spelled out in pieces ends it here)."""
        return chat.end_of_turn_texts(
            getattr(self.backend, "chat_template", None) or "", getattr(self.backend, "eos_text", "")
        )


def _cut(text: str, stop: Sequence[str]) -> str:
    cut = _first_stop(text, stop)
    return text if cut is None else text[:cut]


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
    positions = [text.find(s) for s in stop if s]
    found = [p for p in positions if p >= 0]
    return min(found) if found else None
