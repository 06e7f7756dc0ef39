"""Each option is one row of `pytest_slm.options.OPTIONS`: its parser, default, help, ini key, the
`SlmConfig` field it fills and the kinds' settings it feeds. These tests hold the other places that
name options to those rows: the config's fields, each kind's settings, `--help`, and the guide's
options table, which is checked row by row (name, ini key, default) rather than generated, because
its help cells say more than `--help` has room for (links to the notes, what a verdict shows)."""

import dataclasses
import re
from pathlib import Path

import pytest

from pytest_slm.checks.accuracy import AccuracySettings
from pytest_slm.checks.runtime import LatencySettings
from pytest_slm.options import OPTIONS, Context, OptionError, SlmConfig

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
ROW = re.compile(r"^\| `--(?P<option>[a-z0-9-]+)[^`]*` \| `(?P<ini>[a-z0-9_]+)` \| .* \| (?P<default>[^|]+) \|$")
NOT_OPTIONS = {"rootdir", "worker_count", "process", "item_threads"}  # what the config holds beside the options
HISTORY_SETTINGS = {  # what a stored run says it was judged with; `compare` reads these names
    "alpha",
    "min_drop_points",
    "latency_tolerances",
    "latency_k",
    "repeats",
    "memory_tolerance",
    "limit",
    "threads",
}


def guide_rows() -> dict[str, tuple[str, str]]:
    """The guide's options table: option name -> (ini key, default cell)."""
    rows = {}
    for line in GUIDE.read_text(encoding="utf-8").splitlines():
        if found := ROW.match(line.strip()):
            rows[found["option"]] = (found["ini"], found["default"].strip())
    return rows


def test_the_guide_lists_every_option_once_with_its_ini_key_and_declared_default():
    rows = guide_rows()
    assert set(rows) == set(OPTIONS), (
        f"in the guide only: {set(rows) - set(OPTIONS)}; declared only: {set(OPTIONS) - set(rows)}"
    )
    for name, option in OPTIONS.items():
        ini, shown = rows[name]
        assert ini == option.dest
        if option.default is not None:
            assert shown == f"`{option.default}`", (
                f"--{name}: the guide says {shown}, the declaration `{option.default}`"
            )


@pytest.mark.parametrize("name", [name for name, option in OPTIONS.items() if option.default is not None])
def test_a_declared_default_is_written_only_in_its_declaration(name):
    """`--help` shows it from the declaration; a help text that also says it would drift."""
    assert "default" not in OPTIONS[name].help, f"--{name}'s help repeats its default: {OPTIONS[name].help!r}"


def test_the_config_has_one_field_per_option():
    fields = {f.name for f in dataclasses.fields(SlmConfig)}
    filled = [option.field for option in OPTIONS.values()]
    assert len(filled) == len(set(filled)), "two options fill one field"
    assert fields == set(filled) | NOT_OPTIONS


@pytest.mark.parametrize(
    ("kind", "keywords"),
    [
        ("accuracy", {f.name for f in dataclasses.fields(AccuracySettings)}),
        ("latency", {f.name for f in dataclasses.fields(LatencySettings)}),
        ("history", HISTORY_SETTINGS),
    ],
)
def test_each_kinds_settings_are_fed_by_the_rows(kind, keywords):
    fed = {keyword for option in OPTIONS.values() for feeds, keyword in option.feeds.items() if feeds == kind}
    assert fed == keywords


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("slm-depths", ["0,512", "512"], (0, 512)),
        ("slm-quants", None, ("native",)),
        ("slm-latency-tolerance", "decode=0.2", {"*": 0.1, "decode": 0.2}),
        ("slm-detect-drop", "OFF", None),
        ("slm-fidelity-tail", "p90=0.2", ("p90", 0.2)),
        ("slm-threads", "3", 3),
    ],
)
def test_a_row_parses_its_raw_value(name, raw, expected, tmp_path):
    assert OPTIONS[name].parse(name, raw, Context(tmp_path, 1)) == expected


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("slm-repeats", "x", "--slm-repeats must be a whole number, got 'x'"),
        ("slm-busy", "2", "--slm-busy must be at most 1.0, got '2'"),
        ("slm-devices", ",", "--slm-devices is empty"),
    ],
)
def test_a_row_refuses_a_bad_value_in_one_line(name, raw, message, tmp_path):
    with pytest.raises(OptionError) as refused:
        OPTIONS[name].parse(name, raw, Context(tmp_path, 1))
    assert str(refused.value) == message


def test_help_shows_each_declared_default(pytester):
    result = pytester.runpytest("--help")
    text = re.sub(r"\s+", " ", result.stdout.str())
    assert "timed runs per latency metric, after one warm-up (default 9)" in text
    assert "largest noise limit (k x the combined uncertainty of the medians and the speed probe's scaling)" in text


SHOW_CONFIG = """
from pytest_slm.options import read_config

def test_show(request):
    config = read_config(request.config)
    print("CONFIG", config.repeats, config.latency_tolerances, config.first_run)
"""


@pytest.mark.parametrize(
    ("ini", "args", "shown"),
    [
        ("", (), "CONFIG 9 {'*': 0.1} False"),
        (
            "slm_repeats = 5\nslm_latency_tolerance = decode=0.2\nslm_first_run = true",
            (),
            "CONFIG 5 {'*': 0.1, 'decode': 0.2} True",
        ),
        (
            "slm_repeats = 5\nslm_latency_tolerance = decode=0.2",
            ("--slm-repeats=7", "--slm-latency-tolerance=0.3"),
            "CONFIG 7 {'*': 0.3} False",
        ),
    ],
    ids=["default", "ini-over-default", "command-line-over-ini"],
)
def test_the_command_line_wins_over_the_ini_file_over_the_default(pytester, monkeypatch, ini, args, shown):
    """No model: the item only reads the config, as the plugin does at start-up."""
    monkeypatch.delenv("CI", raising=False)
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(SHOW_CONFIG)
    result = pytester.runpytest("-s", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*{shown}"])


@pytest.mark.parametrize(
    ("ini", "args"), [("", ("--slm-repeats=x",)), ("slm_repeats = x", ())], ids=["command-line", "ini"]
)
def test_a_bad_value_is_a_one_line_usage_error(pytester, ini, args):
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.outlines + result.errlines
    assert "ERROR: --slm-repeats must be a whole number, got 'x'" in output
    assert not any("Traceback" in line for line in output)


def test_a_run_started_from_an_xdist_worker_is_not_a_worker(pytester, monkeypatch):
    """A pytest run that a test starts inherits its xdist worker's environment; the worker count and
    id come from xdist's own worker input, so the run's runtime items are judged, not "under xdist"."""
    for name, value in {"PYTEST_XDIST_WORKER": "gw1", "PYTEST_XDIST_WORKER_COUNT": "2"}.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(
        """
        from pytest_slm.options import read_config

        def test_show(request):
            config = read_config(request.config)
            print("WORKERS", config.worker_count, config.process)
        """
    )
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*WORKERS 1 main"])
