"""What a test receives from `slm_accuracy`, `slm_prompt_set`, `slm_fidelity`, `slm_runtime` and
`slm_parity`: each builds its item's check and hands it to the one core check (`checks.core`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import pytest

from .backends import backend
from .backends.base import DEFAULT_KV_TYPE, BackendError, LoadedModel, Unsupported
from .checks import core
from .checks.accuracy import AccuracyCheck, AccuracySettings
from .checks.core import fail
from .checks.fidelity import FidelityCheck, FidelityGate
from .checks.parity import ParityCheck, ParitySettings
from .checks.runtime import BusyGate, LatencyCheck, LatencySettings, MemoryCheck, timed_runs
from .matrix import FORMATS, Case, ParityCase
from .measure.cold_load import mapped_model_files, measure_load, model_files
from .measure.divergence import Fidelity
from .measure.machine import (
    Fingerprint,
    MemoryUse,
    SpeedProbe,
    Timing,
    fingerprint,
    measure_decode,
    measure_memory,
    measure_prefill,
)
from .models.errors import RegistryError
from .models.handle import SlmModel
from .session import SlmSession
from .tasks.catalog import AccuracyResult, TaskError
from .tasks.prompt_set import PromptSet
from .tasks.prompt_set import evaluate as evaluate_prompt_set

T = TypeVar("T")


def measured(item: str, measure: Callable[[], T]) -> T:
    """What the runtime or the task cannot do with this model (a prompt past its context, task data
    lm-eval cannot read) ends the item in one line, not a traceback."""
    __tracebackhide__ = True
    try:
        return measure()
    except (BackendError, TaskError) as exc:
        fail(f"{item}: {exc}")


class Accuracy:
    """`evaluate(model)` runs the lm-eval task (after the baseline is read: a missing one skips
    before any model run); `check(result)` compares it with the baseline, or writes it."""

    def __init__(self, session: SlmSession, case: Case, item: pytest.Item) -> None:
        self._session = session
        self._case = case
        self._item = item
        self._prepared: core.Prepared[AccuracyResult] | None = None

    def _prepare(self) -> core.Prepared[AccuracyResult]:
        __tracebackhide__ = True
        if self._prepared is None:
            config = self._session.config
            settings = AccuracySettings(**config.settings("accuracy"))
            check = AccuracyCheck(self._case, settings, lambda: self.evaluate(self._session.loader.model(self._case)))
            reference = self._session.matrix.reference_of(self._case)
            if config.relative_gate is not None and reference.model_id != self._case.model_id:  # f32 has no gate
                run = lambda: measured(
                    self._case.id, lambda: self._session.accuracy_results.reference_accuracy(self._case)
                )
                check.reference = reference.model_id, run
            provenance = lambda: self._session.loader.model(self._case).provenance
            self._prepared = core.prepare(
                check, self._session.check_context(self._item, provenance, self._case, lm_eval=True)
            )
        return self._prepared

    def evaluate(self, model: SlmModel) -> AccuracyResult:
        __tracebackhide__ = True
        self._prepare()
        assert self._case.task is not None
        return measured(self._case.id, lambda: self._session.accuracy_results.accuracy(self._case, model))

    def check(self, result: AccuracyResult) -> None:
        __tracebackhide__ = True
        self._session.accuracy_results.remember_outcomes(self._case, result.outcomes)
        core.conclude(self._prepare(), result)


class PromptSetItem:
    """Called with a `prompt_set`: its samples answered by this case's model and checked, judged as
    an accuracy item (after the baseline is read: a missing one skips before any model run)."""

    def __init__(self, session: SlmSession, case: Case, item: pytest.Item) -> None:
        self._session = session
        self._case = case
        self._item = item

    def __call__(self, spec: PromptSet) -> None:
        __tracebackhide__ = True
        session, case = self._session, replace(self._case, task=spec.task)
        check = AccuracyCheck(
            case, AccuracySettings(**session.config.settings("accuracy")), lambda: self._evaluate(spec)
        )
        prepared = core.prepare(check, session.check_context(self._item, lambda: self._model().provenance, self._case))
        result = check.measure()
        session.accuracy_results.remember_outcomes(case, result.outcomes)
        core.conclude(prepared, result)

    def _model(self) -> SlmModel:
        return self._session.loader.model(self._case)

    def _evaluate(self, spec: PromptSet) -> AccuracyResult:
        __tracebackhide__ = True
        limit = self._session.config.limit
        return measured(self._case.id, lambda: evaluate_prompt_set(spec, self._model(), limit))


class FidelityFixture:
    """`check(model)`: the loaded quant's distributions on the evaluation text (and on the depth text
    after each nonzero --slm-depths) against the model's float32 reference, compared with (or
    written as) its baseline."""

    def __init__(self, session: SlmSession, item: pytest.Item) -> None:
        self._session = session
        self._item = item

    def check(self, model: SlmModel) -> None:
        __tracebackhide__ = True
        session, case = self._session, model.case
        reference = session.matrix.reference_of(case)
        config = session.config
        ceiling = config.kld_ceilings.get(case.quant) if case.kv == DEFAULT_KV_TYPE else None  # a quant's, against f32
        gate = FidelityGate(config.fidelity_margin, *config.fidelity_tail, ceiling)
        depths = tuple(depth for depth in config.depths if depth)
        check = FidelityCheck(
            case,
            reference,
            gate,
            lambda: measured(
                case.id, lambda: session.fidelity.against_reference(case.id, case, reference, (0, *depths))
            ),
            self._item.nodeid,
        )
        core.run(check, session.check_context(self._item, lambda: model.provenance, case))


class Runtime:
    """`prefill(model)`, `decode(model)`, `memory(model)`: a cost of the loaded model on this machine,
    compared with the baseline of this machine's fingerprint (or written as it)."""

    def __init__(self, session: SlmSession, item: pytest.Item) -> None:
        self._session = session
        self._item = item

    def prefill(self, model: SlmModel) -> None:
        """Prompt evaluation speed at each --slm-prefill-lengths, after each --slm-depths."""
        __tracebackhide__ = True
        config, tokens = self._session.config, self._tokens(model)
        self._latency(
            model,
            "prefill",
            lambda probe: measure_prefill(
                model.backend, tokens, config.prefill_lengths, config.repeats, config.depths, config.cooldown, probe
            ),
        )

    def decode(self, model: SlmModel) -> None:
        """Generation speed after --slm-decode-prompt tokens, and the time to the first token, after
        each --slm-depths."""
        __tracebackhide__ = True
        config, tokens = self._session.config, self._tokens(model)
        self._latency(
            model,
            "decode",
            lambda probe: measure_decode(
                model.backend,
                tokens,
                config.decode_prompt,
                config.decode_tokens,
                config.repeats,
                config.depths,
                config.cooldown,
                probe,
            ),
        )

    def load(self, case: Case) -> None:
        """Cold and warm load time, and the time to the first token after --slm-decode-prompt tokens
        from a cold start (measure/cold_load.py), with loads of its own. The session's loaded model is closed
        first (the next item loads it again): a file this process maps cannot be evicted."""
        __tracebackhide__ = True
        session, config = self._session, self._session.config
        session.loader.close()
        mapped_before = set(mapped_model_files())
        try:
            request = session.loader.load_request(case)
            load: Callable[[], LoadedModel] = lambda: backend(case.backend).load(request)
            first = SlmModel(case, load())  # the prompt's tokens, and what the record says loaded
        except Unsupported as exc:
            session.loader.unsupported(case, exc)
        except (BackendError, RegistryError) as exc:
            fail(f"{case.model_id}: {exc}")
        mapped = set(mapped_model_files()) - mapped_before  # what this load maps: a derived quant's own file
        files = sorted({*model_files(request.gguf_path, request.mlx_path), *mapped})
        tokens = self._tokens(first)
        first.backend.close()  # a mapped file cannot be evicted
        notes: dict[str, str] = {}

        def measure(_: SpeedProbe | None) -> list[Timing]:  # a load reads the disk: no speed probe
            timings, note = measure_load(load, files, tokens, config.decode_prompt, config.repeats)
            notes.update({t.metric: note for t in timings if note and ".cold" in t.metric})
            return timings

        self._latency(first, "load", measure, notes)

    def memory(self, model: SlmModel) -> None:
        """Weights, KV cache per token and at --slm-kv-contexts and --slm-depths, and peak resident memory."""
        __tracebackhide__ = True
        session, config = self._session, self._session.config
        self._alone("memory")

        def use() -> MemoryUse:
            tokens = self._tokens(model)
            generate = lambda: measure_decode(model.backend, tokens, config.decode_prompt, config.decode_tokens, 1)
            contexts = sorted(set(config.kv_contexts).union(config.depths) - {0})
            return measure_memory(model.backend, tokens, contexts, generate)

        check = MemoryCheck(
            model.case, self._fingerprint(model), config.memory_tolerance, lambda: measured(model.case.id, use)
        )
        core.run(check, session.check_context(self._item, lambda: model.provenance, model.case))

    def _tokens(self, model: SlmModel) -> list[int]:
        return model.tokenize(self._session.texts.eval_text)

    def _latency(
        self,
        model: SlmModel,
        name: str,
        measure: Callable[[SpeedProbe | None], list[Timing]],
        notes: dict[str, str] | None = None,
    ) -> None:
        __tracebackhide__ = True
        session = self._session
        self._alone(name)

        config = session.config
        cooldown = config.cooldown if name != "load" else 0  # the load item does not rest
        gate = BusyGate(config.busy, config.busy_wait, config.strict)
        machine = self._fingerprint(model)
        # the speed probe times the CPU: not what a GPU's timings or a load from disk depend on
        probe = machine.accelerator == "none" and name != "load"
        timed = timed_runs(
            model.case.device,
            cooldown,
            gate,
            model.case.id,
            lambda speed: measured(model.case.id, lambda: measure(speed)),
            notes or {},
            probe,
        )
        settings = LatencySettings(**config.settings("latency"))
        check = LatencyCheck(model.case, name, machine, settings, timed)
        core.run(check, session.check_context(self._item, lambda: model.provenance, model.case))

    def _fingerprint(self, model: SlmModel) -> Fingerprint:
        return fingerprint(model.case.device, self._session.config.threads)

    def _alone(self, name: str) -> None:
        workers = self._session.config.worker_count
        if workers > 1:
            message = (
                f"{name} is measured alone: with {workers} xdist workers the timings would include each other;"
                " run these items with -n 0 (e.g. pytest suites -m slm_runtime -n 0)"
            )
            core.not_judged(core.UNDER_XDIST, message, self._session.config.strict)


class Parity:
    """`measure()` runs both runtimes on the evaluation text; `check(fidelity)` applies the thresholds."""

    def __init__(self, session: SlmSession, case: ParityCase, item: pytest.Item) -> None:
        self._session = session
        self._case = case
        self._item = item

    def measure(self) -> Fidelity:
        __tracebackhide__ = True
        reference, candidate = self._case.sides
        return measured(
            self._case.id, lambda: self._session.fidelity.against_reference(self._case.id, candidate, reference)[0]
        )

    def check(self, fidelity: Fidelity) -> None:
        __tracebackhide__ = True
        session, config = self._session, self._session.config
        top1, kld = (
            (config.formats_top1, config.formats_kld)
            if self._case.kind == FORMATS
            else (config.parity_top1, config.parity_kld)
        )
        settings = ParitySettings(top1, kld, config.alpha, config.min_drop_points)
        check = ParityCheck(
            self._case, settings, self.measure, lambda: session.accuracy_results.runtime_outcomes(self._case)
        )
        core.conclude(core.prepare(check, session.check_context(self._item, dict)), fidelity)  # nothing stored
