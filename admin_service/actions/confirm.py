"""Dry-run confirmation tokens: a bulk action runs only with the token its dry run gave, bound
to the normalised filter, the count the operator saw, the operator and a short expiry.

HMAC-SHA256 with a key kept in the service's own schema (one row, made on first use), so every
worker and instance checks every token and a restart keeps them valid. A token confirms one
action: its nonce is stored with the action (unique), so a reused token is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from admin_service.db.dbapi import Cursor
from admin_service.errors import validation_error
from admin_service.jobs.queries import JobFilters

FIELD = "confirmation_token"
_secrets: dict[str, bytes] = {}
_lock = threading.Lock()


def load_secret(cur: Cursor, schema: str) -> bytes:
    with _lock:
        if schema in _secrets:
            return _secrets[schema]
    cur.execute(
        f'INSERT INTO "{schema}".action_secret (id, secret) VALUES (1, %s) ON CONFLICT (id) DO NOTHING', (secrets.token_hex(32),)
    )
    cur.execute(f'SELECT secret FROM "{schema}".action_secret WHERE id = 1')
    row = cur.fetchone()
    key = str(row["secret"] if isinstance(row, dict) else row[0]).encode()
    with _lock:
        _secrets[schema] = key
    return key


def normalised_filter(filters: JobFilters) -> dict[str, Any]:
    """The filter in one canonical form: the same jobs asked for in another spelling (status
    order, `queue` for `queued`) are the same filter."""
    out: dict[str, Any] = {}
    if filters.statuses:
        out["status"] = sorted(set(filters.statuses))
    if filters.user_id is not None:
        out["user_id"] = str(filters.user_id)
    for name in ("user_email", "user_username", "assessment_name", "search"):
        value = getattr(filters, name)
        if value:
            out[name] = value
    for name in ("date_from", "date_to"):
        moment = getattr(filters, name)
        if moment is not None:
            out[name] = moment.value.isoformat()
    return out


def filter_digest(filters: JobFilters) -> str:
    return hashlib.sha256(json.dumps(normalised_filter(filters), sort_keys=True).encode()).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Confirmation:
    count: int
    nonce: uuid.UUID
    expires_at: float


def issue(key: bytes, *, kind: str, digest: str, count: int, user_id: str, ttl_s: float) -> tuple[str, float]:
    """A token for this dry run, and when it expires (epoch seconds)."""
    expires = time.time() + ttl_s
    claims = {"v": 1, "k": kind, "f": digest, "c": count, "u": user_id, "e": round(expires, 3), "n": str(uuid.uuid4())}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{body}.{_b64(hmac.new(key, body.encode(), hashlib.sha256).digest())}", expires


def verify(key: bytes, token: str, *, kind: str, digest: str, user_id: str) -> Confirmation:
    """The confirmation a token carries, or 400 on confirmation_token saying what is wrong."""
    body, _, signature = token.partition(".")
    try:
        good = hmac.compare_digest(_unb64(signature), hmac.new(key, body.encode(), hashlib.sha256).digest())
        claims = json.loads(_unb64(body)) if good else None
    except (binascii.Error, ValueError):
        claims = None
    if not isinstance(claims, dict) or claims.get("v") != 1:
        raise validation_error(FIELD, "Not a confirmation token of this service: run the dry run again.")
    if claims.get("u") != user_id:
        raise validation_error(FIELD, "This token confirms another operator's dry run: run your own.")
    if claims.get("k") != kind:
        raise validation_error(FIELD, f"This token confirms a {claims.get('k')!r} action, not {kind!r}.")
    if float(claims.get("e", 0)) < time.time():
        raise validation_error(FIELD, "The confirmation token has expired: run the dry run again.")
    if claims.get("f") != digest:
        raise validation_error(FIELD, "This token confirms another filter: run the dry run for this one.")
    return Confirmation(int(claims["c"]), uuid.UUID(str(claims["n"])), float(claims["e"]))
