"""Runtime cost items: latency (measured repeatedly, confirmed before failing) and memory, each
against the baseline of this machine's hardware fingerprint."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from math import hypot, log1p
from operator import itemgetter
from time import sleep
from typing import Any, ClassVar

from ..backends.base import MemoryProfile
from ..matrix import Case
from ..measure.busy import Competition, During, machine_state, wait_until_quiet
from ..measure.energy import EnergyReading, Metered, meter_for
from ..measure.machine import Fingerprint, MemoryUse, SpeedProbe, Timing, load_average, metric_depth
from ..stats import MAD_TO_SIGMA, Slowdown, Spread, compare_timings, spread
from ..store.baselines import BaselineKey
from .accuracy import model_identity
from .columns import VERDICT, Column, Rows, Table, mib, or_dash, select
from .core import BUSY, NOT_JUDGED, TOO_NOISY, UNLIKE_CONDITIONS, Check, RecordError, Verdict, not_judged, require
from .kind import Figure, Judged, Kind, Runs, Stored

STEADIER = "more --slm-repeats, --slm-threads=1 or a quieter machine, then refresh the baseline"
REFRESH_HERE = "If the change is intended, refresh the baseline with --update-baselines on this machine."
DOCUMENTED_SLOWDOWN = 0.25  # what the latency calibration shows caught (docs/notes/latency.md)
# How far a runtime's change strays from the speed probe's, per unit of the probe's change (both as
# logarithms): the fit over the committed calibration runs (benchmarks/latency_calibration.py
# --probe-error; docs/notes/latency.md, "The probe's own uncertainty").
PROBE_SCALING_ERROR = 0.43
# A row's verdict when its metric compared nothing, and the item's not-judged reason for it.
UNJUDGED = {NOT_JUDGED: UNLIKE_CONDITIONS, "busy": BUSY, "too noisy": TOO_NOISY}


def unlike_conditions(notes: Mapping[str, str], baseline_notes: Mapping[str, str]) -> dict[str, str]:
    """Metrics measured under other conditions than their baseline (a cold load whose page cache was
    kept, against one that was evicted, or the reverse), with why: a kept cache loads faster, so such
    a comparison could only pass."""
    unlike = {}
    for metric in set(notes) | set(baseline_notes):
        now, then = notes.get(metric, ""), baseline_notes.get(metric, "")
        if bool(now) != bool(then):
            unlike[metric] = f"now {now or 'evicted'}; the baseline's: {then or 'evicted'}"
    return unlike


def host_change(run: LatencyRun, baseline: Mapping[str, Any]) -> float | None:
    """How much slower this machine computes now than when the baseline was timed, by the speed
    probe (0.1: 10% slower, negative: faster); None where either was not probed."""
    then = baseline.get("probe_seconds")
    return None if run.probe is None or not then else run.probe / then - 1.0


def scaling_uncertainty(change: float) -> float:
    """The relative uncertainty of a baseline the speed probe scaled by `change` (0.1: 10% slower):
    none on a machine as fast as at the baseline, more the further it moved, as the probe stands
    for the runtime only roughly (a slow spell slows them by different amounts)."""
    return PROBE_SCALING_ERROR * abs(log1p(change))


def runtime_key(case: Case, kind: str, fingerprint: Fingerprint) -> BaselineKey:
    """Timings and memory belong to the machine: one directory per hardware fingerprint."""
    return BaselineKey(case.model, case.device, case.variant, f"runtime/{fingerprint.slug}/{kind}")


class MachineCheck(Check):
    """What latency and memory share: their baselines belong to this machine's fingerprint."""

    case: Case
    fingerprint: Fingerprint

    def on_this_machine(self, name: str) -> None:
        self.item = self.case.id
        self.baseline_of = f"{self.item} on this machine ({self.fingerprint})"
        self.key = runtime_key(self.case, name, self.fingerprint)

    def identity(self) -> dict[str, Any]:
        return {**model_identity(self.case), "fingerprint": self.fingerprint.as_dict()}


@dataclass(frozen=True)
class LatencyRow:
    SECTION: ClassVar[str] = "runtime"
    item: str
    model: str
    device: str
    quant: str
    metric: str
    unit: str
    median: float
    min: float
    spread: float
    baseline: float | None
    change_pct: float | None
    limit_pct: float | None
    rounds: int
    load: float | None
    verdict: str
    competition: float | None = None  # others' share of our CPUs' time during the measurement (busy.py)
    joules_per_token: float | None = None  # average power / speed, where an energy counter is readable
    watts: float | None = None
    energy_note: str = ""  # why there is no energy figure
    note: str = ""  # why the figure is not what the metric's name says ("page cache kept: ...")
    host_change_pct: float | None = None  # how much slower the speed probe found this machine than at the baseline


