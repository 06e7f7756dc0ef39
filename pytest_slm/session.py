"""State across one pytest run: the matrix, loaded models, what was measured and written. No
verdicts: those live in the item checks (`checks/`)."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import pytest

from .backends import backend, kv_types
from .backends.artifacts import content_digest
from .backends.base import CONTEXT_LENGTH, DEFAULT_KV_TYPE, BackendError, DeviceStatus, LoadRequest, Unsupported
from .checks.accuracy import AccuracyRow
from .checks.core import CheckContext, Policy, fail
from .checks.fidelity import FidelityRow, ParityRow
from .checks.runtime import LatencyRow, MemoryRow
from .matrix import REFERENCE_QUANT, Case, ParityCase, TaskSpec, build_cases, build_parity_cases, fidelity_reference
from .measure import reference
from .measure.divergence import Fidelity, Reference, TopK, compare, depth_windows, windows
from .measure.machine import runtime_build
from .models.errors import RegistryError
from .models.handle import SlmModel
from .models.registry import ModelEntry, select_models, shown
from .options import DEVICES, SlmConfig
from .provenance import Change, counted, system, version
from .stats import PairedComparison, compare_outcomes
from .store.atomic import sweep_stale_temporaries
from .store.baselines import BaselineStore, writable_dir_problem
from .store.migrate import COMMAND as MIGRATE_COMMAND
from .store.migrate import legacy_records
from .tasks.catalog import AccuracyResult, TaskCatalog, TaskError, evaluate

if TYPE_CHECKING:
    import numpy as np

ROW_TYPES = {row.SECTION: row for row in (AccuracyRow, ParityRow, FidelityRow, LatencyRow, MemoryRow)}


@dataclass
class SlmSession:
    config: SlmConfig
    models: dict[str, ModelEntry]
    catalog: TaskCatalog
    store: BaselineStore
    progress: Callable[[str], None] = lambda line: None  # shown live in the terminal
    rows: list[Any] = field(default_factory=list)  # the checks' typed rows, in the order measured
    writes: list[dict[str, Any]] = field(default_factory=list)  # {"path", "changed"}
    changes: dict[str, list[list[str]]] = field(
        default_factory=dict
    )  # per item: [name, before, now] since its baseline
    loads: list[dict[str, str]] = field(default_factory=list)  # {"process", "model"}: one per model load
    _loaded: dict[str, SlmModel | BaseException] = field(default_factory=dict)
    _reference_logits: dict[tuple[str, int], tuple[list[int], list[Reference]]] = field(
        default_factory=dict
    )  # by (model, depth)
    _outcomes: dict[str, dict[str, int]] = field(default_factory=dict)  # per accuracy item, for parity
    _accuracy_results: dict[str, AccuracyResult] = field(default_factory=dict)  # per accuracy case id

    @classmethod
    def start(cls, config: SlmConfig, progress: Callable[[str], None] = lambda line: None) -> SlmSession:
        """Everything that can be checked without loading a model, checked now: a bad name is a
        usage error before any item runs."""
        try:
            models = select_models(config.registry_path, config.models)
            catalog = TaskCatalog(config.task_paths)
            catalog.check(spec.name for spec in config.tasks or ())
        except (RegistryError, TaskError) as exc:
            raise pytest.UsageError(str(exc)) from None
        if config.eval_text.exists() and (problem := eval_text_problem(config.eval_text)):
            raise pytest.UsageError(problem)
        if (
            any(config.depths)
            and config.depth_text.exists()
            and (problem := eval_text_problem(config.depth_text, DEPTH_TEXT))
        ):
            raise pytest.UsageError(problem)
        if config.update and (problem := writable_dir_problem(config.baselines_dir)):
            raise pytest.UsageError(f"--update-baselines: {problem}")
        if legacy := next(legacy_records(config.baselines_dir), None):
            raise pytest.UsageError(
                f"{legacy[0]}: runtime baselines are keyed by the runtime's version (an older pytest-slm), so an upgrade"
                f" would find none: move them to keys of the hardware with: {MIGRATE_COMMAND} {config.baselines_dir}"
            )
        sweep_stale_temporaries(config.baselines_dir)
        return cls(config, models, catalog, BaselineStore(config.baselines_dir), progress)

    # -- what xdist workers send the controller: plain data ----------------------------------

    def shared(self) -> dict[str, Any]:
        rows = [(row.SECTION, asdict(row)) for row in self.rows]
        return {
            "rows": rows,
            "writes": self.writes,
            "loads": self.loads,
            "outcomes": self._outcomes,
            "changes": self.changes,
        }

    def absorb(self, shared: dict[str, Any]) -> None:
        self.rows += [ROW_TYPES[section](**fields) for section, fields in shared.get("rows", [])]
        self.writes += shared.get("writes", [])
        self.loads += shared.get("loads", [])
        self._outcomes.update(shared.get("outcomes", {}))
        self.changes.update(shared.get("changes", {}))

    def results(self) -> dict[str, Any]:
        """Everything measured, by report section, as plain data; and the writes and what changed."""
        sections: dict[str, list[dict[str, Any]]] = {section: [] for section in ROW_TYPES}
        for row in self.rows:
            sections[row.SECTION].append(asdict(row))
        return {**sections, "baseline_writes": self.writes, "changed": counted(self.changes)}

    # -- the matrix ---------------------------------------------------------------------------

    @cached_property
    def device_statuses(self) -> dict[str, DeviceStatus]:
        """Probing imports a runtime: only the backends this run needs (a fidelity reference may be on another)."""
        devices = self.config.devices or DEVICES
        needed = [*devices, *(self.reference_of(Case(m, d, "native")).device for m in self.models for d in devices)]
        statuses = {}
        for name in dict.fromkeys(d.split("-")[0] for d in needed):
            statuses.update({s.name: s for s in backend(name).device_statuses()})
        return statuses

    def devices(self) -> tuple[str, ...]:
        if self.config.devices is not None:
            return self.config.devices
        return tuple(d for d in DEVICES if self.device_statuses[d].available)

    def tasks(self) -> tuple[TaskSpec, ...]:
        return self.config.tasks or tuple(TaskSpec(name) for name in sorted(self.catalog.shipped))

    def cases(self, with_tasks: bool) -> list[tuple[Case, str | None]]:
        """Every case, with a skip reason for those this machine cannot run."""
        config = self.config
        cases = build_cases(
            self.models, self.devices(), config.quants, self.tasks() if with_tasks else None, config.kv_types
        )
        return [(case, self.skip_reason(case)) for case in cases]

    def parity_cases(self) -> list[tuple[ParityCase, str | None]]:
        cases = build_parity_cases(self.models, self.devices())
        return [(case, self.skip_reason(case.sides[0]) or self.skip_reason(case.sides[1])) for case in cases]

    def empty_reason(self, with_tasks: bool = False, parity: bool = False) -> str:
        """Why the matrix of a test has no case at all."""
        if not self.models:
            return "no model selected: name one with --slm-models (a registry name, a .gguf file or an MLX directory)"
        if not self.devices():
            reasons = "; ".join(f"{name}: {status.reason}" for name, status in self.device_statuses.items())
            return f"no device available here ({reasons})"
        if parity:
            return f"parity needs a llama.cpp and an MLX device on the same hardware; selected: {', '.join(self.devices())}"
        if with_tasks and not self.tasks():
            return "no task selected: name one with --slm-tasks"
        return "every case of this test is excluded (the fidelity reference is not compared with itself)"

    def skip_reason(self, case: Case) -> str | None:
        status = self.device_statuses[case.device]
        quants = backend(case.backend).QUANTS
        if not status.available:
            return f"{case.device} unavailable: {status.reason}"
        if case.quant not in quants:
            return f"{case.backend} cannot make quant {case.quant!r} (its quants: {', '.join(quants)})"
        if case.kv not in (types := kv_types(case.backend)):
            return (
                f"{case.model} on {case.backend}: no {case.kv} KV cache (its KV types: {', '.join(types)};"
                " a runtime's own KV quantization, as mlx-lm's kv_bits, is not driven by --slm-kv-types)"
            )
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
            self.unsupported(case, cached)
        if isinstance(cached, BaseException):
            fail(f"{case.model_id}: {cached}")
        return cached

    def unsupported(self, case: Case, reason: Unsupported) -> NoReturn:
        """A combination the runtime cannot run is a skip where nothing was ever measured for it; where
        baselines are stored for it, the runtime lost a model the team ships: every item fails."""
        __tracebackhide__ = True
        stored = self.config.baselines_dir / case.model / case.device / case.variant
        if any(stored.rglob("*.json")):
            fail(
                f"{case.model_id}: {reason}; baselines are stored for it ({self._shown(stored)}):"
                f" {runtime_build(case.device)} no longer runs a model that was measured"
            )
        pytest.skip(f"{case.model_id}: {reason}")

    def _load(self, case: Case) -> SlmModel | BaseException:
        try:
            return SlmModel(
                replace(case, task=None), backend(case.backend).load(self.load_request(case))
            )  # shared by the model's items
        except (BackendError, RegistryError) as exc:
            return exc

    def load_request(self, case: Case) -> LoadRequest:
        """Only the source the backend loads is resolved (a hub source is a download): its first
        of the model's sources, or the one the case names. Load-time items load it themselves."""
        entry = self.models[case.model]
        kind = next((k for k in backend(case.backend).SOURCES if getattr(entry, k) and case.source in (None, k)), None)
        return LoadRequest(
            model_name=case.model,
            gguf_path=entry.gguf_path(self.config.cache_dir) if kind == "gguf" else None,
            mlx_path=entry.mlx_path() if kind == "mlx" else None,
            device=case.device.split("-", 1)[1],
            quant=case.quant,
            kv_type=case.kv,
            threads=self.config.threads,
            cache_dir=self.config.cache_dir,
            progress=self.progress,
        )

    def close(self) -> None:
        """Close every loaded model; an item asking for one later loads it again."""
        for loaded in self._loaded.values():
            if isinstance(loaded, SlmModel):
                loaded.backend.close()
        self._loaded.clear()

    # -- what checks need from the run --------------------------------------------------------

    def check_context(
        self,
        item: pytest.Item,
        provenance: Callable[[], dict[str, str]],
        case: Case | None = None,
        lm_eval: bool = False,
    ) -> CheckContext:
        """Rows go to the summary and to the item's own JUnit properties; writes to the summary; what
        changed since the item's baseline to the summary's first line."""
        from .report import junit_properties

        def add_rows(rows: Sequence[Any]) -> None:
            self.rows += rows
            for row in rows:
                item.user_properties += junit_properties(asdict(row))

        def full_provenance() -> dict[str, str]:
            extra = {"lm_eval": version("lm-eval")} if lm_eval else {}
            extra |= self._case_provenance(case) if case is not None else {}
            return {
                **provenance(),
                **extra,
                **system(),
                "pytest_slm": version("pytest-slm"),
                "date": dt.date.today().isoformat(),
            }

        def add_changes(found: Sequence[Change]) -> None:
            self.changes[item.nodeid] = [[c.name, str(c.before), str(c.now)] for c in found]

        config = self.config
        return CheckContext(
            store=self.store,
            policy=Policy(config.update, config.strict, config.update_partial, config.first_run),
            nodeid=item.nodeid,
            provenance=full_provenance,
            add_rows=add_rows,
            add_write=lambda path, changed: self.writes.append({"path": self._shown(path), "changed": changed}),
            add_changes=add_changes,
            shown=self._shown,
        )

    def _case_provenance(self, case: Case) -> dict[str, str]:
        """The runtime's build on the case's device and the model file's digest: what a figure of the
        case depends on besides the hardware and the versions the backend reports."""
        found = {"runtime_build": runtime_build(case.device)}
        entry = self.models[case.model]
        try:
            source = entry.gguf_path(self.config.cache_dir) if entry.gguf else entry.mlx_path()
        except RegistryError:
            source = None
        if source is not None and source.exists():
            found["model_sha256"] = content_digest(source)
        return found

    def _shown(self, path: Path) -> str:
        """Relative to the rootdir where it lies there: the form a reviewer sees in the diff."""
        try:
            return str(path.relative_to(self.config.rootdir))
        except ValueError:
            return str(path)

    @cached_property
    def eval_text(self) -> str:
        """The project's own text: what parity and fidelity compare and latency prompts are cut
        from; read once. Checked at start-up when it exists, else here, by the items that need it."""
        if problem := eval_text_problem(self.config.eval_text):
            fail(problem)
        return self.config.eval_text.read_text(encoding="utf-8")

    @cached_property
    def depth_text(self) -> str:
        """The long text fidelity items read at a nonzero --slm-depths; checked like the evaluation text."""
        if problem := eval_text_problem(self.config.depth_text, DEPTH_TEXT):
            fail(problem)
        return self.config.depth_text.read_text(encoding="utf-8")

    def remember_outcomes(self, case: Case, outcomes: dict[str, int]) -> None:
        self._outcomes[case.id] = outcomes

    def outcomes(self) -> dict[str, dict[str, int]]:
        """Per accuracy item (case id), its per-sample outcomes: what the history stores."""
        return dict(self._outcomes)

    def accuracy(self, case: Case, model: SlmModel | None = None) -> AccuracyResult:
        """The case's task run once a session: its accuracy item and the relative gate of every
        quant measured against it share the run, whichever comes first."""
        cached = self._accuracy_results.get(case.id)
        if cached is None:
            assert case.task is not None
            cached = evaluate(model or self.model(case), case.task, self.config.limit, self.catalog)
            self._accuracy_results[case.id] = cached
        return cached

    def reference_accuracy(self, case: Case) -> AccuracyResult:
        """The reference's run of the case's task (same shots, same --slm-limit), for the relative gate."""
        reference = replace(self.reference_of(case), task=case.task)
        if problem := self.skip_reason(reference):
            fail(f"{case.id}: the relative gate's reference {reference.model_id} cannot run here: {problem}")
        return self.accuracy(reference)

    def runtime_outcomes(self, case: ParityCase) -> dict[str, PairedComparison]:
        """Both runtimes' outcomes on the shipped file, paired, for the tasks both ran this session."""
        tasks = {}
        for task in self.tasks():
            mlx_run = self._outcomes.get(replace(case.sides[1], task=task).id)
            llama_run = self._outcomes.get(Case(case.model, case.reference, "native", task).id)
            if mlx_run is not None and llama_run is not None:
                tasks[str(task)] = compare_outcomes(llama_run, mlx_run)
        return tasks

    def _windows_logits(self, case: Case, depth: int = 0, full: bool = False) -> tuple[list[int], list[Reference]]:
        """The text's tokens and each window's logits (the cached reference's: its top k): the
        evaluation text's windows at depth 0, the depth text's after `depth` of its tokens otherwise
        (see `_windows`); a reference's are kept for the session, since every quant of the model is
        compared with them. `full`: a candidate's, always every logit (an f32 candidate on another
        device than the reference's is measured, not read from the reference's top-k cache)."""
        cached = self._reference_logits.get((case.model_id, depth))
        if cached is not None and not (full and any(isinstance(window, TopK) for window in cached[1])):
            return cached
        shown = case.model_id + (f" at depth {depth}" if depth else "")
        # the f32 reference, cached on disk
        is_reference = not full and case.quant == REFERENCE_QUANT and case.kv == DEFAULT_KV_TYPE
        stored_at = self._reference_cache_path(case, depth) if is_reference else None
        if stored_at is not None and (stored := reference.load(stored_at)) is not None:
            self.progress(f"fidelity reference {shown}: reused from the cache ({self._shown(stored_at)})")
            self._reference_logits[case.model_id, depth] = stored.tokens, list(stored.windows)
            return self._reference_logits[case.model_id, depth]
        started = time.perf_counter()
        backend_model = self.model(case).backend
        tokens = backend_model.tokenize(self.depth_text if depth else self.eval_text)
        chunks = self._windows(case.model_id, tokens, depth)
        if depth:  # one pass: the context once, then the windows, each continuing the last
            rows = backend_model.logits([token for chunk in chunks for token in chunk], context=tokens[:depth])
            logits = [rows[i * len(chunk) : (i + 1) * len(chunk)] for i, chunk in enumerate(chunks)]
        else:
            logits = [backend_model.logits(chunk) for chunk in chunks]
        measured: tuple[list[int], list[Reference]] = tokens, list(logits)
        if stored_at is not None:
            kept = reference.keep(tokens, chunks, logits)
            measured = tokens, list(kept.windows)  # the figures every later run, reading the file, computes
            try:
                reference.save(stored_at, kept)
            except OSError as exc:
                self.progress(f"fidelity reference {shown}: cannot cache it in {self._shown(stored_at)}: {exc}")
            else:
                seconds = time.perf_counter() - started
                self.progress(
                    f"fidelity reference {shown}: computed in {seconds:.1f} s, cached in {self._shown(stored_at)}"
                )
        if is_reference:
            self._reference_logits[case.model_id, depth] = measured
        return measured

    def _windows(self, item: str, tokens: list[int], depth: int) -> list[list[int]]:
        """The windows compared at `depth`: at 0, the evaluation text's, each from an empty cache; at
        a nonzero depth, the depth text's first `depth` tokens as context, then up to
        fidelity.DEPTH_WINDOWS windows continuing it (fidelity.depth_windows)."""
        size = self.config.eval_window
        if not depth:
            if not (chunks := windows(tokens, size)):
                fail(
                    f"{item}: the evaluation text has {len(tokens)} tokens, fewer than one window of {size} (--slm-eval-window)"
                )
            return chunks
        if not (chunks := depth_windows(tokens, depth, size, CONTEXT_LENGTH)):
            fail(
                f"{item}: fidelity at depth {depth} needs {depth + size} tokens (the depth, then one window of"
                f" --slm-eval-window={size}) within the {CONTEXT_LENGTH} a model is loaded with; the depth text"
                f" {self._shown(self.config.depth_text)} (--slm-depth-text) has {len(tokens)}"
            )
        return chunks

    def _reference_cache_path(self, case: Case, depth: int) -> Path | None:
        """Where the reference's logits on the text are kept between runs: named by the content of
        the GGUF its float32 copy is made from, the quant, the runtime's version, the text, the
        window and the depth (see reference.py)."""
        try:
            gguf = self.models[case.model].gguf_path(self.config.cache_dir)
        except RegistryError:
            return None
        if gguf is None or not gguf.is_file():
            return None
        digest = f"{content_digest(gguf)}:{case.quant}"
        runtime = version(backend(case.backend).PACKAGE)
        text = self.depth_text if depth else self.eval_text
        key = reference.cache_key(digest, runtime, text, self.config.eval_window, depth)
        return reference.path_for(self.config.cache_dir, case.model, key)

    def reference_of(self, case: Case) -> Case:
        """The case a fidelity item of `case` is measured against (see matrix.fidelity_reference)."""
        return fidelity_reference(case, self.models[case.model].mlx is not None)

    def against_reference(
        self, item: str, candidate: Case, reference: Case, depths: Sequence[int] = (0,)
    ) -> dict[int, Fidelity]:
        """The figures at each depth. The candidate first, at every depth, since its items have just
        run and it is still loaded; then the reference, loaded only the first time."""
        if problem := self.skip_reason(reference):
            pytest.skip(f"the reference {reference.model_id} cannot run here: {problem}")
        measured = {depth: self._windows_logits(candidate, depth, full=True) for depth in depths}
        figures = {}
        for depth, (tokens, candidate_logits) in measured.items():
            reference_tokens, reference_logits = self._windows_logits(reference, depth)
            self._reference_logits.setdefault(
                (reference.model_id, depth), (reference_tokens, reference_logits)
            )  # for every quant
            if reference_tokens != tokens:
                fail(f"{item}: the two runtimes tokenize the {'depth' if depth else 'evaluation'} text differently")
            full_logits = cast("list[np.ndarray]", candidate_logits)  # full=True: never a kept top k
            figures[depth] = compare(zip(reference_logits, full_logits, self._windows(item, tokens, depth)))
        return figures


EVAL_TEXT = ("evaluation text", "--slm-eval-text")
DEPTH_TEXT = ("depth text", "--slm-depth-text")


def eval_text_problem(path: Path, named: tuple[str, str] = EVAL_TEXT) -> str | None:
    """Why the evaluation (or depth) text cannot serve (checked at start-up when it exists, else by
    the items that need it)."""
    what, option = named
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read the {what} {shown(path)} ({option}): {exc}"
    if not text.strip():
        return f"the {what} {shown(path)} ({option}) is empty"
    return None
