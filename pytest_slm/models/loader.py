"""Loading the matrix's models: one load per (model, device, quant) at a time, a load that failed
remembered as its error, and a combination the runtime cannot run judged by what was ever measured."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from ..backends import backend
from ..backends.artifacts import content_digest
from ..backends.base import BackendError, LoadRequest, Unsupported
from ..measure.machine import runtime_build
from .errors import RegistryError
from .handle import SlmModel

if TYPE_CHECKING:
    from ..matrix import Case
    from ..options import SlmConfig
    from .registry import ModelEntry


@dataclass
class Loader:
    """The loaded model of the run (items are grouped by model, so one at a time), and each load noted."""

    config: SlmConfig
    models: dict[str, ModelEntry]
    progress: Callable[[str], None]
    shown: Callable[[Path], str]
    loads: list[dict[str, str]] = field(default_factory=list)  # {"process", "model"}: one per model load
    _loaded: dict[str, SlmModel | BaseException] = field(default_factory=dict)

    def model(self, case: Case) -> SlmModel:
        """One load per (model, device, quant); the previous one is freed, since items are grouped."""
        cached = self._loaded.get(case.model_id)
        if cached is None:
            for other in [k for k, v in self._loaded.items() if isinstance(v, SlmModel)]:
                self._loaded.pop(other).backend.close()  # type: ignore[union-attr]
            cached = self._loaded[case.model_id] = self._load(case)
            self.loads.append({"process": self.config.process, "model": case.model_id})
        if isinstance(cached, Unsupported):
            self.unsupported(case, cached)
        if isinstance(cached, BaseException):
            pytest.fail(f"{case.model_id}: {cached}", pytrace=False)
        return cached

    def unsupported(self, case: Case, reason: Unsupported) -> NoReturn:
        """A combination the runtime cannot run is a skip where nothing was ever measured for it; where
        baselines are stored for it, the runtime lost a model the team ships: every item fails."""
        __tracebackhide__ = True
        stored = self.config.baselines_dir / case.model / case.device / case.variant
        if any(stored.rglob("*.json")):
            pytest.fail(
                f"{case.model_id}: {reason}; baselines are stored for it ({self.shown(stored)}):"
                f" {runtime_build(case.device)} no longer runs a model that was measured",
                pytrace=False,
            )
        pytest.skip(f"{case.model_id}: {reason}")

    def _load(self, case: Case) -> SlmModel | BaseException:
        try:
            return SlmModel(
                replace(case, task=None), backend(case.backend).load(self.load_request(case))
            )  # shared by the model's items
        except (BackendError, RegistryError) as exc:
            return exc

    def load_request(self, case: Case) -> LoadRequest:
        """Only the source the backend loads is resolved (a hub source is a download): its first
        of the model's sources, or the one the case names. Load-time items load it themselves."""
        entry = self.models[case.model]
        kind = next((k for k in backend(case.backend).SOURCES if getattr(entry, k) and case.source in (None, k)), None)
        return LoadRequest(
            model_name=case.model,
            gguf_path=entry.gguf_path(self.config.cache_dir) if kind == "gguf" else None,
            mlx_path=entry.mlx_path() if kind == "mlx" else None,
            device=case.device.split("-", 1)[1],
            quant=case.quant,
            kv_type=case.kv,
            threads=self.config.threads,
            cache_dir=self.config.cache_dir,
            progress=self.progress,
        )

    def close(self) -> None:
        """Close every loaded model; an item asking for one later loads it again."""
        for loaded in self._loaded.values():
            if isinstance(loaded, SlmModel):
                loaded.backend.close()
        self._loaded.clear()

    def case_provenance(self, case: Case) -> dict[str, str]:
        """The runtime's build on the case's device and the model file's digest: what a figure of the
        case depends on besides the hardware and the versions the backend reports."""
        found = {"runtime_build": runtime_build(case.device)}
        entry = self.models[case.model]
        try:
            source = entry.gguf_path(self.config.cache_dir) if entry.gguf else entry.mlx_path()
        except RegistryError:
            source = None
        if source is not None and source.exists():
            found["model_sha256"] = content_digest(source)
        return found
