"""The alert routes: the list with state filters and who acknowledged, one alert with its
deliveries, an operator's acknowledge/resolve (and the old dashboard's paths), and what a
viewer, a missing alert or bad input get."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from tests.live.notify.conftest import overflow
from tests.support.envelopes import assert_error
from tests.support.event_log import logged_events
from tests.support.factories import Data
from tests.support.receivers import channels_json, http_receiver, webhook
from tests.support.settings import app_with
from tests.support.tokens import bearer, token_for


@pytest.fixture
def raised(leader: Any, clean: Data) -> Any:
    """One queue_overflow episode, told to one channel (a receiver that is up)."""
    with http_receiver() as hooks:
        one = leader(channels_json(webhook("ops", hooks)))
        overflow(clean)
        one.evaluate()
        one.dispatch()
        hooks.wait_for(lambda r: True)
        yield one


@pytest.fixture
def api(database_url: str, engine: Engine, raised: Any) -> Any:
    return app_with(
        database_url, engine, NOTIFY_CHANNELS=channels_json({"name": "ops", "type": "slack", "url": "http://127.0.0.1:9/"})
    ).test_client()


def alert_id(api: Any, auth: dict[str, str]) -> str:
    alerts = api.get("/admin/jobs/alerts", headers=auth).json["data"]["alerts"]
    assert len(alerts) == 1
    return str(alerts[0]["id"])


def test_acknowledge_then_resolve_as_an_operator(api: Any, clean: Data, engine: Engine, settings: Any) -> None:
    operator = clean.user(user_type="superadmin", email="ops-lead@example.com")
    auth = bearer(token_for(operator))
    listed = api.get("/admin/jobs/alerts", headers=auth).json["data"]
    (alert,) = listed["alerts"]
    assert alert["status"] == "active" and alert["acknowledgedBy"] is None
    assert [e["kind"] for e in listed["events"]] == ["queue_overflow"]  # the logged job-alert, as before

    done = api.post(f"/admin/jobs/alerts/{alert['id']}/acknowledge", json={"note": "looking"}, headers=auth)
    assert done.status_code == 200, done.json
    assert done.json["data"]["status"] == "acknowledged"
    assert done.json["data"]["acknowledgedBy"] == "ops-lead@example.com"
    assert done.json["data"]["acknowledgeNote"] == "looking"
    again = api.post(f"/admin/jobs/alerts/{alert['id']}/acknowledge", headers=auth)
    assert again.status_code == 200 and "already acknowledged by ops-lead@example.com" in again.json["message"]

    acked = api.get("/admin/jobs/alerts", query_string={"status": "acknowledged"}, headers=auth).json["data"]["alerts"]
    assert [a["id"] for a in acked] == [alert["id"]]
    assert api.get("/admin/jobs/alerts", query_string={"status": "active,resolved"}, headers=auth).json["data"]["alerts"] == []

    resolved = api.post(f"/admin/jobs/alerts/{alert['id']}/resolve", json={}, headers=auth)
    assert resolved.status_code == 200
    assert resolved.json["data"]["status"] == "resolved" and resolved.json["data"]["resolvedBy"] == "ops-lead@example.com"
    assert_error(api.post(f"/admin/jobs/alerts/{alert['id']}/acknowledge", headers=auth), 409, "CONFLICT")

    names = [(kind, payload.get("status")) for _, kind, _, payload in logged_events(engine, settings)]
    assert names[-2:] == [("queue_overflow", "acknowledged"), ("queue_overflow", "resolved")]

    details = api.get(f"/admin/jobs/alerts/{alert['id']}", headers=auth).json["data"]
    assert details["status"] == "resolved"
    assert [(d["channel"], d["kind"], d["status"]) for d in details["deliveries"]] == [
        ("ops", "raised", "delivered"),
        ("ops", "resolved", "pending"),  # the manual resolution is told to the channel told of it
    ]


def test_the_old_dashboards_paths_are_aliases(api: Any, clean: Data) -> None:
    auth = bearer(token_for(clean.user(user_type="superadmin")))
    found = alert_id(api, auth)
    done = api.post(f"/admin/system/alerts/{found}/acknowledge", headers=auth)
    assert done.status_code == 200 and done.json["data"]["status"] == "acknowledged"
    done = api.post(f"/admin/system/alerts/{found}/resolve", headers=auth)
    assert done.status_code == 200 and done.json["data"]["status"] == "resolved"


def test_a_viewer_may_look_but_not_act(api: Any, clean: Data) -> None:
    auth = bearer(token_for(clean.user(user_type="admin")))
    found = alert_id(api, auth)
    assert api.get(f"/admin/jobs/alerts/{found}", headers=auth).status_code == 200
    for path in (f"/admin/jobs/alerts/{found}/acknowledge", f"/admin/system/alerts/{found}/resolve"):
        body = assert_error(api.post(path, headers=auth), 403, "FORBIDDEN")
        assert "operator" in body["error"]["message"]
    assert_error(api.post(f"/admin/jobs/alerts/{found}/acknowledge"), 401, "UNAUTHORIZED")


def test_bad_input_and_missing_alerts(api: Any, clean: Data) -> None:
    auth = bearer(token_for(clean.user(user_type="superadmin")))
    assert_error(api.get("/admin/jobs/alerts/999999", headers=auth), 404, "NOT_FOUND")
    assert_error(api.post("/admin/jobs/alerts/999999/resolve", headers=auth), 404, "NOT_FOUND")
    for bad in ("abc", "-1", "1.5", "9" * 30):  # not an alert id: no such alert
        assert_error(api.get(f"/admin/jobs/alerts/{bad}", headers=auth), 404, "NOT_FOUND")
        assert_error(api.post(f"/admin/system/alerts/{bad}/acknowledge", headers=auth), 404, "NOT_FOUND")
    body = assert_error(api.get("/admin/jobs/alerts", query_string={"status": "open"}, headers=auth), 400, "VALIDATION_ERROR")
    assert body["error"]["details"][0]["field"] == "status"
    found = alert_id(api, auth)
    body = assert_error(
        api.post(f"/admin/jobs/alerts/{found}/acknowledge", json={"note": "x" * 1001}, headers=auth), 400, "VALIDATION_ERROR"
    )
    assert "note" in str(body["error"]["details"])
    body = assert_error(
        api.post(f"/admin/jobs/alerts/{found}/acknowledge", json={"nope": 1}, headers=auth), 400, "VALIDATION_ERROR"
    )
    assert "nope" in str(body["error"]["details"])
