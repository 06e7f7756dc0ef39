"""Each option is declared once, in `pytest_slm.options`: its help, ini type and default. The
guide's options table is checked against those declarations, so neither drifts from the other."""

import re
from pathlib import Path

import pytest

from pytest_slm.options import FLAGS, OPTIONS

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
ROW = re.compile(r"^\| `--(?P<option>[a-z0-9-]+)[^`]*` \| `(?P<ini>[a-z0-9_]+)` \| .* \| (?P<default>[^|]+) \|$")


def guide_rows() -> dict[str, tuple[str, str]]:
    """The guide's options table: option name -> (ini key, default cell)."""
    rows = {}
    for line in GUIDE.read_text(encoding="utf-8").splitlines():
        if found := ROW.match(line.strip()):
            rows[found["option"]] = (found["ini"], found["default"].strip())
    return rows


def test_the_guide_lists_every_option_once_with_its_ini_key_and_declared_default():
    rows = guide_rows()
    declared = {f"slm-{name}" for name in OPTIONS} | set(FLAGS)
    assert set(rows) == declared, f"in the guide only: {set(rows) - declared}; declared only: {declared - set(rows)}"
    for name, (_, _, default) in OPTIONS.items():
        ini, shown = rows[f"slm-{name}"]
        assert ini == "slm_" + name.replace("-", "_")
        if default is not None:
            assert shown == f"`{default}`", f"--slm-{name}: the guide says {shown}, the declaration `{default}`"
    for name in FLAGS:
        assert rows[name][0] == name.replace("-", "_")


@pytest.mark.parametrize("name", [name for name, (_, _, default) in OPTIONS.items() if default is not None])
def test_a_declared_default_is_written_only_in_its_declaration(name):
    """`--help` shows it from the declaration; a help text that also says it would drift."""
    help_text = OPTIONS[name][0]
    assert "default" not in help_text, f"--slm-{name}'s help repeats its default: {help_text!r}"


def test_help_shows_each_declared_default(pytester):
    result = pytester.runpytest("--help")
    text = re.sub(r"\s+", " ", result.stdout.str())
    assert "timed runs per latency metric, after one warm-up (default 9)" in text
    assert "largest noise limit (k x the medians' combined uncertainty)" in text