@dataclass(frozen=True)
class LatencySettings:
    tolerances: dict[str, float]  # by metric family ("prefill", "decode", "ttft"); "*" for the rest
    k: float
    busy: float | None = None  # others' share of our CPUs above which a round is not judged (--slm-busy); None: off
    ceiling: float = (
        0.2  # the largest noise limit (k x combined uncertainty) a metric is judged with (--slm-noise-ceiling)
    )
    # How far the speed probe may have moved since the baseline for the baseline to be scaled by it
    # (--slm-probe-limit); further, the machine is not the one the baseline was timed on (docs/notes/latency.md)
    probe_limit: float = DOCUMENTED_SLOWDOWN
    # Seconds between a round that found a slowdown and the next (--slm-confirm-pause, 60 by
    # default): on a shared machine two rounds timed back to back meet the same slow spell
    # (docs/notes/latency.md, "The confirmation's pause"). 0 here: a check built directly confirms at once.
    confirm_pause: float = 0.0

    def tolerance(self, metric: str) -> float:
        return self.tolerances.get(metric.split("@")[0], self.tolerances["*"])


@dataclass(frozen=True)
class LatencyRun:
    timings: tuple[Timing, ...]
    load: float | None
    competition: Competition | None = None  # during the timed runs
    machine: Mapping[str, Any] = field(default_factory=dict)  # clocks and temperatures (busy.machine_state)
    energy: EnergyReading | str = "not measured"  # or why not
    notes: Mapping[str, str] = field(default_factory=dict)  # per metric: why a figure is not what its name says
    probe: float | None = None  # seconds of a SpeedProbe sample, the round's median; None: not probed

    def busy(self, threshold: float | None) -> str | None:
        """How busy the machine was during this round, if more than `threshold` allows."""
        c = self.competition
        return c.describe() if threshold is not None and c is not None and c.share > threshold else None


@dataclass(frozen=True)
class BusyGate:
    """--slm-busy and --slm-busy-wait: before each timed round, wait for other processes to leave
    our CPUs; if they do not, the item ends "busy" (failed with --slm-strict), not failed."""

    busy: float | None  # the share of our CPUs others may take; None: no gate
    wait: float  # seconds
    strict: bool

    def wait_until_quiet(self, item: str) -> None:
        __tracebackhide__ = True
        if self.busy is None:
            return
        seen, waited = wait_until_quiet(self.busy, self.wait)
        if seen is not None and seen.share > self.busy:
            message = f"{item}: {seen.describe()} after waiting {waited:.0f} s, above --slm-busy={self.busy:g}; nothing measured"
            not_judged(BUSY, message, self.strict)


def timed_runs(
    device: str,
    cooldown: float,
    gate: BusyGate,
    item: str,
    measure: Callable[[SpeedProbe | None], Sequence[Timing]],
    notes: Mapping[str, str],
    probe: bool,
) -> Callable[[], LatencyRun]:
    """One timed round each call: the busy gate, then the timings with the load average before,
    others' share of our CPUs and the device's energy counter during (where `probe`, with the speed
    probe's samples between the repeats: the average power includes them), and the machine's clocks
    after. The energy meter is not read with a cooldown (its rests would count). `notes` is read
    after the timings: a measurement may add to it."""
    meter = f"not read with --slm-cooldown={cooldown:g}: the rests would count" if cooldown else meter_for(device)

    def timed() -> LatencyRun:
        gate.wait_until_quiet(item)
        load = load_average()
        speed = SpeedProbe() if probe else None
        with During() as during, Metered(meter) as metered:
            timings = tuple(speed.around(lambda: measure(speed)) if speed else measure(None))
        seconds = speed.seconds if speed else None
        return LatencyRun(timings, load, during.result, machine_state(), metered.reading, dict(notes), seconds)

    return timed


@dataclass(frozen=True, eq=False)
class Round:
    """One timed round against the baseline: its figures, each metric's slowdown, and whether the
    machine was busy while it ran (a busy round can only read slower, so it never fails a metric).
    Told apart by identity: two rounds may time the same."""

    run: LatencyRun
    slowdowns: Mapping[str, Slowdown]
    busy: str | None
    host: float | None = None  # how much slower the speed probe found the machine than at the baseline


MAX_ROUNDS = 3  # the first, a confirmation, and one more where a round that could not tell left a slowdown unconfirmed


