"""Who may use /admin/jobs: token verification, the admin guard, the user cache and the
remote auth-service mode. Every refusal is answered in the error envelope."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask.testing import FlaskClient
from sqlalchemy import Engine
from werkzeug.test import TestResponse

from tests.support.auth_service import AuthStub
from tests.support.envelopes import assert_error
from tests.support.factories import Data
from tests.support.service import free_port
from tests.support.settings import TEST_SECRET, app_with
from tests.support.tokens import bearer, claims_for

ROUTES = ("/admin/jobs/stats", "/admin/jobs", "/admin/jobs/{job}", "/admin/jobs/{job}/results")


# --- helpers -------------------------------------------------------------------------------


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64json(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def hs_token(claims: dict[str, Any], secret: str = TEST_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def raw_hs256(claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token signed by hand (PyJWT rightly refuses to HMAC with a PEM key)."""
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def as_wsgi_header(text: str) -> str:
    """What a real server hands the app for UTF-8 bytes in a header (PEP 3333: latin-1)."""
    return text.encode("utf-8").decode("latin-1")


def assert_ok(response: TestResponse) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["success"] is True
    assert "data" in body
    return body


@pytest.fixture
def job(data: Data) -> dict[str, Any]:
    owner = data.user()
    row = data.job(user=owner, status="completed")
    data.result(row)
    return row


@pytest.fixture
def routes(job: dict[str, Any]) -> list[str]:
    return [route.format(job=job["id"]) for route in ROUTES]


def rsa_keys() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    )
    return private, public_pem


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[Any, str]:
    return rsa_keys()


@pytest.fixture(scope="module")
def ec_pair() -> tuple[Any, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = (
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    )
    return private, public_pem


# --- 401 on every route ----------------------------------------------------------------------

HeaderMaker = Callable[[dict[str, Any], Data], dict[str, str]]


def _inactive_admin(admin: dict[str, Any], data: Data) -> dict[str, str]:
    user = data.user(user_type="admin", is_active=False)
    return bearer(hs_token(claims_for(user["id"])))


def _alg_none(admin: dict[str, Any], data: Data) -> dict[str, str]:
    return bearer(f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims_for(admin['id']))}.")


def _rs256_to_hs_deployment(admin: dict[str, Any], data: Data) -> dict[str, str]:
    private, _ = rsa_keys()
    return bearer(jwt.encode(claims_for(admin["id"]), private, algorithm="RS256"))


def _tampered(admin: dict[str, Any], data: Data) -> dict[str, str]:
    """A user's valid token with the payload swapped for the admin's: signature no longer matches."""
    user = data.user(user_type="user")
    head, _, signature = hs_token(claims_for(user["id"])).split(".")
    return bearer(f"{head}.{b64json(claims_for(admin['id']))}.{signature}")


UNAUTHORIZED_CASES: dict[str, HeaderMaker] = {
    "no header": lambda admin, data: {},
    "basic scheme": lambda admin, data: {"Authorization": "Basic " + base64.b64encode(b"admin:secret").decode()},
    "token scheme": lambda admin, data: {"Authorization": f"Token {hs_token(claims_for(admin['id']))}"},
    "bare token": lambda admin, data: {"Authorization": hs_token(claims_for(admin["id"]))},
    "bearer empty": lambda admin, data: {"Authorization": "Bearer "},
    "bearer blank": lambda admin, data: {"Authorization": "Bearer      "},
    "bearer only": lambda admin, data: {"Authorization": "Bearer"},
    "not a jwt": lambda admin, data: bearer("not-a-token"),
    "bad signature": lambda admin, data: bearer(hs_token(claims_for(admin["id"]), "another-secret-of-enough-length-0123456789")),
    "tampered payload": _tampered,
    "alg none": _alg_none,
    "rs256 to hs256 deployment": _rs256_to_hs_deployment,
    "expired": lambda admin, data: bearer(
        hs_token(claims_for(admin["id"], iat=int(time.time()) - 7200, exp=int(time.time()) - 60))
    ),
    "missing exp": lambda admin, data: bearer(hs_token(claims_for(admin["id"], exp=None))),
    "not yet valid": lambda admin, data: bearer(hs_token(claims_for(admin["id"], nbf=int(time.time()) + 3600))),
    "id not a uuid": lambda admin, data: bearer(hs_token(claims_for("1", sub=None))),
    "sub not a uuid": lambda admin, data: bearer(hs_token(claims_for("admin", id=None))),
    "sub is a number": lambda admin, data: bearer(hs_token({"sub": 12345, "exp": int(time.time()) + 600})),
    "no subject": lambda admin, data: bearer(hs_token({"exp": int(time.time()) + 600})),
    "unknown user": lambda admin, data: bearer(hs_token(claims_for(str(uuid.uuid4())))),
    "inactive admin": _inactive_admin,
    "huge token": lambda admin, data: bearer(hs_token(claims_for(admin["id"], pad="A" * 100_000))),
    "non-ascii token": lambda admin, data: bearer(as_wsgi_header(hs_token(claims_for(admin["id"])) + "é")),
    "non-ascii garbage": lambda admin, data: bearer(as_wsgi_header("ünï.cödé.tökén")),
    "nested quotes": lambda admin, data: bearer('"' + hs_token(claims_for(admin["id"])) + '"'),
    "quotes inside": lambda admin, data: bearer('"\\"a\\".\\"b\\"".\'"c"\''),
}


