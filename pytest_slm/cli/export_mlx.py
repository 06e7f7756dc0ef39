"""`python -m pytest_slm export-mlx MODEL DIR`: a model's GGUF written out as an MLX checkpoint
directory, offline (see backends/mlx/export.py). The directory's name is the model's name when it
is then given by path (`--slm-models=DIR`), and so the name its baselines are filed under."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..backends.base import BackendError
from ..models.errors import RegistryError
from ..models.registry import select_models
from ..options import DEFAULT_REGISTRY


def add_command(commands: Any) -> None:
    export = commands.add_parser(
        "export-mlx",
        help="write a model's GGUF as an MLX checkpoint directory (mlx-lm's format), offline",
        description=(
            "MODEL: a registry name (the built-in registry and ./suites/models.toml) or a .gguf path."
            " DIR must not exist; its name becomes the model's name when it is given by path"
            " (--slm-models=DIR), so export under the name its baselines use, e.g. <model>-mlx."
        ),
    )
    export.add_argument("model", metavar="MODEL")
    export.add_argument("directory", type=Path, metavar="DIR")


def run(args: Any) -> int:
    from ..backends.mlx.export import export_checkpoint

    project = Path(DEFAULT_REGISTRY)
    try:
        (entry,) = select_models(project if project.is_file() else None, (args.model,)).values()
        gguf = entry.gguf_path()
        if gguf is None:
            raise RegistryError(f"model {entry.name!r} has no GGUF to export")
        written = export_checkpoint(gguf, args.directory)
    except (RegistryError, BackendError) as exc:
        print(f"export-mlx: {exc}", file=sys.stderr)
        return 1
    print(f"export-mlx: wrote {written} (from {gguf.name}); run it with --slm-models={written}")
    return 0
