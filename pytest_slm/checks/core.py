"""THE regression check: every item kind goes through it, so every kind gets the same policy.

read the baseline -> validate it whole (schema, finite numbers, consistency, identity) -> measure ->
validate what was measured the same way -> judge -> rows -> fail, or write. One policy for an item
that cannot judge (`not_judged`: one outcome with a named reason, a skip that says why, a failure
under --slm-strict or in CI), for updating (a newer schema is never overwritten, a partial run never
replaces a fuller baseline unless asked), and for records that cannot be trusted (one line naming
the file and the field).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, NoReturn, Protocol, TypeVar

import pytest

from ..provenance import Change, changes, described
from ..store.baselines import BaselineError, BaselineKey, BaselineStore

Measured = TypeVar("Measured")
REFRESH = "If the change is intended, refresh the baseline with --update-baselines."

NOT_JUDGED = "not judged"
# Why an item compared nothing: the same names in the terminal, the report files and the history.
NO_BASELINE = "no baseline"
BUSY = "busy"
UNLIKE_CONDITIONS = "unlike conditions"
TOO_NOISY = "too noisy"
CANNOT_DETECT = "cannot detect"
UNDER_XDIST = "under xdist"
SKIPS_NOW = "skips now"  # a test with an outcome baseline that ran then and skips now
REASONS = (NO_BASELINE, BUSY, UNLIKE_CONDITIONS, TOO_NOISY, CANNOT_DETECT, UNDER_XDIST, SKIPS_NOW)
_PREFIX = re.compile(rf"{NOT_JUDGED} \(({'|'.join(map(re.escape, REASONS))})\): ")
STRICT_SUFFIX = " [fails: --slm-strict, or CI]"


def fail(message: str) -> NoReturn:
    """The item fails with `message` alone: no traceback, and not the exception it was handled from."""
    __tracebackhide__ = True
    raise pytest.fail.Exception(message, pytrace=False) from None


def not_judged(reason: str, message: str, strict: bool) -> NoReturn:
    """The item compared nothing, for `reason` (one of REASONS): a skip that says why, or, where the
    user asked for strictness (--slm-strict, CI), a failure saying the same. Nothing is written."""
    __tracebackhide__ = True
    said = _not_judged_text(reason, message)
    if strict:
        fail(said + STRICT_SUFFIX)
    raise pytest.skip.Exception(said) from None


def not_judged_report(report: pytest.TestReport, reason: str, message: str, strict: bool) -> None:
    """The same outcome given to a report already made: a test judged after its call (an outcome
    baseline) cannot raise any more."""
    said = _not_judged_text(reason, message)
    if strict:
        report.outcome, report.longrepr = "failed", said + STRICT_SUFFIX
    else:
        path, line, _ = report.location
        report.outcome, report.longrepr = "skipped", (path, (line or 0) + 1, said)


def _not_judged_text(reason: str, message: str) -> str:
    assert reason in REASONS, reason
    return f"{NOT_JUDGED} ({reason}): {message}"


def unjudged(report: pytest.TestReport) -> tuple[str, str] | None:
    """(reason, message) of an item `not_judged` ended, skipped or failed under strictness; read from
    the report's text, which survives xdist's transfer."""
    if not (report.skipped or report.failed):
        return None
    text = reported_text(report)
    found = _PREFIX.search(text)
    if found is None or (report.skipped and found.start() != 0):
        return None
    return found.group(1), text[found.end() :].strip().removesuffix(STRICT_SUFFIX)


def reported_text(report: pytest.TestReport) -> str:
    """What a report says: a skip's reason without pytest's "Skipped: ", or a failure's text."""
    longrepr = report.longrepr
    text = str(longrepr[2]) if isinstance(longrepr, tuple) else report.longreprtext
    return text.removeprefix("Skipped: ")


def first_line(report: pytest.TestReport) -> str:
    """A failure's first line: what the check said (an accuracy item's "acc regressed: ..."), or the exception."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else report.longreprtext
    return text.removeprefix("Failed: ").strip().partition("\n")[0]


class RecordError(Exception):
    """A record (stored or just measured) breaks its kind's schema; the message names the field."""


@dataclass(frozen=True)
class Verdict:
    """What judging gives: the rows the item adds to the summary, and why it failed (None: it passed)."""

    rows: Sequence[Any]
    failure: str | None = None
    not_judged: tuple[str, str] | None = None  # (reason, message): what was measured cannot be judged


