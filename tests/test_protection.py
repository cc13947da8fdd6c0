"""What protects the service and its users around every route: the rate limit (in memory and
shared through Redis), CORS, security headers, request ids, the access log, 404/405."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

import jwt
import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import Engine
from werkzeug.test import TestResponse

from admin_service.web import JsonLogFormatter
from tests.support.envelopes import assert_error
from tests.support.factories import Data
from tests.support.redis_server import RedisServer
from tests.support.service import free_port
from tests.support.settings import TEST_SECRET, app_with
from tests.support.tokens import bearer, token_for

ALLOWED = "https://admin.example.com"


def forged(user_id: str) -> str:
    """A well-formed token for a user, signed with a key the service does not know."""
    claims = {"id": user_id, "sub": user_id, "exp": int(time.time()) + 600}
    return jwt.encode(claims, "an-attackers-own-secret-0123456789abcdef", algorithm="HS256")


def get(client: FlaskClient, path: str = "/admin/jobs", ip: str = "10.0.0.1", **kwargs: Any) -> TestResponse:
    return client.get(path, environ_base={"REMOTE_ADDR": ip}, **kwargs)


# --- rate limit ------------------------------------------------------------------------------


@pytest.fixture
def limited(database_url: str, engine: Engine) -> FlaskClient:
    return app_with(database_url, engine, RATE_LIMIT="3 per minute").test_client()


def test_fourth_request_in_a_minute_is_429_in_the_envelope(limited: FlaskClient, data: Data, admin: dict[str, Any]) -> None:
    headers = bearer(token_for(admin))
    remaining = []
    for _ in range(3):
        response = get(limited, "/admin/jobs/stats", headers=headers)
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "3"
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]

    response = get(limited, "/admin/jobs/stats", headers=headers)
    body = assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
    assert "3 per 1 minute" in body["error"]["message"]
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-Request-ID"]


def test_one_budget_per_admin_across_the_admin_routes(limited: FlaskClient, data: Data, admin: dict[str, Any]) -> None:
    """RATE_LIMIT is what one client may ask of the service, not of each route: spreading
    requests over stats, list and details must not multiply it."""
    headers = bearer(token_for(admin))
    remaining = []
    for path in ("/admin/jobs", "/admin/jobs/stats", "/admin/jobs/no-such-job"):
        response = get(limited, path, headers=headers)
        assert response.status_code in (200, 404)
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    assert_error(get(limited, "/admin/jobs/stats", headers=headers), 429, "RATE_LIMIT_EXCEEDED")


def test_rate_limit_is_kept_per_admin(limited: FlaskClient, data: Data) -> None:
    first, second = data.user(user_type="admin"), data.user(user_type="superadmin")
    for _ in range(3):
        assert get(limited, headers=bearer(token_for(first))).status_code == 200
    assert_error(get(limited, headers=bearer(token_for(first))), 429, "RATE_LIMIT_EXCEEDED")
    # Same address, other admin: a budget of its own.
    response = get(limited, headers=bearer(token_for(second)))
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "2"
    # A fresh token of the first admin does not reset the first admin's budget.
    assert_error(get(limited, headers=bearer(token_for(first, ttl_seconds=60))), 429, "RATE_LIMIT_EXCEEDED")


def test_unauthenticated_requests_are_limited_by_address(limited: FlaskClient, data: Data, admin: dict[str, Any]) -> None:
    for _ in range(3):
        assert_error(get(limited, ip="10.1.1.1"), 401, "UNAUTHORIZED")
    assert_error(get(limited, ip="10.1.1.1"), 429, "RATE_LIMIT_EXCEEDED")
    # Another address is not affected, nor is an admin behind the exhausted address.
    assert_error(get(limited, ip="10.2.2.2"), 401, "UNAUTHORIZED")
    assert get(limited, ip="10.1.1.1", headers=bearer(token_for(admin))).status_code == 200


def test_a_forged_token_does_not_get_a_bucket_of_its_own(limited: FlaskClient, data: Data, admin: dict[str, Any]) -> None:
    # Every request claims another user (or the real admin): all of them draw on the address.
    for claimed in (str(uuid.uuid4()), str(uuid.uuid4()), admin["id"]):
        assert_error(get(limited, ip="10.3.3.3", headers=bearer(forged(claimed))), 401, "UNAUTHORIZED")
    assert_error(get(limited, ip="10.3.3.3", headers=bearer(forged(str(uuid.uuid4())))), 429, "RATE_LIMIT_EXCEEDED")
    assert_error(get(limited, ip="10.3.3.3"), 429, "RATE_LIMIT_EXCEEDED")
    # The admin whose id was forged still has the whole budget.
    response = get(limited, ip="10.3.3.3", headers=bearer(token_for(admin)))
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "2"


def test_admins_verified_by_the_auth_service_get_budgets_of_their_own(database_url: str, engine: Engine, data: Data) -> None:
    """AUTH_SERVICE_URL mode: admins behind one address (a NAT, a proxy) are not one client."""
    from tests.support.auth_service import AuthStub

    stub = AuthStub()
    stub.thread.start()
    try:
        client = app_with(database_url, engine, RATE_LIMIT="3 per minute", AUTH_SERVICE_URL=stub.url).test_client()
        first, second = stub.add("admin"), stub.add("admin")
        statuses = [get(client, headers=bearer(first)).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200] and statuses[-1] == 429
        assert get(client, headers=bearer(second)).status_code == 200
        # Tokens the auth service refused stay on the address's budget, whatever they claim.
        refused = [get(client, headers=bearer(forged(str(uuid.uuid4())))).status_code for _ in range(3)]
        assert refused[-1] == 429
    finally:
        stub.server.shutdown()
        stub.server.server_close()


def test_health_probes_are_not_rate_limited(limited: FlaskClient) -> None:
    for _ in range(5):
        assert get(limited, "/health").status_code == 200


# --- shared limit through Redis --------------------------------------------------------------


def test_instances_share_one_budget_through_redis(
    database_url: str,
    engine: Engine,
    data: Data,
    redis_url: str,
    redis_client: redis.Redis,
    redis_keys: list[str],
) -> None:
    one = app_with(database_url, engine, RATE_LIMIT="3 per minute", RATE_LIMIT_STORAGE_URI=redis_url).test_client()
    two = app_with(database_url, engine, RATE_LIMIT="3 per minute", RATE_LIMIT_STORAGE_URI=redis_url).test_client()
    admin = data.user(user_type="admin")
    redis_keys.append(admin["id"])
    headers = bearer(token_for(admin))

    remaining = []
    for client in (one, two, one):
        response = get(client, headers=headers)
        assert response.status_code == 200
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    assert_error(get(two, headers=headers), 429, "RATE_LIMIT_EXCEEDED")
    assert_error(get(one, headers=headers), 429, "RATE_LIMIT_EXCEEDED")
    assert any(admin["id"] in key.decode() for key in redis_client.scan_iter(match="*admin-service*"))

    # The control: in-memory instances do not share, so the same sequence passes on a third one.
    memory = app_with(database_url, engine, RATE_LIMIT="3 per minute", RATE_LIMIT_STORAGE_URI="memory://").test_client()
    assert get(memory, headers=headers).status_code == 200


def test_unreachable_store_fails_open_and_still_limits_per_process(
    database_url: str, engine: Engine, data: Data, admin: dict[str, Any]
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    client = app_with(database_url, engine, RATE_LIMIT="3 per minute", RATE_LIMIT_STORAGE_URI=down).test_client()
    headers = bearer(token_for(admin))
    for _ in range(3):
        started = time.monotonic()
        assert get(client, headers=headers).status_code == 200
        assert time.monotonic() - started < 1.5
    assert_error(get(client, headers=headers), 429, "RATE_LIMIT_EXCEEDED")


def test_store_coming_back_is_used_again(database_url: str, engine: Engine, data: Data, admin: dict[str, Any]) -> None:
    port = free_port()
    client = app_with(
        database_url, engine, RATE_LIMIT="100 per minute", RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{port}/0"
    ).test_client()
    headers = bearer(token_for(admin))
    assert get(client, headers=headers).status_code == 200  # store down: served from the fallback
    server = RedisServer(port)
    try:
        store = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 15
        while not any(admin["id"] in key.decode() for key in store.scan_iter()):
            assert time.monotonic() < deadline, "the limiter never went back to the shared store"
            assert get(client, headers=headers).status_code == 200
            time.sleep(0.5)
        store.close()
    finally:
        server.stop()


def test_unreachable_store_fails_closed_with_503_when_configured(
    database_url: str, engine: Engine, data: Data, admin: dict[str, Any]
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    client = app_with(
        database_url, engine, RATE_LIMIT="3 per minute", RATE_LIMIT_STORAGE_URI=down, RATE_LIMIT_FAIL_OPEN="false"
    ).test_client()
    response = get(client, headers=bearer(token_for(admin)))
    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert int(response.headers["Retry-After"]) > 0


# --- brute force ---------------------------------------------------------------------------


def an_address() -> str:
    """An address of this test's own (the Redis store outlives a test)."""
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{raw[2] or 1}"