@dataclass
class LatencyCheck(MachineCheck):
    """`prefill`, `decode` or `load`. A metric fails only if every clear round found it slower (a
    confirmation round is timed before failing), whatever a busy round saw; it is not judged when
    only busy rounds saw it slower, or when the noise alone (k x the medians' and the speed probe's
    scaling's combined uncertainty) would let through more than the noise ceiling: a limit that
    high hides the slowdowns the item exists to catch. A round that could not tell (busy, or
    passing under such a limit) is followed by one more."""

    case: Case
    name: str
    fingerprint: Fingerprint
    settings: LatencySettings
    timed: Callable[[], LatencyRun]
    kind: str = "latency"

    def __post_init__(self) -> None:
        self.on_this_machine(self.name)

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_latency(record)

    def measure(self) -> LatencyRun:
        return self.timed()

    def record(self, run: LatencyRun) -> dict[str, Any]:
        energy = run.energy.as_dict() if isinstance(run.energy, EnergyReading) else {"unreadable": run.energy}
        competition = run.competition.as_dict() if run.competition else None
        return {
            "metrics": {t.metric: t.as_dict() for t in run.timings},
            "load_average": run.load,
            "competition": competition,
            "machine": dict(run.machine),
            "energy": energy,
            "notes": dict(run.notes),
            "probe_seconds": run.probe,
        }

    def kept(self, record: Mapping[str, Any], stored: Mapping[str, Any]) -> Mapping[str, Any]:
        """An update measures the depths asked (--slm-depths); the baseline keeps its figures at the
        others, so depths are added to a baseline without measuring its depth-0 figures again."""
        depths = {metric_depth(m) for m in record["metrics"]}
        others = {m: t for m, t in stored["metrics"].items() if metric_depth(m) not in depths}
        return {**record, "metrics": {**others, **record["metrics"]}} if others else record

    def judge(self, run: LatencyRun, baseline: Mapping[str, Any] | None) -> Verdict:
        if baseline is None:
            return self._judge_update(run)
        slowdowns, problem = self._compare(run, baseline)
        if problem:
            return Verdict(
                self._rows([self._round(run, {}, baseline)], baseline), f"{self.item}: {problem} {REFRESH_HERE}"
            )
        rounds = [self._round(run, slowdowns, baseline)]
        while len(rounds) < MAX_ROUNDS and self._unsettled(rounds):
            sleep(self.settings.confirm_pause)
            again = self.timed()
            rounds.append(self._round(again, self._compare(again, baseline)[0], baseline))
        rows = self._rows(rounds, baseline)
        failed = [row for row in rows if row.verdict == "FAIL"]
        if failed:
            return Verdict(rows, self._failure(failed, rounds))
        unjudged = [row for row in rows if row.verdict in UNJUDGED]
        if unjudged:
            reason = UNJUDGED[unjudged[0].verdict]
            said = "; ".join(f"{row.metric}: {row.verdict} ({row.note})" for row in unjudged)
            return Verdict(rows, not_judged=(reason, f"{self.item}: {said}; the rest passed"))
        return Verdict(rows)

    def _round(self, run: LatencyRun, slowdowns: Mapping[str, Slowdown], baseline: Mapping[str, Any]) -> Round:
        return Round(run, slowdowns, run.busy(self.settings.busy), host_change(run, baseline))

    def _judge_update(self, run: LatencyRun) -> Verdict:
        """A baseline is written only from a quiet round, and only if its own spread leaves a limit
        under the noise ceiling: a noisier one would blind its item until the next refresh."""
        rows = self._rows([Round(run, {}, None)], None)
        if busy := run.busy(self.settings.busy):
            rows = [replace(row, verdict="busy", note=busy) for row in rows]
            said = f"{self.item}: not written: {busy} while measuring, above --slm-busy={self.settings.busy:g}"
            return Verdict(rows, not_judged=(BUSY, said))
        noisy = {}
        for timing in run.timings:  # the noise limit a later run as steady as this one would be judged with
            noise = self.settings.k * hypot(timing.spread.uncertainty, timing.spread.uncertainty)
            if noise > self.settings.ceiling:
                noisy[timing.metric] = (
                    f"spread {100 * timing.spread.relative:.1f}% over {timing.spread.count} repeats gives a noise limit of {100 * noise:.0f}%"
                )
        if not noisy:
            return Verdict(rows)
        rows = [
            replace(row, verdict="not written", note=noisy[row.metric]) if row.metric in noisy else row for row in rows
        ]
        said = "; ".join(f"{metric}: {why}" for metric, why in noisy.items())
        return Verdict(
            rows,
            f"{self.item}: not written: too noisy to detect a {100 * DOCUMENTED_SLOWDOWN:.0f}% slowdown ({said},"
            f" above the ceiling {100 * self.settings.ceiling:.0f}%, --slm-noise-ceiling). Fix: more --slm-repeats,"
            " --slm-threads=1, or a quieter machine.",
        )

    def _clear(self, round: Round, metric: str) -> bool:
        """Whether `round` says anything of `metric`: it was quiet, and it found the metric slower
        or its noise limit is under the ceiling. A busy round can only read slower; a pass under a
        limit above the ceiling (a noisy round, or one whose speed probe moved far) passes blind."""
        slowdown = round.slowdowns.get(metric)  # None: not compared in this round (unlike conditions)
        return (
            slowdown is not None and not round.busy and (slowdown.regressed or slowdown.noise <= self.settings.ceiling)
        )

    def _unsettled(self, rounds: Sequence[Round]) -> bool:
        """Another round is needed where a metric is slower in every clear round so far and fewer
        than two clear rounds say so: a slowdown is confirmed by two clear rounds, and a round that
        could not tell (busy, too noisy, not compared) is followed by one more, up to MAX_ROUNDS."""
        for metric in rounds[0].slowdowns:
            clear = [r for r in rounds if self._clear(r, metric)]
            slower = all(r.slowdowns[metric].regressed for r in clear) and any(
                r.slowdowns[metric].regressed for r in rounds if metric in r.slowdowns
            )
            if slower and len(clear) < 2:
                return True
        return False

    def _failure(self, failed: Sequence[LatencyRow], rounds: Sequence[Round]) -> str:
        pause = self.settings.confirm_pause
        paused = f" (each confirmation after a {pause:g} s pause, --slm-confirm-pause)" if pause else ""
        lines = [
            f"{self.item}: slower than this machine's baseline ({self.fingerprint}), in every round that judged it{paused}:"
        ]
        for row in failed:
            changes = ", ".join(_round_change(r, row.metric, self._clear(r, row.metric)) for r in rounds)
            lines.append(
                f"  {row.metric}: {row.median:.4g} {row.unit} now vs {row.baseline:.4g} baseline;"
                f" slower by {changes} (rounds), limit {row.limit_pct:.1f}% = max(tolerance, k x uncertainty)"
            )
        if failed[0].host_change_pct is not None:
            lines.append(f"  (the baseline scaled by the speed probe: {_host(failed[0].host_change_pct)})")
        lines.append(REFRESH_HERE)
        return "\n".join(lines)

    def _compare(self, run: LatencyRun, baseline: Mapping[str, Any]) -> tuple[dict[str, Slowdown], str | None]:
        """Each metric against its baseline, or why they cannot be compared (other lengths or counts).
        The baseline's metrics at depths this run did not measure (--slm-depths) are not compared."""
        measured = {t.metric: t for t in run.timings}
        depths = {metric_depth(m) for m in measured}
        stored = {m: t for m, t in baseline["metrics"].items() if metric_depth(m) in depths}
        if set(stored) != set(measured) or any(stored[m]["tokens"] != t.tokens for m, t in measured.items()):
            return {}, (
                f"the baseline measured {', '.join(sorted(stored))}, this run {', '.join(sorted(measured))}"
                " (prompt lengths or token counts differ)."
            )
        tolerance, k = self.settings.tolerance, self.settings.k
        unlike = self._unlike(run, baseline)
        change = host_change(run, baseline) or 0.0
        scale, scaling = (
            1.0 + change,
            scaling_uncertainty(change),
        )  # the baseline's timings on the machine as fast as now
        return {
            m: compare_timings(spread([s * scale for s in stored[m]["seconds"]]), t.spread, tolerance(m), k, scaling)
            for m, t in measured.items()
            if m not in unlike
        }, None

    def _unlike(self, run: LatencyRun, baseline: Mapping[str, Any]) -> dict[str, str]:
        """Metrics measured under other conditions than their baseline: a page cache kept or not
        (unlike_conditions), or, for every metric, a machine whose speed probe moved further than
        --slm-probe-limit either way, too far for the probe's ratio to stand for the runtime's."""
        unlike = unlike_conditions(run.notes, baseline.get("notes", {}))
        change, limit = host_change(run, baseline), self.settings.probe_limit
        if change is not None and max(1 + change, 1 / (1 + change)) > 1 + limit:
            why = (
                f"the speed probe found {_host(100 * change)}, beyond {100 * limit:.0f}% either way (--slm-probe-limit)"
            )
            unlike.update({t.metric: why for t in run.timings if t.metric not in unlike})
        return unlike

    def _verdict(self, metric: str, rounds: Sequence[Round], unlike: Mapping[str, str]) -> tuple[str, str]:
        """(verdict, note) of one metric over the rounds: FAIL when every clear round found it
        slower (a regression beyond even a noisy limit fails too), two of them, or one beside busy
        rounds; too noisy where one clear round found it slower and the other quiet rounds could
        not tell; otherwise not judged where only busy rounds saw it slower, or where every round
        that passed it did so under a noise limit above the ceiling; else pass, saying so where a
        clear round saw it slower and another did not (unconfirmed). `unlike`: the metrics the
        row's round could not compare, and why."""
        if metric in unlike:
            return NOT_JUDGED, unlike[metric]
        compared = [r for r in rounds if metric in r.slowdowns]
        if not compared:
            return "changed", ""
        clear = [r for r in compared if self._clear(r, metric)]
        if clear and all(r.slowdowns[metric].regressed for r in clear):
            blind = [r for r in rounds if not r.busy and r not in clear]  # quiet, yet could not tell
            if len(clear) > 1 or not blind:  # one quiet round fails alone only beside busy ones, which only slow
                return "FAIL", ""
            changes = ", ".join(_round_change(r, metric, r in clear) for r in rounds)
            return (
                "too noisy",
                f"slower in the one round that judged it, unconfirmed ({changes}): rerun when this machine times steadily",
            )
        judging = [r for r in compared if not r.busy] or compared  # a busy round's pass passes: busy only slows
        passes = [r for r in judging if not r.slowdowns[metric].regressed]
        if not passes:  # then every round that saw it slower was busy
            return "busy", f"slower only in busy rounds: {judging[-1].busy}, above --slm-busy={self.settings.busy:g}"
        if all(r.slowdowns[metric].noise > self.settings.ceiling for r in passes):
            return "too noisy", self._too_noisy(max(passes, key=lambda r: r.slowdowns[metric].noise), metric)
        if slower := sum(r.slowdowns[metric].regressed for r in clear):
            changes = ", ".join(_round_change(r, metric, clear=True) for r in clear)
            return (
                "pass",
                f"unconfirmed: slower than its limit in {slower} of {len(clear)} rounds that judged it ({changes})",
            )
        return "pass", ""

    def _too_noisy(self, round: Round, metric: str) -> str:
        """Why a metric's noise limit is above the ceiling, and the fix: where the speed probe's
        scaling alone took it there, a machine back at the baseline's speed; else steadier timings."""
        noise, ceiling = round.slowdowns[metric].noise, self.settings.ceiling
        said = f"noise limit {100 * noise:.0f}% > ceiling {100 * ceiling:.0f}%"
        if round.host is None:
            return f"{said}: {STEADIER}"
        probe = self.settings.k * scaling_uncertainty(round.host)
        said += f" with the speed probe's uncertainty ({_host(100 * round.host)})"
        if noise**2 - probe**2 <= ceiling**2:
            return f"{said}: rerun when this machine is as fast as when the baseline was timed"
        return f"{said}: {STEADIER}"

    def _shown(self, rounds: Sequence[Round], metric: str) -> Round:
        """The round a metric's row shows: the last that judged it, else the last quiet one that
        compared it, else the last that compared it, else the last."""
        rank = [(self._clear(r, metric), metric in r.slowdowns and not r.busy, metric in r.slowdowns) for r in rounds]
        return rounds[max(range(len(rounds)), key=lambda i: (rank[i], i))]

    def _rows(self, rounds: Sequence[Round], baseline: Mapping[str, Any] | None) -> list[LatencyRow]:
        """One row per metric, with the figures of the round that shows it best (_shown)."""
        rows = []
        for metric in (t.metric for t in rounds[0].run.timings):
            shown = self._shown(rounds, metric)
            run, slowdown = shown.run, shown.slowdowns.get(metric)
            timing = next(t for t in run.timings if t.metric == metric)
            stored = baseline["metrics"].get(metric) if baseline else None
            unlike = self._unlike(run, baseline) if baseline else {}
            verdict, note = ("updated", "") if baseline is None else self._verdict(metric, rounds, unlike)
            current = timing.spread
            rows.append(
                LatencyRow(
                    self.item,
                    **model_identity(self.case),
                    metric=metric,
                    unit=timing.unit,
                    median=timing.shown(current.median),
                    min=timing.shown(current.minimum),
                    spread=current.relative,
                    baseline=timing.shown(spread(stored["seconds"]).median) if stored else None,
                    change_pct=None if slowdown is None else 100 * slowdown.change,
                    limit_pct=None if slowdown is None else 100 * slowdown.limit,
                    rounds=len(rounds),
                    load=run.load,
                    verdict=verdict,
                    competition=run.competition.share if run.competition else None,
                    note=note or run.notes.get(metric, ""),
                    **energy_cells(run.energy, timing.shown(current.median) if timing.tokens else None),
                    host_change_pct=None if shown.host is None else 100 * shown.host,
                )
            )
        return rows


