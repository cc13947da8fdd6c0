"""What every sender (webhook.py, slack.py, email.py) shares: its signature and the error a failed send raises."""

from __future__ import annotations

from typing import Protocol

from admin_service.live.notify.channels import Channel
from admin_service.live.notify.messages import Rendered


class DeliveryError(Exception):
    """The receiver did not accept the message (refused, timed out, answered an error); the
    text says which, for the delivery's last_error."""


class Sender(Protocol):
    def __call__(self, channel: Channel, message: Rendered, delivery_id: str, body: dict[str, object]) -> None: ...
