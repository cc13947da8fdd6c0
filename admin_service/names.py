"""The names clients see, each declared once: live event names and alert rule names.

A leaf module (no imports from the package), so that config, the live pipeline, the REST
schemas and the dashboard page (which receives them from its template) all read the same list.
"""

from __future__ import annotations

# Live events, the same on SSE and Socket.IO.
JOB_STATS = "job-stats"
JOB_UPDATE = "job-update"
JOB_ALERT = "job-alert"
# An alert episode's lifecycle, as the old dashboard (fg-admin-page) reads it: alert:new when
# raised, alert:update when acknowledged or resolved (payload: live/episodes.py `alert_view`).
ALERT_NEW = "alert:new"
ALERT_UPDATE = "alert:update"
# An operator's action on jobs (admin_service/actions/): its state and counts as they move.
JOB_ACTION = "job-action"
EVENT_NAMES = (JOB_STATS, JOB_UPDATE, JOB_ALERT, JOB_ACTION, ALERT_NEW, ALERT_UPDATE)

# An alert episode's states.
ALERT_ACTIVE = "active"
ALERT_ACKNOWLEDGED = "acknowledged"
ALERT_RESOLVED = "resolved"
ALERT_STATES = (ALERT_ACTIVE, ALERT_ACKNOWLEDGED, ALERT_RESOLVED)

# Alert rules: the table-wide rules, then the per-job one.
HIGH_FAILURE_RATE = "high_failure_rate"
QUEUE_OVERFLOW = "queue_overflow"
PROCESSING_TIMEOUT = "processing_timeout"
RETRIES_EXHAUSTED = "retries_exhausted"
# The table-wide rules: raised once per episode and resolved when they clear.
EPISODE_RULES = (HIGH_FAILURE_RATE, QUEUE_OVERFLOW, PROCESSING_TIMEOUT)
ALERT_RULES = (*EPISODE_RULES, RETRIES_EXHAUSTED)

# Capture modes, as /health/ready and the admin_service_capture_mode metric report them: polling
# (state sampling), polling woken by the opt-in NOTIFY trigger (still sampling), exact (the opt-in
# change-capture trigger: every change).
CAPTURE_POLL = "poll"
CAPTURE_NOTIFY_TRIGGER = "notify-trigger"
CAPTURE_EXACT = "exact"
CAPTURE_MODES = (CAPTURE_POLL, CAPTURE_NOTIFY_TRIGGER, CAPTURE_EXACT)
