"""Backends plug in through the `pytest_slm.backends` entry points, and a runtime is imported only
by a run that uses one of its devices: `pytest --help`, collection and a llama.cpp-only run stay
free of MLX (and the plugin's import free of every runtime)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest

from pytest_slm import backends, options
from pytest_slm.backends import GROUP, all_devices, all_quants, backend, backend_names
from pytest_slm.backends.base import Backend
from pytest_slm.measure.machine import fingerprint, runtime_build

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("mlx", "mlx_lm", "llama_cpp", "lm_eval")
IMPORTED = "import json, sys; print(json.dumps(sorted(m for m in {runtimes} if m in sys.modules)))"


def imported_runtimes(code: str, cwd: Path) -> tuple[list[str], str]:
    """Which runtimes a fresh interpreter has imported after `code`, and what `code` printed."""
    probe = f"{code}\n{IMPORTED.format(runtimes=RUNTIMES)}"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd, check=False)
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.strip().splitlines()
    return json.loads(last), "\n".join(printed)


def test_importing_the_plugin_imports_no_runtime(tmp_path):
    assert imported_runtimes("import pytest_slm.plugin", tmp_path)[0] == []


def test_pytest_help_imports_no_runtime(tmp_path):
    runtimes, printed = imported_runtimes("import pytest; pytest.main(['--help'])", tmp_path)
    assert "--slm-devices" in printed  # the plugin was loaded, options and all
    assert runtimes == []


LLAMA_ONLY = """
def test_scores(slm_model):
    assert slm_model.loglikelihood("The cow says", " moo") < 0
"""
MODULES_AT_EXIT = """
import sys

def pytest_unconfigure(config):
    (config.rootpath / "modules.txt").write_text("\\n".join(sorted(sys.modules)))
"""


def test_a_llama_cpp_only_run_never_imports_mlx(pytester: pytest.Pytester):
    shutil.copytree(ROOT / "suites" / "tasks", pytester.path / "suites" / "tasks")
    shutil.copy(ROOT / "suites" / "models.toml", pytester.path / "suites" / "models.toml")
    pytester.makepyfile(test_llama_only=LLAMA_ONLY)
    pytester.makeconftest(MODULES_AT_EXIT)
    result = pytester.runpytest_subprocess("--slm-models=smollm2-135m", "--slm-devices=llamacpp-cpu", "--slm-threads=1")
    result.assert_outcomes(passed=1)
    modules = set((pytester.path / "modules.txt").read_text().split())
    assert "llama_cpp" in modules  # the model did load
    assert not {"mlx", "mlx_lm"} & modules


# -- the registry -----------------------------------------------------------------------------


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch):
    """Replace the installed entry points of the group with the given ones, for one test."""

    def register(*entries: tuple[str, str]) -> None:
        found = [metadata.EntryPoint(name, value, GROUP) for name, value in entries]
        monkeypatch.setattr(backends.metadata, "entry_points", lambda group: found if group == GROUP else [])
        backends._registered.cache_clear()

    yield register
    backends._registered.cache_clear()


def fake_backend(monkeypatch: pytest.MonkeyPatch, module_name: str, name: str) -> types.ModuleType:
    module = types.ModuleType(module_name)
    module.NAME, module.DEVICES, module.QUANTS = name, (f"{name}-npu",), ("native", f"{name}-q4")
    monkeypatch.setitem(sys.modules, module_name, module)
    return module


def test_this_distribution_declares_both_built_in_backends():
    declared = {entry.name: entry.value for entry in metadata.entry_points(group=GROUP)}
    assert declared == backends.BUILT_IN


def test_the_built_in_backends_declare_what_options_offered_before_the_registry():
    assert all_devices() == options.DEVICES == ("llamacpp-cpu", "llamacpp-cuda", "llamacpp-metal", "mlx-cpu", "mlx-gpu")
    assert all_quants() == options.QUANTS == (
        "native", "f32", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m", "q2_k",
        "mlx-q8", "mlx-q6", "mlx-q4", "mlx-q3", "mlx-q2",
    )  # fmt: skip


def test_each_built_in_backend_declares_the_whole_contract():
    members = set(Backend.__annotations__) | {name for name in vars(Backend) if not name.startswith("_")}
    for name in backend_names():
        assert not [m for m in members if not hasattr(backend(name), m)], name


def test_the_built_ins_are_found_without_entry_points(registered):
    registered()  # a checkout installed before the entry points were declared
    assert backend_names() == ("llamacpp", "mlx") and all_devices() == options.DEVICES


def test_a_third_backend_plugs_in_through_an_entry_point(registered, monkeypatch):
    fake = fake_backend(monkeypatch, "fake_npu_backend", "npu")
    registered(("npu", "fake_npu_backend"), *backends.BUILT_IN.items())
    assert backend_names() == ("llamacpp", "mlx", "npu") and backend("npu") is fake
    assert all_devices() == (*options.DEVICES, "npu-npu")
    assert all_quants() == (*options.QUANTS, "npu-q4")


def test_an_installed_backend_replaces_a_built_in_of_its_name(registered, monkeypatch):
    replacement = fake_backend(monkeypatch, "other_mlx_backend", "mlx")
    registered(("mlx", "other_mlx_backend"))
    assert backend("mlx") is replacement and all_devices()[-1] == "mlx-npu"


def test_a_backend_registered_under_another_name_is_refused(registered, monkeypatch):
    fake_backend(monkeypatch, "misnamed_backend", "tpu")
    registered(("npu", "misnamed_backend"))
    with pytest.raises(TypeError, match="registered as backend 'npu' but declares 'tpu'"):
        backend("npu")
    with pytest.raises(KeyError, match="no backend 'gpu'; registered: llamacpp, mlx, npu"):
        backend("gpu")


def test_the_fingerprint_is_the_hardware_and_the_runtime_build_comes_from_the_backend():
    llama = fingerprint("llamacpp-cpu", 2)
    assert "runtime" not in llama.as_dict() and llama.threads == 2  # a new release is compared, not a new machine
    assert runtime_build("llamacpp-cpu") == f"llama-cpp-python {metadata.version('llama-cpp-python')}"
    assert fingerprint("mlx-gpu", 2).threads == 0  # MLX schedules its GPU itself
