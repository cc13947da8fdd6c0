"""Correctly signed tokens whose claims are of the wrong type or range (issue 18, defect 10,
and JWT_MAX_LIFETIME_S): each is a 401 in the envelope, never a 500, never accepted; and the
rate limit still applies to requests that carry them (the limiter's key function reads the
token too). The same tokens over SSE and Socket.IO: tests/live/test_untrusted_input.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from admin_service.config import ConfigError, load_settings
from tests.support.auth_service import AuthStub
from tests.support.envelopes import assert_error
from tests.support.settings import TEST_SECRET, app_with
from tests.support.tokens import Later, bearer, claims_json, signed_raw, token_with

URL = "/admin/jobs/stats"
DEFAULT_MAX_LIFETIME_S = 7 * 86400
HUGE = "1" + "0" * 400  # 10**400: an int to JSON and to PyJWT, an OverflowError to float()


# Each: claims as JSON text, overriding the defaults.
REFUSED: dict[str, dict[str, Any]] = {
    "exp 10**400": {"exp": HUGE},
    "exp 1e300": {"exp": "1e300"},
    "exp a numeric string": {"exp": (Later(600),)},
    "exp true": {"exp": "true"},
    "exp NaN": {"exp": "NaN"},
    "exp Infinity": {"exp": "Infinity"},
    "exp an object": {"exp": '{"seconds": 1}'},
    "exp missing": {"exp": None},
    "iat 10**400": {"iat": HUGE},
    "iat a string": {"iat": '"1"'},
    "iat negative": {"iat": "-1"},
    "nbf 10**400": {"nbf": HUGE},
    "nbf a string": {"nbf": '"1"'},
    "nbf NaN": {"nbf": "NaN"},
    "id a number": {"id": "123"},
    "id a list": {"id": '["x"]'},
    "id a lone surrogate": {"id": '"\\ud800"'},
    "sub a number, no id": {"id": None, "sub": "123"},
    "exp beyond the maximum lifetime from now": {"iat": None, "exp": Later(DEFAULT_MAX_LIFETIME_S + 3600)},
    "exp - iat beyond the maximum lifetime": {"iat": Later(-DEFAULT_MAX_LIFETIME_S), "exp": Later(3600)},
}


@pytest.mark.parametrize("claims", list(REFUSED.values()), ids=list(REFUSED))
def test_a_signed_token_with_unusable_claims_is_a_401(client: FlaskClient, admin: dict[str, Any], claims: dict[str, Any]) -> None:
    token = token_with(admin["id"], claims)
    assert_error(client.get(URL, headers=bearer(token)), 401, "UNAUTHORIZED")
    # The claims cache (a second request) must not turn it into anything else either.
    assert_error(client.get(URL, headers=bearer(token)), 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"exp": Later(12 * 3600)},  # make run's token
        {"exp": Later(600, as_float=True)},  # RFC 7519 allows fractions
        {"iat": Later(-3600), "exp": Later(DEFAULT_MAX_LIFETIME_S - 3601)},  # within a second of the maximum
        {"iat": None},
        {"id": None},  # sub alone names the user
    ],
    ids=["default", "12 h", "float exp", "maximum lifetime", "no iat", "sub only"],
)
def test_usable_claims_are_accepted(client: FlaskClient, admin: dict[str, Any], claims: dict[str, Any]) -> None:
    resp = client.get(URL, headers=bearer(token_with(admin["id"], claims)))
    assert resp.status_code == 200, resp.get_data(as_text=True)


def test_the_maximum_lifetime_is_configurable(database_url: str, engine: Engine, admin: dict[str, Any]) -> None:
    client = app_with(database_url, engine, JWT_MAX_LIFETIME_S="3600").test_client()
    long = token_with(admin["id"], {"exp": Later(2 * 3600)})
    assert_error(client.get(URL, headers=bearer(long)), 401, "UNAUTHORIZED")
    short = token_with(admin["id"], {"exp": Later(1800)})
    assert client.get(URL, headers=bearer(short)).status_code == 200
    with pytest.raises(ConfigError, match="JWT_MAX_LIFETIME_S"):
        load_settings({"JWT_SECRET": TEST_SECRET, "JWT_MAX_LIFETIME_S": "0"})


@pytest.mark.parametrize("claims", [REFUSED["exp 10**400"], REFUSED["exp a numeric string"]], ids=["10**400", "string"])
def test_the_rate_limit_applies_to_requests_with_such_tokens(
    database_url: str, engine: Engine, admin: dict[str, Any], claims: dict[str, Any]
) -> None:
    """flask-limiter lets a request pass unlimited when its key function raises: the key
    function reads the token, so a token it choked on was a way around the limit."""
    client = app_with(database_url, engine, RATE_LIMIT="3 per minute").test_client()
    token = token_with(admin["id"], claims)
    statuses = [client.get(URL, headers=bearer(token)).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


@pytest.fixture
def auth_stub() -> Iterator[AuthStub]:
    stub = AuthStub()
    stub.thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


def test_through_the_auth_service_an_absurd_exp_is_not_a_500(database_url: str, engine: Engine, auth_stub: AuthStub) -> None:
    """With AUTH_SERVICE_URL the auth service decides; this service only reads exp (unverified)
    to end streams on time, and an exp it cannot use is no expiry of its own, not a 500."""
    client = app_with(database_url, engine, AUTH_SERVICE_URL=auth_stub.url).test_client()
    user_id = str(uuid.uuid4())
    token = signed_raw(claims_json(user_id, exp=HUGE), secret="the-auth-services-own-secret-0123456789")
    auth_stub.users[token] = {"id": user_id, "email": "a@example.com", "user_type": "admin", "is_active": True}
    resp = client.get(URL, headers=bearer(token))
    assert resp.status_code == 200, resp.get_data(as_text=True)
