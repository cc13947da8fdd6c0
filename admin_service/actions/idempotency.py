"""Idempotency-Key: a POST repeated with the same key (by the same operator) answers the first
answer again instead of acting twice; the same key with another request is refused (422).

The key is claimed in the request's own transaction, before the work: a second request with
it waits on the first's row until that commits (then replays its answer) or rolls back (then
runs itself). Answers are kept 24 h (the dispatcher's housekeeping forgets older ones).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import request

from admin_service.db.dbapi import Cursor
from admin_service.errors import ApiError, validation_error

HEADER = "Idempotency-Key"
MAX_KEY = 200


def request_key() -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY or not key.isascii() or not key.isprintable():
        raise validation_error(HEADER, f"Must be 1-{MAX_KEY} printable ASCII characters (a UUID is a good key).")
    return key


def request_digest(route: str, body: Any) -> str:
    return hashlib.sha256(json.dumps([route, body], sort_keys=True, default=str).encode()).hexdigest()


def claim(cur: Cursor, schema: str, user_id: str, key: str, route: str, digest: str) -> tuple[int, dict[str, Any]] | None:
    """Claim the key for this request (None: go on and `store` the answer), or the first
    request's answer (status, body) to send again."""
    cur.execute(
        f"""
        INSERT INTO "{schema}".idempotency_keys (user_id, key, route, request_hash, status, response)
        VALUES (%s, %s, %s, %s, 0, '{{}}') ON CONFLICT (user_id, key) DO NOTHING RETURNING 1
        """,
        (user_id, key, route, digest),
    )
    if cur.fetchone() is not None:
        return None
    cur.execute(
        f'SELECT route, request_hash, status, response FROM "{schema}".idempotency_keys WHERE user_id = %s AND key = %s',
        (user_id, key),
    )
    row = cur.fetchone()
    if row["route"] != route or row["request_hash"] != digest:
        raise ApiError(
            422,
            f"This {HEADER} was used for another request: use a new key for a new request",
            code="IDEMPOTENCY_KEY_REUSED",
            details=[{"field": HEADER, "message": "Already used for another request."}],
        )
    return int(row["status"]), dict(row["response"])


def store(cur: Cursor, schema: str, user_id: str, key: str, status: int, body: dict[str, Any]) -> None:
    cur.execute(
        f'UPDATE "{schema}".idempotency_keys SET status = %s, response = %s WHERE user_id = %s AND key = %s',
        (status, json.dumps(body, default=str), user_id, key),
    )
