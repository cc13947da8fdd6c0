"""The generic webhook: a JSON body, signed so that the receiver can verify it and reject replays.

Headers:
- `X-Delivery-Id`: the delivery's id, the same on every retry: de-duplicate by it.
- `X-Signature-Timestamp`: Unix seconds when this attempt was signed.
- `X-Signature`: `sha256=` + hex HMAC-SHA256 with the channel's secret over
  `<timestamp>.<raw body>`. A receiver recomputes it over the bytes it received, compares in
  constant time, and refuses a timestamp more than a few minutes away from its clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from admin_service.live.notify.channels import Channel
from admin_service.live.notify.http import post
from admin_service.live.notify.messages import Rendered


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def send(channel: Channel, message: Rendered, delivery_id: str, body: dict[str, object]) -> None:
    assert channel.url is not None and channel.secret is not None
    raw = json.dumps({**body, "title": message.title, "text": message.text, "link": message.link}, default=str).encode()
    timestamp = str(int(time.time()))
    headers = {
        "X-Delivery-Id": delivery_id,
        "X-Signature-Timestamp": timestamp,
        "X-Signature": signature(channel.secret, timestamp, raw),
    }
    post(channel.url, raw, headers, channel.timeout_s)
