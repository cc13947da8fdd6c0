"""How an item is handed to the platform: a command message on its RabbitMQ broker (AMQP), or
a call to the owner service's API (HTTP); the embedded demo has its own (demo_executor.py).

A transport's `send` returns when the platform has the command (the broker confirmed it, or
the owner answered 2xx) and raises otherwise: Retry (try again later: unreachable, returned,
not confirmed, 5xx) or Refused (the owner said no, a 4xx: the item fails with its message).
The command carries the item id as its idempotency key: a command sent twice (a confirm lost
in a crash) is the same command, and the owner must do it once.

pika, not kombu: pika is RabbitMQ's own Python client, kept by the RabbitMQ team, with no
dependencies; its BlockingConnection gives publisher confirms and mandatory publishing as a
plain call that raises on a nack or a return, which is all this needs. kombu brings amqp and
vine, a broker abstraction this service does not use, and its confirms live in a transport
option. Under gunicorn's gevent worker pika's sockets are cooperative (monkey-patched).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from admin_service.config import Settings

log = logging.getLogger("admin_service.actions")
# pika logs every failed connection attempt at ERROR with a traceback; the dispatcher says it once.
logging.getLogger("pika").setLevel(logging.CRITICAL)

AMQP = "amqp"
HTTP = "http"
DEMO = "demo"
MESSAGE_VERSION = 1
COMMAND_TYPE = "admin.job.retry"
NOT_CONFIGURED = (
    "Job actions are not configured: set ACTION_AMQP_URL (with ACTION_AMQP_EXCHANGE and ACTION_AMQP_ROUTING_KEY) "
    "to send commands to the platform's RabbitMQ, or JOB_ACTIONS_URL and JOB_ACTIONS_SERVICE_KEY to call the owner "
    "service; see the README's Actions section"
)


class Retry(Exception):
    """Not handed over; try again later. `down`: the target itself is unreachable (back off)."""

    def __init__(self, message: str, *, down: bool = False) -> None:
        super().__init__(message)
        self.down = down


class Refused(Exception):
    """The owner refused this command (its message): the item failed."""


@dataclass(frozen=True)
class Command:
    action_id: str
    item_id: str  # the idempotency key
    kind: str
    job_row_id: str
    job_id: str
    user_id: str | None
    requested_by: dict[str, Any]
    reason: str
    requested_at: str

    def body(self) -> dict[str, Any]:
        return {
            "version": MESSAGE_VERSION,
            "type": COMMAND_TYPE,
            "idempotency_key": self.item_id,
            "action_id": self.action_id,
            "item_id": self.item_id,
            "job_ids": [self.job_id],
            "job_row_ids": [self.job_row_id],
            "user_id": self.user_id,
            "requested_by": self.requested_by,
            "reason": self.reason,
            "requested_at": self.requested_at,
        }


class Transport(Protocol):
    name: str

    def send(self, command: Command) -> None: ...

    def idle(self) -> None: ...

    def close(self) -> None: ...


def configured_transport(settings: Settings) -> str | None:
    """amqp, http or demo as configured; None: actions cannot be sent (the routes answer 503)."""
    return settings.action_transport or None


class AmqpTransport:
    """A persistent message per command to ACTION_AMQP_EXCHANGE with ACTION_AMQP_ROUTING_KEY,
    mandatory (an unroutable message comes back and is retried) with publisher confirms."""

    name = AMQP

    def __init__(self, settings: Settings) -> None:
        import pika

        assert settings.action_amqp_url is not None
        self.pika = pika
        self.params = pika.URLParameters(settings.action_amqp_url)
        self.params.socket_timeout = settings.action_send_timeout_s
        self.params.blocked_connection_timeout = settings.action_send_timeout_s
        self.params.connection_attempts = 1
        self.exchange = settings.action_amqp_exchange
        self.routing_key = settings.action_amqp_routing_key
        self._connection: Any = None
        self._channel: Any = None

    def _open(self) -> Any:
        if self._channel is None or not self._channel.is_open:
            self.close()
            self._connection = self.pika.BlockingConnection(self.params)
            channel = self._connection.channel()
            channel.confirm_delivery()
            self._channel = channel
        return self._channel

    def send(self, command: Command) -> None:
        exceptions = self.pika.exceptions
        properties = self.pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,  # persistent
            message_id=command.item_id,
            type=COMMAND_TYPE,
            app_id="admin-service",
            headers={"idempotency-key": command.item_id, "version": MESSAGE_VERSION},
        )
        body = json.dumps(command.body()).encode()
        try:
            self._open().basic_publish(self.exchange, self.routing_key, body, properties, mandatory=True)
        except exceptions.UnroutableError:
            raise Retry(
                f"returned by the broker: no queue is bound to exchange {self.exchange!r} with routing key {self.routing_key!r}"
            ) from None
        except exceptions.NackError:
            raise Retry("not confirmed by the broker (nack)") from None
        except exceptions.ChannelClosedByBroker as exc:
            self.close()
            raise Retry(f"the broker closed the channel: {exc.reply_code} {exc.reply_text}", down=True) from None
        except (exceptions.AMQPError, OSError) as exc:
            self.close()
            raise Retry(f"broker unreachable: {type(exc).__name__} {exc}".strip(), down=True) from None

    def idle(self) -> None:
        """Answer the broker's heartbeats while there is nothing to send."""
        if self._connection is not None and self._connection.is_open:
            try:
                self._connection.process_data_events(0)
            except (self.pika.exceptions.AMQPError, OSError):
                self.close()

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (self.pika.exceptions.AMQPError, OSError):
                pass


class HttpTransport:
    """POST {JOB_ACTIONS_URL}/jobs/retry per command, with the service key and the idempotency key."""

    name = HTTP

    def __init__(self, settings: Settings) -> None:
        assert settings.job_actions_url is not None
        self.url = f"{settings.job_actions_url}/jobs/retry"
        self.key = settings.job_actions_service_key or ""
        self.timeout_s = settings.action_send_timeout_s
        self.session = requests.Session()

    def send(self, command: Command) -> None:
        headers = {"X-Service-Key": self.key, "Idempotency-Key": command.item_id}
        try:
            response = self.session.post(self.url, json=command.body(), headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise Retry(f"owner service unreachable: {type(exc).__name__}", down=True) from None
        if response.status_code < 300:
            return
        message = owner_message(response)
        if response.status_code in (408, 425, 429) or response.status_code >= 500:
            raise Retry(f"owner service answered {response.status_code}: {message}", down=response.status_code >= 500)
        raise Refused(f"owner service refused it ({response.status_code}): {message}")

    def idle(self) -> None:
        pass

    def close(self) -> None:
        self.session.close()


def owner_message(response: requests.Response) -> str:
    """The owner's own words: the envelope's error message, a message field, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if body.get("message"):
            return str(body["message"])[:500]
    return json.dumps(body)[:500]
