"""REST views of alert episodes: the list (with state filters), one alert with its deliveries,
and an operator's acknowledge / resolve, under /admin/jobs/alerts and, as the old dashboard
(fg-admin-page) calls them, /admin/system/alerts/<id>/acknowledge|resolve.

An operator's change runs in one transaction: the episode's row, its alert:update event in the
log (serialised with the capture leader's appends: EventLog.lock_for_append) and the
notifications it queues (a manual resolution tells the channels).
"""

from __future__ import annotations

from typing import Any, cast

from flask import Response
from marshmallow import Schema, ValidationError, fields, validate

from admin_service.api import ApiBlueprint
from admin_service.auth import require_admin
from admin_service.db.dbapi import Cursor
from admin_service.errors import ApiError, envelope, not_found
from admin_service.jobs.schemas import DocumentedField, EnvelopeSchema, StrictQuerySchema, comma_list
from admin_service.live.connection import transaction
from admin_service.live.episodes import NOTE_MAX, Episodes, Transition, alert_view
from admin_service.live.notify.outbox import Outbox
from admin_service.live.routes import LoggedEventSchema
from admin_service.names import ALERT_RULES, ALERT_STATES
from admin_service.roles import current_admin, require_operator
from admin_service.services import services

blp = ApiBlueprint("alerts", __name__, url_prefix="/admin/jobs/alerts", description="Alert episodes: list, acknowledge, resolve.")
system_blp = ApiBlueprint(
    "system-alerts",
    __name__,
    url_prefix="/admin/system/alerts",
    description="The old dashboard's paths for acknowledge and resolve (aliases of /admin/jobs/alerts/...).",
)
SECURED: dict[str, Any] = {"security": [{"bearerAuth": []}]}


class StatesField(DocumentedField):
    openapi = {"type": "string", "pattern": comma_list(ALERT_STATES)}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        states = [part.strip() for part in str(value).split(",") if part.strip()]
        if not states or any(state not in ALERT_STATES for state in states):
            raise ValidationError(f"Use a comma-separated list of {', '.join(ALERT_STATES)}.")
        return states


class AlertsQuerySchema(StrictQuerySchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    type = fields.String(validate=validate.OneOf(ALERT_RULES))
    status = StatesField(metadata={"description": "Only alerts in these states (default: all)."})


class AlertSchema(Schema):
    id = fields.String(required=True, metadata={"description": "the episode's id"})
    type = fields.String(required=True)
    severity = fields.String(required=True, metadata={"description": "low, medium, high or critical"})
    message = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "active, acknowledged or resolved"})
    data = fields.Dict(required=True, metadata={"description": "the figures when raised"})
    timestamp = fields.String(required=True, metadata={"description": "when it last changed"})
    createdAt = fields.String(required=True, metadata={"description": "when it was raised"})
    updatedAt = fields.String(required=True)
    acknowledgedAt = fields.String(allow_none=True, required=True)
    acknowledgedBy = fields.String(allow_none=True, required=True, metadata={"description": "the operator's email (or username)"})
    acknowledgeNote = fields.String(allow_none=True, required=True)
    resolvedAt = fields.String(allow_none=True, required=True)
    resolvedBy = fields.String(
        allow_none=True, required=True, metadata={"description": "the operator; null with a resolvedAt: the rule cleared"}
    )
    resolveNote = fields.String(allow_none=True, required=True)
    resolution = fields.Dict(allow_none=True, required=True, metadata={"description": "the figures when the rule cleared"})
    escalations = fields.Integer(required=True, metadata={"description": "escalation messages sent"})


class DeliverySchema(Schema):
    id = fields.Integer(required=True)
    delivery_id = fields.String(required=True, metadata={"description": "the X-Delivery-Id header receivers de-duplicate by"})
    channel = fields.String(required=True)
    kind = fields.String(required=True, metadata={"description": "raised, resolved or escalation"})
    status = fields.String(required=True, metadata={"description": "pending, delivered, dead or held"})
    attempts = fields.Integer(required=True)
    last_error = fields.String(allow_none=True, required=True)
    held_reason = fields.String(allow_none=True, required=True, metadata={"description": "why storm control held it back"})
    created_at = fields.DateTime(required=True)
    next_attempt_at = fields.DateTime(allow_none=True, required=True, metadata={"description": "when pending: the next try"})
    delivered_at = fields.DateTime(allow_none=True, required=True)


class AlertListSchema(Schema):
    alerts = fields.List(fields.Nested(AlertSchema), required=True, metadata={"description": "episodes, newest first"})
    events = fields.List(
        fields.Nested(LoggedEventSchema),
        required=True,
        metadata={"description": "the logged job-alert events (raises and resolutions), newest first, as before"},
    )


class AlertListEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(AlertListSchema, required=True)


class AlertDetailsSchema(AlertSchema):
    deliveries = fields.List(fields.Nested(DeliverySchema), required=True, metadata={"description": "per channel, oldest first"})


class AlertDetailsEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(AlertDetailsSchema, required=True)


class AlertEnvelopeSchema(EnvelopeSchema):
    data = fields.Nested(AlertSchema, required=True)


class NoteSchema(Schema):
    note = fields.String(validate=validate.Length(max=NOTE_MAX), allow_none=True, metadata={"description": "optional"})


@blp.before_request
def _authenticate() -> None:
    require_admin()


