"""The busy gate's parts on fake inputs: competition read from a fake /proc (this process's own CPU
time is not competition; steal is), clocks and temperatures from fake files, and the latency verdict
when a slower round was measured on a busy machine (busy, not failed) or a quiet one (failed)."""

from __future__ import annotations

from pathlib import Path

from pytest_slm.checks.runtime import LatencyCheck, LatencyRun, LatencySettings
from pytest_slm.matrix import Case
from pytest_slm.measure.busy import Competition, competition, cpu_times, machine_state, our_cpus
from pytest_slm.measure.machine import Fingerprint, Timing


def fake_proc(root: Path, user: int, steal: int, idle: int, own: int) -> Path:
    """Every CPU of ours with the same ticks; this process with `own` user ticks."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"] + [f"cpu{n} {user} 0 0 {idle} 0 0 0 {steal} 0 0" for n in sorted(our_cpus())]
    (root / "self").mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text("\n".join(lines) + "\nintr 0\n")
    fields = ["S"] + ["0"] * 10 + [str(own), "0"] + ["0"] * 30  # field 14 (utime) is the 12th after ")"
    (root / "self" / "stat").write_text(f"1 (python (x)) {' '.join(fields)}\n")
    return root


def test_competition_is_others_time_and_steal_on_our_cpus(tmp_path):
    cpus = len(our_cpus())
    before = cpu_times(fake_proc(tmp_path, user=100, steal=0, idle=100, own=50))
    after = cpu_times(fake_proc(tmp_path, user=150, steal=10, idle=140, own=50 + 30 * cpus))
    assert before and after
    seen = competition(before, after, 2.5)
    ticks = 100 * cpus  # (50 user + 10 steal + 40 idle) per CPU
    assert seen.others == (50 * cpus - 30 * cpus) / ticks and seen.steal == 10 * cpus / ticks
    assert seen.share == seen.others + seen.steal and seen.describe().startswith(
        f"other processes 20% + steal 10% of {cpus} CPU(s)"
    )


def test_unreadable_proc_leaves_the_gate_open(tmp_path):
    assert cpu_times(tmp_path) is None


def test_clocks_and_temperatures_where_reported(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor : 0\ncpu MHz\t\t: 2596.142\nprocessor : 1\ncpu MHz\t\t: 1200.0\n")
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("x86_pkg_temp\n")
    (zone / "temp").write_text("61000\n")
    assert machine_state(tmp_path, tmp_path / "thermal") == {
        "cpu_mhz": [2596, 1200],
        "thermal_c": {"x86_pkg_temp": 61.0},
    }
    assert machine_state(tmp_path / "none", tmp_path / "none") == {}


def busy_check(rounds: list[LatencyRun], threshold: float | None = 0.15) -> LatencyCheck:
    machine = Fingerprint("cpu", 2, "none", "Linux")
    settings = LatencySettings({"*": 0.1}, 3.0, threshold)
    return LatencyCheck(Case("m", "llamacpp-cpu", "native"), "decode", machine, settings, iter(rounds).__next__)


def run(seconds: float, others: float) -> LatencyRun:
    return LatencyRun((Timing("decode", (seconds,) * 5, 100),), 1.0, Competition(others, 0.0, 5.0, 2, 1.0))


BASELINE = {"metrics": {"decode": {"seconds": [1.0] * 5, "tokens": 100}}}


def test_slower_only_while_busy_is_not_judged_busy():
    verdict = busy_check([run(2.0, 0.4), run(2.0, 0.3)]).judge(run(2.0, 0.5), BASELINE)  # every round busy
    assert verdict.failure is None and verdict.not_judged
    reason, message = verdict.not_judged
    assert reason == "busy" and "decode: busy (slower only in busy rounds: other processes 30%" in message
    assert [row.verdict for row in verdict.rows] == ["busy"] and verdict.rows[0].rounds == 3


def test_slower_in_a_quiet_round_fails_whatever_a_busy_round_saw():
    """The first round quiet and slower, the confirmation busy: a third round is timed; quiet and
    slower again, it fails. Busy first, then slower in two quiet rounds: fails too. Slower in the one
    quiet round of three: fails, as busy rounds can only read slower."""
    quiet_then_busy = busy_check([run(2.0, 0.4), run(2.0, 0.05)]).judge(run(2.0, 0.05), BASELINE)
    assert (
        quiet_then_busy.failure and "+100.0% (busy)" in quiet_then_busy.failure and quiet_then_busy.rows[0].rounds == 3
    )
    busy_then_quiet = busy_check([run(2.0, 0.05), run(2.0, 0.05)]).judge(run(2.0, 0.4), BASELINE)
    assert busy_then_quiet.failure and busy_then_quiet.rows[0].verdict == "FAIL" and busy_then_quiet.rows[0].rounds == 3
    still_busy = busy_check([run(2.0, 0.4), run(1.9, 0.5)]).judge(run(2.0, 0.05), BASELINE)  # one quiet round, slower
    assert still_busy.failure


def test_a_slowdown_one_quiet_round_saw_and_the_next_did_not_passes_unconfirmed_and_says_so():
    verdict = busy_check([run(1.0, 0.05)]).judge(run(2.0, 0.05), BASELINE)
    assert verdict.failure is None and verdict.not_judged is None and verdict.rows[0].rounds == 2
    assert verdict.rows[0].verdict == "pass"
    assert verdict.rows[0].note == "unconfirmed: slower than its limit in 1 of 2 rounds that judged it (+100.0%, +0.0%)"


def test_a_confirmation_waits_the_pause_first_and_a_pass_waits_for_nothing(monkeypatch):
    """Two rounds timed back to back meet the same slow spell of a shared machine: the
    confirmation is timed after --slm-confirm-pause, and the failure says so."""
    slept: list[float] = []
    monkeypatch.setattr("pytest_slm.checks.runtime.sleep", slept.append)
    machine = Fingerprint("cpu", 2, "none", "Linux")
    settings = LatencySettings({"*": 0.1}, 3.0, 0.15, confirm_pause=60.0)
    confirmed = LatencyCheck(Case("m", "llamacpp-cpu", "native"), "decode", machine, settings, [run(2.0, 0.05)].pop)
    verdict = confirmed.judge(run(2.0, 0.05), BASELINE)
    assert slept == [60.0] and verdict.rows[0].rounds == 2
    assert (
        verdict.failure
        and "in every round that judged it (each confirmation after a 60 s pause, --slm-confirm-pause):"
        in verdict.failure
    )
    slept.clear()
    assert busy_check([]).judge(run(1.0, 0.05), BASELINE).failure is None and slept == []


def test_slower_on_a_quiet_machine_fails_and_the_gate_off_judges_every_round():
    assert busy_check([run(2.0, 0.05)]).judge(run(2.0, 0.05), BASELINE).failure
    off = busy_check([run(2.0, 0.9)], threshold=None).judge(run(2.0, 0.9), BASELINE)
    assert off.failure and off.not_judged is None


def test_busy_passes_stay_passes_and_a_busy_update_writes_nothing():
    assert busy_check([]).judge(run(1.0, 0.9), BASELINE).not_judged is None
    update = busy_check([]).judge(run(1.0, 0.9), None)
    assert update.not_judged and update.not_judged[0] == "busy"
    assert update.not_judged[1].startswith("m-llamacpp-cpu-native: not written: other processes 90%")


def test_a_noise_limit_above_the_ceiling_is_too_noisy_and_an_update_refuses_so_noisy_a_baseline():
    noisy = LatencyRun((Timing("decode", (1.0, 1.3, 0.8, 1.25, 0.9), 100),), 1.0)  # spread ~26%: noise limit ~100%
    verdict = busy_check([noisy]).judge(noisy, BASELINE)
    assert verdict.failure is None and verdict.not_judged and verdict.not_judged[0] == "too noisy"
    assert [row.verdict for row in verdict.rows] == ["too noisy"] and "> ceiling 20%" in verdict.rows[0].note
    refused = busy_check([]).judge(noisy, None)
    assert refused.failure and refused.failure.startswith(
        "m-llamacpp-cpu-native: not written: too noisy to detect a 25% slowdown"
    )
    assert "Fix: more --slm-repeats, --slm-threads=1, or a quieter machine." in refused.failure
    assert [row.verdict for row in refused.rows] == ["not written"]
    steady = LatencyRun((Timing("decode", (1.0, 1.01, 0.99, 1.0, 1.0), 100),), 1.0)
    assert busy_check([]).judge(steady, None).failure is None


def test_compare_weighs_each_runs_median_by_its_own_repeats():
    """Two stored runs of one series: the earlier timed 5 repeats, the later 20. Each median's
    uncertainty comes from its own run's repeats, not the later run's for both."""
    from pytest_slm.checks import KINDS
    from pytest_slm.checks.kind import Runs
    from pytest_slm.history.database import Measure

    before = Measure("runtime", "m", "decode", 100.0, "tok/s", 0.15, "pass")
    now = Measure("runtime", "m", "decode", 80.0, "tok/s", 0.15, "pass")
    settings = {"latency_tolerances": {"*": 0.1}, "latency_k": 3.0}
    judged = KINDS["runtime"].compare(
        now, before, Runs({**settings, "repeats": 20}, {}, {}, {**settings, "repeats": 5})
    )
    # 3 x hypot(1.2533 x 15% / sqrt(5), 1.2533 x 15% / sqrt(20)) = 28.2%: 25% slower passes (with 20
    # repeats taken for both medians the limit would be 17.8%, and it would fail)
    assert judged.change == "25.0% slower, limit 28.2%" and judged.verdict == "pass"
