"""Fidelity at depth: the windows after a depth, the record's `depths` and their validation, the
judging of each depth against the baseline's same depth, an update that keeps the others, and
end-to-end runs on the embedded model with a q8_0 KV cache (the shipped depth text, the built-in copy)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
from projects import shipped_project

from pytest_slm.checks import KINDS, validate_record
from pytest_slm.checks.core import RecordError, envelope, validate
from pytest_slm.checks.fidelity import FidelityCheck, FidelityGate, validate_fidelity
from pytest_slm.matrix import Case
from pytest_slm.measure import reference
from pytest_slm.measure.divergence import DEPTH_WINDOWS, Positions, depth_windows, summarize
from pytest_slm.options import BUILTIN_DEPTH_TEXT, DEFAULT_DEPTH_TEXT
from pytest_slm.store.baselines import BaselineError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

ROOT = Path(__file__).resolve().parents[1]
CASE, F16 = Case("m", "llamacpp-cpu", "native", kv="q8_0"), Case("m", "llamacpp-cpu", "native")


def figures(scale: float = 1.0, n: int = 101):
    """A Fidelity whose KL divergences are `scale` times an even spread."""
    kld = np.linspace(0, 1, n) * scale
    return summarize(
        [Positions(kld, np.arange(n) % 7 > 0, np.linspace(-0.1, 0.3, n), np.full(n, 2.0), np.full(n, 2.1))]
    )


def check(nodeid: str = "test_fidelity.py::test_fidelity[m-llamacpp-cpu-native-kv-q8_0]") -> FidelityCheck:
    return FidelityCheck(CASE, F16, FidelityGate(0.1, "p99", 0.1, None), dict, nodeid)


def stored(measured) -> dict:
    """What an update writes: the envelope around the record, valid."""
    fidelity = check()
    record = envelope(fidelity, fidelity.record(measured), {"date": "2026-11-30"})
    validate(fidelity, record)
    return record


def test_the_windows_at_a_depth_continue_the_text_after_it_as_far_as_text_and_context_hold():
    tokens = list(range(100))
    assert depth_windows(tokens, 20, 10, 4096) == [list(range(s, s + 10)) for s in (20, 30, 40, 50)][:DEPTH_WINDOWS]
    assert depth_windows(tokens, 75, 10, 4096) == [list(range(75, 85)), list(range(85, 95))]  # the text ends
    assert depth_windows(tokens, 20, 10, 45) == [list(range(20, 30)), list(range(30, 40))]  # the context ends
    assert depth_windows(tokens, 95, 10, 4096) == []  # not one window fits: the item says so


def test_a_record_without_depths_is_as_before_and_one_with_them_holds_each_under_its_depth():
    assert "depths" not in check().record({0: figures()})
    record = stored({0: figures(), 2048: figures(2.0), 512: figures(1.5)})
    assert list(record["depths"]) == ["512", "2048"] and record["depths"]["2048"]["mean_kld"] == pytest.approx(1.0)
    assert {k: v for k, v in record.items() if k != "depths"} == stored({0: figures()})  # depth 0 where it was


@pytest.mark.parametrize(
    ("depths", "message"),
    [
        ({}, "field 'depths' is {}: a record without figures at depth leaves the field out"),
        ({"0": "figures"}, "field 'depths' has the key '0': a depth is a positive whole number of tokens"),
        ({"d512": "figures"}, "field 'depths' has the key 'd512'"),
        ({"0512": "figures"}, "field 'depths' has the key '0512'"),
        ({"512": [1, 2]}, "field 'depths.512' is not an object"),
        ({"512": "nan"}, "at depth 512: field 'mean_kld' is not a finite number"),
        (
            {"512": "decreasing"},
            "at depth 512: the KL divergence percentiles median, p90, p95, p99, p999, max decrease",
        ),
        ({"512": "empty"}, "at depth 512: field 'tokens' is 0: no position was compared"),
    ],
)
def test_a_record_with_a_broken_depth_is_refused_naming_the_depth(depths, message):
    good = asdict(figures())
    broken = {
        "figures": good,
        "nan": {**good, "mean_kld": float("nan")},
        "decreasing": {**good, "p99_kld": 10.0},
        "empty": {**good, "tokens": 0},
    }
    record = {
        **stored({0: figures()}),
        "depths": {key: broken.get(value, value) if isinstance(value, str) else value for key, value in depths.items()},
    }
    with pytest.raises(RecordError, match=re.escape(message)):
        validate_fidelity(record)
    relative = Path("m/llamacpp-cpu/native-kv-q8_0/fidelity.json")
    with pytest.raises(BaselineError, match=re.escape(message)):  # the merge CLI's check of a stored file too
        validate_record(record, Path("baselines") / relative, relative)


def test_each_depth_is_judged_against_the_baselines_same_depth():
    baseline = stored({0: figures(), 512: figures(2.0)})
    passed = check().judge({0: figures(), 512: figures(2.0)}, baseline)
    assert passed.failure is None and [(row.depth, row.verdict) for row in passed.rows] == [(0, "pass"), (512, "pass")]
    assert passed.rows[1].baseline_mean_kld == pytest.approx(1.0)

    worse = check().judge({0: figures(), 512: figures(3.0)}, baseline)
    assert [row.verdict for row in worse.rows] == ["pass", "FAIL"]
    assert worse.failure is not None and worse.failure.startswith(
        "m-llamacpp-cpu-native-kv-q8_0: at depth 512: mean KL divergence"
    )
    assert "worse than the baseline's 1 by 50%" in worse.failure and "--update-baselines" in worse.failure

    shallow = check().judge({0: figures()}, baseline)  # a run judges the depths it measured
    assert shallow.failure is None and len(shallow.rows) == 1


def test_a_depth_the_baseline_lacks_fails_with_the_command_that_adds_it():
    verdict = check().judge({0: figures(), 2048: figures(2.0)}, stored({0: figures()}))
    assert [row.verdict for row in verdict.rows] == ["pass", "FAIL"]
    assert (
        verdict.failure is not None
        and (
            "at depth 2048: the baseline has no figures at this depth; add them with:"
            " pytest 'test_fidelity.py::test_fidelity[m-llamacpp-cpu-native-kv-q8_0]' --slm-depths=2048 --update-baselines"
        )
        in verdict.failure
    )


def test_an_update_keeps_the_baselines_other_depths_and_replaces_those_it_measured():
    before = stored({0: figures(), 512: figures(2.0), 2048: figures(3.0)})
    after = check().kept(stored({0: figures(1.1), 512: figures(2.5)}), before)
    assert {depth: figures_at["mean_kld"] for depth, figures_at in after["depths"].items()} == pytest.approx(
        {"512": 1.25, "2048": 1.5}
    )
    assert list(after["depths"]) == ["512", "2048"] and after["mean_kld"] == pytest.approx(0.55)
    assert check().kept(stored({0: figures()}), stored({0: figures(2.0)})) == stored(
        {0: figures()}
    )  # nothing at depth: as before


def test_the_table_shows_a_row_per_depth_after_its_items_depth_0():
    rows = check().judge({0: figures(), 512: figures(2.0)}, None).rows
    _, body = KINDS["fidelity"].table([asdict(row) for row in reversed(rows)])
    assert [line[0] for line in body] == ["m-llamacpp-cpu-native-kv-q8_0", "m-llamacpp-cpu-native-kv-q8_0 @d512"]


def test_report_html_plots_kld_against_depth_only_where_there_are_depths():
    from pytest_slm.report import charts

    deep = [asdict(row) for row in check().judge({0: figures(), 512: figures(2.0), 2048: figures(4.0)}, None).rows]
    [panel] = charts.kld_depth(deep)
    lines = [list(line.get_xdata()) for line in panel.axes[0].get_lines()]
    assert lines == [[0, 512, 2048], [0, 512, 2048]]  # the mean and the p99
    assert charts.kld_depth(deep[:1]) == []
    assert "kld-depth" in [plot_id for plot_id, _, _ in charts.figures({"fidelity": deep})]


def test_the_reference_cache_key_holds_the_depth_and_is_unchanged_at_depth_0():
    base = ("digest:f32", "0.3.36", "a long text", 256)
    assert reference.cache_key(*base, 0) == reference.cache_key(*base)  # caches kept before depths stay valid
    keys = {reference.cache_key(*base, depth) for depth in (0, 512, 2048)}
    keys.add(reference.cache_key("digest:f32", "0.3.36", "a long text!", 256, 512))  # another depth text
    assert len(keys) == 4


def test_the_shipped_depth_text_is_the_packaged_one_and_long_enough_for_depth_2048():
    shipped = (ROOT / DEFAULT_DEPTH_TEXT).read_text(encoding="utf-8")
    assert shipped == BUILTIN_DEPTH_TEXT.read_text(encoding="utf-8")
    assert len(shipped) > (2048 + DEPTH_WINDOWS * 256) * 5  # SmolLM2: about 4.4 characters per token
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pytest_slm"]
    packaged = BUILTIN_DEPTH_TEXT.relative_to(ROOT / "pytest_slm").as_posix()
    assert any(fnmatch(packaged, pattern) for pattern in patterns)  # a wheel carries it


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """The fidelity suite on the embedded model with a q8_0 KV cache against its f16 cache; a short
    evaluation text and window, so the depth-0 figures cost little; the built-in depth text."""
    return shipped_project(
        pytester,
        ("test_fidelity.py",),
        """
        slm_models = ["smollm2-135m"]
        slm_devices = ["llamacpp-cpu"]
        slm_kv_types = ["q8_0"]
        slm_threads = "1"
        slm_eval_text = "eval.txt"
        slm_eval_window = "32"
        slm_history = "off"
        """,
        registry=False,
        eval_chars=600,
    )


def test_a_kv_cache_at_depth_is_recorded_and_judged_per_depth(project):
    item = "smollm2-135m-llamacpp-cpu-native-kv-q8_0"
    path = project.path / "baselines" / "smollm2-135m" / "llamacpp-cpu" / "native-kv-q8_0" / "fidelity.json"
    options = ("-p", "no:cacheprovider")
    written = project.runpytest_inprocess(*options, "--slm-depths=0,128", "--update-baselines", "-v")  # -v: positions
    written.assert_outcomes(passed=1)
    written.stdout.fnmatch_lines(
        [f"{item} *updated", f"{item} @d128 *124 *updated"]
    )  # 4 windows of 32 after 128 tokens
    first = json.loads(path.read_text())
    assert list(first["depths"]) == ["128"] and first["depths"]["128"]["tokens"] == 4 * 31
    assert (
        0 < first["depths"]["128"]["mean_kld"] and first["depths"]["128"]["top1_agreement"] < 1
    )  # the cache moves them

    again = project.runpytest_inprocess(*options, "--slm-depths=0,128", "-v")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines([f"{item} *pass", f"{item} @d128 *124 *pass"])

    damaged = {
        **first,
        "depths": {"128": {**first["depths"]["128"], "mean_kld": first["depths"]["128"]["mean_kld"] * 2}},
    }
    path.write_text(json.dumps(damaged))
    judged = project.runpytest_inprocess(*options, "--slm-depths=0,64,128")
    judged.assert_outcomes(failed=1)
    judged.stdout.fnmatch_lines_random(
        [
            f"*{item}: at depth 64: the baseline has no figures at this depth; add them with: pytest 'test_fidelity.py::test_fidelity[[]{item}[]]' --slm-depths=64 --update-baselines*",
            "*at depth 128: mean KL divergence to the reference is * nats, better than the baseline's * by 50% (margin 10%)*",
            f"{item} *pass",  # depth 0 is judged, and passes
        ]
    )
    assert "at depth 0" not in judged.stdout.str()
