"""--slm-depths without a model: the metric names at a depth, the prompt after the context, a run
judged on the depths it measured, and an update that keeps the baseline's other depths."""

from __future__ import annotations

import pytest

from pytest_slm.checks.runtime import LatencyCheck, LatencyRun, LatencySettings
from pytest_slm.matrix import Case
from pytest_slm.measure import machine
from pytest_slm.measure.machine import Fingerprint, Timing, at_depth, depth_metric, metric_depth

FINGERPRINT = Fingerprint("cpu", 1, "none", "Linux x86_64")


@pytest.mark.parametrize(
    ("metric", "depth", "name"),
    [
        ("prefill@128", 0, "prefill@128"),
        ("prefill@128", 2048, "prefill@128@d2048"),
        ("decode", 512, "decode@d512"),
        ("ttft@128", 512, "ttft@128@d512"),
    ],
)
def test_a_metric_at_a_depth_is_named_as_llama_bench_rows_are_and_read_back(metric, depth, name):
    assert depth_metric(metric, depth) == name
    assert metric_depth(name) == depth


def test_the_prompt_continues_the_text_after_the_context():
    context, prompt = at_depth(list(range(10)), 6, 6)
    assert context == [0, 1, 2, 3, 4, 5] and prompt == [6, 7, 8, 9, 0, 1]
    assert at_depth(list(range(10)), 0, 3) == ([], [0, 1, 2])


def check(*metrics: str, seconds: float = 1.0) -> tuple[LatencyCheck, LatencyRun]:
    """A decode check whose run measured `metrics`, each `seconds` per repeat."""
    run = LatencyRun(tuple(Timing(m, (seconds,) * 3, 0 if m.startswith("ttft") else 8) for m in metrics), 0.5)
    latency = LatencyCheck(
        Case("m", "llamacpp-cpu", "native"), "decode", FINGERPRINT, LatencySettings({"*": 0.1}, 3.0), lambda: run
    )
    return latency, run


def test_a_run_is_judged_on_the_depths_it_measured_and_a_missing_depth_is_a_change():
    deep, deep_run = check("decode", "decode@d512")
    baseline = deep.record(deep_run)
    shallow, shallow_run = check("decode")
    verdict = shallow.judge(shallow_run, baseline)
    assert verdict.failure is None and [(r.metric, r.verdict) for r in verdict.rows] == [("decode", "pass")]
    deeper, deeper_run = check("decode", "decode@d2048")
    failure = deeper.judge(deeper_run, baseline).failure
    assert failure is not None and "the baseline measured decode, this run decode, decode@d2048" in failure


def test_an_update_keeps_the_baselines_figures_at_the_depths_it_did_not_measure():
    shallow, shallow_run = check("decode", "ttft@128")
    stored = shallow.record(shallow_run)
    deep, deep_run = check("decode@d512", "ttft@128@d512")
    kept = deep.kept(deep.record(deep_run), stored)
    assert sorted(kept["metrics"]) == ["decode", "decode@d512", "ttft@128", "ttft@128@d512"]
    deeper, deeper_run = check("decode@d512", "ttft@128@d512", seconds=2.0)
    again = deeper.kept(deeper.record(deeper_run), kept)  # the depth it measured is replaced
    assert {m: t["seconds"][0] for m, t in again["metrics"].items()} == {
        "decode": 1.0,
        "ttft@128": 1.0,
        "decode@d512": 2.0,
        "ttft@128@d512": 2.0,
    }


def test_the_runtime_table_lists_a_metrics_depths_in_order():
    from pytest_slm.checks import KINDS

    metrics = ["prefill@128@d2048", "decode@d2048", "prefill@128", "decode@d512", "decode", "prefill@128@d512"]
    cells = {
        "median": 1.0,
        "unit": "tok/s",
        "spread": 0.01,
        "baseline": None,
        "change_pct": None,
        "limit_pct": None,
        "rounds": 1,
        "load": None,
        "verdict": "pass",
    }
    _, body = KINDS["runtime"].table([{"item": "m", "metric": metric, **cells} for metric in metrics])
    assert [line[1] for line in body] == [
        "decode",
        "decode@d512",
        "decode@d2048",
        "prefill@128",
        "prefill@128@d512",
        "prefill@128@d2048",
    ]


def test_report_html_plots_speed_against_depth_only_where_there_are_depths():
    from pytest_slm.report import charts

    def rows(*metrics: str) -> list[dict]:
        return [
            {
                "model": "m",
                "device": "llamacpp-cpu",
                "quant": "native",
                "metric": m,
                "unit": "tok/s",
                "median": 10.0,
                "spread": 0.01,
            }
            for m in metrics
        ]

    deep = rows("prefill@128", "prefill@128@d512", "decode", "decode@d512", "decode@d2048")
    [panel] = charts.depth(deep)
    lines = {line.get_label(): list(line.get_xdata()) for line in panel.axes[0].get_lines()}
    assert lines == {"prefill@128": [0, 512], "decode": [0, 512, 2048]}
    assert charts.depth(rows("prefill@128", "decode")) == []
    assert "depth" in [plot_id for plot_id, _, _ in charts.figures({"runtime": deep})]


def test_each_timed_run_rests_first_when_a_cooldown_is_asked(monkeypatch):
    rests: list[float] = []
    monkeypatch.setattr(machine.time, "sleep", rests.append)
    assert machine.repeated(iter([3, 1, 2]).__next__, 3, 2.5) == [3, 1, 2] and rests == [2.5] * 3


def test_prefill_takes_the_lengths_in_turn_each_after_its_rest(monkeypatch):
    """A slow spell of a few seconds falls on every length alike, not on one length's block."""
    rests: list[float] = []
    monkeypatch.setattr(machine.time, "sleep", rests.append)
    calls: list[tuple[int, int]] = []

    class Recorder:
        def timed_prefill(self, tokens, context=()):
            calls.append((len(context), len(tokens)))
            return float(len(calls))

    timings = machine.measure_prefill(Recorder(), list(range(50)), (4, 8), 3, depths=(0, 16), cooldown=0.5)
    assert calls == [(0, 4), (0, 8)] * 4 + [(16, 4), (16, 8)] * 4  # a warm-up each, then 3 runs in turn
    assert [(t.metric, t.seconds) for t in timings] == [
        ("prefill@4", (3.0, 5.0, 7.0)),
        ("prefill@8", (4.0, 6.0, 8.0)),
        ("prefill@4@d16", (11.0, 13.0, 15.0)),
        ("prefill@8@d16", (12.0, 14.0, 16.0)),
    ]
    assert rests == [0.5] * 12
