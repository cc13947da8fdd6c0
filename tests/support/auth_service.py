"""A real HTTP auth service for AUTH_SERVICE_URL mode: POST /auth/verify-token."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

from tests.support.tokens import claims_for


class AuthStub:
    """A real HTTP auth service: POST /auth/verify-token, counting the calls it answers."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.delay = 0.0
        self.fail_with: int | None = None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                header = self.headers.get("Authorization", "")
                token = header[7:] if header.startswith("Bearer ") else body.get("token", "")
                stub.calls.append(token)
                if stub.delay:
                    time.sleep(stub.delay)
                if self.path != "/auth/verify-token":
                    self._answer(404, {"success": False})
                elif stub.fail_with:
                    self._answer(stub.fail_with, {"success": False, "error": {"code": "BROKEN"}})
                elif token in stub.users and not stub.expired(token):
                    self._answer(200, {"success": True, "data": {"user": stub.users[token]}})
                else:
                    self._answer(401, {"success": False, "error": {"code": "UNAUTHORIZED", "message": "Invalid token"}})

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                try:
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up waiting (timeout tests)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def expired(token: str) -> bool:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        return isinstance(exp, (int, float)) and exp <= time.time()

    def add(self, user_type: str, *, is_active: bool = True, ttl_seconds: int = 600) -> str:
        """A token the stub vouches for until it expires (a JWT signed by a key this service does not know)."""
        user_id = str(uuid.uuid4())
        claims = claims_for(user_id, exp=int(time.time()) + ttl_seconds)
        token = jwt.encode(claims, "the-auth-services-own-secret-0123456789", algorithm="HS256")
        self.users[token] = {"id": user_id, "email": f"{user_id[:8]}@example.com", "user_type": user_type, "is_active": is_active}
        return token
