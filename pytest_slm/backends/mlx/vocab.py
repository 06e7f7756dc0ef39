"""Tokenization for MLX models: ids, pieces and end-of-generation tokens as llama.cpp has them,
whether the vocabulary comes from a GGUF or from an MLX directory's Hugging Face tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class Vocab:
    """Tokenization and special tokens, from whichever source the weights came from."""

    encode: Callable[[str], list[int]]
    pieces: list[bytes]  # per token id, as llama.cpp's token_to_piece(special=False) prints it
    bos_id: int | None
    add_bos: bool
    eos_ids: frozenset[int]
    chat_template: str | None = None  # the model's own Jinja chat template, if it has one
    bos_text: str = ""  # the BOS and EOS tokens as text, as chat templates receive them
    eos_text: str = ""


def byte_decoder() -> dict[str, int]:
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


def hf_vocab(wrapper: Any) -> Vocab:
    """The vocabulary of an mlx-lm TokenizerWrapper (a Hugging Face tokenizer underneath)."""
    tokenizer = wrapper._tokenizer
    specials = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    byte_level = type(tokenizer.backend_tokenizer.decoder).__name__ == "ByteLevel"
    decoder = byte_decoder()
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
        chat_template=tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
        bos_text=tokenizer.bos_token or "",
        eos_text=tokenizer.eos_token or "",
    )
