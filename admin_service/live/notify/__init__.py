"""Notifications: alert episodes told to people over webhooks, Slack and e-mail.

    capture leader --(same transaction as the episode change)--> ADMIN_SCHEMA.alert_deliveries
        --(one dispatcher across all workers and instances)--> channels

- `channels.py`: the configured channels (NOTIFY_CHANNELS / NOTIFY_CHANNELS_FILE), who wants what.
- `messages.py`: what a message says (what, how bad, since when, the figures with units, the link).
- `webhook.py`, `slack.py`, `email.py`: one sender per channel type.
- `outbox.py`: the one owner of the SQL on alert_deliveries.
- `dispatcher.py`: the single dispatcher (its own advisory lock), retries with backoff and
  jitter, escalation and storm control.
"""