def test_token_guessing_is_throttled_per_address(database_url: str, engine: Engine, data: Data, admin: dict[str, Any]) -> None:
    client = app_with(database_url, engine, AUTH_FAILURE_LIMIT="3 per minute").test_client()
    guesser, neighbour = an_address(), an_address()
    accepted_before = bearer(token_for(admin))
    assert get(client, ip=guesser, headers=accepted_before).status_code == 200

    for _ in range(3):
        assert_error(get(client, ip=guesser, headers=bearer(forged(admin["id"]))), 401, "UNAUTHORIZED")
    # Over the limit, the address's new tokens are refused before any check, a valid one too...
    for headers in (bearer(forged(admin["id"])), bearer(token_for(admin, ttl_seconds=3600))):
        refused = get(client, ip=guesser, headers=headers)
        body = assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")
        assert "failed authentication" in body["error"]["message"]
        assert 0 < int(refused.headers["Retry-After"]) <= 61
    # ...while the admin whose token was accepted before keeps working, as does every other address.
    assert get(client, ip=guesser, headers=accepted_before).status_code == 200
    assert get(client, ip=neighbour, headers=bearer(token_for(admin, ttl_seconds=7200))).status_code == 200
    assert_error(get(client, ip=neighbour, headers=bearer(forged(admin["id"]))), 401, "UNAUTHORIZED")


