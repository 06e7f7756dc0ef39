"""The cells a kind's table is made of: one definition for the terminal, Markdown and the HTML
page. A kind's table returns the headers and the rows; a row's last cell is its verdict. The full
table (report.html, and the terminal under -v) has every figure; the brief one (the terminal,
summary.md) keeps what a verdict is read from (the item, its figure, the baseline, the change, the
limit or p, the verdict), so that it fits 120 columns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

Rows = Sequence[dict[str, Any]]
Table = tuple[list[str], list[tuple[str, ...]]]


@dataclass(frozen=True)
class Column:
    """A header, the cell it shows for a row, and which of the two tables it is in."""

    header: str
    cell: Callable[[dict[str, Any]], str]
    full: bool = True  # in the full table
    brief: bool = True  # in the brief one


def select(columns: Sequence[Column], rows: Rows, full: bool) -> Table:
    """The full or the brief table of these columns over these rows."""
    shown = [column for column in columns if (column.full if full else column.brief)]
    return [column.header for column in shown], [tuple(column.cell(row) for column in shown) for row in rows]


ITEM = Column("item", itemgetter("item"))
VERDICT = Column("verdict", itemgetter("verdict"))


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def or_dash(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)
