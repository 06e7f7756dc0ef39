"""What competes with this process for the CPUs it runs on: other processes' CPU time and the
hypervisor's steal time, read from /proc. A timing taken while they ran measures the neighbours,
not the build, so a latency item waits for them to pass and otherwise says "busy", not "slower".
Also what the machine says about its clocks and temperatures, recorded beside each timing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .machine import load_average

PROC = Path("/proc")
THERMAL = Path("/sys/class/thermal")
SAMPLE_SECONDS = 1.0  # how long the competition before a timing is sampled, and each wait step


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative clock ticks of the CPUs this process may run on, and of this process itself."""

    busy: int  # ticks any task ran (user, nice, system, irq, softirq) on those CPUs
    steal: int  # ticks the hypervisor gave those virtual CPUs to another guest
    total: int  # every tick of those CPUs, idle included
    own: int  # this process's user + system ticks, all its threads
    at: float  # time.monotonic() of the reading


@dataclass(frozen=True)
class Competition:
    """Shares of our CPUs' time, between two readings, that went to others than us."""

    others: float  # other processes' CPU time / our CPUs' time
    steal: float
    seconds: float
    cpus: int
    load: float | None  # the 1-minute load average, beside it

    @property
    def share(self) -> float:
        """What the threshold is compared with: time our CPUs were not available to us for others."""
        return self.others + self.steal

    def describe(self) -> str:
        load = f", load {self.load:.2f} on {os.cpu_count()} cores" if self.load is not None else ""
        return (
            f"other processes {100 * self.others:.0f}% + steal {100 * self.steal:.0f}% of {self.cpus} CPU(s)"
            f" over {self.seconds:.1f} s{load}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "others": round(self.others, 4),
            "steal": round(self.steal, 4),
            "seconds": round(self.seconds, 2),
            "cpus": self.cpus,
            "load": self.load,
        }


def our_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def cpu_times(proc: Path = PROC) -> CpuTimes | None:
    """None where /proc does not say (not Linux): the gate then has nothing to judge and stays open."""
    cpus = {f"cpu{n}" for n in our_cpus()}
    busy = steal = total = 0
    try:
        for line in (proc / "stat").read_text(encoding="ascii").splitlines():
            name, *fields = line.split()
            if name not in cpus:
                continue
            user, nice, system, idle, iowait, irq, softirq, stolen = (int(f) for f in fields[:8])
            busy += user + nice + system + irq + softirq
            steal += stolen
            total += user + nice + system + idle + iowait + irq + softirq + stolen
        own_fields = (proc / "self" / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    own = int(own_fields[11]) + int(own_fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return CpuTimes(busy, steal, total, own, time.monotonic()) if total else None


def competition(before: CpuTimes, after: CpuTimes, load: float | None) -> Competition:
    total = max(after.total - before.total, 1)
    others = max(0, (after.busy - before.busy) - (after.own - before.own))
    return Competition(
        others / total, (after.steal - before.steal) / total, after.at - before.at, len(our_cpus()), load
    )


def sample(seconds: float = SAMPLE_SECONDS, reader: Callable[[], CpuTimes | None] = cpu_times) -> Competition | None:
    """Competition while this process sleeps for `seconds`."""
    before = reader()
    time.sleep(seconds)
    after = reader()
    return competition(before, after, load_average()) if before and after else None


def wait_until_quiet(threshold: float, max_wait: float) -> tuple[Competition | None, float]:
    """Sample until the competition is at most `threshold` or `max_wait` seconds have passed: the
    last sample (None where /proc is unreadable) and the seconds waited."""
    started = time.monotonic()
    while True:
        seen = sample()
        waited = time.monotonic() - started
        if seen is None or seen.share <= threshold or waited >= max_wait:
            return seen, waited


class During:
    """Competition over a measurement: `with During() as during: ...; during.result`."""

    result: Competition | None = None

    def __enter__(self) -> During:  # noqa: PYI034 (typing.Self needs Python 3.11)
        self._before = cpu_times()
        return self

    def __exit__(self, *exc: object) -> None:
        after = cpu_times()
        self.result = competition(self._before, after, load_average()) if self._before and after else None


def machine_state(proc: Path = PROC, thermal: Path = THERMAL) -> dict[str, Any]:
    """Clocks (MHz of our CPUs, /proc/cpuinfo) and temperatures (°C per thermal zone) where the
    machine reports them; a throttled CPU shows here beside the timing it slowed."""
    state: dict[str, Any] = {}
    try:
        mhz = [
            float(line.split(":")[1])
            for line in (proc / "cpuinfo").read_text().splitlines()
            if line.startswith("cpu MHz")
        ]
        if mhz:
            state["cpu_mhz"] = [round(m) for m in mhz]
    except (OSError, ValueError, IndexError):
        pass
    zones = {}
    for zone in sorted(thermal.glob("thermal_zone*")) if thermal.is_dir() else ():
        try:
            zones[(zone / "type").read_text().strip()] = int((zone / "temp").read_text()) / 1000
        except (OSError, ValueError):
            continue
    if zones:
        state["thermal_c"] = zones
    return state