def test_requests_without_a_token_are_not_counted_as_guesses(
    database_url: str, engine: Engine, data: Data, admin: dict[str, Any]
) -> None:
    client = app_with(database_url, engine, AUTH_FAILURE_LIMIT="2 per minute").test_client()
    address = an_address()
    for _ in range(5):
        assert_error(get(client, ip=address), 401, "UNAUTHORIZED")
    assert get(client, ip=address, headers=bearer(token_for(admin))).status_code == 200


def test_failed_attempts_count_across_instances_through_redis(
    database_url: str,
    engine: Engine,
    data: Data,
    admin: dict[str, Any],
    redis_url: str,
    redis_keys: list[str],
) -> None:
    one = app_with(database_url, engine, AUTH_FAILURE_LIMIT="2 per minute", RATE_LIMIT_STORAGE_URI=redis_url).test_client()
    two = app_with(database_url, engine, AUTH_FAILURE_LIMIT="2 per minute", RATE_LIMIT_STORAGE_URI=redis_url).test_client()
    address = an_address()
    redis_keys.append(address)
    assert_error(get(one, ip=address, headers=bearer(forged(admin["id"]))), 401, "UNAUTHORIZED")
    assert_error(get(two, ip=address, headers=bearer(forged(admin["id"]))), 401, "UNAUTHORIZED")
    # Two failures, one on each instance: the limit is reached for both.
    for client in (one, two):
        assert_error(get(client, ip=address, headers=bearer(forged(admin["id"]))), 429, "RATE_LIMIT_EXCEEDED")


def test_stream_tokens_are_guarded_too(database_url: str, engine: Engine, data: Data, admin: dict[str, Any]) -> None:
    client = app_with(database_url, engine, AUTH_FAILURE_LIMIT="2 per minute").test_client()
    address = an_address()
    for _ in range(2):
        response = get(client, "/admin/jobs/stream", ip=address, query_string={"access_token": forged(admin["id"])})
        assert_error(response, 401, "UNAUTHORIZED")
    response = get(client, "/admin/jobs/stream", ip=address, query_string={"access_token": token_for(admin)})
    assert_error(response, 429, "RATE_LIMIT_EXCEEDED")


# --- CORS ------------------------------------------------------------------------------------


@pytest.fixture
def cors(database_url: str, engine: Engine) -> FlaskClient:
    return app_with(
        database_url, engine, ALLOWED_ORIGINS=f"{ALLOWED},http://localhost:3000", RATE_LIMIT="3 per minute"
    ).test_client()