@dataclass(frozen=True)
class MemoryRow:
    SECTION: ClassVar[str] = "memory"
    item: str
    model: str
    device: str
    quant: str
    weights_bytes: int
    kv_bytes_per_token: int
    kv_cache: list[dict[str, Any]]
    peak_rss_bytes: int | None
    verdict: str
    kv_note: str = ""  # "" when the model's layers predict what the runtime stores; else why the figure is measured


@dataclass
class MemoryCheck(MachineCheck):
    """Weights and KV cache per token are properties of the build: any growth past `tolerance`
    fails, as does a runtime that stores more per cached token than the model's layers say (unless
    the baseline accepted that measured figure). Where the layers do not predict it, or when
    updating, the measured figure is recorded and the row says why: the plugin's own estimate never
    fails an update. Peak RSS is shown, not judged: it depends on what else the process loaded before."""

    case: Case
    fingerprint: Fingerprint
    tolerance: float
    measured: Callable[[], MemoryUse]
    kind: str = "memory"

    def __post_init__(self) -> None:
        self.on_this_machine("memory")

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_memory(record)

    def measure(self) -> MemoryUse:
        return self.measured()

    def record(self, use: MemoryUse) -> dict[str, Any]:
        return {
            "weights_bytes": use.profile.weights_bytes,
            "kv_bytes_per_token": self._kv_figure(use.profile, None)[0],
            "peak_rss_bytes": use.peak_rss_bytes,
        }

    def _kv_figure(self, profile: MemoryProfile, baseline: Mapping[str, Any] | None) -> tuple[int, str, str | None]:
        """(the KV bytes per token this item stands for, why that figure is the measured one, why it
        fails): the model's figure when the runtime stores it; the measured one when the layers do
        not predict it, when updating, or when the baseline already holds it."""
        stored = profile.kv_bytes_per_token_stored
        measured = round(stored)
        if profile.unpredicted:
            return measured, f"measured: {profile.unpredicted}", None
        expected = profile.kv_bytes_per_token
        if abs(stored / expected - 1) <= self.tolerance:
            return expected, "", None
        layers = f" ({profile.kv_layout.describe()})" if profile.kv_layout else ""
        mismatch = (
            f"the runtime stores {stored:.0f} KV cache bytes per token, the model's layers say {expected}{layers}"
        )
        if baseline is None or baseline["kv_bytes_per_token"] == measured:
            return measured, f"measured: {mismatch}", None
        return measured, f"measured: {mismatch}", f"{mismatch}; --update-baselines records the measured figure"

    def judge(self, use: MemoryUse, baseline: Mapping[str, Any] | None) -> Verdict:
        profile = use.profile
        kv_figure, kv_note, kv_problem = self._kv_figure(profile, baseline)
        problems = [kv_problem] if kv_problem else []
        figures = {"weights_bytes": profile.weights_bytes, "kv_bytes_per_token": kv_figure}
        for name, now in figures.items() if baseline else ():
            assert baseline is not None  # the loop runs only with a baseline
            before = baseline[name]
            if now > before * (1 + self.tolerance):
                problems.append(
                    f"{name} grew from {before} to {now} ({100 * (now / before - 1):+.1f}% > {100 * self.tolerance:.0f}%)"
                )
        verdict = "FAIL" if problems else "updated" if baseline is None else "pass"
        row = MemoryRow(
            self.item,
            **model_identity(self.case),
            weights_bytes=profile.weights_bytes,
            kv_bytes_per_token=kv_figure,
            kv_note=kv_note,
            kv_cache=use.kv_cache(),
            peak_rss_bytes=use.peak_rss_bytes,
            verdict=verdict,
        )
        return Verdict([row], f"{self.item}: " + "; ".join(problems) if problems else None)