@pytest.mark.parametrize("case", list(UNAUTHORIZED_CASES), ids=list(UNAUTHORIZED_CASES))
def test_bad_credentials_are_401_on_every_route(
    client: FlaskClient, data: Data, admin: dict[str, Any], routes: list[str], case: str
) -> None:
    headers = UNAUTHORIZED_CASES[case](admin, data)
    for route in routes:
        body = assert_error(client.get(route, headers=headers), 401, "UNAUTHORIZED")
        assert "data" not in body


def test_the_admins_own_valid_token_passes_the_same_routes(client: FlaskClient, admin: dict[str, Any], routes: list[str]) -> None:
    """The control for the refusals above: only the credential differs."""
    for route in routes:
        assert_ok(client.get(route, headers=bearer(hs_token(claims_for(admin["id"])))))


def test_refusal_does_not_tell_which_accounts_exist(client: FlaskClient, data: Data, admin: dict[str, Any]) -> None:
    """Unknown user, inactive user, bad signature: one indistinguishable answer."""
    inactive = data.user(user_type="admin", is_active=False)
    tokens = [
        hs_token(claims_for(str(uuid.uuid4()))),
        hs_token(claims_for(inactive["id"])),
        hs_token(claims_for(admin["id"]), "another-secret-of-enough-length-0123456789"),
    ]
    messages = {client.get("/admin/jobs/stats", headers=bearer(t)).get_json()["error"]["message"] for t in tokens}
    assert len(messages) == 1


# --- 403 / 200 by user type ------------------------------------------------------------------


@pytest.mark.parametrize("user_type", ["user", "moderator"])
def test_non_admins_are_403_on_every_route(client: FlaskClient, data: Data, routes: list[str], user_type: str) -> None:
    person = data.user(user_type=user_type)
    for route in routes:
        body = assert_error(client.get(route, headers=bearer(hs_token(claims_for(person["id"])))), 403, "FORBIDDEN")
        assert "data" not in body


@pytest.mark.parametrize("user_type", ["admin", "superadmin"])
def test_admins_and_superadmins_are_served_on_every_route(
    client: FlaskClient, data: Data, job: dict[str, Any], routes: list[str], user_type: str
) -> None:
    person = data.user(user_type=user_type)
    headers = bearer(hs_token(claims_for(person["id"])))
    stats, listing, details, results = (assert_ok(client.get(route, headers=headers)) for route in routes)
    assert stats["data"]["overview"]["completed"] == 1
    assert [j["id"] for j in listing["data"]["jobs"]] == [job["id"]]
    assert details["data"]["job_id"] == job["job_id"]
    assert results["data"]["result"]["id"] == job["result_id"]


@pytest.mark.parametrize("claim", ["sub", "id"])
def test_either_subject_claim_alone_identifies_the_admin(client: FlaskClient, admin: dict[str, Any], claim: str) -> None:
    token = hs_token({claim: admin["id"], "exp": int(time.time()) + 600})
    assert_ok(client.get("/admin/jobs/stats", headers=bearer(token)))


def test_the_scheme_is_case_insensitive(client: FlaskClient, admin: dict[str, Any]) -> None:
    assert_ok(client.get("/admin/jobs/stats", headers={"Authorization": f"bearer {hs_token(claims_for(admin['id']))}"}))


