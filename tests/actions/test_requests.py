"""The action routes in the request's own terms (real PostgreSQL, no dispatcher running): who may
act, what a request must carry, the dry run's confirmation token, the cap, Idempotency-Key, and
the audit log. The whole loop through a broker is in test_loop.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from admin_service.actions import confirm
from admin_service.config import ConfigError, Settings, load_settings
from tests.actions.conftest import UNUSED_BROKER
from tests.support.factories import Data
from tests.support.settings import TEST_SECRET, app_with
from tests.support.tokens import bearer, token_for

IQ = "AI-Based IQ Test"


def failed_jobs(data: Data, n: int, **fields: Any) -> list[dict[str, Any]]:
    return [data.job(status="failed", assessment_name=IQ, error_message="worker crashed", **fields) for _ in range(n)]


def dry_run(client: FlaskClient, headers: dict[str, str], flt: dict[str, Any]) -> Any:
    response = client.post("/admin/jobs/actions", json={"kind": "retry", "filter": flt, "dry_run": True}, headers=headers)
    assert response.status_code == 200, response.json
    return response.json["data"]


def confirmed(client: FlaskClient, headers: dict[str, str], flt: dict[str, Any], token: str, reason: str = "worker fixed") -> Any:
    return client.post(
        "/admin/jobs/actions",
        json={"kind": "retry", "filter": flt, "reason": reason, "confirmation_token": token},
        headers=headers,
    )


def error_fields(response: Any) -> list[str]:
    return [d["field"] for d in response.json["error"]["details"]]


def test_a_viewer_may_look_but_not_act(acting_client: FlaskClient, clean: Data) -> None:
    job = failed_jobs(clean, 1)[0]
    viewer = bearer(token_for(clean.user(user_type="admin")))  # admins view, only superadmins act by default

    refused = [
        acting_client.post(f"/admin/jobs/{job['id']}/retry", json={"reason": "x"}, headers=viewer),
        acting_client.post("/admin/jobs/actions", json={"kind": "retry", "filter": {}, "dry_run": True}, headers=viewer),
        acting_client.post(f"/admin/jobs/actions/{uuid.uuid4()}/cancel", headers=viewer),
    ]

    for response in refused:
        assert response.status_code == 403, response.json
        assert response.json["error"]["code"] == "FORBIDDEN"
        assert "operator role" in response.json["error"]["message"]
    assert acting_client.get("/admin/jobs/actions", headers=viewer).status_code == 200
    assert acting_client.get(f"/admin/jobs/{job['id']}", headers=viewer).status_code == 200


def test_admins_act_where_action_roles_say_so(database_url: str, engine: Engine, clean: Data) -> None:
    client = app_with(database_url, engine, ACTION_ROLES="admin,superadmin", **UNUSED_BROKER).test_client()
    job = failed_jobs(clean, 1)[0]
    admin = bearer(token_for(clean.user(user_type="admin")))

    response = client.post(f"/admin/jobs/{job['job_id']}/retry", json={"reason": "queue restored"}, headers=admin)

    assert response.status_code == 202, response.json
    assert response.json["data"]["requested_by"]["user_type"] == "admin"


def test_without_a_transport_acting_is_503_saying_how_to_configure_one(
    database_url: str, engine: Engine, clean: Data, as_operator: dict[str, str]
) -> None:
    client = app_with(database_url, engine).test_client()
    job = failed_jobs(clean, 1)[0]

    response = client.post(f"/admin/jobs/{job['id']}/retry", json={"reason": "x"}, headers=as_operator)

    assert response.status_code == 503
    assert response.json["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "ACTION_AMQP_URL" in response.json["error"]["message"] and "JOB_ACTIONS_URL" in response.json["error"]["message"]


def test_a_reason_is_required(acting_client: FlaskClient, clean: Data, as_operator: dict[str, str]) -> None:
    job = failed_jobs(clean, 1)[0]
    flt = {"status": "failed"}
    token = dry_run(acting_client, as_operator, flt)["confirmation_token"]

    answers = [
        acting_client.post(f"/admin/jobs/{job['id']}/retry", json={}, headers=as_operator),
        acting_client.post(f"/admin/jobs/{job['id']}/retry", json={"reason": "   "}, headers=as_operator),
        acting_client.post(
            "/admin/jobs/actions", json={"kind": "retry", "filter": flt, "confirmation_token": token}, headers=as_operator
        ),
    ]

    for response in answers:
        assert response.status_code == 400, response.json
        assert "reason" in error_fields(response)
    assert acting_client.get("/admin/jobs/actions", headers=as_operator).json["data"]["total"] == 0


def test_one_failed_job_is_retried_others_are_refused(
    acting_client: FlaskClient, clean: Data, as_operator: dict[str, str]
) -> None:
    failed = failed_jobs(clean, 1)[0]
    completed = clean.job(status="completed")

    accepted = acting_client.post(f"/admin/jobs/{failed['id']}/retry", json={"reason": "worker fixed"}, headers=as_operator)
    again = acting_client.post(f"/admin/jobs/{failed['id']}/retry", json={"reason": "again"}, headers=as_operator)
    not_failed = acting_client.post(f"/admin/jobs/{completed['id']}/retry", json={"reason": "x"}, headers=as_operator)
    missing = acting_client.post(f"/admin/jobs/{uuid.uuid4()}/retry", json={"reason": "x"}, headers=as_operator)

    assert accepted.status_code == 202
    action = accepted.json["data"]
    assert (action["kind"], action["state"], action["total"], action["reason"]) == ("retry", "pending", 1, "worker fixed")
    assert action["counts"]["pending"] == 1
    assert [(i["job_row_id"], i["state"]) for i in action["items"]] == [(failed["id"], "pending")]
    assert again.status_code == 409 and "being retried already" in again.json["error"]["message"]
    assert not_failed.status_code == 409 and not_failed.json["error"]["code"] == "NOT_RETRYABLE"
    assert missing.status_code == 404


def test_a_bulk_retry_snapshots_the_matching_jobs_and_skips_those_not_failed(
    acting_client: FlaskClient, clean: Data, as_operator: dict[str, str]
) -> None:
    failed = failed_jobs(clean, 3)
    completed = clean.job(status="completed", assessment_name=IQ)
    clean.job(status="failed", assessment_name="Custom Assessment")  # another filter's
    flt = {"assessment_name": "iq"}

    preview = dry_run(acting_client, as_operator, flt)
    response = confirmed(acting_client, as_operator, flt, preview["confirmation_token"])

    assert (preview["count"], preview["retryable"], preview["cap"], preview["over_cap"]) == (4, 3, 1000, False)
    assert {job["id"] for job in preview["sample"]} == {j["id"] for j in [*failed, completed]}
    assert response.status_code == 202, response.json
    action = response.json["data"]
    assert action["total"] == 4 and action["filter"] == {"assessment_name": "iq"}
    states = {i["job_row_id"]: (i["state"], i["reason"]) for i in action["items"]}
    assert {states[j["id"]][0] for j in failed} == {"pending"}
    assert states[completed["id"]][0] == "skipped" and "only failed jobs are retried" in states[completed["id"]][1]
    assert action["counts"]["pending"] == 3 and action["counts"]["skipped"] == 1


def test_the_confirmation_token_is_bound_to_its_filter_operator_expiry_and_one_use(
    acting_client: FlaskClient, clean: Data, as_operator: dict[str, str], engine: Engine, settings: Settings
) -> None:
    failed_jobs(clean, 2)
    flt = {"status": "failed"}
    token = dry_run(acting_client, as_operator, flt)["confirmation_token"]
    other_operator = bearer(token_for(clean.user(user_type="superadmin")))
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        with raw.cursor() as cur:
            key = confirm.load_secret(cur, settings.admin_schema)  # type: ignore[arg-type]
    operator_id = acting_client.get("/admin/session", headers=as_operator).json["data"]["user"]["id"]
    expired, _ = confirm.issue(
        key, kind="retry", digest=confirm.filter_digest(_filters(flt)), count=2, user_id=operator_id, ttl_s=-1
    )

    other_filter = confirmed(acting_client, as_operator, {"status": "failed", "assessment_name": IQ}, token)
    someone_else = confirmed(acting_client, other_operator, flt, token)
    too_late = confirmed(acting_client, as_operator, flt, expired)
    forged = confirmed(acting_client, as_operator, flt, token[:-4] + "AAAA")
    same_filter_spelled_otherwise = confirmed(acting_client, as_operator, {"status": "failed,failed"}, token)
    reused = confirmed(acting_client, as_operator, flt, token)

    for response, words in (
        (other_filter, "another filter"),
        (someone_else, "another operator"),
        (too_late, "expired"),
        (forged, "Not a confirmation token"),
        (reused, "confirmed action"),
    ):
        assert response.status_code == 400, response.json
        assert error_fields(response) == ["confirmation_token"]
        assert words in response.json["error"]["message"]
    assert same_filter_spelled_otherwise.status_code == 202, same_filter_spelled_otherwise.json
    assert acting_client.get("/admin/jobs/actions", headers=as_operator).json["data"]["total"] == 1


def _filters(flt: dict[str, Any]) -> Any:
    from admin_service.jobs.queries import JobFilters
    from admin_service.jobs.schemas import JobFilterSchema

    return JobFilters.from_args(JobFilterSchema().load(flt))


def test_the_count_must_not_move_between_the_dry_run_and_the_request(
    acting_client: FlaskClient, clean: Data, as_operator: dict[str, str]
) -> None:
    failed_jobs(clean, 2)
    flt = {"status": "failed"}
    token = dry_run(acting_client, as_operator, flt)["confirmation_token"]
    failed_jobs(clean, 1)  # one more failed since

    response = confirmed(acting_client, as_operator, flt, token)

    assert response.status_code == 409
    assert "matched 2 jobs at the dry run and matches 3 now" in response.json["error"]["message"]


def test_more_jobs_than_the_cap_are_refused(database_url: str, engine: Engine, clean: Data, as_operator: dict[str, str]) -> None:
    client = app_with(database_url, engine, ACTION_MAX_JOBS="3", **UNUSED_BROKER).test_client()
    failed_jobs(clean, 3)
    flt = {"status": "failed"}
    token = dry_run(client, as_operator, flt)["confirmation_token"]
    failed_jobs(clean, 1)

    preview = dry_run(client, as_operator, flt)
    request = confirmed(client, as_operator, flt, token)

    assert (preview["count"], preview["over_cap"], preview["confirmation_token"]) == (4, True, None)
    assert request.status_code == 400, request.json
    assert error_fields(request) == ["filter"]
    assert "more than one action may cover (ACTION_MAX_JOBS 3)" in request.json["error"]["message"]
    assert client.get("/admin/jobs/actions", headers=as_operator).json["data"]["total"] == 0


def test_a_bad_filter_is_named(acting_client: FlaskClient, clean: Data, as_operator: dict[str, str]) -> None:
    response = acting_client.post(
        "/admin/jobs/actions",
        json={"kind": "retry", "filter": {"status": "exploded", "colour": "red"}, "dry_run": True},
        headers=as_operator,
    )

    assert response.status_code == 400
    assert set(error_fields(response)) == {"filter.status", "filter.colour"}


def test_the_same_post_with_one_idempotency_key_acts_once(
    acting_client: FlaskClient, clean: Data, as_operator: dict[str, str]
) -> None:
    job = failed_jobs(clean, 1)[0]
    headers = {**as_operator, "Idempotency-Key": str(uuid.uuid4())}

    first = acting_client.post(f"/admin/jobs/{job['id']}/retry", json={"reason": "worker fixed"}, headers=headers)
    second = acting_client.post(f"/admin/jobs/{job['id']}/retry", json={"reason": "worker fixed"}, headers=headers)
    other_body = acting_client.post(f"/admin/jobs/{job['id']}/retry", json={"reason": "something else"}, headers=headers)

    assert first.status_code == second.status_code == 202
    assert second.json == first.json  # the first answer, timestamp and all
    assert second.headers["Idempotent-Replayed"] == "true"
    assert other_body.status_code == 422 and other_body.json["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert acting_client.get("/admin/jobs/actions", headers=as_operator).json["data"]["total"] == 1


def test_cancel_skips_what_was_not_sent(
    acting_client: FlaskClient, clean: Data, as_operator: dict[str, str], engine: Engine
) -> None:
    failed_jobs(clean, 3)
    flt = {"status": "failed"}
    action = confirmed(acting_client, as_operator, flt, dry_run(acting_client, as_operator, flt)["confirmation_token"]).json[
        "data"
    ]
    with engine.begin() as conn:  # as if the dispatcher had sent the first one
        conn.execute(text("UPDATE admin.action_items SET state = 'sent', sent_at = now(), attempts = 1 WHERE position = 1"))

    cancelled = acting_client.post(f"/admin/jobs/actions/{action['id']}/cancel", headers=as_operator)
    again = acting_client.post(f"/admin/jobs/actions/{action['id']}/cancel", headers=as_operator)

    assert cancelled.status_code == 200, cancelled.json
    data = cancelled.json["data"]
    assert data["state"] == "cancelled"
    assert (data["counts"]["sent"], data["counts"]["skipped"], data["counts"]["pending"]) == (1, 2, 0)
    assert all("cancelled by" in i["reason"] for i in data["items"] if i["state"] == "skipped")
    assert again.status_code == 409


def test_the_audit_log_filters_by_who_kind_state_and_date(
    acting_client: FlaskClient, clean: Data, as_operator: dict[str, str], operator: dict[str, Any]
) -> None:
    jobs = failed_jobs(clean, 2)
    other = bearer(token_for(clean.user(user_type="superadmin", email="night-shift@example.com")))
    first = acting_client.post(f"/admin/jobs/{jobs[0]['id']}/retry", json={"reason": "a"}, headers=as_operator).json["data"]
    acting_client.post(f"/admin/jobs/{jobs[1]['id']}/retry", json={"reason": "b"}, headers=other)
    acting_client.post(f"/admin/jobs/actions/{first['id']}/cancel", headers=as_operator)

    def listed(**params: str) -> list[str]:
        response = acting_client.get("/admin/jobs/actions", query_string=params, headers=as_operator)
        assert response.status_code == 200, response.json
        return [a["reason"] for a in response.json["data"]["actions"]]

    assert listed() == ["b", "a"]  # newest first
    assert listed(requested_by=operator["id"]) == ["a"]
    assert listed(requested_by_email="NIGHT-shift") == ["b"]
    assert listed(state="cancelled") == ["a"]
    assert listed(kind="retry", state="pending") == ["b"]
    assert listed(date_from="2000-01-01", date_to="2000-01-02") == []
    bad = acting_client.get("/admin/jobs/actions", query_string={"state": "exploded"}, headers=as_operator)
    assert bad.status_code == 400 and error_fields(bad) == ["state"]
    one = acting_client.get(f"/admin/jobs/actions/{first['id']}", query_string={"item_state": "skipped"}, headers=as_operator)
    assert one.status_code == 200 and len(one.json["data"]["items"]) == 1
    assert acting_client.get("/admin/jobs/actions/not-an-id", headers=as_operator).status_code == 404


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"ACTION_TRANSPORT": "demo"}, "only for `make run`"),
        ({"ACTION_AMQP_URL": "amqp://h/", "JOB_ACTIONS_URL": "http://owner"}, "choose one with ACTION_TRANSPORT"),
        ({"ACTION_TRANSPORT": "http", "JOB_ACTIONS_URL": "http://owner"}, "JOB_ACTIONS_SERVICE_KEY"),
        ({"ACTION_AMQP_URL": "http://rabbit"}, "ACTION_AMQP_URL must be an amqp://"),
        ({"ACTION_MAX_JOBS": "20000"}, "ACTION_MAX_JOBS must be between 1 and 10000"),
    ],
)
def test_a_transport_set_up_wrong_stops_the_start(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"JWT_SECRET": TEST_SECRET, **env})
    assert words in str(raised.value)
