"""Which tokens verified before, until their exp, for every worker and instance: what keeps the
brute-force guard (ratelimit.FailedAuthGuard) from locking out admins already signed in.

Behind a proxy with TRUST_PROXY=false every client shares the proxy's address, so 20 bad tokens a
minute from anyone block that address. A token that verified before is exempt: it cannot be a
guess. That record used to be each worker's 60-second claims cache, so an admin was locked out
on the other workers, and on every worker a minute after the token's first use.

Now a token's SHA-256 fingerprint is kept until its exp: in this process (a bounded map), and in
`<ADMIN_SCHEMA>.verified_tokens` (migration 0003), written once per token and process, read only
when the token's address is blocked and this process has not seen the token. Neither path costs
an unblocked request anything beyond a dictionary lookup.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from cachetools import TLRUCache
from sqlalchemy import Engine, text

from admin_service.db.green import statement_deadline

log = logging.getLogger("admin_service.auth")

# Fingerprints this process holds at most (32-byte keys): the least recently used go first, and
# are still found in the shared table.
LOCAL_MAX = 50_000
# A lookup or a write of the shared record: the guard must not hold a request long on it.
SHARED_DEADLINE_S = 1.0
PRUNE_EVERY_S = 600.0


def fingerprint(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _until_exp(_key: bytes, expires_at: float, _now: float) -> float:
    return expires_at


class VerifiedTokens:
    def __init__(self, engine: Engine, schema: str) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._local: TLRUCache[bytes, float] = TLRUCache(maxsize=LOCAL_MAX, ttu=_until_exp, timer=time.time)
        self._insert = text(
            f'INSERT INTO "{schema}".verified_tokens (fingerprint, expires_at) VALUES (:f, to_timestamp(:exp)) '
            "ON CONFLICT (fingerprint) DO NOTHING"
        )
        self._select = text(
            f'SELECT extract(epoch FROM expires_at) FROM "{schema}".verified_tokens WHERE fingerprint = :f AND expires_at > now()'
        )
        self._prune = text(f'DELETE FROM "{schema}".verified_tokens WHERE expires_at < now()')
        self._last_prune = 0.0

    def remember(self, token: str, expires_at: float | None) -> None:
        """The token verified; it stays known until `expires_at` (a token without one: not kept)."""
        if expires_at is None or expires_at <= time.time():
            return
        key = fingerprint(token)
        with self._lock:
            if key in self._local:
                return
            self._local[key] = expires_at
        try:
            with statement_deadline(SHARED_DEADLINE_S), self.engine.begin() as conn:
                conn.execute(self._insert, {"f": key, "exp": expires_at})
                if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
                    self._last_prune = time.monotonic()
                    conn.execute(self._prune)
        except Exception as exc:  # the other workers will not know it; this one does
            log.warning("could not record a verified token (%s)", type(exc).__name__)
            with self._lock:
                self._local.pop(key, None)  # try again with the token's next use

    def known_here(self, token: str) -> bool:
        """Whether this process saw the token verify (a dictionary lookup, nothing shared)."""
        with self._lock:
            return fingerprint(token) in self._local

    def seen(self, token: str) -> bool:
        """Whether the token verified before, here or on any worker or instance, and is unexpired."""
        key = fingerprint(token)
        with self._lock:
            if key in self._local:
                return True
        try:
            with statement_deadline(SHARED_DEADLINE_S), self.engine.connect() as conn:
                expires_at = conn.execute(self._select, {"f": key}).scalar()
        except Exception as exc:  # unknown: the guard decides as for any token
            log.warning("could not read the verified tokens (%s)", type(exc).__name__)
            return False
        if expires_at is None:
            return False
        with self._lock:
            self._local[key] = float(expires_at)
        return True