def test_a_token_used_before_is_refused_once_it_expires(client: FlaskClient, admin: dict[str, Any]) -> None:
    # Verified claims are reused per token (no second signature check): the expiry must still
    # hold. exp 3 s ago is inside the 5 s leeway, so the token passes (and is cached) now...
    token = hs_token(claims_for(admin["id"], exp=int(time.time()) - 3))
    assert_ok(client.get("/admin/jobs/stats", headers=bearer(token)))
    time.sleep(2.5)
    # ...and is refused once exp + leeway has passed, although it verified a moment ago.
    refused = client.get("/admin/jobs/stats", headers=bearer(token))
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "UNAUTHORIZED"


# --- public-key deployments ------------------------------------------------------------------


def test_rs256_deployment_accepts_rs256_and_refuses_key_confusion(
    database_url: str, engine: Engine, data: Data, admin: dict[str, Any], rsa_pair: tuple[Any, str]
) -> None:
    private, public_pem = rsa_pair
    client = app_with(database_url, engine, JWT_SECRET="", JWT_ALGORITHMS="RS256", JWT_PUBLIC_KEY=public_pem).test_client()
    claims = claims_for(admin["id"])

    assert_ok(client.get("/admin/jobs/stats", headers=bearer(jwt.encode(claims, private, algorithm="RS256"))))

    # HS/RS confusion: HMAC with the (public!) PEM as the secret must not verify.
    for secret in (public_pem.encode(), public_pem.strip().encode()):
        assert_error(client.get("/admin/jobs/stats", headers=bearer(raw_hs256(claims, secret))), 401, "UNAUTHORIZED")
    # An HS256 token with the secret other deployments use.
    assert_error(client.get("/admin/jobs/stats", headers=bearer(hs_token(claims))), 401, "UNAUTHORIZED")
    # Signed by some other RSA key.
    other_private, _ = rsa_keys()
    assert_error(
        client.get("/admin/jobs/stats", headers=bearer(jwt.encode(claims, other_private, algorithm="RS256"))), 401, "UNAUTHORIZED"
    )
    # alg none against a public-key deployment.
    none_token = f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims)}."
    assert_error(client.get("/admin/jobs/stats", headers=bearer(none_token)), 401, "UNAUTHORIZED")


def test_rs256_deployment_from_a_key_file(
    database_url: str, engine: Engine, data: Data, admin: dict[str, Any], rsa_pair: tuple[Any, str], tmp_path: Any
) -> None:
    private, public_pem = rsa_pair
    key_file = tmp_path / "jwt.pub"
    key_file.write_text(public_pem)
    client = app_with(database_url, engine, JWT_SECRET="", JWT_PUBLIC_KEY_FILE=str(key_file)).test_client()
    assert_ok(client.get("/admin/jobs/stats", headers=bearer(jwt.encode(claims_for(admin["id"]), private, algorithm="RS256"))))


def test_es256_deployment_accepts_es256(
    database_url: str, engine: Engine, data: Data, admin: dict[str, Any], ec_pair: tuple[Any, str], rsa_pair: tuple[Any, str]
) -> None:
    private, public_pem = ec_pair
    client = app_with(database_url, engine, JWT_SECRET="", JWT_ALGORITHMS="ES256", JWT_PUBLIC_KEY=public_pem).test_client()
    claims = claims_for(admin["id"])
    assert_ok(client.get("/admin/jobs", headers=bearer(jwt.encode(claims, private, algorithm="ES256"))))

    assert_error(client.get("/admin/jobs", headers=bearer(raw_hs256(claims, public_pem.encode()))), 401, "UNAUTHORIZED")
    other = ec.generate_private_key(ec.SECP256R1())
    assert_error(client.get("/admin/jobs", headers=bearer(jwt.encode(claims, other, algorithm="ES256"))), 401, "UNAUTHORIZED")
    assert_error(
        client.get("/admin/jobs", headers=bearer(jwt.encode(claims, rsa_pair[0], algorithm="RS256"))), 401, "UNAUTHORIZED"
    )


# --- issuer and audience ---------------------------------------------------------------------

