"""A pytest plugin that makes llama-cpp-python report another version, $PYTEST_SLM_REPORTED_VERSION,
and changes nothing else: an upgrade as pytest-slm sees it, without compiling a second release
(benchmarks/two_releases.py compiles one).

Load it with `-p reported_version` and this directory on PYTHONPATH.
"""

import os
from importlib import metadata

import llama_cpp

REPORTED = os.environ["PYTEST_SLM_REPORTED_VERSION"]
_installed_version = metadata.version


def _version(distribution: str) -> str:
    return REPORTED if distribution == "llama-cpp-python" else _installed_version(distribution)


llama_cpp.__version__ = REPORTED
metadata.version = _version
