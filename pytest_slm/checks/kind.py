"""What an item kind is to the rest of the run, and the one registry of them. Like a syrupy
extension, a kind is one class that carries all of it: its row type and results.json section, its
table, its charts, its baseline records' schema and file name, its figures in the history and how
`compare` judges them. `report/` and `history/` iterate over `KINDS`; a kind registered by a
user's conftest (`register`) appears in all of them with nothing else edited."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

from .columns import Rows, Table
from .core import RecordError


class Figure(NamedTuple):
    """One figure of a row that the history keeps and draws a trend through."""

    metric: str
    value: float
    unit: str
    spread: float | None = None  # relative, where the figure is a median of repeats


class Stored(Protocol):
    """A figure as a stored run gives it back to `compare`."""

    @property
    def metric(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def unit(self) -> str: ...
    @property
    def spread(self) -> float | None: ...


@dataclass(frozen=True)
class Runs:
    """What `compare` knows of two runs besides one figure of each: the later run's settings (the
    thresholds it is judged by), the earlier run's (how its figure was measured: its repeats), and
    each run's per-sample outcomes of the item (empty for a kind that keeps none)."""

    settings: Mapping[str, Any]
    before: Mapping[str, int]
    after: Mapping[str, int]
    settings_before: Mapping[str, Any]


class Judged(NamedTuple):
    """A figure of two runs compared: the two values, the change as people read it, the verdict."""

    before: float
    after: float
    change: str
    verdict: str  # pass, FAIL, shown, or "not compared: why"


class Kind:
    """One item kind. A subclass names its row type (a frozen dataclass whose `SECTION` is its key
    in results.json) and its table's title, and overrides what it has: a kind without baselines
    keeps `record_kind` None, a kind without figures to trend keeps `figures` empty."""

    row: ClassVar[type[Any]]
    title: ClassVar[str]
    record_kind: ClassVar[str | None] = None  # the `kind` field of its baseline records; None: it stores none
    machine: ClassVar[bool] = False  # its figures mean something only on their own hardware
    keeps_outcomes: ClassVar[bool] = False  # the history stores its items' per-sample outcomes
    chart_order: ClassVar[int] = 100  # where its plots sit on report.html among the kinds'

    @property
    def section(self) -> str:
        return str(self.row.SECTION)

    def table(self, rows: Rows, full: bool = True) -> Table:
        """The full or the brief table of the kind's rows."""
        raise NotImplementedError

    def charts(self, rows: Rows) -> list[tuple[str, str, list[Any]]]:
        """(id, caption, matplotlib figures) for each plot of report.html the rows draw."""
        return []

    def figures(self, row: Mapping[str, Any]) -> list[Figure]:
        """The figures of one row that the history keeps."""
        return []

    def compare(self, now: Stored, before: Stored, runs: Runs) -> Judged:
        """One figure of two runs on the same hardware; a kind with no rule shows the difference."""
        return Judged(before.value, now.value, f"{now.value - before.value:+.3g}", "shown")

    def validate(self, record: Mapping[str, Any]) -> None:
        """The kind's schema for a stored record (the merge CLI checks a tree of them)."""
        raise RecordError(f"a {self.section} item stores no baseline")

    def file_name(self, record: Mapping[str, Any]) -> str:
        """Where under <model>/<device>/<quant>/ a valid record of the kind belongs."""
        raise RecordError(f"a {self.section} item stores no baseline")


KINDS: dict[str, Kind] = {}  # by results.json section, in the order a run shows them


def register(kind: Kind) -> Kind:
    """Make a kind part of every run's tables, results.json, charts and history (replacing one of
    the same section)."""
    KINDS[kind.section] = kind
    return kind


def unregister(kind: Kind) -> None:
    """Take a registered kind out again (a conftest that registered it for one run)."""
    if KINDS.get(kind.section) is kind:
        del KINDS[kind.section]


def by_record_kind() -> dict[str, Kind]:
    """The kinds that store baselines, by the `kind` field of their records."""
    return {kind.record_kind: kind for kind in KINDS.values() if kind.record_kind}


class RowTypes(Mapping[str, type]):
    """Each registered kind's row type by section, read when asked: a kind registered after the
    session module was imported (by a conftest) is in it."""

    def __getitem__(self, section: str) -> type:
        return KINDS[section].row

    def __iter__(self) -> Iterator[str]:
        return iter(KINDS)

    def __len__(self) -> int:
        return len(KINDS)


ROW_TYPES = RowTypes()