ISSUER = "https://auth.example.com"
AUDIENCE = "admin-service"


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"iss": ISSUER, "aud": AUDIENCE}, 200),
        ({"iss": ISSUER, "aud": [AUDIENCE, "other-service"]}, 200),
        ({"iss": "https://evil.example.com", "aud": AUDIENCE}, 401),
        ({"iss": ISSUER, "aud": "other-service"}, 401),
        ({"aud": AUDIENCE}, 401),
        ({"iss": ISSUER}, 401),
        ({}, 401),
    ],
    ids=["right", "audience list", "wrong issuer", "wrong audience", "no issuer", "no audience", "neither"],
)
def test_issuer_and_audience_are_checked_when_configured(
    database_url: str, engine: Engine, data: Data, admin: dict[str, Any], overrides: dict[str, Any], status: int
) -> None:
    client = app_with(database_url, engine, JWT_ISSUER=ISSUER, JWT_AUDIENCE=AUDIENCE).test_client()
    response = client.get("/admin/jobs/stats", headers=bearer(hs_token(claims_for(admin["id"], **overrides))))
    if status == 200:
        assert_ok(response)
    else:
        assert_error(response, 401, "UNAUTHORIZED")


# --- the cached user lookup ------------------------------------------------------------------


def test_deactivated_or_demoted_admin_is_refused_once_the_cache_expires(database_url: str, engine: Engine, data: Data) -> None:
    client = app_with(database_url, engine, AUTH_CACHE_SECONDS="1").test_client()
    leaving = data.user(user_type="admin")
    demoted = data.user(user_type="superadmin")
    for person in (leaving, demoted):
        assert_ok(client.get("/admin/jobs/stats", headers=bearer(hs_token(claims_for(person["id"])))))

    data.execute("UPDATE auth.users SET is_active = false WHERE id = :id", id=leaving["id"])
    data.execute("UPDATE auth.users SET user_type = 'user' WHERE id = :id", id=demoted["id"])
    time.sleep(1.3)

    assert_error(client.get("/admin/jobs/stats", headers=bearer(hs_token(claims_for(leaving["id"])))), 401, "UNAUTHORIZED")
    assert_error(client.get("/admin/jobs/stats", headers=bearer(hs_token(claims_for(demoted["id"])))), 403, "FORBIDDEN")


def test_a_user_promoted_to_admin_is_served_once_the_cache_expires(database_url: str, engine: Engine, data: Data) -> None:
    client = app_with(database_url, engine, AUTH_CACHE_SECONDS="1").test_client()
    person = data.user(user_type="user")
    headers = bearer(hs_token(claims_for(person["id"])))
    assert_error(client.get("/admin/jobs/stats", headers=headers), 403, "FORBIDDEN")
    data.execute("UPDATE auth.users SET user_type = 'admin' WHERE id = :id", id=person["id"])
    time.sleep(1.3)
    assert_ok(client.get("/admin/jobs/stats", headers=headers))


# --- AUTH_SERVICE_URL mode -------------------------------------------------------------------


@pytest.fixture
def auth_stub() -> Iterator[AuthStub]:
    stub = AuthStub()
    stub.thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


def remote_client(database_url: str, engine: Engine, url: str, **env: Any) -> FlaskClient:
    env = {"AUTH_SERVICE_URL": url, "AUTH_CACHE_SECONDS": "30", "AUTH_SERVICE_TIMEOUT_S": "0.5", **env}
    return app_with(database_url, engine, **env).test_client()


def test_auth_service_decides_who_is_an_admin(database_url: str, engine: Engine, data: Data, auth_stub: AuthStub) -> None:
    client = remote_client(database_url, engine, auth_stub.url)
    admin_token = auth_stub.add("admin")
    superadmin_token = auth_stub.add("superadmin")
    user_token = auth_stub.add("user")
    inactive_token = auth_stub.add("admin", is_active=False)
    unknown_token = jwt.encode(claims_for(str(uuid.uuid4())), "whatever-secret-0123456789-0123456789", algorithm="HS256")

    assert_ok(client.get("/admin/jobs/stats", headers=bearer(admin_token)))
    assert_ok(client.get("/admin/jobs", headers=bearer(superadmin_token)))
    assert_error(client.get("/admin/jobs/stats", headers=bearer(user_token)), 403, "FORBIDDEN")
    assert_error(client.get("/admin/jobs/stats", headers=bearer(inactive_token)), 401, "UNAUTHORIZED")
    assert_error(client.get("/admin/jobs/stats", headers=bearer(unknown_token)), 401, "UNAUTHORIZED")
    assert_error(client.get("/admin/jobs/stats"), 401, "UNAUTHORIZED")
    # The token is what the auth service was asked about.
    assert auth_stub.calls[:3] == [admin_token, superadmin_token, user_token]


