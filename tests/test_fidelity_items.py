"""Fidelity items end to end: quants derived by llama.cpp's own quantizer from the embedded model,
their next-token distributions compared with its exact float32 copy on real text."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from projects import shipped_project

from pytest_slm.measure.divergence import Fidelity

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

FIGURES = [field.name for field in fields(Fidelity) if field.name != "tokens"]  # every statistic, swapped whole


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Derived files shared by this module's runs: each quant is made once."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture
def project(pytester: pytest.Pytester, cache: Path) -> pytest.Pytester:
    return shipped_project(
        pytester,
        ("test_fidelity.py",),
        f"""
        slm_devices = ["llamacpp-cpu"]
        slm_quants = ["q8_0", "q2_k"]
        slm_threads = "1"
        slm_eval_text = "eval.txt"
        slm_eval_window = "128"
        slm_cache = "{cache}"
        """,
        eval_chars=1500,
    )


def fidelity_file(project: pytest.Pytester, quant: str) -> Path:
    return project.path / "baselines" / "smollm2-135m" / "llamacpp-cpu" / quant / "fidelity.json"


def test_swapped_q8_0_and_q2_k_figures_are_caught_both_ways(project):
    written = project.runpytest_inprocess("--update-baselines")
    written.assert_outcomes(passed=2)
    written.stdout.fnmatch_lines(
        [
            "pytest-slm: making q8_0 of *.gguf with llama.cpp's quantizer (once: cached in *)",
            "pytest-slm: made q8_0 of *.gguf in * s",
        ]
    )
    q8, q2 = (json.loads(fidelity_file(project, quant).read_text()) for quant in ("q8_0", "q2_k"))
    assert q8["reference"] == q2["reference"] == "smollm2-135m-llamacpp-cpu-f32"
    assert q8["mean_kld"] * 10 < q2["mean_kld"] and q8["top1_agreement"] > q2["top1_agreement"]

    project.runpytest_inprocess().assert_outcomes(passed=2)

    for path, source in ((fidelity_file(project, "q8_0"), q2), (fidelity_file(project, "q2_k"), q8)):
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, **{name: source[name] for name in FIGURES}}))
    swapped = project.runpytest_inprocess()
    swapped.assert_outcomes(failed=2)
    swapped.stdout.fnmatch_lines_random(
        [
            "*smollm2-135m-llamacpp-cpu-q8_0: mean KL divergence to the reference is * nats, better than the baseline's *",
            "*smollm2-135m-llamacpp-cpu-q2_k: mean KL divergence to the reference is * nats, worse than the baseline's *",
        ]
    )


def test_a_ceiling_fails_even_when_updating_and_writes_nothing(project):
    result = project.runpytest_inprocess("--update-baselines", "--slm-kld-ceiling=q2_k=0.05", "-k", "q2_k")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["*smollm2-135m-llamacpp-cpu-q2_k: mean KL divergence * nats is over the q2_k ceiling 0.05*"]
    )
    assert not fidelity_file(project, "q2_k").exists()
