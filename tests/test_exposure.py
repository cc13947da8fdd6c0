"""What the service shows a client that is not signed in, or misbehaves, over real HTTP under
gunicorn: bounded metric labels, Retry-After only where it means something, no trust in proxy
headers it was not told to trust, the security headers on every answer (Socket.IO's too)."""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import Engine

from admin_service.config import Settings
from tests.support.event_log import reset_event_log
from tests.support.factories import Data
from tests.support.metrics import P, scrape
from tests.support.service import RunningService, run_service
from tests.support.tokens import bearer, token_for

SOCKETIO_HANDSHAKE = "/admin/socket.io/?EIO=4&transport=polling"


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
