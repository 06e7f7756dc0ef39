"""lm-eval's model interface over an `SlmModel`: how lm-eval tasks reach every backend."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from lm_eval.api.model import LM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from ..backends.base import ScoreGroup

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

    from ..models.handle import SlmModel

DEFAULT_MAX_GEN_TOKS = 256
ROLLING_WINDOW = 1024


class SlmLM(LM):  # type: ignore[misc]  # lm-eval ships no types: LM is Any
    """Greedy and deterministic; records a hash of every token sequence it sees, so a changed
    tokenizer is told apart from a changed task."""

    def __init__(self, model: SlmModel) -> None:
        super().__init__()
        self.model = model
        self.tokens_digest = hashlib.sha256()

    def _record(self, *token_lists: tuple[int, ...] | list[int]) -> None:
        for tokens in token_lists:
            self.tokens_digest.update(b"|" + ",".join(map(str, tokens)).encode())

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        pairs = [req.args for req in requests]
        for context, continuation in pairs:
            encoded = self.model.encode_pair(context, continuation)
            self._record(encoded.context, encoded.continuation)
        return self.model.loglikelihoods(pairs)

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        results = []
        for (text,) in (req.args for req in requests):
            tokens = self.model.tokenize(text)
            self._record(tokens)
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(tokens, self.model.boundary_token(), ROLLING_WINDOW, 1)
            ]
            scored = self.model.backend.score([ScoreGroup(ctx, [cont]) for ctx, cont in windows])
            results.append(sum(group[0][0] for group in scored))
        return results

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Requests with the same stop strings and limit (a task's) go to the backend together."""
        batches: dict[tuple[tuple[str, ...], int], list[int]] = {}
        contexts = []
        for index, (context, gen_kwargs) in enumerate(req.args for req in requests):
            until = gen_kwargs.get("until") or []
            stop = (until,) if isinstance(until, str) else tuple(until)
            batches.setdefault((stop, int(gen_kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))), []).append(index)
            self._record(self.model.tokenize(context))
            contexts.append(context)
        outputs = [""] * len(requests)
        for (stop, max_tokens), members in batches.items():
            texts = self.model.generate_many([contexts[i] for i in members], max_tokens, stop)
            for index, text in zip(members, texts):
                outputs[index] = text
        return outputs
