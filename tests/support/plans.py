"""The statements a request runs and their plans: what the tests that assert "no scan of the
whole table" read."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event


def plan_nodes(plan: dict[str, Any]) -> Iterable[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


@contextmanager
def statements_run(engine: Engine, wanted: Callable[[str], bool]) -> Iterator[list[tuple[str, Any]]]:
    """(statement, parameters) of each statement the engine runs inside the block that `wanted` keeps."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if wanted(statement):
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def explained(engine: Engine, seen: list[tuple[str, Any]], *, analyze: bool = False) -> list[list[dict[str, Any]]]:
    """Each statement's plan nodes (EXPLAIN, or EXPLAIN ANALYZE: run again, with actual rows)."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        plans = []
        for statement, params in seen:
            cur.execute(f"EXPLAIN ({'ANALYZE, ' if analyze else ''}FORMAT JSON) " + statement, params)
            plans.append(list(plan_nodes(cur.fetchone()[0][0]["Plan"])))
        return plans
    finally:
        raw.close()
