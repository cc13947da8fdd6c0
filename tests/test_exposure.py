"""What the service shows a client that is not signed in, or misbehaves, over real HTTP under
gunicorn: bounded metric labels, Retry-After only where it means something, no trust in proxy
headers it was not told to trust, the security headers on every answer (Socket.IO's too)."""

from __future__ import annotations

import random
import re
import string
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import Engine

from admin_service.config import Settings
from tests.support.envelopes import assert_error
from tests.support.event_log import reset_event_log
from tests.support.factories import Data
from tests.support.metrics import P, scrape
from tests.support.service import RunningService, run_service
from tests.support.settings import app_with
from tests.support.tokens import bearer, token_for

SOCKETIO_HANDSHAKE = "/admin/socket.io/?EIO=4&transport=polling"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def service(
    database_url: str, engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    reset_event_log(engine, settings)
    with run_service(database_url, tmp_path_factory.mktemp("exposure"), workers=1, env={"LOG_LEVEL": "WARNING"}) as running:
        yield running


@pytest.fixture
def admin_headers(data: Data) -> dict[str, str]:
    admin = data.user(user_type="admin", email=f"exposure-{uuid.uuid4().hex[:6]}@example.com")
    return bearer(token_for(admin))


def series(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> set[frozenset[tuple[str, str]]]:
    return {labels for (n, labels) in samples if n == name}


# --- metric labels (defect 5) ------------------------------------------------------------------


def test_made_up_methods_do_not_grow_the_metrics(service: RunningService) -> None:
    """gunicorn accepts any 3-20-letter upper-case method; each used to become a label value,
    i.e. new series on every metric that has one, without a token."""
    rng = random.Random(5)
    paths = ("/health", "/admin/jobs", "/no/such/path", "/metrics")
    before = scrape(service.url)
    counter = f"{P}_http_requests_total"
    session = requests.Session()
    for i in range(300):
        method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 20)))
        response = session.request(method, f"{service.url}{paths[i % len(paths)]}", timeout=10)
        assert response.status_code in (401, 404, 405), (method, response.status_code)
    after = scrape(service.url)
    methods = {value for labels in series(after, counter) for name, value in labels if name == "method"}
    assert methods <= {"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "other"}, sorted(methods)[:10]
    # A handful of new series at most (one per route and status the made-up methods reached).
    assert len(series(after, counter)) - len(series(before, counter)) <= 2 * len(paths)
    other = sum(v for (n, labels), v in after.items() if n == counter and ("method", "other") in labels)
    other_before = sum(v for (n, labels), v in before.items() if n == counter and ("method", "other") in labels)
    assert other - other_before == 300


# --- Retry-After (defect 8) --------------------------------------------------------------------


def test_retry_after_only_on_429_and_503(service: RunningService, data: Data, admin_headers: dict[str, str]) -> None:
    user = data.user(user_type="user")
    answers = [
        requests.get(f"{service.url}/admin/jobs", headers=admin_headers, timeout=10),  # 200
        requests.get(f"{service.url}/admin/jobs/stats", headers=admin_headers, timeout=10),  # 200
        requests.get(f"{service.url}/admin/jobs/{uuid.uuid4()}", headers=admin_headers, timeout=10),  # 404
        requests.get(f"{service.url}/admin/jobs", timeout=10),  # 401
        requests.get(f"{service.url}/admin/jobs", headers=bearer(token_for(user)), timeout=10),  # 403
        requests.get(f"{service.url}/admin/jobs?limit=0", headers=admin_headers, timeout=10),  # 400
    ]
    assert [r.status_code for r in answers] == [200, 200, 404, 401, 403, 400]
    for response in answers:
        assert "Retry-After" not in response.headers, (response.status_code, response.headers["Retry-After"])
        # The rate-limit headers themselves stay.
        assert "X-RateLimit-Remaining" in response.headers


def test_a_429_says_when_the_budget_comes_back(database_url: str, engine: Engine, data: Data, admin: dict[str, Any]) -> None:
    client = app_with(database_url, engine, RATE_LIMIT="2 per minute").test_client()
    headers = bearer(token_for(admin))
    for _ in range(2):
        assert "Retry-After" not in client.get("/admin/jobs", headers=headers).headers
    response = client.get("/admin/jobs", headers=headers)
    assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
    assert 50 <= int(response.headers["Retry-After"]) <= 60


def test_a_503_keeps_its_own_retry_after(database_url: str, engine: Engine, data: Data, admin: dict[str, Any]) -> None:
    """An outage's 503 says RETRY_AFTER_SECONDS (5), not the rate-limit window's reset."""
    from admin_service.db.engine import make_engine
    from tests.support.service import free_port
    from tests.support.settings import make_settings

    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    down_settings = make_settings(nowhere, env={"DB_CONNECT_TIMEOUT_S": "1"})
    from admin_service import create_app

    down = make_engine(down_settings)
    try:
        client = create_app(down_settings, down).test_client()
        for path in ("/admin/jobs", "/admin/jobs/stats", f"/admin/jobs/{uuid.uuid4()}"):
            response = client.get(path, headers=bearer(token_for(admin)))
            assert_error(response, 503, "SERVICE_UNAVAILABLE")
            assert response.headers["Retry-After"] == "5", path
    finally:
        down.dispose()


# --- proxy headers ---------------------------------------------------------------------------


def test_forwarded_proto_from_an_untrusted_peer_gets_no_hsts(service: RunningService) -> None:
    """TRUST_PROXY=false: a loopback client saying X-Forwarded-Proto: https is not believed
    (gunicorn itself trusts such headers from loopback unless told otherwise)."""
    for header, value in (("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "on"), ("X-Forwarded-Protocol", "ssl")):
        response = requests.get(f"{service.url}/health", headers={header: value}, timeout=10)
        assert response.status_code == 200
        assert "Strict-Transport-Security" not in response.headers, header


def test_forwarder_headers_from_loopback_do_not_rewrite_the_path(service: RunningService) -> None:
    """gunicorn takes a SCRIPT_NAME request header as the mount point from peers it trusts
    (loopback by default): nobody may move a request to another route that way."""
    response = requests.get(f"{service.url}/admin/health", headers={"SCRIPT_NAME": "/admin"}, timeout=10)
    assert_error_status(response, 404)


def assert_error_status(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False
    return body


def test_metrics_refuse_any_proxy_header_when_proxies_are_trusted(
    database_url: str, engine: Engine, data: Data, settings: Settings
) -> None:
    """TRUST_PROXY=true: the request came through the proxy if it carries any forwarding
    header, not just X-Forwarded-For; without METRICS_TOKEN that is refused."""
    client = app_with(database_url, engine, TRUST_PROXY="true").test_client()
    direct = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/metrics", environ_base=direct).status_code == 200
    for header, value in (
        ("Forwarded", "for=203.0.113.9"),
        ("X-Real-IP", "203.0.113.9"),
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Host", "metrics.example.com"),
        ("X-Forwarded-Proto", "https"),
    ):
        response = client.get("/metrics", headers={header: value}, environ_base=direct)
        assert_error(response, 403, "FORBIDDEN")


# --- security headers on Socket.IO's answers -----------------------------------------------------


def test_socketio_answers_carry_the_security_headers(service: RunningService) -> None:
    answers = [
        requests.get(f"{service.url}{SOCKETIO_HANDSHAKE}", timeout=10),  # the handshake
        requests.get(f"{service.url}/admin/socket.io/?EIO=4&transport=nonsense", timeout=10),  # refused
        requests.get(f"{service.url}/admin/socket.io/?EIO=4&transport=polling&sid=unknown", timeout=10),
    ]
    assert [r.status_code for r in answers] == [200, 400, 400]
    flask_answer = requests.get(f"{service.url}/health", timeout=10)
    for response in answers:
        for name in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Content-Security-Policy", "Cache-Control"):
            assert response.headers.get(name) == flask_answer.headers[name], (name, response.url)


# --- the docs page's CSP --------------------------------------------------------------------------

CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


def test_docs_page_allows_no_inline_script(service: RunningService) -> None:
    page = requests.get(f"{service.url}/admin/docs", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    directives = dict(d.strip().split(" ", 1) for d in page.headers["Content-Security-Policy"].split(";") if d.strip())
    assert directives["script-src"] == "'self'"
    assert "unsafe" not in directives["script-src"] and "unsafe" not in directives["default-src"]
    # Every script is a file of this service's.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page.text) == []


@pytest.mark.timeout(120)
def test_docs_page_renders_swagger_ui_under_its_csp(service: RunningService) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.add_init_script(CSP_PROBE)
            response = page.goto(f"{service.url}/admin/docs")
            assert response is not None and response.ok
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("admin-service")
            expect(page.locator(".opblock-summary-path", has_text="/admin/jobs/stats")).to_be_visible()
            page.locator(".opblock-summary-path", has_text="/admin/jobs/stats").click()  # an operation opens
            expect(page.locator(".opblock-body").first).to_be_visible()
            assert page.evaluate("window.__cspViolations") == []
            assert errors == []
        finally:
            browser.close()
