"""Slack incoming webhooks: `text` (the notification's fallback) and Block Kit blocks with the
figures and a button to the dashboard. Slack answers 200 "ok"."""

from __future__ import annotations

import json
from typing import Any

from admin_service.live.notify.channels import Channel
from admin_service.live.notify.http import post
from admin_service.live.notify.messages import Rendered

BLOCK_TEXT_MAX = 3000  # Slack's limit for a section's text


def slack_body(message: Rendered) -> dict[str, Any]:
    facts = "\n".join(f"*{label}:* {value}" for label, value in message.facts)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": message.summary[:BLOCK_TEXT_MAX]}},
    ]
    if facts:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": facts[:BLOCK_TEXT_MAX]}})
    blocks.append(
        {
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open the dashboard"}, "url": message.link}],
        }
    )
    return {"text": f"{message.title}: {message.summary} <{message.link}|Dashboard>", "blocks": blocks}


def send(channel: Channel, message: Rendered, delivery_id: str, body: dict[str, object]) -> None:
    assert channel.url is not None
    post(channel.url, json.dumps(slack_body(message)).encode(), {"X-Delivery-Id": delivery_id}, channel.timeout_s)
