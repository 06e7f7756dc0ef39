"""Bad input, as users bring it: every case ends in one clear line, the documented exit status, and
no file under the baselines directory or the cache changed (hashed before and after).

Cases are grouped by what goes wrong; cases that need the model share one pytester run.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tree_hashes(*roots: Path) -> dict[str, str]:
    """Every file (and symlink target) under `roots`, by path: what a bad input must leave as it was."""
    hashes = {}
    for root in roots:
        if not root.exists() and not root.is_symlink():
            continue
        for path in sorted([root, *root.rglob("*")]):
            if path.is_symlink():
                hashes[str(path)] = "-> " + str(path.readlink())
            elif path.is_file():
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                hashes[str(path)] = "dir"
    return hashes


def assert_one_line_error(result: pytest.RunResult, status: int, pattern: str) -> None:
    """The run ended with `status`, said `pattern` on a line of its own, and printed no traceback."""
    output = result.outlines + result.errlines
    assert result.ret == status, "\n".join(output)
    assert not any("Traceback" in line or "INTERNALERROR" in line for line in output), "\n".join(output)
    assert any(fnmatch_line(line, pattern) for line in output), f"no line matches {pattern!r}:\n" + "\n".join(output)


def fnmatch_line(line: str, pattern: str) -> bool:
    from fnmatch import fnmatch

    return fnmatch(line, pattern)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user project with the shipped tasks, registry and accuracy suite, on llama.cpp's CPU."""
    shutil.copytree(ROOT / "suites" / "tasks", pytester.path / "suites" / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "suites" / "models.toml", pytester.path / "suites" / "models.toml")
    shutil.copy(ROOT / "suites" / "test_accuracy.py", pytester.path / "test_accuracy.py")
    (pytester.path / "baselines").mkdir()
    (pytester.path / "cache").mkdir()
    pytester.makefile(
        ".toml",
        pyproject="""
[tool.pytest.ini_options]
slm_devices = ["llamacpp-cpu"]
slm_tasks = ["slm_facts"]
slm_limit = "10"
slm_threads = "2"
slm_cache = "cache"
""",
    )
    return pytester


# -- the store --


def _dangling_symlink(path: Path) -> Path:
    (path / "dangling").symlink_to(path / "gone")
    return path / "dangling"


def _a_file(path: Path) -> Path:
    (path / "afile").write_text("not a directory")
    return path / "afile"


@pytest.mark.parametrize(
    ("make", "option", "pattern"),
    [
        (
            _dangling_symlink,
            "--slm-baselines=dangling",
            "*--update-baselines: baselines path *dangling is a symlink to *gone, which does not exist",
        ),
        (_a_file, "--slm-baselines=afile", "*--update-baselines: baselines path *afile is not a directory"),
        (_a_file, "--slm-baselines=afile/sub", "*--update-baselines: baselines path *afile/sub: *afile is a file"),
    ],
)
def test_an_update_into_a_baselines_path_that_cannot_be_a_directory_is_a_usage_error(project, make, option, pattern):
    """Refused at start-up, before any model loads; nothing is created, not even the symlink's target."""
    made = make(project.path)
    roots = (project.path / "baselines", project.path / "cache", made, project.path / "gone")
    before = tree_hashes(*roots)

    result = project.runpytest("--update-baselines", option)

    assert_one_line_error(result, pytest.ExitCode.USAGE_ERROR, pattern)
    assert tree_hashes(*roots) == before
