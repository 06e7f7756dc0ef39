"""The documentation: the README is a front page that starts with the two commands, the site builds
with `mkdocs build --strict`, every shell command in it runs (or says why it is not run here, in a
marker the reader does not see), and the user's guide's first project collects the items it promises.

Instructions to this test live in HTML comments on the line before a block, never in the block:
`<!-- docs-test: not run: <why> -->` before a shell block that is not run (`not run as written:`
where a test runs it in another form), `<!-- docs-test: <file> -->` before a file of the guide's
first project. Every other shell block is run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
NOT_RUN = re.compile(r"<!-- docs-test: not run(?: as written)?: \S.{10,} -->")
MARKER = re.compile(r"<!-- docs-test: .* -->")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
THE_TWO_COMMANDS = ["make regress", "make test"]
NOTES = [
    "parity",
    "mlx-linux-cpu",
    "quantization-ladder",
    "latency",
    "evaluation-speed",
    "shipped-tasks",
    "verdict-trust",
    "mlx-checkpoints",
    "upgrade-loop",
    "fidelity-statistics",
    "kv-cache-types",
]


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def bash_blocks() -> list[tuple[str, int, str, str | None]]:
    """(page, block number, body, the docs-test marker on the line before the block or None)."""
    found = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for number, match in enumerate(BLOCK.finditer(text)):
            if match.group(1) in ("bash", "sh", "console", "shell"):
                before = text[: match.start()].removesuffix("\n").rpartition("\n")[2]  # the line above the fence
                marker = before if MARKER.fullmatch(before) else None
                found.append((str(page.relative_to(ROOT)), number, match.group(2), marker))
    return found


def mkdocs() -> str:
    beside = Path(sys.executable).parent / "mkdocs"
    found = str(beside) if beside.exists() else shutil.which("mkdocs")
    if found is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[test]'")
    return found


def test_the_readme_is_a_front_page_that_starts_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200
    assert lines[:3] == ["# pytest-slm", "", "```bash"]
    assert [line.split("#")[0].strip() for line in lines[3:5]] == THE_TWO_COMMANDS and lines[5] == "```"
    text = "\n".join(lines)
    assert "Bad input is one line and changes no\nfile" in text or "Bad input is one line and changes no file" in text
    for page in ["docs/guide.md", "docs/operators.md", *(f"docs/notes/{note}.md" for note in NOTES)]:
        assert f"]({page})" in text, f"the README does not link {page}"
        assert (ROOT / page).exists()


def test_the_user_guide_keeps_the_statements_about_bad_and_trusted_input():
    guide = (DOCS / "guide.md").read_text(encoding="utf-8")
    assert "**Bad input is\none line and changes no file.**" in guide
    assert "**Trusted inputs.**" in guide and "`--slm-task-paths` like `conftest.py`" in guide
    assert "tests/test_bad_input.py" in guide


def test_every_measurement_note_keeps_a_command_beside_its_figures():
    for note in NOTES:
        text = (DOCS / "notes" / f"{note}.md").read_text(encoding="utf-8")
        commands = [body for kind, body in BLOCK.findall(text) if kind == "bash"]
        assert commands, f"{note}.md has no command behind its figures"
        assert all(re.search(r"\.venv/bin/python|pytest", body) for body in commands), note


def test_the_site_builds_without_a_warning(tmp_path):
    built = subprocess.run(
        [
            mkdocs(),
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "operators" / "index.html").exists()
    assert (tmp_path / "site" / "notes" / "parity" / "index.html").exists()


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """The build above is really strict: the same docs with one link to a missing page fail."""
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    guide = tmp_path / "docs" / "guide.md"
    guide.write_text(guide.read_text(encoding="utf-8") + "\nSee [nowhere](notes/nowhere.md).\n", encoding="utf-8")
    built = subprocess.run(
        [mkdocs(), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode != 0 and "nowhere.md" in built.stderr, built.stderr


def test_every_shell_block_is_run_here_or_says_why_not():
    blocks = bash_blocks()
    assert len(blocks) >= 15
    for page, number, body, marker in blocks:
        commands = [line.split("#")[0].strip() for line in body.splitlines() if line.strip()]
        assert "# not run" not in body, (
            f"{page} block {number}: the reader sees this; put the reason in a marker on the line before"
            " the block: <!-- docs-test: not run: <why> -->"
        )
        if page == "README.md" and number == 0:
            # CI runs `make test`; `make regress` is the suite itself
            assert marker is None and commands == THE_TWO_COMMANDS
        elif marker is not None:
            assert NOT_RUN.fullmatch(marker), f"{page} block {number}: say why it is not run: {marker!r}"
    written = sum(
        len(re.findall(r"^<!-- docs-test: not run", p.read_text(encoding="utf-8"), re.MULTILINE)) for p in pages()
    )
    attached = sum(marker is not None and marker.startswith("<!-- docs-test: not run") for *_, marker in blocks)
    assert written == attached, "a `docs-test: not run` marker is not on the line just before a shell block"


RUNNABLE = [
    pytest.param(page, number, body, id=f"{page}#{number}")
    for page, number, body, marker in bash_blocks()
    if marker is None and not (page == "README.md" and number == 0)
]


def test_some_blocks_are_run_and_none_of_them_writes_baselines():
    assert len(RUNNABLE) >= 4
    assert not [param for param in RUNNABLE if "--update-baselines" in param.values[2]]


@pytest.mark.parametrize(("page", "number", "body"), RUNNABLE)
def test_a_documented_command_runs_as_written(page, number, body, tmp_path):
    shell = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", body],
        cwd=ROOT,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so that a timeout ends the commands the shell started too
    )
    try:
        stdout, stderr = shell.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.communicate()
        pytest.fail(f"{page} block {number} ran past 180 s: mark it `<!-- docs-test: not run: <why> -->`")
    assert shell.returncode == 0, f"{page} block {number}:\n{body}\n{stdout[-2000:]}\n{stderr[-2000:]}"


def test_the_guides_first_project_collects_the_items_it_promises(tmp_path):
    """The files the guide tells a user to write, written into an empty project: pytest collects
    one item per test for the embedded model on llamacpp-cpu, and loads no model doing so."""
    guide = (DOCS / "guide.md").read_text(encoding="utf-8")
    files = re.findall(r"<!-- docs-test: (\S+) -->\n```\w+\n(.*?)^```$", guide, re.MULTILINE | re.DOTALL)
    assert [name for name, _ in files] == ["pyproject.toml", "models.toml", "tests/test_my_model.py"]
    for name, body in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body, encoding="utf-8")
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert ids == [
        "tests/test_my_model.py::test_knows_the_capital_of_france[smollm2-135m-llamacpp-cpu-native]",
        "tests/test_my_model.py::test_prefers_the_true_statement[smollm2-135m-llamacpp-cpu-native]",
    ]


def test_the_site_home_shows_the_same_run_as_the_readme():
    """One run's output, on both front pages: the copies cannot drift apart."""

    def tour(text: str) -> str:
        return re.search(r"^```\n\$ \.venv/bin/python -m pytest suites.*?^```$", text, re.MULTILINE | re.DOTALL).group(
            0
        )

    assert tour(README.read_text(encoding="utf-8")) == tour((DOCS / "index.md").read_text(encoding="utf-8"))
