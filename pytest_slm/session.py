"""State across one pytest run: the matrix, loaded models, baselines written, summary rows."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from .backends import backend as _backend
from .backends.base import BackendError, DeviceStatus, LoadRequest, Unsupported
from .store.baselines import BaselineError, BaselineKey, BaselineStore, writable_dir_problem
from .fidelity import Fidelity, compare, windows
from .matrix import REFERENCE_QUANT, Case, ParityCase, TaskSpec, build_cases, build_parity_cases, fidelity_reference
from .model import SlmModel
from .options import DEVICES, SlmConfig
from .registry import ModelEntry, RegistryError, entry_for_path, load_registry
from .regression import (
    LatencySettings,
    ParitySettings,
    Row,
    Settings,
    baseline_key,
    baseline_record,
    compare_latency,
    fidelity_key,
    fidelity_record,
    judge,
    judge_fidelity,
    judge_memory,
    judge_parity,
    latency_failure,
    latency_record,
    latency_rows,
    memory_record,
    runtime_key,
)
from .runtime import Timing, fingerprint, load_average, measure_decode, measure_memory, measure_prefill
from .stats import compare_outcomes
from .tasks import AccuracyResult, TaskCatalog, TaskError


@dataclass
class SlmSession:
    config: SlmConfig
    models: dict[str, ModelEntry]
    catalog: TaskCatalog
    store: BaselineStore
    progress: Callable[[str], None] = lambda line: None  # shown live in the terminal
    rows: list[dict[str, Any]] = field(default_factory=list)
    parity_rows: list[dict[str, Any]] = field(default_factory=list)
    fidelity_rows: list[dict[str, Any]] = field(default_factory=list)
    runtime_rows: list[dict[str, Any]] = field(default_factory=list)
    memory_rows: list[dict[str, Any]] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)  # {"path", "changed"}
    loads: list[dict[str, str]] = field(default_factory=list)  # {"process", "model"}: one per model load
    _loaded: dict[str, SlmModel | BaseException] = field(default_factory=dict)
    _reference_logits: dict[str, tuple[list[int], list[np.ndarray]]] = field(default_factory=dict)
    _outcomes: dict[str, dict[str, int]] = field(default_factory=dict)  # per accuracy item, for parity

    # what a pytest-xdist worker sends the controller: plain data, so execnet can carry it
    SHARED = ("rows", "parity_rows", "fidelity_rows", "runtime_rows", "memory_rows", "writes", "loads")

    def results(self) -> dict[str, list[dict[str, Any]]]:
        """Everything measured, by report section."""
        return {
            "items": self.rows,
            "parity": self.parity_rows,
            "fidelity": self.fidelity_rows,
            "runtime": self.runtime_rows,
            "memory": self.memory_rows,
            "baseline_writes": self.writes,
        }

    @classmethod
    def start(cls, config: SlmConfig, progress: Callable[[str], None] = lambda line: None) -> SlmSession:
        """Everything that can be checked without loading a model, checked now: a bad name is a
        usage error before any item runs."""
        try:
            registry = load_registry(config.registry_path)
            models = {}
            for name in config.models or tuple(registry):
                if name in registry:
                    models[name] = registry[name]
                elif name.endswith(".gguf") or Path(name).exists():
                    entry = entry_for_path(name)
                    models[entry.name] = entry
                else:
                    known = ", ".join(sorted(registry)) or "none"
                    raise RegistryError(f"unknown model {name!r}; known models: {known} (or give a path to a .gguf file)")
            catalog = TaskCatalog(config.task_paths)
            catalog.check(spec.name for spec in config.tasks or ())
        except (RegistryError, TaskError) as exc:
            raise pytest.UsageError(str(exc)) from None
        if config.update and (problem := writable_dir_problem(config.baselines_dir)):
            raise pytest.UsageError(f"--update-baselines: {problem}")
        return cls(config, models, catalog, BaselineStore(config.baselines_dir), progress)

    # -- the matrix ---------------------------------------------------------------------------

    @cached_property
    def device_statuses(self) -> dict[str, DeviceStatus]:
        statuses = {}
        needed = [*(self.config.devices or DEVICES), *(fidelity_reference(m).device for m in self.models)]
        for backend in {d.split("-")[0] for d in needed}:  # probing imports a runtime: only those this run needs
            statuses.update({s.name: s for s in _backend(backend).device_statuses()})
        return statuses

    def devices(self) -> tuple[str, ...]:
        if self.config.devices is not None:
            return self.config.devices
        return tuple(d for d in DEVICES if self.device_statuses[d].available)

    def tasks(self) -> tuple[TaskSpec, ...]:
        return self.config.tasks or tuple(TaskSpec(name) for name in sorted(self.catalog.shipped))

    def cases(self, with_tasks: bool) -> list[tuple[Case, str | None]]:
        """Every case, with a skip reason for those this machine cannot run."""
        cases = build_cases(self.models, self.devices(), self.config.quants, self.tasks() if with_tasks else None)
        return [(case, self._skip_reason(case)) for case in cases]

    def parity_cases(self) -> list[tuple[ParityCase, str | None]]:
        cases = build_parity_cases(self.models, self.devices())
        return [(case, self._skip_reason(case.sides[0]) or self._skip_reason(case.sides[1])) for case in cases]

    def _skip_reason(self, case: Case) -> str | None:
        status = self.device_statuses[case.device]
        quants = _backend(case.backend).QUANTS
        if not status.available:
            return f"{case.device} unavailable: {status.reason}"
        if case.quant not in quants:
            return f"{case.backend} cannot make quant {case.quant!r} (its quants: {', '.join(quants)})"
        return None

    # -- models -------------------------------------------------------------------------------

    def model(self, case: Case) -> SlmModel:
        """One load per (model, device, quant); the previous one is freed, since items are grouped."""
        cached = self._loaded.get(case.model_id)
        if cached is None:
            for other in [k for k, v in self._loaded.items() if isinstance(v, SlmModel)]:
                self._loaded.pop(other).backend.close()  # type: ignore[union-attr]
            cached = self._loaded[case.model_id] = self._load(case)
            self.loads.append({"process": os.environ.get("PYTEST_XDIST_WORKER", "main"), "model": case.model_id})
        if isinstance(cached, Unsupported):
            pytest.skip(f"{case.model_id}: {cached}")
        if isinstance(cached, BaseException):
            pytest.fail(f"{case.model_id}: {cached}", pytrace=False)
        return cached

    def _load(self, case: Case) -> SlmModel | BaseException:
        entry = self.models[case.model]
        try:
            backend = _backend(case.backend)
            request = LoadRequest(
                model_name=case.model,
                gguf_path=entry.gguf_path(),
                mlx_path=entry.mlx_path(),
                device=case.device.split("-", 1)[1],
                quant=case.quant,
                threads=self.config.threads,
                cache_dir=self.config.cache_dir,
                progress=self.progress,
            )
            return SlmModel(replace(case, task=None), backend.load(request))  # shared by the model's items
        except (BackendError, RegistryError) as exc:
            return exc

    def close(self) -> None:
        for loaded in self._loaded.values():
            if isinstance(loaded, SlmModel):
                loaded.backend.close()
        self._loaded.clear()

    # -- baselines ----------------------------------------------------------------------------

    def _shown(self, path: Path) -> str:
        """Relative to the rootdir where it lies there: the form a reviewer sees in the diff."""
        try:
            return str(path.relative_to(self.config.rootdir))
        except ValueError:
            return str(path)

    def _baseline(self, key: BaselineKey, what: str, hint: str = "create it with --update-baselines") -> dict[str, Any] | None:
        """Read before measuring: a missing baseline skips the item (fails it with --slm-strict)
        without spending a model run; None when updating."""
        if self.config.update:
            return None
        try:
            baseline = self.store.read(key)
        except BaselineError as exc:
            pytest.fail(str(exc), pytrace=False)
        if baseline is None:
            reason = f"no {what} ({self._shown(self.store.path(key))}); {hint}"
            if self.config.strict:
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
        return baseline

    def baseline_for(self, case: Case) -> dict[str, Any] | None:
        return self._baseline(baseline_key(case), f"baseline for {case.id}")

    def check_accuracy(self, case: Case, result: AccuracyResult, baseline: dict[str, Any] | None) -> None:
        __tracebackhide__ = True
        self._outcomes[case.id] = result.outcomes
        if self.config.update:
            self._write(baseline_key(case), baseline_record(case, result, self.model(case).provenance))
            self.rows.append(Row.of(case, result.accuracy, None, "updated").as_dict())
            return
        assert baseline is not None
        settings = Settings(self.config.alpha, self.config.min_drop_points, self.config.allow_prompt_change)
        row, failure = judge(case, result, baseline, settings)
        self.rows.append(row.as_dict())
        if failure:
            pytest.fail(failure, pytrace=False)

    def _write(self, key: BaselineKey, record: dict[str, Any]) -> None:
        changed = self.store.write(key, record)
        self.writes.append({"path": self._shown(self.store.path(key)), "changed": changed})

    # -- runtime costs ------------------------------------------------------------------------

    def _runtime_baseline(self, case: Case, kind: str) -> dict[str, Any] | None:
        """This machine's baseline; skips (or fails, with --slm-strict) before measuring when there
        is none, and when other xdist workers would share the cores being timed."""
        if self.config.worker_count > 1:
            pytest.skip(
                f"{kind} is measured alone: with {self.config.worker_count} xdist workers the timings would"
                " include each other; run these items with -n 0 (e.g. pytest suites -m slm_runtime -n 0)"
            )
        machine = fingerprint(case.device, self.config.threads)
        return self._baseline(
            runtime_key(case, kind, machine),
            f"{kind} baseline for {case.model_id} on this machine ({machine})",
            "run --update-baselines on this machine to create it",
        )

    @cached_property
    def _eval_text(self) -> str:
        """The project's own text: what parity and fidelity compare and latency prompts are cut from;
        read once per session."""
        try:
            return self.config.eval_text.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            pytest.fail(f"cannot read the evaluation text {self.config.eval_text}: {exc}", pytrace=False)

    def check_latency(self, model: SlmModel, kind: str) -> None:
        """Measure; when slower than the baseline, measure once more and fail only if it holds."""
        __tracebackhide__ = True
        case = model.case
        baseline = self._runtime_baseline(case, kind)
        tokens = model.tokenize(self._eval_text)
        config = self.config

        def measure() -> list[Timing]:
            if kind == "prefill":
                return measure_prefill(model.backend, tokens, config.prefill_lengths, config.repeats)
            return measure_decode(model.backend, tokens, config.decode_prompt, config.decode_tokens, config.repeats)

        load = load_average()
        timings = measure()
        machine = fingerprint(case.device, config.threads)
        if baseline is None:
            self._write(runtime_key(case, kind, machine), latency_record(case, machine, timings, load, model.provenance))
            self.runtime_rows += latency_rows(case, [(timings, {})], None, load)
            return
        settings = LatencySettings(config.latency_tolerances, config.latency_k)
        slowdowns, problem = compare_latency(timings, baseline, settings)
        if problem:
            self.runtime_rows += latency_rows(case, [(timings, {})], baseline, load)
            pytest.fail(f"{case.id}: {problem} Refresh the baseline with --update-baselines.", pytrace=False)
        rounds = [(timings, slowdowns)]
        if any(s.regressed for s in slowdowns.values()):
            confirmation = measure()
            rounds.append((confirmation, compare_latency(confirmation, baseline, settings)[0]))
        rows = latency_rows(case, rounds, baseline, load)
        self.runtime_rows += rows
        if failure := latency_failure(case, machine, rows, [s for _, s in rounds]):
            pytest.fail(failure, pytrace=False)

    def check_memory(self, model: SlmModel) -> None:
        __tracebackhide__ = True
        case, config = model.case, self.config
        baseline = self._runtime_baseline(case, "memory")
        tokens = model.tokenize(self._eval_text)
        use = measure_memory(
            model.backend,
            tokens,
            config.kv_contexts,
            lambda: measure_decode(model.backend, tokens, config.decode_prompt, config.decode_tokens, 1),
        )
        row, failure = judge_memory(case, use, baseline, config.memory_tolerance)
        self.memory_rows.append(row)
        if failure:
            pytest.fail(failure, pytrace=False)
        if baseline is None:
            machine = fingerprint(case.device, config.threads)
            self._write(runtime_key(case, "memory", machine), memory_record(case, machine, use, model.provenance))

    # -- distributions: parity and fidelity ---------------------------------------------------

    def _windows_logits(self, case: Case) -> tuple[list[int], list[np.ndarray]]:
        """The evaluation text's tokens and each window's logits; a reference's are kept for the
        session, since every quant of the model is compared with them."""
        cached = self._reference_logits.get(case.model_id)
        if cached is not None:
            return cached
        backend = self.model(case).backend
        tokens = backend.tokenize(self._eval_text)
        measured = tokens, [backend.logits(chunk) for chunk in windows(tokens, self.config.eval_window)]
        if case.quant == REFERENCE_QUANT:
            self._reference_logits[case.model_id] = measured
        return measured

    def _against_reference(self, item: str, candidate: Case, reference: Case) -> Fidelity:
        """The candidate first, since its items have just run and it is still loaded; then the
        reference, loaded only the first time."""
        tokens, candidate_logits = self._windows_logits(candidate)
        reference_tokens, reference_logits = self._windows_logits(reference)
        if reference_tokens != tokens:
            pytest.fail(f"{item}: the two runtimes tokenize the evaluation text differently", pytrace=False)
        chunks = windows(tokens, self.config.eval_window)
        return compare(zip(reference_logits, candidate_logits, chunks))

    def measure_parity(self, case: ParityCase) -> Fidelity:
        reference, candidate = case.sides
        return self._against_reference(case.id, candidate, reference)

    def check_fidelity(self, model: SlmModel) -> None:
        """The quant's next-token distributions against the model's exact float32 values."""
        __tracebackhide__ = True
        case, config = model.case, self.config
        baseline = self._baseline(fidelity_key(case), f"fidelity baseline for {case.id}")
        reference = fidelity_reference(case.model)
        if problem := self._skip_reason(reference):
            pytest.skip(f"the reference {reference.model_id} cannot run here: {problem}")
        fidelity = self._against_reference(case.id, case, reference)
        row, failure = judge_fidelity(case, fidelity, baseline, config.fidelity_margin, config.kld_ceilings.get(case.quant))
        self.fidelity_rows.append(row)
        if failure:
            pytest.fail(failure, pytrace=False)
        if baseline is None:
            self._write(fidelity_key(case), fidelity_record(case, reference, fidelity, model.provenance))

    def check_parity(self, case: ParityCase, fidelity: Fidelity) -> None:
        __tracebackhide__ = True
        config = self.config
        tasks = {}
        for task in self.tasks():  # both runtimes on the shipped file, where both ran the task this session
            mlx_run = self._outcomes.get(Case(case.model, case.candidate, "native", task).id)
            llama_run = self._outcomes.get(Case(case.model, case.reference, "native", task).id)
            if mlx_run is not None and llama_run is not None:
                tasks[str(task)] = compare_outcomes(llama_run, mlx_run)
        settings = ParitySettings(config.parity_top1, config.parity_kld, config.alpha, config.min_drop_points)
        row, failure = judge_parity(case.id, fidelity, tasks, settings)
        self.parity_rows.append(row)
        if failure:
            pytest.fail(failure, pytrace=False)