def energy_cells(energy: EnergyReading | str, tokens_per_second: float | None) -> dict[str, Any]:
    """A row's energy: joules per token = the item's average power / this metric's speed (the prefill
    and decode items each measure one phase); a time to first token has watts only."""
    if isinstance(energy, str):
        return {"energy_note": energy}
    return {"watts": energy.watts, "joules_per_token": energy.watts / tokens_per_second if tokens_per_second else None}


def validate_latency(record: Mapping[str, Any]) -> None:
    metrics = require(record, "metrics", dict, bool, "no metric was measured")
    for metric, timing in metrics.items():
        if not isinstance(timing, dict):
            raise RecordError(f"field 'metrics.{metric}' is not an object")
        seconds = require(timing, "seconds", list, bool, "no measurement")
        if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 < s < float("inf") for s in seconds):
            raise RecordError(f"field 'metrics.{metric}.seconds' must hold positive numbers of seconds")
        require(timing, "tokens", int, lambda v: v >= 0, "a token count is never negative")
    require(record, "load_average", (float, type(None)))
    for optional in ("competition", "machine", "energy", "notes"):  # absent from baselines older than the busy gate
        require(record, optional, (dict, type(None)))
    require(record, "probe_seconds", (float, type(None)), lambda v: v is None or v > 0, "a probe takes time")