def test_auth_service_answers_are_cached(database_url: str, engine: Engine, data: Data, auth_stub: AuthStub) -> None:
    client = remote_client(database_url, engine, auth_stub.url)
    first, second = auth_stub.add("admin"), auth_stub.add("admin")
    for _ in range(5):
        assert_ok(client.get("/admin/jobs/stats", headers=bearer(first)))
    assert auth_stub.calls == [first]
    assert_ok(client.get("/admin/jobs", headers=bearer(second)))
    assert auth_stub.calls == [first, second]


def test_auth_service_is_asked_again_after_the_cache_time(
    database_url: str, engine: Engine, data: Data, auth_stub: AuthStub
) -> None:
    client = remote_client(database_url, engine, auth_stub.url, AUTH_CACHE_SECONDS="1")
    token = auth_stub.add("admin")
    assert_ok(client.get("/admin/jobs/stats", headers=bearer(token)))
    auth_stub.users[token]["is_active"] = False  # the auth service now says: deactivated
    time.sleep(1.3)
    assert_error(client.get("/admin/jobs/stats", headers=bearer(token)), 401, "UNAUTHORIZED")
    assert len(auth_stub.calls) == 2


def test_a_cached_verdict_does_not_outlive_the_token(database_url: str, engine: Engine, data: Data, auth_stub: AuthStub) -> None:
    client = remote_client(database_url, engine, auth_stub.url, AUTH_CACHE_SECONDS="60")
    token = auth_stub.add("admin", ttl_seconds=2)
    assert_ok(client.get("/admin/jobs/stats", headers=bearer(token)))
    time.sleep(2.2)
    assert_error(client.get("/admin/jobs/stats", headers=bearer(token)), 401, "UNAUTHORIZED")


def test_a_vouched_token_with_an_odd_exp_is_not_a_500(database_url: str, engine: Engine, data: Data, auth_stub: AuthStub) -> None:
    """The auth service decides; this service only reads exp to bound its cache."""
    client = remote_client(database_url, engine, auth_stub.url)
    for exp in ("tomorrow", None, [1]):
        user_id = str(uuid.uuid4())
        token = jwt.encode({"sub": user_id, "exp": exp}, "the-auth-services-own-secret-0123456789", algorithm="HS256")
        auth_stub.users[token] = {"id": user_id, "email": "odd@example.com", "user_type": "admin", "is_active": True}
        assert_ok(client.get("/admin/jobs/stats", headers=bearer(token)))


def test_unreachable_auth_service_is_503(database_url: str, engine: Engine, data: Data) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    client = remote_client(database_url, engine, closed)
    token = jwt.encode(claims_for(str(uuid.uuid4())), "whatever-secret-0123456789-0123456789", algorithm="HS256")
    response = client.get("/admin/jobs/stats", headers=bearer(token))
    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert int(response.headers["Retry-After"]) > 0


def test_slow_auth_service_is_503_after_the_timeout(database_url: str, engine: Engine, data: Data, auth_stub: AuthStub) -> None:
    client = remote_client(database_url, engine, auth_stub.url, AUTH_SERVICE_TIMEOUT_S="0.3")
    token = auth_stub.add("admin")
    auth_stub.delay = 2.0
    started = time.monotonic()
    response = client.get("/admin/jobs/stats", headers=bearer(token))
    elapsed = time.monotonic() - started
    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert elapsed < 1.5, f"the request waited {elapsed:.1f}s for a 0.3s timeout"
    # A failure is not cached as a verdict: once the service answers again, the admin gets in.
    auth_stub.delay = 0.0
    assert_ok(client.get("/admin/jobs/stats", headers=bearer(token)))


def test_failing_auth_service_is_503_not_a_refusal(database_url: str, engine: Engine, data: Data, auth_stub: AuthStub) -> None:
    client = remote_client(database_url, engine, auth_stub.url)
    token = auth_stub.add("admin")
    auth_stub.fail_with = 500
    assert_error(client.get("/admin/jobs/stats", headers=bearer(token)), 503, "SERVICE_UNAVAILABLE")