class RecordSchema(Protocol):
    """What the envelope and the validation of a record need of its item."""

    kind: str  # the record's `kind`

    def identity(self) -> dict[str, Any]:
        """Fields a record of this item must carry with exactly these values."""
        ...

    def validate(self, record: Mapping[str, Any]) -> None:
        """The kind's own schema and consistency rules; RecordError naming the field."""
        ...


class ItemCheck(RecordSchema, Protocol[Measured]):
    """What each item kind supplies; nothing else about a kind is known to the core."""

    item: str  # the case id, first word of every message
    baseline_of: str  # whose baseline a missing one is: the item, and for timings the machine

    @property
    def key(self) -> BaselineKey | None:  # read-only, so a check may declare it BaselineKey or None
        """None: judged against thresholds only (parity)."""
        ...

    def measure(self) -> Measured: ...

    def record(self, measured: Measured) -> dict[str, Any]:
        """What is stored, without the envelope (schema version, kind, provenance)."""
        ...

    def judge(self, measured: Measured, baseline: Mapping[str, Any] | None) -> Verdict:
        """Against the baseline (None when updating, or for a kind without one)."""
        ...

    def replaces_less(self, record: Mapping[str, Any], stored: Mapping[str, Any]) -> str | None:
        """Why writing `record` over `stored` would lose measurements (a partial run), or None."""
        ...

    def kept(self, record: Mapping[str, Any], stored: Mapping[str, Any]) -> Mapping[str, Any]:
        """What is written over `stored`: `record`, with what of `stored` it did not measure again
        where the kind keeps it (latency depths not asked for)."""
        ...


class Check:
    """Defaults the kinds share: most never refuse a refresh for having measured less."""

    def replaces_less(self, record: Mapping[str, Any], stored: Mapping[str, Any]) -> str | None:
        return None

    def kept(self, record: Mapping[str, Any], stored: Mapping[str, Any]) -> Mapping[str, Any]:
        return record


@dataclass(frozen=True)
class Policy:
    update: bool
    strict: bool  # an item that cannot judge fails (--slm-strict, or the CI variable)
    update_partial: bool  # a partial run may replace a fuller baseline
    first_run: bool = False  # a missing baseline is not judged even when strict (--slm-first-run)


@dataclass
class CheckContext:
    """What the core needs from the run: the store, the policy, and where rows and writes go."""

    store: BaselineStore
    policy: Policy
    nodeid: str
    provenance: Callable[[], dict[str, Any]]
    add_rows: Callable[[Sequence[Any]], None]
    add_write: Callable[[Path, bool], None]
    add_changes: Callable[[Sequence[Change]], None] = lambda found: None
    shown: Callable[[Path], str] = str


@dataclass
class Prepared(Generic[Measured]):
    """A check whose baseline has been read and validated, before anything is measured."""

    check: ItemCheck[Measured]
    context: CheckContext
    baseline: Mapping[str, Any] | None = None
    stored: Mapping[str, Any] | None = field(default=None, repr=False)  # when updating: what is there now


def prepare(check: ItemCheck[Measured], context: CheckContext) -> Prepared[Measured]:
    """Read and validate before measuring: a missing or untrustworthy baseline costs no model run."""
    __tracebackhide__ = True
    prepared = Prepared(check, context)
    if check.key is None:
        return prepared
    store, policy = context.store, context.policy
    try:
        path = store.path(check.key)
        if policy.update:
            prepared.stored = _valid_or_none(check, store.read_existing(check.key))
            return prepared
        baseline = store.read(check.key)
    except BaselineError as exc:
        fail(f"{check.item}: {exc}")
    if baseline is None:
        reason = (
            f"{check.item}: no {check.kind} baseline for {check.baseline_of} ({context.shown(path)});"
            f" create it with: pytest '{context.nodeid}' --update-baselines"
        )
        not_judged(NO_BASELINE, reason, policy.strict and not policy.first_run)
    try:
        validate(check, baseline)
    except RecordError as exc:
        fail(f"{check.item}: baseline {context.shown(path)}: {exc}. {REFRESH}")
    prepared.baseline = baseline
    return prepared