def _round_change(round: Round, metric: str, clear: bool) -> str:
    """A round's change of `metric` in a failure message, marked where the round could not judge it."""
    if metric not in round.slowdowns:
        return "not compared"
    return f"{100 * round.slowdowns[metric].change:+.1f}%" + (
        "" if clear else " (busy)" if round.busy else " (too noisy)"
    )


def _host(change_pct: float) -> str:
    return f"this machine {_change(change_pct)} than at the baseline"


def validate_memory(record: Mapping[str, Any]) -> None:
    require(record, "weights_bytes", int, lambda v: v > 0, "a model has weights")
    require(record, "kv_bytes_per_token", int, lambda v: v > 0, "a cached token takes bytes")
    require(record, "peak_rss_bytes", (int, type(None)), lambda v: v is None or v > 0, "a process takes memory")


DEFAULT_TOLERANCE = 0.10  # a run stored without its latency tolerances had this one


def machine_file(record: Mapping[str, Any], name: str) -> str:
    """runtime/<the machine's slug>/<name>.json: a machine's figures are kept apart from another's."""
    try:
        slug = Fingerprint(**require(record, "fingerprint", dict)).slug
    except TypeError:
        raise RecordError(f"field 'fingerprint' needs exactly {', '.join(Fingerprint.__dataclass_fields__)}") from None
    return f"runtime/{slug}/{name}.json"


