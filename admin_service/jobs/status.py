"""Job status vocabulary, the one place that knows it. Older writers say `queue` for `queued`:
read both, emit `queued`. Everything that reads a status (REST filters, Socket.IO filters,
stats, capture, sorting) goes through these helpers instead of consulting ALIASES itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, overload

from sqlalchemy import case
from sqlalchemy.sql.elements import ColumnElement

STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
ALIASES = {"queue": "queued"}
TERMINAL = frozenset({"completed", "failed", "cancelled"})
# How a captured change moves the counts per status: (the status a job was counted under
# before, after); None: no job (insert, delete) or, before, not known.
Transition = tuple[str | None, str | None]


@overload
def normalize(status: str) -> str: ...


@overload
def normalize(status: None) -> None: ...


def normalize(status: str | None) -> str | None:
    """A stored status as it is shown (`queue` -> `queued`); anything else unchanged."""
    if status is None:
        return None
    return ALIASES.get(status, status)


class UnknownStatus(ValueError):
    """A client named a status that does not exist; `text` is what it wrote (stripped)."""

    def __init__(self, text: str) -> None:
        super().__init__(f"unknown status {text!r}")
        self.text = text


def parse_status(text: str) -> str:
    """A status as a client writes it (any case, spaces around, an alias) -> its canonical name.
    Raises UnknownStatus (a ValueError)."""
    name = normalize(text.strip().lower())
    if name not in STATUSES:
        raise UnknownStatus(text.strip())
    return name


def parse_statuses(items: Iterable[str]) -> list[str]:
    """Canonical names of these statuses, each once, in the order first given."""
    statuses: list[str] = []
    for item in items:
        name = parse_status(item)
        if name not in statuses:
            statuses.append(name)
    return statuses


def stored_values(statuses: Iterable[str]) -> list[str]:
    """Every value a status may be stored as, for `status IN (...)` filters."""
    values: list[str] = []
    for status in statuses:
        values.append(status)
        values.extend(alias for alias, canonical in ALIASES.items() if canonical == status)
    return values


def sql_list(values: Iterable[str]) -> str:
    """`'a', 'b'`: status names (constants of this module, never input) for hand-written SQL."""
    return ", ".join(f"'{value}'" for value in values)


def shown(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The status as it is shown, in SQL (Core): `CASE WHEN status = 'queue' THEN 'queued' ELSE status END`."""
    return case(*[(column == alias, canonical) for alias, canonical in ALIASES.items()], else_=column)


def shown_sql(column: str) -> str:
    """The same expression as text, for DDL (the index the status sort uses)."""
    whens = " ".join(f"WHEN {column} = '{alias}' THEN '{canonical}'" for alias, canonical in ALIASES.items())
    return f"CASE {whens} ELSE {column} END"
