"""A pytest plugin that makes llama-cpp-python report another version, $PYTEST_SLM_REPORTED_VERSION,
and changes nothing else: an upgrade as pytest-slm sees it, without compiling a second release
(benchmarks/two_releases.py compiles one).

Load it with `-p reported_version` and this directory on PYTHONPATH, or pass the module to a
pytester run in the test's own process: what it changes it puts back when pytest unconfigures.
"""

import os
from importlib import metadata

import llama_cpp
import pytest

_installed_version = metadata.version
_installed_llama_cpp = llama_cpp.__version__


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    reported = os.environ["PYTEST_SLM_REPORTED_VERSION"]

    def version(distribution: str) -> str:
        return reported if distribution == "llama-cpp-python" else _installed_version(distribution)

    llama_cpp.__version__ = reported
    metadata.version = version


def pytest_unconfigure(config: pytest.Config) -> None:
    llama_cpp.__version__ = _installed_llama_cpp
    metadata.version = _installed_version