class LatencyKind(Kind):
    """Prefill, decode and time to first token at each depth, and the cold and warm load (whose
    records ride with the latency item `load`: one check times them all, under one busy gate);
    medians of repeats, judged against the baseline within the noise limit."""

    row = LatencyRow
    title = "Runtime"
    record_kind = "latency"
    machine = True
    chart_order = 1

    def table(self, rows: Rows, full: bool = True) -> Table:
        """The brief table leaves out the spread, the load, others' share and energy, and a metric's note."""
        columns = [
            Column("runtime item", itemgetter("item")),
            Column("metric", lambda row: row["metric"] + (f" ({row['note']})" if row.get("note") else ""), brief=False),
            Column("metric", itemgetter("metric"), full=False),
            Column("median", lambda row: f"{row['median']:.4g} {row['unit']}"),
            Column("spread", lambda row: f"±{100 * row['spread']:.1f}%", brief=False),
            Column("baseline", lambda row: or_dash(row["baseline"], "{:.4g}")),
            Column("change", lambda row: _change(row["change_pct"])),
            Column(
                "limit",
                lambda row: (
                    or_dash(row["limit_pct"], "{:.1f}%") + (f" ({row['rounds']} rounds)" if row["rounds"] > 1 else "")
                ),
            ),
            Column("load", lambda row: or_dash(row["load"], "{:.2f}"), brief=False),
            Column("others", lambda row: or_dash(row.get("competition"), "{:.0%}"), brief=False),
            Column("probe", lambda row: _change(row.get("host_change_pct")), brief=False),
            Column("energy", _energy, brief=False),
            VERDICT,
        ]
        return select(columns, sorted(rows, key=_metric_order), full)

    def charts(self, rows: Rows) -> list[tuple[str, str, list[Any]]]:
        from ..report import charts  # matplotlib: only when the page is drawn

        return [
            ("speed", "Prefill and decode speed per quantization", charts.speed(rows)),
            (
                "depth",
                "Prefill and decode speed against the tokens already in the KV cache (--slm-depths)",
                charts.depth(rows),
            ),
        ]

    def figures(self, row: Mapping[str, Any]) -> list[Figure]:
        return [Figure(row["metric"], row["median"], row["unit"], row["spread"])]

    def compare(self, now: Stored, before: Stored, runs: Runs) -> Judged:
        """As the item judges a slowdown: the medians' ratio against the metric's tolerance and the noise limit."""
        settings = runs.settings
        tolerances = settings.get("latency_tolerances") or {"*": DEFAULT_TOLERANCE}
        tolerance = float(tolerances.get(now.metric.split("@")[0], tolerances.get("*", DEFAULT_TOLERANCE)))
        slowdown = compare_timings(
            seconds_spread(before, repeats(runs.settings_before)),
            seconds_spread(now, repeats(settings)),
            tolerance,
            float(settings.get("latency_k", 3.0)),
        )
        word = "slower" if slowdown.change >= 0 else "faster"
        change = f"{100 * abs(slowdown.change):.1f}% {word}, limit {100 * slowdown.limit:.1f}%"
        return Judged(before.value, now.value, change, "FAIL" if slowdown.regressed else "pass")

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_latency(record)

    def file_name(self, record: Mapping[str, Any]) -> str:
        return machine_file(record, _latency_item(record["metrics"]))


