"""Channels from the environment or a file, checked at start with a message naming what is
wrong; and `notify test --channel NAME` against a real receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from admin_service.config import ConfigError, load_settings
from tests.support import ROOT
from tests.support.receivers import channels_json, http_receiver, mail, smtp_receiver, wait_mail, webhook
from tests.support.settings import TEST_SECRET

BASE = {"JWT_SECRET": TEST_SECRET}


def test_channels_from_the_environment_or_a_file(tmp_path: Path) -> None:
    doc = {
        "channels": [
            {
                "name": "ops",
                "type": "webhook",
                "url": "https://ops.example/h",
                "secret_env": "OPS_SECRET",
                "min_severity": "high",
            },
            {"name": "chat", "type": "slack", "url": "https://hooks.slack.com/x", "alert_types": ["queue_overflow"]},
        ],
        "escalation": {"channel": "ops", "after_min": 15, "repeat_min": 60, "max": 3},
    }
    path = tmp_path / "channels.json"
    path.write_text(json.dumps(doc))
    from_file = load_settings({**BASE, "NOTIFY_CHANNELS_FILE": str(path), "OPS_SECRET": "s" * 20}).notify
    inline = load_settings({**BASE, "NOTIFY_CHANNELS": json.dumps(doc), "OPS_SECRET": "s" * 20}).notify
    assert from_file == inline
    ops, chat = inline.channels
    assert ops.secret == "s" * 20 and not ops.wants("queue_overflow", "medium") and ops.wants("queue_overflow", "critical")
    assert chat.wants("queue_overflow", "low") and not chat.wants("high_failure_rate", "critical")
    assert inline.escalation is not None and inline.escalation.after_s == 900 and inline.escalation.max_times == 3
    assert load_settings(BASE).notify.channels == ()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"NOTIFY_CHANNELS": "{nope"}, "NOTIFY_CHANNELS is not JSON"),
        (
            {"NOTIFY_CHANNELS": '{"channels": [{"name": "x", "type": "pager"}]}'},
            "channel 'x': 'type' must be one of webhook, slack, email",
        ),
        (
            {"NOTIFY_CHANNELS": '{"channels": [{"name": "x", "type": "webhook", "url": "https://a/b"}]}'},
            "channel 'x': a webhook needs a 'secret'",
        ),
        (
            {"NOTIFY_CHANNELS": '{"channels": [{"name": "x", "type": "slack", "url": "ftp://a"}]}'},
            "channel 'x': 'url' must be an http",
        ),
        (
            {"NOTIFY_CHANNELS": '{"channels": [{"name": "x", "type": "slack", "url": "https://a", "min_severity": "urgent"}]}'},
            "'min_severity' must be one of",
        ),
        (
            {"NOTIFY_CHANNELS": '{"channels": [{"name": "x", "type": "slack", "url": "https://a", "colour": 1}]}'},
            "unknown key(s) colour",
        ),
        (
            {"NOTIFY_CHANNELS": '{"channels": [{"name": "m", "type": "email", "host": "h", "from": "a@b", "to": "nobody"}]}'},
            "channel 'm': 'to' must be an address",
        ),
        (
            {
                "NOTIFY_CHANNELS": '{"channels": [{"name": "x", "type": "webhook", "url": "https://a", "secret_env": "UNSET_SECRET"}]}'
            },
            "names UNSET_SECRET, which is not set",
        ),
        ({"NOTIFY_CHANNELS": '{"channels": [], "escalation": {"channel": "ghost"}}'}, "'channel' must name a configured channel"),
        (
            {"NOTIFY_CHANNELS": '{"channels": []}', "NOTIFY_CHANNELS_FILE": "/x.json"},
            "set NOTIFY_CHANNELS or NOTIFY_CHANNELS_FILE, not both",
        ),
        ({"NOTIFY_CHANNELS_FILE": "/no/such/file.json"}, "NOTIFY_CHANNELS_FILE: cannot read /no/such/file.json"),
    ],
)
def test_a_bad_configuration_stops_the_start_naming_what(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({**BASE, **env})
    assert says in str(refused.value)


def notify_test(channels: str, name: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NOTIFY_CHANNELS": channels}
    env.pop("JWT_SECRET", None)  # not needed to send a test message
    return subprocess.run(
        [sys.executable, "-m", "admin_service", "notify", "test", "--channel", name],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_notify_test_says_whether_the_channel_accepted() -> None:
    with http_receiver() as hooks, smtp_receiver() as (port, inbox):
        channels = channels_json(webhook("ops", hooks), mail("mail", port), webhook("down", hooks, url="http://127.0.0.1:9/"))
        done = notify_test(channels, "ops")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("accepted: ops (webhook,")
        (got,) = hooks.on("/ops")
        assert got.signature_ok and got.body["kind"] == "test" and got.body["title"].startswith("[TEST]")

        assert notify_test(channels, "mail").returncode == 0
        (message,) = wait_mail(inbox)
        assert message["Subject"].startswith("[TEST]")

        refused = notify_test(channels, "down")
        assert refused.returncode == 1
        assert refused.stderr.startswith("refused: down (webhook, http://127.0.0.1:9/): connection failed")

        hooks.mode = "error"
        refused = notify_test(channels, "ops")
        assert refused.returncode == 1 and "HTTP 500" in refused.stderr

        unknown = notify_test(channels, "nope")
        assert unknown.returncode == 2 and "no channel named 'nope'; configured: ops, mail, down" in unknown.stderr
