"""The error envelope every failed request answers with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from werkzeug.test import TestResponse


def assert_error(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body is not None, "error answered outside the JSON envelope"
    assert body["success"] is False
    assert set(body) == {"success", "error", "timestamp"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return body