def test_allowed_origin_may_read_answers(cors: FlaskClient, data: Data, admin: dict[str, Any]) -> None:
    response = get(cors, headers={**bearer(token_for(admin)), "Origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in response.headers.get("Vary", "")
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-request-id", "x-ratelimit-remaining", "retry-after"} <= exposed
    # Errors are readable too, or the dashboard could not show why it was refused.
    refused = get(cors, headers={"Origin": ALLOWED}, ip="10.9.9.9")
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == ALLOWED


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "https://admin.example.com.evil.com", "null", "http://admin.example.com"]
)
def test_other_origins_get_no_cors_grant(cors: FlaskClient, data: Data, admin: dict[str, Any], origin: str) -> None:
    response = get(cors, headers={**bearer(token_for(admin)), "Origin": origin})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = cors.options("/admin/jobs", headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


@pytest.mark.parametrize("path", ["/admin/jobs", "/admin/jobs/stats", "/admin/jobs/some-job", "/admin/jobs/some-job/results"])
def test_preflight_succeeds_without_credentials_and_costs_no_budget(
    cors: FlaskClient, data: Data, admin: dict[str, Any], path: str
) -> None:
    for _ in range(5):
        response = cors.options(
            path,
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization, x-request-id",
            },
            environ_base={"REMOTE_ADDR": "10.4.4.4"},
        )
        assert 200 <= response.status_code < 300, response.get_data(as_text=True)
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "GET" in response.headers["Access-Control-Allow-Methods"]
        allowed_headers = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "x-request-id"} <= allowed_headers
        assert int(response.headers["Access-Control-Max-Age"]) > 0
    # Five preflights later the real request still has its whole budget.
    response = get(cors, headers={**bearer(token_for(admin)), "Origin": ALLOWED}, ip="10.4.4.4")
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "2"


# --- security headers and request ids --------------------------------------------------------


def assert_security_headers(response: TestResponse) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp


def test_json_answers_carry_security_headers_but_no_hsts_over_http(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    answers = [
        client.get("/admin/jobs", headers=auth),
        client.get("/admin/jobs"),
        client.get("/admin/nothing-here"),
        client.post("/admin/jobs", headers=auth),
        client.get("/health"),
        # Without TRUST_PROXY a client-sent X-Forwarded-Proto is not believed.
        client.get("/admin/jobs", headers={**auth, "X-Forwarded-Proto": "https"}),
    ]
    for response in answers:
        assert response.mimetype == "application/json"
        assert_security_headers(response)
        assert "Strict-Transport-Security" not in response.headers


def test_hsts_when_the_request_came_over_https(
    database_url: str, engine: Engine, data: Data, auth: dict[str, str], client: FlaskClient
) -> None:
    proxied = app_with(database_url, engine, TRUST_PROXY="true").test_client()
    for headers in (auth, {}):
        response = proxied.get("/admin/jobs", headers={**headers, "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
        assert_security_headers(response)
        assert "max-age=" in response.headers["Strict-Transport-Security"]
        assert int(re.search(r"max-age=(\d+)", response.headers["Strict-Transport-Security"]).group(1)) >= 180 * 86400  # type: ignore[union-attr]
    plain = proxied.get("/admin/jobs", headers={**auth, "X-Forwarded-Proto": "http"})
    assert "Strict-Transport-Security" not in plain.headers
    # TLS straight to the app (no proxy) counts as well.
    assert "Strict-Transport-Security" in client.get("/admin/jobs", headers=auth, base_url="https://localhost").headers


def test_a_sane_request_id_is_echoed(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    for sent in ("req-123.abc_DEF", "0f8e2c1a-9a3b-4d38-8f57-2a1d6e1d7c55", "x" * 128):
        for response in (
            client.get("/admin/jobs", headers={**auth, "X-Request-ID": sent}),
            client.get("/nowhere", headers={"X-Request-ID": sent}),
        ):
            assert response.headers["X-Request-ID"] == sent


@pytest.mark.parametrize(
    "sent",
    ["<script>alert(1)</script>", "x" * 129, "two words", "../../etc/passwd", "a;b=c", "ünïcödé".encode().decode("latin-1"), ""],
)
def test_an_unsafe_request_id_is_replaced(client: FlaskClient, data: Data, auth: dict[str, str], sent: str) -> None:
    response = client.get("/admin/jobs", headers={**auth, "X-Request-ID": sent})
    assert response.status_code == 200
    replaced = response.headers["X-Request-ID"]
    assert replaced != sent
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)


def test_every_answer_has_its_own_request_id(client: FlaskClient, data: Data, auth: dict[str, str]) -> None:
    responses = [
        client.get("/admin/jobs", headers=auth),
        client.get("/admin/jobs/stats", headers=auth),
        client.get("/admin/jobs"),
        client.get("/admin/jobs/no-such-job", headers=auth),
        client.post("/admin/jobs"),
        client.get("/health"),
    ]
    ids = [r.headers["X-Request-ID"] for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)


# --- the access log --------------------------------------------------------------------------


@pytest.fixture
def logged_client(database_url: str, engine: Engine) -> FlaskClient:
    # Built before the test body runs, so pytest's log capture of the test is already in place.
    return app_with(database_url, engine, RATE_LIMIT="2 per minute").test_client()


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.name == "admin_service.access"]  # type: ignore[attr-defined]


def test_access_log_has_one_line_per_request(
    logged_client: FlaskClient, data: Data, auth: dict[str, str], admin: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="admin_service.access")
    responses = [
        logged_client.get("/admin/jobs?limit=5", headers={**auth, "X-Request-ID": "trace-me-1"}),
        logged_client.get("/admin/jobs/stats"),
        logged_client.get("/admin/nothing-here"),
        logged_client.post("/admin/jobs"),
        logged_client.get("/admin/jobs", headers=auth),
        logged_client.get("/admin/jobs", headers=auth),
    ]
    assert [r.status_code for r in responses] == [200, 401, 404, 405, 200, 429]
    records = access_records(caplog)
    assert len(records) == len(responses)
    for record, response in zip(records, responses, strict=True):
        assert record["request_id"] == response.headers["X-Request-ID"]
        assert record["status"] == response.status_code
        assert isinstance(record["duration_ms"], (int, float)) and 0 <= record["duration_ms"] < 60_000
        assert record["path"] == response.request.path
        assert record["method"] == response.request.method
    assert records[0]["request_id"] == "trace-me-1"
    assert records[0]["query"] == "limit=5"
    assert records[0]["user_id"] == admin["id"]
    assert records[1]["user_id"] is None
    # The line as written is one JSON object carrying those fields.
    line = JsonLogFormatter().format(next(r for r in caplog.records if r.name == "admin_service.access"))
    assert "\n" not in line
    assert json.loads(line)["request_id"] == "trace-me-1"


def test_tokens_never_reach_the_log(
    logged_client: FlaskClient, data: Data, admin: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = token_for(admin)
    forged_token = forged(admin["id"])
    bad_token = jwt.encode({"id": admin["id"], "exp": int(time.time()) - 60}, TEST_SECRET, algorithm="HS256")
    for candidate in (token, forged_token, bad_token):
        logged_client.get(f"/admin/jobs/stats?access_token={candidate}", headers=bearer(candidate))
        logged_client.get(f"/admin/jobs?access_token={candidate}&token={candidate}")
        logged_client.get(f"/nowhere?access_token={candidate}", headers=bearer(candidate))
    records = access_records(caplog)
    assert len(records) == 9
    assert any("access_token=[redacted]" in r["query"] for r in records)
    formatter = JsonLogFormatter()
    written = "\n".join(formatter.format(r) + repr(r.__dict__) for r in caplog.records)
    for candidate in (token, forged_token, bad_token):
        # Neither the token nor its signature (the secret part) appears anywhere.
        assert candidate not in written, "a token was written to the log"
        assert candidate.rsplit(".", 1)[1] not in written, "a token signature was written to the log"


# --- 404 / 405 -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nowhere", "/admin/x", "/admin/job", "/admin/jobs/a/b/c", "/admin/jobs/stats/extra/more"])
def test_unknown_routes_are_404_in_the_envelope(client: FlaskClient, data: Data, auth: dict[str, str], path: str) -> None:
    for headers in (auth, {}):
        body = assert_error(client.get(path, headers=headers), 404, "NOT_FOUND")
        assert "Traceback" not in json.dumps(body)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/admin/jobs"), ("PUT", "/admin/jobs"), ("DELETE", "/admin/jobs/stats"), ("PATCH", "/admin/jobs/x")],
)
def test_wrong_methods_are_405_in_the_envelope(
    client: FlaskClient, data: Data, auth: dict[str, str], method: str, path: str
) -> None:
    for headers in (auth, {}):
        response = client.open(path, method=method, headers=headers, json={"status": "queued"})
        assert_error(response, 405, "METHOD_NOT_ALLOWED")
        assert "GET" in response.headers["Allow"]
