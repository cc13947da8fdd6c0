"""Post-deploy check: `python -m admin_service smoke --url URL --token T`.

Exercises every endpoint and the auth refusal against a running instance; one coloured
pass/fail line per check, then the success rate. Exit status 1 on any failure.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

GREEN, RED, RESET = "\033[32m", "\033[31m", "\033[0m"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    ms: float


def _get(session: requests.Session, url: str, token: str | None = None, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return session.get(url, headers=headers, params=params, timeout=10)


def run_smoke(base_url: str, token: str, out: Any = sys.stdout, colour: bool | None = None) -> list[Check]:
    base = base_url.rstrip("/")
    colour = out.isatty() if colour is None else colour
    session = requests.Session()
    results: list[Check] = []
    state: dict[str, Any] = {}

    def check(name: str, func: Callable[[], tuple[bool, str]]) -> None:
        started = time.perf_counter()
        try:
            ok, detail = func()
        except Exception as exc:  # a smoke check reports every failure, whatever it is
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        ms = (time.perf_counter() - started) * 1000
        results.append(Check(name, ok, detail, ms))
        mark = "PASS" if ok else "FAIL"
        if colour:
            mark = f"{GREEN if ok else RED}{mark}{RESET}"
        print(f"{mark} {name} ({ms:.0f} ms){'' if ok else ': ' + detail}", file=out)

    def envelope_ok(resp: requests.Response, status: int = 200) -> tuple[bool, str]:
        body = resp.json()
        ok = resp.status_code == status and body.get("success") is (status < 400) and "timestamp" in body
        return ok, f"HTTP {resp.status_code}: {str(body)[:200]}"

    def health() -> tuple[bool, str]:
        return envelope_ok(_get(session, f"{base}/health"))

    def ready() -> tuple[bool, str]:
        return envelope_ok(_get(session, f"{base}/health/ready"))

    def refused() -> tuple[bool, str]:
        resp = _get(session, f"{base}/admin/jobs")
        return resp.status_code == 401 and resp.json()["error"]["code"] == "UNAUTHORIZED", f"HTTP {resp.status_code}"

    def stats() -> tuple[bool, str]:
        resp = _get(session, f"{base}/admin/jobs/stats", token)
        ok, detail = envelope_ok(resp)
        return ok and "overview" in resp.json()["data"], detail

    def listing() -> tuple[bool, str]:
        resp = _get(session, f"{base}/admin/jobs", token, limit=5)
        ok, detail = envelope_ok(resp)
        jobs = resp.json()["data"]["jobs"] if ok else []
        state["jobs"] = jobs
        return ok, detail

    def completed_listing() -> tuple[bool, str]:
        resp = _get(session, f"{base}/admin/jobs", token, limit=1, status="completed")
        ok, detail = envelope_ok(resp)
        state["completed"] = resp.json()["data"]["jobs"] if ok else []
        return ok, detail

    def bad_input() -> tuple[bool, str]:
        resp = _get(session, f"{base}/admin/jobs", token, limit=101)
        return resp.status_code == 400 and resp.json()["error"]["code"] == "VALIDATION_ERROR", f"HTTP {resp.status_code}"

    def details() -> tuple[bool, str]:
        if not state.get("jobs"):
            return True, "no jobs to look up"
        return envelope_ok(_get(session, f"{base}/admin/jobs/{state['jobs'][0]['id']}", token))

    def missing() -> tuple[bool, str]:
        resp = _get(session, f"{base}/admin/jobs/00000000-0000-0000-0000-000000000000", token)
        return resp.status_code == 404 and resp.json()["error"]["code"] == "NOT_FOUND", f"HTTP {resp.status_code}"

    def results_check() -> tuple[bool, str]:
        if not state.get("completed"):
            return True, "no completed job"
        resp = _get(session, f"{base}/admin/jobs/{state['completed'][0]['id']}/results", token)
        if resp.status_code == 404 and resp.json()["error"]["code"] == "RESULT_NOT_FOUND":
            return True, "completed job without result"
        return envelope_ok(resp)

    def openapi() -> tuple[bool, str]:
        resp = _get(session, f"{base}/admin/openapi.json")
        return resp.status_code == 200 and "paths" in resp.json(), f"HTTP {resp.status_code}"

    for name, func in [
        ("health", health),
        ("ready", ready),
        ("auth refused without token", refused),
        ("stats", stats),
        ("list", listing),
        ("list by status", completed_listing),
        ("bad input is a 400", bad_input),
        ("details", details),
        ("missing job is a 404", missing),
        ("results", results_check),
        ("openapi document", openapi),
    ]:
        check(name, func)

    passed = sum(c.ok for c in results)
    print(f"{passed}/{len(results)} checks passed ({100 * passed / len(results):.0f}%)", file=out)
    return results
