"""A conversation rendered with the model's own chat template, the way transformers'
`apply_chat_template` and llama-cpp-python's `Jinja2ChatFormatter` render it: Jinja in a sandbox,
`trim_blocks` and `lstrip_blocks`, loop controls, a `tojson` filter that keeps non-ASCII text,
`raise_exception`, `strftime_now`, the BOS and EOS tokens as strings, and
`add_generation_prompt=True` so the text ends where the assistant's answer begins."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

# Texts llama.cpp treats as the end of a turn (its vocab loader's list, the same as
# backends/mlx/vocab.py's EOG_TEXTS): a template that writes one ends a turn with it.
END_OF_TURN_TEXTS = (
    "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>",
    "<｜end▁of▁sentence｜>", "<|end_of_text|>", "<|return|>", "<|call|>",
)  # fmt: skip


class ChatError(Exception):
    """The conversation cannot be rendered: one line naming why."""


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """A conversation is a list of {"role": str, "content": str, ...} mappings, at least one."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ChatError(
            f"a conversation is a non-empty list of {{'role': ..., 'content': ...}} messages, got {messages!r:.80}"
        )
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ChatError(f"message {index} needs a 'role' string, got {message!r:.80}")
        if not isinstance(message.get("content"), str):
            raise ChatError(
                f"message {index} ({message['role']}) needs a 'content' string, got {message.get('content')!r:.80}"
            )
        checked.append(dict(message))
    return checked


def render(template: str, messages: Sequence[Mapping[str, Any]], bos_token: str, eos_token: str) -> str:
    """The prompt text for `messages`, ending with the template's generation prompt."""
    from jinja2 import TemplateError

    checked = check_messages(messages)
    try:
        text: str = _compiled(template).render(
            messages=checked, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=True
        )
        return text
    except TemplateError as exc:  # raise_exception's own words included, e.g. "roles must alternate"
        raise ChatError(f"the chat template refused the conversation: {exc}") from None


def end_of_turn_texts(template: str, eos_token: str) -> tuple[str, ...]:
    """Where a reply ends: the model's EOS text and every end-of-turn text its template writes."""
    texts = [eos_token] if eos_token else []
    return tuple(dict.fromkeys(texts + [t for t in END_OF_TURN_TEXTS if t in template]))


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTags(jinja2.ext.Extension):
        """transformers' `{% generation %}` marks the assistant's part; the text passes through."""

        tags = {"generation"}  # noqa: RUF012 (jinja2.ext.Extension's own attribute)

        def parse(self, parser: Any) -> Any:
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTags, jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda f: datetime.now().strftime(f)
    try:
        return environment.from_string(template)
    except jinja2.TemplateError as exc:
        raise ChatError(f"the model's chat template is not valid Jinja: {exc}") from None
