"""Energy over a measurement, where the platform exposes a counter: Linux RAPL (powercap sysfs) for
CPU devices, NVIDIA NVML (`nvidia-ml-py`, optional) for CUDA. Apple's `powermetrics` needs root and
Jetson's `tegrastats` is a sampling tool, not a counter: both are named as unread. Where nothing is
readable the reason is one line, shown in the energy column; nothing fails for it."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class EnergyReading:
    joules: float
    seconds: float
    source: str

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"joules": round(self.joules, 6), "seconds": round(self.seconds, 6), "source": self.source}


class Meter(Protocol):
    @property
    def source(self) -> str: ...  # read-only: RaplMeter is a frozen dataclass

    def read(self) -> tuple[int, ...]:
        """The raw cumulative counters."""
        ...

    def joules(self, before: tuple[int, ...], after: tuple[int, ...]) -> float: ...


@dataclass(frozen=True)
class RaplMeter:
    """The package zones' `energy_uj` (their sub-zones are inside them); each wraps to zero past its
    `max_energy_range_uj`, so a difference is taken modulo the range."""

    zones: tuple[tuple[Path, int], ...]  # (energy_uj file, max_energy_range_uj)
    source: str = "RAPL"

    def read(self) -> tuple[int, ...]:
        return tuple(int(path.read_text()) for path, _ in self.zones)

    def joules(self, before: tuple[int, ...], after: tuple[int, ...]) -> float:
        return sum((a - b) % (top + 1) for (_, top), b, a in zip(self.zones, before, after)) / 1e6


def rapl(powercap: Path = POWERCAP) -> RaplMeter | str:
    """The RAPL meter, or why there is none: no powercap, no package zone, or unreadable (recent
    kernels make energy_uj readable by root only)."""
    if not powercap.is_dir():
        return f"no RAPL: {powercap} absent"
    packages = sorted(p for p in powercap.glob("intel-rapl:*") if p.name.count(":") == 1)
    if not packages:
        return f"no RAPL package zone under {powercap}"
    try:
        meter = RaplMeter(tuple((p / "energy_uj", int((p / "max_energy_range_uj").read_text())) for p in packages))
        meter.read()
    except (OSError, ValueError) as exc:
        return f"RAPL not readable: {exc.strerror if isinstance(exc, OSError) else exc} (energy_uj is often root-only)"
    return meter


@dataclass
class NvmlMeter:
    """Total energy of GPU 0 since the driver loaded, in millijoules (Volta and later)."""

    handle: Any
    nvml: Any
    source: str = "NVML"

    def read(self) -> tuple[int, ...]:
        return (int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)),)

    def joules(self, before: tuple[int, ...], after: tuple[int, ...]) -> float:
        return (after[0] - before[0]) / 1e3


def nvml() -> NvmlMeter | str:
    try:
        import pynvml  # nvidia-ml-py, the optional extra `energy`
    except ImportError:
        return "no NVML: nvidia-ml-py not installed (pip install 'pytest-slm[energy]')"
    try:
        pynvml.nvmlInit()
        meter = NvmlMeter(pynvml.nvmlDeviceGetHandleByIndex(0), pynvml)
        meter.read()
    except pynvml.NVMLError as exc:
        return f"NVML not readable: {exc}"
    return meter


def meter_for(device: str) -> Meter | str:
    """The counter that covers `device` ("llamacpp-cpu", "mlx-gpu", ...), or why there is none."""
    kind = device.partition("-")[2]
    if sys.platform == "darwin":
        return "no counter read on macOS: powermetrics needs root"
    if Path("/etc/nv_tegra_release").exists():
        return "no counter read on Jetson: tegrastats samples power, it keeps no energy counter"
    return nvml() if kind == "cuda" else rapl()


class Metered:
    """`with Metered(meter) as metered: ...; metered.reading`: the energy over the block, or why not."""

    def __init__(self, meter: Meter | str) -> None:
        self.meter = meter
        self.reading: EnergyReading | str = meter if isinstance(meter, str) else "not measured"

    def __enter__(self) -> Metered:  # noqa: PYI034 (typing.Self needs Python 3.11)
        if not isinstance(self.meter, str):
            self._started, self._before = time.perf_counter(), self.meter.read()
        return self

    def __exit__(self, *exc: object) -> None:
        if not isinstance(self.meter, str):
            after, seconds = self.meter.read(), time.perf_counter() - self._started
            self.reading = EnergyReading(self.meter.joules(self._before, after), seconds, self.meter.source)
