"""What the live loops need of a psycopg2 connection and cursor, as Protocols (PEP 544).

The capture, tail and event-log code runs on dedicated psycopg2 connections (outside
SQLAlchemy's pool, for LISTEN and advisory locks); typing them with these instead of `Any`
lets mypy check every call, and any DB-API 2 driver with notifications would fit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, Self


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    @property
    def connection(self) -> Connection: ...

    def execute(self, query: str, vars: Sequence[Any] | dict[str, Any] | None = ..., /) -> None: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    autocommit: bool
    notifies: list[Any]

    def cursor(self, *args: Any, **kwargs: Any) -> Cursor: ...

    def poll(self) -> int: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...