def _latency_item(metrics: Mapping[str, Any]) -> str:
    """The latency item a record's metrics belong to: `decode` (at any depth: `decode@d512`),
    `load` (`load.cold`, `load.warm`, `ttft.cold@128`), else `prefill`."""
    families = {metric.split("@")[0].split(".")[0] for metric in metrics}
    return "decode" if "decode" in families else "load" if "load" in families else "prefill"


def repeats(settings: Mapping[str, Any]) -> int:
    """The timings behind a stored run's medians: runs stored before it was recorded used the default, 5."""
    return int(settings.get("repeats", 5))


def seconds_spread(m: Stored, repeats: int) -> Spread:
    """The item's Spread of seconds from a stored figure: tok/s is tokens / seconds, so the ratio
    of two medians inverts; the relative spread is that of the seconds, as stored."""
    seconds = 1 / m.value if m.unit == "tok/s" else m.value
    relative = m.spread or 0.0
    return Spread(seconds, seconds, relative * seconds / MAD_TO_SIGMA, repeats)


def _metric_order(row: dict[str, Any]) -> tuple[str, str, int]:
    """A metric's depths in order (decode, decode@d512, decode@d2048), not as their names sort."""
    metric, depth = row["metric"], metric_depth(row["metric"])
    return row["item"], metric.removesuffix(f"@d{depth}"), depth


def _energy(row: dict[str, Any]) -> str:
    """Joules per token and average power, or the one-line reason there is no counter."""
    if row.get("watts") is None:
        return row.get("energy_note") or "-"
    per_token = f"{1e3 * row['joules_per_token']:.3g} mJ/tok, " if row.get("joules_per_token") is not None else ""
    return f"{per_token}{row['watts']:.3g} W"


def _change(percent: float | None) -> str:
    if percent is None:
        return "-"
    return f"{percent:.1f}% slower" if percent >= 0 else f"{-percent:.1f}% faster"


MEMORY_FIGURES = ("weights_bytes", "kv_bytes_per_token", "peak_rss_bytes")


class MemoryKind(Kind):
    """Weights and KV cache per token, judged against the baseline; the peak RSS shown, never
    judged (it depends on what ran before in the process)."""

    row = MemoryRow
    title = "Memory"
    record_kind = "memory"
    machine = True
    chart_order = 2

    def table(self, rows: Rows, full: bool = True) -> Table:
        """Weights, KV cache per token (marked where it is the runtime's measured figure, not the model's
        layers': the row's kv_note says why), and, in the full table, the cache's share of weights +
        cache at each context length and the peak RSS (shown, never judged)."""
        contexts = sorted({kv["context"] for row in rows for kv in row["kv_cache"]})
        columns = [
            Column("memory item", itemgetter("item")),
            Column("weights", lambda row: mib(row["weights_bytes"])),
            Column(
                "KV/token",
                lambda row: f"{row['kv_bytes_per_token']} B" + (" (measured)" if row.get("kv_note") else ""),
            ),
            *(Column(f"KV @{context}", partial(_kv_at, context=context), brief=False) for context in contexts),
            Column(
                "peak RSS",
                lambda row: "-" if row["peak_rss_bytes"] is None else mib(row["peak_rss_bytes"]),
                brief=False,
            ),
            VERDICT,
        ]
        return select(columns, sorted(rows, key=itemgetter("item")), full)

    def charts(self, rows: Rows) -> list[tuple[str, str, list[Any]]]:
        from ..report import charts  # matplotlib: only when the page is drawn

        return [("memory", "Memory against context length, with the KV cache's share", charts.memory(rows))]

    def figures(self, row: Mapping[str, Any]) -> list[Figure]:
        return [Figure(name, row[name], "B") for name in MEMORY_FIGURES if row[name] is not None]

    def compare(self, now: Stored, before: Stored, runs: Runs) -> Judged:
        """Growth beyond the memory tolerance fails; the peak RSS is shown."""
        if now.metric == "peak_rss_bytes":
            return super().compare(now, before, runs)
        grew = now.value / before.value - 1
        limit = float(runs.settings.get("memory_tolerance", 0.01))
        return Judged(
            before.value, now.value, f"{100 * grew:+.1f}%, limit {100 * limit:.0f}%", "FAIL" if grew > limit else "pass"
        )

    def validate(self, record: Mapping[str, Any]) -> None:
        validate_memory(record)

    def file_name(self, record: Mapping[str, Any]) -> str:
        return machine_file(record, "memory")


def _kv_at(row: dict[str, Any], context: int) -> str:
    by_context = {kv["context"]: kv for kv in row["kv_cache"]}
    if context not in by_context:
        return "-"
    return f"{mib(by_context[context]['kv_bytes'])} ({100 * by_context[context]['share']:.0f}%)"
