"""A GGUF written out as an MLX checkpoint directory (mlx-lm's format: config.json, safetensors,
tokenizer.json and tokenizer_config.json with the chat template), offline: how a project gets an
MLX checkpoint of a model it has only as a GGUF, e.g. the embedded one, to test MLX's own format and
quant ladder. The weights are the GGUF's values in float16 (gguf_import's `f16`), the tokenizer is
rebuilt from the GGUF's own vocabulary, so token ids are llama.cpp's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, cast

from ..base import BackendError
from .gguf_import import gguf_tokenizer, load_gguf


def export_checkpoint(gguf: Path, directory: Path) -> Path:
    """Write the checkpoint; `directory` must not exist yet (nothing is overwritten). Written
    beside it under a temporary name and renamed, so a directory that exists is complete."""
    import mlx.core as mx
    from mlx_lm.utils import save_model

    if directory.exists():
        raise BackendError(f"{directory} already exists: give a new directory (nothing was written)")
    directory.parent.mkdir(parents=True, exist_ok=True)
    _, meta = cast("tuple[dict[str, mx.array], dict[str, Any]]", mx.load(str(gguf), return_metadata=True))
    model, _ = load_gguf(gguf, "f16")
    tokenizer = gguf_tokenizer(meta, gguf.name)
    temporary = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    try:
        save_model(temporary, model)
        config = {k: v for k, v in dataclasses.asdict(model.args).items() if k != "layer_types"}
        (temporary / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        tokens = meta["tokenizer.ggml.tokens"]
        special = {
            k: int(meta[f"tokenizer.ggml.{k}_token_id"].item())
            for k in ("bos", "eos")
            if f"tokenizer.ggml.{k}_token_id" in meta
        }
        add_bos = "tokenizer.ggml.add_bos_token" in meta and bool(meta["tokenizer.ggml.add_bos_token"].item())
        if add_bos and "bos" in special:
            from tokenizers import processors

            bos = tokens[special["bos"]]
            tokenizer.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", special_tokens=[(bos, special["bos"])]
            )
        tokenizer.save(str(temporary / "tokenizer.json"))
        tokenizer_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **{f"{k}_token": tokens[i] for k, i in special.items()},
        }
        if "tokenizer.chat_template" in meta:
            tokenizer_config["chat_template"] = str(meta["tokenizer.chat_template"])
        (temporary / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
        os.replace(temporary, directory)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return directory
