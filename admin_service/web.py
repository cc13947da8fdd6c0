"""Cross-cutting HTTP behaviour: request ids, the JSON access log, security headers, JSON encoding."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import orjson
from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider

from admin_service.config import Settings

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

access_log = logging.getLogger("admin_service.access")
# The code points UTF-8 cannot encode (Python strings may hold them: json.loads("\"\\ud800\"")).
SURROGATE = re.compile("[\ud800-\udfff]")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Query parameters that carry secrets and must never reach a log line.
SECRET_PARAMS = ("access_token", "token")


def _encode_other(o: Any) -> Any:
    if isinstance(o, Decimal):
        return float(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def json_bytes(obj: Any) -> bytes:
    """The service's one JSON encoder: orjson, which writes datetimes and dates as ISO-8601
    (identical to isoformat()) and UUIDs as strings natively, several times faster than
    json.dumps with a `default` hook; NaN becomes null instead of invalid JSON.

    Text that UTF-8 cannot hold (a lone surrogate, which a client can put in any JSON it sends)
    makes orjson refuse the whole document: it is then encoded again with such text replaced
    by U+FFFD, so an answer that quotes client input is never lost to it (nor echoes it)."""
    try:
        return orjson.dumps(obj, default=_encode_other, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        cleaned = _encodable(obj)
        if cleaned is obj:
            raise
        return orjson.dumps(cleaned, default=_encode_other, option=orjson.OPT_NON_STR_KEYS)


def _encodable(obj: Any) -> Any:
    """obj with every str UTF-8 cannot encode (dict keys included) made encodable; obj itself
    when nothing needed it."""
    if isinstance(obj, str):
        return obj if _utf8_safe(obj) else SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, dict):
        items = [(_encodable(k), _encodable(v)) for k, v in obj.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, obj.items(), strict=True)):
            return obj
        return dict(items)
    if isinstance(obj, (list, tuple)):
        cleaned = [_encodable(v) for v in obj]
        return obj if all(a is b for a, b in zip(cleaned, obj, strict=True)) else cleaned
    return obj


def _utf8_safe(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class IsoJSONProvider(DefaultJSONProvider):
    """Flask's JSON (jsonify, flask-smorest's responses, error envelopes) through json_bytes."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return json_bytes(obj).decode()

    def response(self, *args: Any, **kwargs: Any) -> Response:
        # Typed as the sansio App's response class; at run time it is the Flask app's.
        response_class = cast("type[Response]", self._app.response_class)
        return response_class(json_bytes(self._prepare_response_obj(args, kwargs)), mimetype=self.mimetype)


class JsonLogFormatter(logging.Formatter):
    # The local time zone's offset, looked up once a second: astimezone() asks the C library
    # for it on every call, the larger part of a line's timestamp (a line per request).
    _zone_second = -1
    _zone: tzinfo | None = None

    def _local(self, created: float) -> datetime:
        second = int(created)
        if second != self._zone_second or self._zone is None:
            self._zone = datetime.fromtimestamp(second).astimezone().tzinfo
            self._zone_second = second
        return datetime.fromtimestamp(created, self._zone)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._local(record.created).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonLogFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    # Replace plain stream handlers (duplicate, unstructured lines) but keep others, e.g. pytest's capture.
    root.handlers = [h for h in root.handlers if type(h) is not logging.StreamHandler] + [handler]
    root.setLevel(level)


def redacted_query() -> str:
    parts = []
    for key, value in request.args.items(multi=True):
        parts.append(f"{key}={'[redacted]' if key in SECRET_PARAMS else value}")
    return "&".join(parts)


# Set on every answer; a view may set its own Content-Security-Policy and Cache-Control (the
# dashboard, the docs page, their assets), the others are fixed.
FIXED_HEADERS = frozenset({"X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Strict-Transport-Security"})
HSTS = "max-age=31536000; includeSubDomains"


def security_headers(secure: bool) -> list[tuple[str, str]]:
    """The headers every answer of the service carries (HSTS only over HTTPS)."""
    headers = [
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
        ("Cache-Control", "no-store"),
    ]
    if secure:
        headers.append(("Strict-Transport-Security", HSTS))
    return headers


def came_over_https(environ: WSGIEnvironment, trust_proxy: bool) -> bool:
    """What Flask's request.is_secure says behind ProxyFix(x_proto=1), for WSGI apps outside
    Flask: the connection's scheme, or the proxy's X-Forwarded-Proto when TRUST_PROXY."""
    if environ.get("wsgi.url_scheme") == "https":
        return True
    forwarded = environ.get("HTTP_X_FORWARDED_PROTO", "") if trust_proxy else ""
    return forwarded.split(",")[-1].strip().lower() == "https"


def with_security_headers(start_response: StartResponse, secure: bool) -> StartResponse:
    """start_response adding the security headers an answer (of a WSGI app other than Flask's,
    e.g. Socket.IO's) does not set itself."""

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
        present = {name.lower() for name, _ in headers}
        headers = headers + [(name, value) for name, value in security_headers(secure) if name.lower() not in present]
        return start_response(status, headers, exc_info)

    return start


def install(app: Flask, settings: Settings) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex

    @app.before_request
    def _preflight() -> Response | None:
        """Answer OPTIONS (CORS preflight) before the admin guard and the rate limiter run:
        browsers send preflights without credentials and fail the real request on a 401."""
        rule = request.url_rule
        if request.method == "OPTIONS" and rule is not None and getattr(rule, "provide_automatic_options", False):
            return app.make_default_options_response()
        return None

    # Built once (over HTTP, over HTTPS), not on every answer: (name, value, fixed).
    prepared = {
        secure: tuple((name, value, name in FIXED_HEADERS) for name, value in security_headers(secure))
        for secure in (False, True)
    }

    @app.after_request
    def _headers(response: Response) -> Response:
        headers = response.headers
        headers["X-Request-ID"] = g.get("request_id", "")
        for name, value, fixed in prepared[request.is_secure]:
            if fixed:
                headers[name] = value
            else:
                headers.setdefault(name, value)
        return response

    @app.teardown_request
    def _access_log(exc: BaseException | None) -> None:
        started = g.get("started")
        if started is None:
            return
        admin = g.get("admin")
        access_log.info(
            "request",
            extra={
                "fields": {
                    "request_id": g.get("request_id"),
                    "method": request.method,
                    "path": request.path,
                    "query": redacted_query(),
                    "status": g.get("status"),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "user_id": admin.id if admin else None,
                    "remote": request.remote_addr,
                }
            },
        )

    @app.after_request
    def _remember_status(response: Response) -> Response:
        g.status = response.status_code
        return response
