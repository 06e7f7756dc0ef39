"""llama.cpp's quant ladder: a GGUF rewritten by llama.cpp's own quantizer, built once per content
and kept in the artifact cache (see ../artifacts.py: locked, atomic, checked by SHA-256).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..artifacts import Progress, content_digest, derived, file_sha256, is_gguf
from ..base import BackendError

__all__ = ["LLAMA_FTYPES", "content_digest", "derived_gguf", "file_sha256"]

# quant name -> llama.cpp file type. `f32` is exact for every ggml block type, so it is the
# reference other quantizations and runtimes are compared with; the rest is the ladder a team
# chooses from (llama.cpp falls back to a near type for a tensor whose rows a K-quant cannot split).
LLAMA_FTYPES = {
    "f32": "LLAMA_FTYPE_ALL_F32",
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
}


def derived_gguf(source: Path, quant: str, cache_dir: Path, progress: Progress = lambda line: None) -> Path:
    """The cached `quant` version of `source`, built with llama_model_quantize when missing or bad;
    `progress` hears about a build, which takes seconds to minutes."""
    import llama_cpp

    key = hashlib.sha256(f"{content_digest(source)}:{quant}:{llama_cpp.__version__}".encode()).hexdigest()[:16]
    target = cache_dir / f"{source.stem}.{quant}.{key}.gguf"
    return derived(
        target,
        lambda temporary: _quantize(llama_cpp, source, temporary, quant),
        f"{quant} of {source.name}",
        "llama.cpp's quantizer",
        is_gguf,
        progress,
    )


def _quantize(llama_cpp: Any, source: Path, target: Path, quant: str) -> None:  # the llama_cpp module
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_FTYPES[quant])
    params.allow_requantize = True  # the source may itself be quantized: dequantize, then convert
    params.nthread = max(1, os.cpu_count() or 1)
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0 or not target.exists():
        raise BackendError(f"llama.cpp could not make {quant} from {source.name} (status {status})")
