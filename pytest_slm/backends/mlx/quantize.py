"""MLX's quant ladder: an MLX checkpoint quantized by mlx-lm's own converter (`mlx_lm.convert`,
affine, group size 64), kept as a checkpoint directory in the artifact cache like llama.cpp's rungs
(see ../artifacts.py: locked, atomic, checked by SHA-256), so a run after the first loads it as is.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

from ..artifacts import Progress, content_digest, derived
from ..base import BackendError, Unsupported

BITS = {"mlx-q8": 8, "mlx-q6": 6, "mlx-q4": 4, "mlx-q3": 3, "mlx-q2": 2}
GROUP_SIZE = 64  # mlx-lm's default for affine quantization


def is_checkpoint(path: Path) -> bool:
    """mlx-lm's format: a config.json and safetensors weights beside it."""
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def is_quantized(path: Path) -> bool:
    """Whether mlx-lm quantized this checkpoint already (its config says how)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path / 'config.json'}: {exc}") from None
    return isinstance(config, dict) and ("quantization" in config or "quantization_config" in config)


def derived_checkpoint(source: Path, quant: str, cache_dir: Path, progress: Progress = lambda line: None) -> Path:
    """The cached `quant` of the checkpoint `source`, made with mlx-lm's converter when missing or bad."""
    import mlx_lm

    if is_quantized(source):
        raise Unsupported(f"{source.name} is already quantized; MLX makes {quant} only from an unquantized checkpoint")
    key = hashlib.sha256(f"{content_digest(source)}:{quant}:g{GROUP_SIZE}:{mlx_lm.__version__}".encode()).hexdigest()[
        :16
    ]
    return derived(
        cache_dir / f"{source.name}.{quant}.{key}.mlx",
        lambda temporary: _convert(source, temporary, quant),
        f"{quant} of {source.name}",
        "mlx-lm's quantizer",
        is_checkpoint,
        progress,
    )


def _convert(source: Path, target: Path, quant: str) -> None:
    """mlx_lm.convert on a local directory: it reads the path as is (no download) and prints its
    steps, which are kept out of the test output."""
    from mlx_lm.convert import convert

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            convert(str(source), str(target), quantize=True, q_group_size=GROUP_SIZE, q_bits=BITS[quant])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:  # mlx-lm on a model it cannot read or quantize
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unsupported(f"mlx-lm cannot make {quant} of {source.name}: {message}") from None
