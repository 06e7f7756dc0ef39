"""What changed between two stored runs besides the code: their provenances compared, as people
read it ("llama-cpp-python 0.3.36 → 0.3.40; OS release Linux 6.1 → Linux 6.8"). `compare` prints
it before its rows; a step in a series says it for the run where the step lands."""

from __future__ import annotations

from collections.abc import Mapping

from ..provenance import Change, changes
from .database import RUNTIME_BUILD


def between(before: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """Each change once, in a stable order. A device's runtime build is compared only where both
    runs measured that device, and is left out where it differs only by a version already named
    ("llama-cpp-python 0.3.36" → "llama-cpp-python 0.3.40" is the package's change, said once)."""
    found = [c for c in changes(before, now) if not (c.name.startswith(RUNTIME_BUILD) and c.name not in now)]
    versions = [c for c in found if not c.name.startswith(RUNTIME_BUILD)]
    return [_shown(c) for c in found if not (c.name.startswith(RUNTIME_BUILD) and _explained(c, versions))]


def line(before: Mapping[str, str], now: Mapping[str, str], between_what: str = "between the runs") -> str:
    found = between(before, now)
    return f"changed {between_what}: {'; '.join(found)}" if found else f"nothing recorded changed {between_what}"


def _explained(build: Change, versions: list[Change]) -> bool:
    """The build's text ("mlx 0.32.4 on OpenBLAS 0.3.30") with each changed package's new version
    put in is the new build's text."""
    text = str(build.before)
    for change in versions:
        package = change.name.replace("_", "-")
        text = text.replace(f"{package} {change.before}", f"{package} {change.now}")
    return text == str(build.now)


def _shown(change: Change) -> str:
    if change.name.startswith(RUNTIME_BUILD):
        return f"runtime build on {change.name.removeprefix(RUNTIME_BUILD)} {change.before} → {change.now}"
    return str(change)
