"""The runtimes pytest-slm drives: one package per backend, registered in the entry-point group
`pytest_slm.backends` (`name = "package.module"`), so another distribution can add a runtime without
touching the session.

A backend package declares its devices and quants at module level and imports its runtime only when
asked to probe or load (see `base.Backend`): listing every backend costs no runtime import.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING

from .base import DEFAULT_KV_TYPE

if TYPE_CHECKING:
    from .base import Backend

GROUP = "pytest_slm.backends"
# Also found without their entry points, e.g. in a checkout installed before they were declared.
BUILT_IN = {"llamacpp": "pytest_slm.backends.llamacpp", "mlx": "pytest_slm.backends.mlx"}


@cache
def _registered() -> dict[str, metadata.EntryPoint]:
    """The built-in backends, then the installed ones by name; an installed name replaces a built-in."""
    found = {name: metadata.EntryPoint(name, module, GROUP) for name, module in BUILT_IN.items()}
    for entry in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        found[entry.name] = entry
    return found


def backend_names() -> tuple[str, ...]:
    return tuple(_registered())


def backend(name: str) -> Backend:
    """The backend package registered as `name`; it must declare the same NAME, the prefix of its devices."""
    try:
        entry = _registered()[name]
    except KeyError:
        raise KeyError(f"no backend {name!r}; registered: {', '.join(_registered())}") from None
    module: Backend = entry.load()
    if module.NAME != name or not all(device.startswith(f"{name}-") for device in module.DEVICES):
        raise TypeError(
            f"{entry.value} is registered as backend {name!r} but declares {module.NAME!r}: {module.DEVICES}"
        )
    return module


def all_devices() -> tuple[str, ...]:
    """Every backend-device pair some machine could run, in registration order."""
    return tuple(device for name in backend_names() for device in backend(name).DEVICES)


def all_quants() -> tuple[str, ...]:
    """Every quant some backend can run, each once, in registration order."""
    return tuple(dict.fromkeys(quant for name in backend_names() for quant in backend(name).QUANTS))


def kv_types(name: str) -> tuple[str, ...]:
    """The KV cache types backend `name` runs; one that declares none runs its default cache only."""
    return getattr(backend(name), "KV_TYPES", (DEFAULT_KV_TYPE,))


def all_kv_types() -> tuple[str, ...]:
    """Every KV cache type some backend runs, each once, in registration order."""
    return tuple(dict.fromkeys(kv for name in backend_names() for kv in kv_types(name)))