@system_blp.before_request
def _authenticate_system() -> None:
    require_admin()


@blp.route("")
@blp.arguments(AlertsQuerySchema, location="query")
@blp.response(200, AlertListEnvelopeSchema)
@blp.errors(400, 401, 403, 429, 503)
@blp.doc(**SECURED)
def list_alerts(args: dict[str, Any]) -> Response:
    """Alerts

    Alert episodes newest first with their state and who acknowledged or resolved them
    (`status`: active, acknowledged, resolved; `type`), and, as before, the logged job-alert
    events (`type`, `limit`).
    """
    used = services()
    with used.engine.connect() as conn:
        alerts = Episodes(used.settings).listed(conn, args.get("status") or [], args.get("type"), args["limit"])
        events = used.runtime.event_log.recent_alerts(conn, args.get("type"), args["limit"])
    return envelope({"alerts": alerts, "events": events}, "Alerts")


@blp.route("/<int(max=9223372036854775807):alert_id>")
@blp.response(200, AlertDetailsEnvelopeSchema)
@blp.errors(400, 401, 403, 404, 429, 503)
@blp.doc(**SECURED)
def alert_details(alert_id: int) -> Response:
    """Alert details

    One alert episode with its deliveries per channel (status, attempts, last error).
    """
    used = services()
    with used.engine.connect() as conn:
        alert = Episodes(used.settings).get(conn, alert_id)
        if alert is None:
            raise not_found(f"Alert {alert_id} not found")
        deliveries = Outbox(used.settings).for_episode(conn, alert_id)
    return envelope({**alert, "deliveries": deliveries}, "Alert details")


def _change(alert_id: int, args: dict[str, Any], change: str) -> Response:
    used = services()
    admin = current_admin()
    user = {"id": admin.id, "email": admin.email, "username": admin.username}
    episodes = Episodes(used.settings)
    raw = used.engine.raw_connection()
    try:
        cur = cast(Cursor, raw.cursor())
        with transaction(cur):
            used.runtime.event_log.lock_for_append(cur)  # first: the appenders' one lock order
            act = episodes.acknowledge if change == "acknowledge" else episodes.resolve
            row, events = act(cur, alert_id, user, args.get("note"))
            used.runtime.event_log.append_and_notify(cur, events)
    except LookupError:
        raise not_found(f"Alert {alert_id} not found") from None
    except Transition as exc:
        raise ApiError(409, str(exc), code="CONFLICT") from None
    finally:
        raw.close()
    done = "acknowledged" if change == "acknowledge" else "resolved"
    by = row["acknowledged_by"] if change == "acknowledge" else row["resolved_by"]
    message = f"Alert {alert_id} {done}" if events else f"Alert {alert_id} was already {done}" + (f" by {by}" if by else "")
    return envelope(alert_view(row), message)


@blp.route("/<int(max=9223372036854775807):alert_id>/acknowledge", methods=["POST"])
@blp.arguments(NoteSchema, location="json", required=False)
@blp.response(200, AlertEnvelopeSchema)
@blp.errors(400, 401, 403, 404, 409, 429, 503)
@blp.doc(**SECURED)
@require_operator
def acknowledge(args: dict[str, Any], alert_id: int) -> Response:
    """Acknowledge an alert

    Operators only. An active alert becomes acknowledged (by you, now, with the optional
    note): escalation stops. Acknowledging it again changes nothing; a resolved alert is a 409.
    """
    return _change(alert_id, args, "acknowledge")


@blp.route("/<int(max=9223372036854775807):alert_id>/resolve", methods=["POST"])
@blp.arguments(NoteSchema, location="json", required=False)
@blp.response(200, AlertEnvelopeSchema)
@blp.errors(400, 401, 403, 404, 409, 429, 503)
@blp.doc(**SECURED)
@require_operator
def resolve(args: dict[str, Any], alert_id: int) -> Response:
    """Resolve an alert

    Operators only. The alert becomes resolved (by you, now, with the optional note) and the
    channels that were told of it get a resolution message. Resolving it again changes nothing.
    """
    return _change(alert_id, args, "resolve")


@system_blp.route("/<int(max=9223372036854775807):alert_id>/acknowledge", methods=["POST"])
@system_blp.arguments(NoteSchema, location="json", required=False)
@system_blp.response(200, AlertEnvelopeSchema)
@system_blp.errors(400, 401, 403, 404, 409, 429, 503)
@system_blp.doc(**SECURED)
@require_operator
def system_acknowledge(args: dict[str, Any], alert_id: int) -> Response:
    """Acknowledge an alert (the old dashboard's path)

    The same as POST /admin/jobs/alerts/{alert_id}/acknowledge.
    """
    return _change(alert_id, args, "acknowledge")


@system_blp.route("/<int(max=9223372036854775807):alert_id>/resolve", methods=["POST"])
@system_blp.arguments(NoteSchema, location="json", required=False)
@system_blp.response(200, AlertEnvelopeSchema)
@system_blp.errors(400, 401, 403, 404, 409, 429, 503)
@system_blp.doc(**SECURED)
@require_operator
def system_resolve(args: dict[str, Any], alert_id: int) -> Response:
    """Resolve an alert (the old dashboard's path)

    The same as POST /admin/jobs/alerts/{alert_id}/resolve.
    """
    return _change(alert_id, args, "resolve")