def conclude(prepared: Prepared[Measured], measured: Measured) -> None:
    """Judge what was measured; fail with the verdict's message, or write the new baseline."""
    __tracebackhide__ = True
    check, context = prepared.check, prepared.context
    record = envelope(check, check.record(measured), context.provenance())
    try:
        validate(check, record)
    except RecordError as exc:
        fail(f"{check.item}: the measurement cannot be trusted: {exc}; nothing was compared or written")
    verdict = check.judge(measured, prepared.baseline)
    changed = changes(prepared.baseline.get("provenance"), record["provenance"]) if prepared.baseline else []
    context.add_changes(changed)
    refused = _refused(prepared, record) if verdict.failure is None and verdict.not_judged is None else None
    context.add_rows([_not_written(row) for row in verdict.rows] if refused else verdict.rows)
    if verdict.failure:
        fail(f"{verdict.failure}\n{since_baseline(changed)}" if prepared.baseline else verdict.failure)
    if verdict.not_judged:
        not_judged(*verdict.not_judged, context.policy.strict)
    if refused:
        fail(f"{check.item}: not written: {refused}; pass --slm-update-partial to replace it anyway")
    if context.policy.update and check.key is not None:
        _write(prepared, record)


def since_baseline(changed: Sequence[Change]) -> str:
    """What a failure is explained by: the software that changed, or the news that none did."""
    if changed:
        return f"changed since the baseline: {described(changed)}"
    return "nothing recorded changed since the baseline (runtime, its build, pytest-slm, lm-eval, model file, OS)"


def run(check: ItemCheck[Measured], context: CheckContext) -> None:
    __tracebackhide__ = True
    prepared = prepare(check, context)
    conclude(prepared, check.measure())


def _refused(prepared: Prepared[Any], record: Mapping[str, Any]) -> str | None:
    """Why an update must not replace the stored baseline: it measured less (a partial run)."""
    if prepared.stored is None or prepared.context.policy.update_partial:
        return None
    return prepared.check.replaces_less(record, prepared.stored)


def _not_written(row: Any) -> Any:
    return replace(row, verdict="not written") if getattr(row, "verdict", None) == "updated" else row


def _write(prepared: Prepared[Any], record: dict[str, Any]) -> None:
    __tracebackhide__ = True
    check, context = prepared.check, prepared.context
    assert check.key is not None
    if prepared.stored is not None and not context.policy.update_partial:
        record = dict(check.kept(record, prepared.stored))
    try:
        changed = context.store.write(check.key, record)
    except BaselineError as exc:
        fail(f"{check.item}: {exc}")
    context.add_write(context.store.path(check.key), changed)


def _valid_or_none(check: ItemCheck[Any], stored: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """What an update would replace, if it is a valid record of this item: a broken one protects nothing."""
    if stored is None:
        return None
    try:
        validate(check, stored)
    except RecordError:
        return None
    return stored


def envelope(check: RecordSchema, fields: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    from ..store.baselines import SCHEMA_VERSION

    return {
        "schema_version": SCHEMA_VERSION,
        "kind": check.kind,
        **check.identity(),
        **fields,
        "provenance": provenance,
    }


def validate(check: RecordSchema, record: Mapping[str, Any]) -> None:
    """The whole record: the envelope, identity, then the kind's own rules, and no NaN anywhere."""
    if record.get("kind") != check.kind:
        raise RecordError(f"field 'kind' is {record.get('kind')!r}, this item stores {check.kind!r}")
    for name, expected in check.identity().items():
        value = record.get(name)
        if value != expected or type(value) is not type(expected):
            raise RecordError(f"field {name!r} is {value!r}: the record is of another item (this one is {expected!r})")
    require(record, "provenance", dict)
    check.validate(record)
    if (where := non_finite(record)) is not None:
        raise RecordError(f"field {where!r} is not a finite number")


# -- schema helpers for the kinds ------------------------------------------------------------------


def require(
    record: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    rule: Callable[[Any], bool] | None = None,
    what: str = "",
) -> Any:
    """The field's value, if present, of `kind` (bool is never a number here) and passing `rule`."""
    value = record.get(name)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    numeric = float in kinds
    ok = isinstance(value, kinds) or (numeric and isinstance(value, int))
    if value is None and type(None) in kinds:
        return value
    if not ok or isinstance(value, bool) and bool not in kinds:
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise RecordError(
            f"field {name!r} is missing or not a {names}"
            if value is None
            else f"field {name!r} is {value!r}, not a {names}"
        )
    if numeric and isinstance(value, (int, float)) and not math.isfinite(value):
        raise RecordError(f"field {name!r} is not a finite number")
    if rule is not None and not rule(value):
        raise RecordError(f"field {name!r} is {_short(value)}: {what}")
    return value


def non_finite(value: Any, where: str = "") -> str | None:
    """The path to the first NaN or infinity in a record, if any: NaN makes every comparison false."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "value"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if (found := non_finite(item, f"{where}.{key}" if where else str(key))) is not None:
                return found
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if (found := non_finite(item, f"{where}[{index}]")) is not None:
                return found
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
