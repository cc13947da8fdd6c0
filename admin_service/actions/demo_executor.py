"""The embedded demo's stand-in for the platform (`make run` only): it takes a retry command as
the platform's pipeline would, re-queues the job in the demo database, and a few seconds later
moves it on (processing, then completed), so a newcomer can try a retry end to end.

The ONLY code of this service that writes the archive tables, and only where the settings say
the database is `make run`'s embedded one (ADMIN_SERVICE_EMBEDDED_DEMO, which `serve` sets for
it alone; config.py refuses ACTION_TRANSPORT=demo otherwise). Its later steps live in memory:
a restart leaves a demo job queued, which is harmless in a demo.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time

import psycopg2

from admin_service.actions.transports import DEMO, Command, Retry
from admin_service.config import Settings
from admin_service.db.tables import JOBS_TABLE
from admin_service.live.connection import connect

log = logging.getLogger("admin_service.actions.demo")

STEP_S = 3.0  # queued -> processing -> completed, this far apart
REQUEUE = f"""
UPDATE {JOBS_TABLE} SET status = 'queued', error_message = NULL, completed_at = NULL, processing_started_at = NULL,
       retry_count = 0, updated_at = now()
WHERE id = %s AND status = 'failed'
"""
PROCESS = f"UPDATE {JOBS_TABLE} SET status = 'processing', processing_started_at = now(), updated_at = now() WHERE id = %s AND status = 'queued'"
COMPLETE = f"UPDATE {JOBS_TABLE} SET status = 'completed', completed_at = now(), updated_at = now() WHERE id = %s AND status = 'processing'"


class DemoExecutor:
    name = DEMO

    def __init__(self, settings: Settings, database_url: str) -> None:
        if not settings.embedded_demo:
            raise RuntimeError("the demo executor runs only on make run's embedded database")
        self.settings = settings
        self.database_url = database_url
        self._done: set[str] = set()  # idempotency keys handled
        self._steps: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        threading.Thread(target=self._move_on, name="demo-executor", daemon=True).start()

    def _execute(self, sql: str, job_row_id: str) -> int:
        conn = connect(self.settings, self.database_url, "admin-service-demo-executor")
        try:
            with conn.cursor() as cur:
                cur.execute(sql, (job_row_id,))
                return cur.rowcount
        finally:
            conn.close()

    def send(self, command: Command) -> None:
        with self._lock:
            if command.item_id in self._done:
                return
        try:
            if self._execute(REQUEUE, command.job_row_id):
                with self._lock:
                    heapq.heappush(self._steps, (time.monotonic() + STEP_S, PROCESS, command.job_row_id))
                self._wake.set()
        except psycopg2.Error as exc:
            raise Retry(f"demo database: {type(exc).__name__}", down=True) from None
        with self._lock:
            self._done.add(command.item_id)

    def _move_on(self) -> None:
        while True:
            with self._lock:
                delay = self._steps[0][0] - time.monotonic() if self._steps else 60.0
            if delay > 0:
                self._wake.wait(delay)
                self._wake.clear()
                continue
            with self._lock:
                _, sql, job_row_id = heapq.heappop(self._steps)
            try:
                if self._execute(sql, job_row_id) and sql is PROCESS:
                    with self._lock:
                        heapq.heappush(self._steps, (time.monotonic() + STEP_S, COMPLETE, job_row_id))
            except psycopg2.Error:
                log.warning("demo executor: could not move job %s on", job_row_id)

    def idle(self) -> None:
        pass

    def close(self) -> None:
        pass
