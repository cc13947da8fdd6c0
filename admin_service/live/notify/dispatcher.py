"""The one dispatcher across all workers and instances: sends the outbox's deliveries.

Elected like the capture leader (live/capture.py): a PostgreSQL advisory lock, its own key,
held by the dispatcher's own connection; when its process dies the connection closes, the lock
is released and another candidate takes over within LEADER_RETRY_S. It is not the capture
leader's loop: a receiver that is slow or down (up to each channel's timeout per message)
must never hold back capture, nor capture's work a message.

Each round it claims the due deliveries (counting the attempt and setting the next one before
sending: at least once, even if the process dies mid-send; receivers de-duplicate by
X-Delivery-Id), sends them side by side, and records each outcome: delivered, or a retry after
an exponential backoff with jitter, or `dead` after NOTIFY_MAX_ATTEMPTS. It also escalates
episodes left unacknowledged (escalation policy in the channels file) and holds back, per
channel and alert type, new-alert messages beyond one per NOTIFY_WINDOW_S, told later in a
digest. Woken by NOTIFY when a transaction queues a delivery; otherwise every NOTIFY_POLL_S.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from admin_service import metrics
from admin_service.config import Settings
from admin_service.db.dbapi import Connection, Cursor
from admin_service.live.connection import keep_connected, transaction, wait_for_notify
from admin_service.live.episodes import Episodes
from admin_service.live.notify import email, slack, webhook
from admin_service.live.notify.channels import Channel
from admin_service.live.notify.messages import Rendered, render
from admin_service.live.notify.outbox import DIGEST, NOT_CONFIGURED, OUTBOX_CHANNEL, RAISED, TEST, Outbox
from admin_service.live.notify.senders import DeliveryError, Sender

log = logging.getLogger("admin_service.notify")

LEADER_RETRY_S = 2.0
BATCH = 20  # deliveries sent side by side per round
ESCALATE_EVERY_S = 5.0


SENDERS: dict[str, Sender] = {"webhook": webhook.send, "slack": slack.send, "email": email.send}


def lock_key(schema: str) -> int:
    return zlib.crc32(f"admin-service-notify:{schema}".encode())


@dataclass
class Send:
    delivery: dict[str, Any]
    channel: Channel
    message: Rendered
    body: dict[str, object]
    error: str | None = None


def webhook_body(delivery: dict[str, Any], items: list[dict[str, Any]] | None = None) -> dict[str, object]:
    """The JSON a webhook receives (besides title/text/link): the alert as clients see it."""
    body: dict[str, object] = {
        "deliveryId": delivery["delivery_id"],
        "kind": delivery["kind"],
        "attempt": delivery["attempts"],
        "alert": delivery["message"].get("alert"),
    }
    if delivery["kind"] == "escalation":
        body["escalation"] = {"number": delivery["message"].get("escalation"), "of": delivery["message"].get("of")}
    if items is not None:
        body["held"] = [{"alert": item["alert"], "statusNow": item.get("status_now")} for item in items]
    return body


def send_one(item: Send) -> Send:
    try:
        SENDERS[item.channel.type](item.channel, item.message, str(item.delivery["delivery_id"]), item.body)
    except DeliveryError as exc:
        item.error = str(exc)
    except Exception as exc:  # a sender's bug must cost one delivery an attempt, not the dispatcher
        log.exception("notify: sending to %s failed unexpectedly", item.channel.name)
        item.error = f"{type(exc).__name__}: {exc}"
    return item


def send_test(channel: Channel, base_url: str) -> str | None:
    """A test message to one channel now (`notify test`): None when accepted, else the error."""
    delivery_id = str(uuid.uuid4())
    text = f"A test message from admin-service to the channel {channel.name!r}. Nothing is wrong."
    message = render(TEST, {"text": text}, base_url, datetime.now(UTC))
    body: dict[str, object] = {"deliveryId": delivery_id, "kind": TEST, "attempt": 1, "alert": None}
    done = send_one(Send({"delivery_id": delivery_id}, channel, message, body))
    return done.error


class Dispatcher:
    def __init__(self, settings: Settings, database_url: str) -> None:
        self.settings = settings
        self.database_url = database_url
        self.outbox = Outbox(settings)
        self.episodes = Episodes(settings)
        self.is_leader = False
        self._pool = ThreadPoolExecutor(max_workers=BATCH, thread_name_prefix="notify")

    def run(self, stop: threading.Event) -> None:
        if not self.settings.notify.channels:
            return  # nothing to send to: no candidate connection either
        keep_connected("notify", self.settings, self.database_url, stop, lambda conn: self._session(conn, stop), LEADER_RETRY_S)

    def _session(self, conn: Connection, stop: threading.Event) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(self.settings.admin_schema),))
            if not cur.fetchone()[0]:
                return
        self.is_leader = True
        metrics.NOTIFY_DISPATCHER.set(1)
        log.info("notify dispatcher leadership acquired", extra={"fields": {"pid": os.getpid()}})
        try:
            with conn.cursor() as cur:
                cur.execute(f'LISTEN "{OUTBOX_CHANNEL}"')
            next_escalation = 0.0
            while not stop.is_set():
                if time.monotonic() >= next_escalation:
                    self.escalate(conn)
                    next_escalation = time.monotonic() + ESCALATE_EVERY_S
                if self.dispatch_once(conn) < BATCH:
                    # Until a new delivery is queued (NOTIFY), a retry is due, or the poll interval.
                    with conn.cursor() as cur:
                        due = self.outbox.next_due_in(cur)
                    wait = min(self.settings.notify_poll_s, max(0.0, next_escalation - time.monotonic()))
                    wait_for_notify(conn, max(0.02, wait if due is None else min(wait, due)))
        finally:
            log.info("notify dispatcher leadership released")
            self.is_leader = False
            metrics.NOTIFY_DISPATCHER.set(0)

    def escalate(self, conn: Connection) -> int:
        policy = self.settings.notify.escalation
        if policy is None:
            return 0
        with conn.cursor() as cur, transaction(cur):
            return self.episodes.escalate(cur, policy)

    def dispatch_once(self, conn: Connection) -> int:
        """One round: claim, send side by side, record; the number claimed."""
        s = self.settings
        with conn.cursor() as cur, transaction(cur):
            batch = self.outbox.claim(cur, BATCH, s.notify_backoff_s, s.notify_backoff_max_s)
            sends = self._prepare(cur, batch)
        if not batch:
            return 0
        done = list(self._pool.map(send_one, sends))
        with conn.cursor() as cur, transaction(cur):
            for item in done:
                delivery = item.delivery
                if item.error is None:
                    self.outbox.delivered(cur, delivery["id"])
                    continue
                dead = delivery["attempts"] >= s.notify_max_attempts
                self.outbox.failed(cur, delivery["id"], item.error, dead)
        for item in done:
            name, delivery = item.channel.name, item.delivery
            if item.error is None:
                metrics.NOTIFY_DELIVERED.labels(name).inc()
                continue
            dead = delivery["attempts"] >= s.notify_max_attempts
            metrics.NOTIFY_FAILURES.labels(name, "dead" if dead else "retry").inc()
            log.warning(
                "notify: %s to %s failed (attempt %d%s): %s",
                delivery["kind"],
                name,
                delivery["attempts"],
                ", dead" if dead else "",
                item.error,
            )
        return len(batch)

    def _prepare(self, cur: Cursor, batch: list[dict[str, Any]]) -> list[Send]:
        """What to send of the claimed deliveries: storm control holds some back."""
        now = datetime.now(UTC)
        window = self.settings.notify_window_s
        taken_now: set[tuple[str, str]] = set()
        sends: list[Send] = []
        for delivery in batch:
            channel = self.settings.notify.channel(delivery["channel"])
            if channel is None:
                self.outbox.failed(cur, delivery["id"], NOT_CONFIGURED, True)
                continue
            if delivery["kind"] == RAISED and window > 0:
                key = (channel.name, str(delivery["alert_type"]))
                taken = self.outbox.window_taken(cur, key[0], key[1], window, delivery["id"])
                if taken is None and key in taken_now:
                    taken = now
                if taken is not None:
                    self.outbox.hold_for_digest(cur, delivery, taken + timedelta(seconds=window))
                    continue
                taken_now.add(key)
            items = None
            if delivery["kind"] == DIGEST:
                items = self.outbox.digest_items(cur, delivery["id"])
            message = render(
                delivery["kind"],
                {**delivery["message"], "alert_type": delivery["alert_type"]},
                self.settings.dashboard_url,
                now,
                items,
            )
            sends.append(Send(delivery, channel, message, webhook_body(delivery, items)))
        return sends
