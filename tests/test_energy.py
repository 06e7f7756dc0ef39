"""The energy readers on fake counters: RAPL's sysfs tree (package zones only, wrap-around past
max_energy_range_uj, unreadable files), and the one-line reasons where there is no counter."""

from __future__ import annotations

from pathlib import Path

from pytest_slm.measure.energy import EnergyReading, Metered, RaplMeter, rapl


def zone(root: Path, name: str, energy_uj: int, top: int) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{top}\n")
    return path


def test_rapl_sums_package_zones_and_survives_a_wrap(tmp_path):
    package0 = zone(tmp_path, "intel-rapl:0", 999_000_000, 999_999_999)
    zone(tmp_path, "intel-rapl:1", 5_000_000, 999_999_999)
    zone(tmp_path, "intel-rapl:0:0", 1, 999_999_999)  # a sub-zone (cores): inside its package, not added
    meter = rapl(tmp_path)
    assert isinstance(meter, RaplMeter) and [p.parent.name for p, _ in meter.zones] == ["intel-rapl:0", "intel-rapl:1"]
    before = meter.read()
    (package0 / "energy_uj").write_text("1000000\n")  # wrapped: 999,999,999 -> 0 -> 1,000,000
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("7000000\n")
    assert meter.joules(before, meter.read()) == (1_000_000 + 1_000_000) / 1e6 + 2.0


def test_metered_gives_joules_seconds_and_watts(tmp_path):
    package = zone(tmp_path, "intel-rapl:0", 0, 2**32)
    meter = rapl(tmp_path)
    assert isinstance(meter, RaplMeter)
    with Metered(meter) as metered:
        (package / "energy_uj").write_text("3000000\n")
    reading = metered.reading
    assert isinstance(reading, EnergyReading) and reading.joules == 3.0 and reading.source == "RAPL"
    assert reading.watts == reading.joules / reading.seconds > 0


def test_no_counter_is_one_line_and_nothing_is_measured(tmp_path):
    assert rapl(tmp_path / "absent") == f"no RAPL: {tmp_path / 'absent'} absent"
    assert rapl(tmp_path) == f"no RAPL package zone under {tmp_path}"
    zone(tmp_path, "intel-rapl:0", 0, 10).joinpath("max_energy_range_uj").write_text("many\n")
    assert rapl(tmp_path).startswith("RAPL not readable: ")
    with Metered("no RAPL: /sys/class/powercap absent") as metered:
        pass
    assert metered.reading == "no RAPL: /sys/class/powercap absent"
