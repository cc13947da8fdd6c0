"""RATE_LIMIT and AUTH_FAILURE_LIMIT hold for the whole deployment with the default setup: the
windows live in the service's own PostgreSQL (`database://`), shared by every worker and
instance, without Redis. And memory://, which counts per process, is refused with several workers."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import requests
from sqlalchemy import Engine, text

from tests.support import ROOT
from tests.support.envelopes import assert_error
from tests.support.factories import Data
from tests.support.service import RunningService, run_service
from tests.support.settings import TEST_SECRET, app_with
from tests.support.tokens import bearer, token_for

DATABASE = {"RATE_LIMIT_STORAGE_URI": "database://"}


def test_two_apps_on_the_database_store_share_one_budget(database_url: str, engine: Engine, data: Data) -> None:
    one = app_with(database_url, engine, RATE_LIMIT="3 per minute", **DATABASE).test_client()
    two = app_with(database_url, engine, RATE_LIMIT="3 per minute", **DATABASE).test_client()
    headers = bearer(token_for(data.user(user_type="admin")))
    remaining = []
    for client in (one, two, one):
        response = client.get("/admin/jobs", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    for client in (two, one):
        refused = client.get("/admin/jobs", headers=headers)
        assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")
        assert 1 <= int(refused.headers["Retry-After"]) <= 61


def test_failed_token_checks_count_across_apps_on_the_database_store(database_url: str, engine: Engine, data: Data) -> None:
    one = app_with(database_url, engine, AUTH_FAILURE_LIMIT="2 per minute", **DATABASE).test_client()
    two = app_with(database_url, engine, AUTH_FAILURE_LIMIT="2 per minute", **DATABASE).test_client()
    address = f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    bad = bearer(token_for({"id": str(uuid.uuid4())}) + "x")
    for client in (one, two):
        assert client.get("/admin/jobs", headers=bad, environ_base={"REMOTE_ADDR": address}).status_code == 401
    for client in (one, two):
        refused = client.get("/admin/jobs", headers=bad, environ_base={"REMOTE_ADDR": address})
        assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")


def count_statuses(svc: RunningService, token: str, total: int, clients: int = 12) -> Counter[int]:
    """`total` requests on one token from `clients` connections at once (spread over the workers)."""

    def run(share: int) -> list[int]:
        with requests.Session() as session:
            # A new connection now and then, so that each client meets both workers.
            statuses = []
            for i in range(share):
                if i % 25 == 0:
                    session.close()
                statuses.append(session.get(f"{svc.url}/admin/jobs?limit=1", headers=bearer(token), timeout=30).status_code)
            return statuses

    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        return Counter(status for statuses in pool.map(run, shares) for status in statuses)


def test_the_rate_limit_holds_across_two_gunicorn_workers_by_default(
    database_url: str, engine: Engine, data: Data, tmp_path: Path
) -> None:
    """The issue's measurement (1,161 of 1,500 passed at 600/min with 2 workers on memory://):
    with the default store at most the limit passes, whichever worker answers."""
    admin = data.user(user_type="admin")
    token = token_for(admin)
    # Per hour, so that however slowly this machine serves the 1,500, one window holds them all.
    env = {"RATE_LIMIT": "100 per hour"}
    env.pop("RATE_LIMIT_STORAGE_URI", None)
    with run_service(database_url, tmp_path, workers=2, env=env) as svc:
        assert len(svc.workers()) == 2
        statuses = count_statuses(svc, token, 1500)
        log = svc.log()
    assert statuses[200] == 100, statuses
    assert statuses[429] == 1400, statuses
    assert "Traceback" not in log, log[-3000:]


def test_several_workers_on_a_per_process_store_are_refused_at_start(database_url: str) -> None:
    env = {"DATABASE_URL": database_url, "JWT_SECRET": TEST_SECRET, "WEB_CONCURRENCY": "2", "RATE_LIMIT_STORAGE_URI": "memory://"}
    started = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--check-config", "wsgi:app"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "RATE_LIMIT_STORAGE_URI=memory:// counts per process" in started.stdout + started.stderr


# --- the brute-force guard and admins already signed in (issue 18, defect 7) ---------------------


def bad_token() -> str:
    """A well-formed token whose signature does not verify: a guess."""
    return token_for({"id": str(uuid.uuid4())}) + "x"


def test_a_token_verified_on_one_instance_passes_a_block_on_another(database_url: str, engine: Engine, data: Data) -> None:
    """Behind a proxy every client has one address; guesses block it. The admin whose token
    verified before (on another instance, which this one never heard from) keeps working, a
    token never seen is refused."""
    env = {"AUTH_FAILURE_LIMIT": "3 per minute", **DATABASE}
    one = app_with(database_url, engine, **env).test_client()
    two = app_with(database_url, engine, **env).test_client()
    proxy = {"REMOTE_ADDR": f"10.8.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"}
    signed_in = bearer(token_for(data.user(user_type="admin")))
    assert one.get("/admin/jobs", headers=signed_in, environ_base=proxy).status_code == 200
    for _ in range(3):
        assert two.get("/admin/jobs", headers=bearer(bad_token()), environ_base=proxy).status_code == 401
    assert_error(two.get("/admin/jobs", headers=bearer(bad_token()), environ_base=proxy), 429, "RATE_LIMIT_EXCEEDED")
    never_seen = bearer(token_for(data.user(user_type="admin")))
    assert_error(two.get("/admin/jobs", headers=never_seen, environ_base=proxy), 429, "RATE_LIMIT_EXCEEDED")
    for client in (two, one, two):
        assert client.get("/admin/jobs", headers=signed_in, environ_base=proxy).status_code == 200
    # Kept for the token's whole validity (it was a 60 s cache): the record's expiry is its exp.
    token = signed_in["Authorization"].split()[1]
    with engine.connect() as conn:
        kept_until = conn.execute(
            text("SELECT extract(epoch FROM expires_at) FROM admin.verified_tokens WHERE fingerprint = :f"),
            {"f": hashlib.sha256(token.encode()).digest()},
        ).scalar()
    assert kept_until == jwt.decode(token, options={"verify_signature": False})["exp"]


def test_guesses_from_the_shared_address_do_not_lock_out_signed_in_admins_on_any_worker(
    database_url: str, engine: Engine, data: Data, tmp_path: Path
) -> None:
    """The issue's attack: TRUST_PROXY=false, so every client is 127.0.0.1 here; 20 bad tokens a
    minute. Before, only the worker (and the minute) in which a token first verified knew it."""
    admins = [data.user(user_type="admin") for _ in range(3)]
    tokens = [token_for(admin) for admin in admins]
    env = {"AUTH_FAILURE_LIMIT": "20 per minute", "TRUST_PROXY": "false"}
    with run_service(database_url, tmp_path, workers=2, env=env) as svc:
        for token in tokens:  # each signs in once, on whichever worker takes the connection
            assert requests.get(f"{svc.url}/admin/jobs?limit=1", headers=bearer(token), timeout=10).status_code == 200
        guesses = Counter(
            requests.get(f"{svc.url}/admin/jobs?limit=1", headers=bearer(bad_token()), timeout=10).status_code for _ in range(30)
        )
        assert guesses == {401: 20, 429: 10}, guesses
        stranger = token_for(data.user(user_type="admin"))
        assert requests.get(f"{svc.url}/admin/jobs?limit=1", headers=bearer(stranger), timeout=10).status_code == 429
        # A new connection per request: both workers answer, each for tokens the other verified.
        signed_in = Counter(
            requests.get(f"{svc.url}/admin/jobs?limit=1", headers=bearer(tokens[i % 3]), timeout=10).status_code
            for i in range(60)
        )
    assert signed_in == {200: 60}, signed_in


def test_a_busy_client_gets_exactly_the_limit_and_every_hit_counts_once(database_url: str, engine: Engine, data: Data) -> None:
    """Hits a worker reserves in batches (RATE_LIMIT_LOCAL_BATCH) are granted one by one: the
    limit holds to the request, the remaining count goes down by one per answer, and the store
    holds exactly the hits granted (none reserved and lost in a process that kept serving)."""
    client = app_with(database_url, engine, RATE_LIMIT="200 per day", **DATABASE).test_client()
    admin = data.user(user_type="admin")
    headers = bearer(token_for(admin))
    remaining, refused = [], 0
    for _ in range(230):
        response = client.get("/admin/jobs?limit=1", headers=headers)
        if response.status_code == 429:
            refused += 1
        else:
            assert response.status_code == 200, response.get_data(as_text=True)
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == list(range(199, -1, -1))
    assert refused == 30
    with engine.connect() as conn:
        counted = conn.execute(
            text("SELECT sum(x) FROM admin.rate_limits, unnest(counts) AS x WHERE key LIKE :k"), {"k": f"%user:{admin['id']}%"}
        ).scalar_one()
    assert counted == 200
