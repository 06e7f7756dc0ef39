"""Prompt sets: a team's own samples and a per-sample check, judged as an accuracy item on every
(model, device, quant), with what an lm-eval task's item has (per-sample outcomes, the paired
McNemar gate, the task fingerprint, the detectable drop, the tables, results.json, the history and
`compare`), and no YAML task to write:

    test_json_answers = prompt_set("json_answers.jsonl", replies_with_json, max_tokens=48)

Each sample is a JSON object with a "prompt" (the user's message, rendered with the model's own
chat template), optionally an "id", and whatever else its check reads. Generation is greedy: one
answer per prompt, right or wrong, is what McNemar's test pairs. Sampled answers (a pass rate per
prompt) would need a test of paired rates instead, and are not offered.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..matrix import TaskSpec
from ..models.handle import SlmModel
from .catalog import AccuracyResult, Sample, TaskError

PROMPT_SET_PARTS = ("samples", "prompts", "generation", "check")  # the fingerprint's parts
METRIC = "pass"
Check = Callable[[str, Mapping[str, Any]], bool]


@dataclass(frozen=True)
class PromptSet:
    name: str
    source: Path | tuple[Mapping[str, Any], ...]  # a JSONL file, or the samples themselves
    check: Check
    max_tokens: int
    system: str | None

    @property
    def task(self) -> TaskSpec:
        return TaskSpec(self.name)

    def samples(self) -> dict[str, Mapping[str, Any]]:
        """The samples by id (their "id", or their line number zero-padded); TaskError in one line
        for a file that is missing or not JSON Lines, or a sample without a prompt."""
        if isinstance(self.source, Path):
            where = f"prompt set {self.source}"
            try:
                lines = self.source.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise TaskError(f"{where}: cannot read it: {exc}") from None
            rows = []
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise TaskError(f"{where}: line {number} is not JSON ({exc.msg})") from None
        else:
            where, rows = f"prompt set {self.name!r}", list(enumerate(self.source, 1))
        return _by_id(rows, where)


def _by_id(rows: Sequence[tuple[int, Any]], where: str) -> dict[str, Mapping[str, Any]]:
    if not rows:
        raise TaskError(f"{where}: no samples")
    width = max(5, len(str(len(rows))))
    found: dict[str, Mapping[str, Any]] = {}
    for number, sample in rows:
        if not isinstance(sample, dict) or not isinstance(sample.get("prompt"), str) or not sample["prompt"]:
            raise TaskError(f'{where}: sample {number} is not an object with a non-empty "prompt" string')
        sample_id = str(sample["id"]) if "id" in sample else f"{number:0{width}d}"
        if sample_id in found:
            raise TaskError(f"{where}: two samples have the id {sample_id!r}")
        found[sample_id] = sample
    return found


def prompt_set(
    samples: str | Path | Sequence[Mapping[str, Any]],
    check: Check,
    *,
    name: str | None = None,
    max_tokens: int = 64,
    system: str | None = None,
) -> Callable[..., None]:
    """A test function: assign it to a `test_...` name in a test file, and each (model, device,
    quant) of the matrix becomes an accuracy item over these samples. `samples`: a JSON Lines file
    (relative to the test file) or a list of dicts; `check(answer, sample)` says whether the answer
    passes (returning False or failing an assert); `name` (default: the file's stem, or the check's
    name) names the item's task and its baseline file; `system`: a system message before each prompt."""
    caller = Path(inspect.stack()[1].filename).parent
    if isinstance(samples, (str, Path)):
        source: Path | tuple[Mapping[str, Any], ...] = caller / samples
        default_name = Path(samples).stem
    else:
        source, default_name = tuple(samples), check.__name__
    spec = PromptSet(name or default_name, source, check, max_tokens, system)

    @pytest.mark.slm_accuracy
    def test_prompt_set(slm_prompt_set: Callable[[PromptSet], None]) -> None:
        slm_prompt_set(spec)

    return test_prompt_set


def evaluate(spec: PromptSet, model: SlmModel, limit: int | None) -> AccuracyResult:
    """Each sample's prompt answered greedily through the model's chat template, then checked."""
    samples = spec.samples()
    if limit is not None:
        samples = dict(list(samples.items())[:limit])
    system = [{"role": "system", "content": spec.system}] if spec.system else []
    prompts = {i: model.render_chat([*system, {"role": "user", "content": s["prompt"]}]) for i, s in samples.items()}
    stop = model.end_of_turn()
    started = time.perf_counter()
    answers = dict(zip(prompts, model.generate_many(list(prompts.values()), spec.max_tokens, stop)))
    seconds = time.perf_counter() - started
    outcomes = {i: int(_passes(spec, answers[i], sample, i)) for i, sample in samples.items()}
    tokens = hashlib.sha256()
    for prompt in prompts.values():
        tokens.update(json.dumps(model.tokenize(prompt)).encode())
    fingerprint = {
        "samples": _digest(json.dumps(samples, sort_keys=True, ensure_ascii=False, default=str)),
        "prompts": _digest("\0".join(prompts.values())),
        "generation": _digest(json.dumps({"max_tokens": spec.max_tokens, "stop": list(stop), "greedy": True})),
        "check": _digest(_source(spec.check)),
    }
    shown = {i: Sample(s["prompt"], _target(s), answers[i]) for i, s in samples.items()}
    return AccuracyResult(spec.task, METRIC, outcomes, fingerprint, tokens.hexdigest(), seconds, shown)


def _passes(spec: PromptSet, answer: str, sample: Mapping[str, Any], sample_id: str) -> bool:
    """The check's verdict; a failed assert is a fail, any other exception a broken check, said in one line."""
    try:
        return bool(spec.check(answer, sample))
    except AssertionError:
        return False
    except Exception as exc:  # noqa: BLE001 - the user's code: any error of it, said in one line
        raise TaskError(
            f"prompt set {spec.name!r}: the check {spec.check.__name__} raised {type(exc).__name__} on sample"
            f" {sample_id}: {exc}"
        ) from None


def _target(sample: Mapping[str, Any]) -> str:
    """What a failure message shows as the sample's target: its fields besides the prompt."""
    return json.dumps({k: v for k, v in sample.items() if k not in ("prompt", "id")}, ensure_ascii=False)


def _source(check: Check) -> str:
    """The check's source, so that an edited check reads as a changed task; its name where Python
    has no source (a builtin)."""
    try:
        return inspect.getsource(check)
    except (OSError, TypeError):
        return f"{getattr(check, '__module__', '')}.{getattr(check, '__qualname__', repr(check))}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
