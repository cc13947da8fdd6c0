"""The response envelope and every error handler, in one place.

All JSON answers, success or failure, share one shape so that clients parse one thing:
success: {success, message, data, timestamp}; error: {success, error{code,message,details}, timestamp}.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from admin_service.clock import utc_now_iso

log = logging.getLogger("admin_service.errors")

CODES_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}

# Seconds a client should wait before retrying when a dependency is down.
RETRY_AFTER_SECONDS = 5


def envelope(data: Any, message: str = "OK") -> Response:
    """A success answer, encoded here. The views' response schemas document the shape (and
    tests hold the answers to it); they are not run over the data: the marshmallow dump of a
    50-job page cost more than the rest of the request together."""
    # Flask's JSON provider is typed with werkzeug's Response; it builds the app's response_class.
    return cast(
        Response, current_app.json.response({"success": True, "message": message, "data": data, "timestamp": utc_now_iso()})
    )


class ApiError(Exception):
    """An error the API answers in the envelope. Raise it anywhere below a view."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES_BY_STATUS.get(status, "ERROR")
        self.message = message
        self.details = details or []
        self.headers = headers or {}


E = TypeVar("E", bound=Exception)
# How an exception raised below the views becomes an answer: modules that own an exception
# type (auth, ratelimit) register it here, so this module imports none of them.
Translation = Callable[[Any], ApiError]
_TRANSLATIONS: dict[type, Translation] = {}


def register_translation(exc_type: type[E], translate: Callable[[E], ApiError]) -> None:
    """Answer `exc_type` (and its subclasses) with the ApiError `translate` makes of it."""
    _TRANSLATIONS[exc_type] = translate


def translated(exc: BaseException) -> ApiError | None:
    """The registered answer to this exception, None when its type has none."""
    for klass in type(exc).__mro__:
        translate = _TRANSLATIONS.get(klass)
        if translate is not None:
            return translate(exc)
    return None


def validation_error(field: str, message: str) -> ApiError:
    return ApiError(400, f"Invalid value for {field}: {message}", details=[{"field": field, "message": message}])


def unavailable(message: str, retry_after: int = RETRY_AFTER_SECONDS) -> ApiError:
    """503 SERVICE_UNAVAILABLE: a dependency is down; the client should retry after a while."""
    return ApiError(503, message, headers={"Retry-After": str(retry_after)})


def not_found(message: str, code: str = "NOT_FOUND") -> ApiError:
    return ApiError(404, message, code=code)


def error_body(status: int, code: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "success": False,
        "error": {"code": code, "message": message, "details": details or []},
        "timestamp": utc_now_iso(),
    }


def error_response(error: ApiError) -> ResponseReturnValue:
    response = jsonify(error_body(error.status, error.code, error.message, error.details))
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def _flatten_messages(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """webargs gives {"query": {"limit": ["..."]}}: one {field, message} per problem."""
    details: list[dict[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key in ("query", "json", "path", "view_args", "headers", "form") and not prefix:
                details.extend(_flatten_messages(value, ""))
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
                details.extend(_flatten_messages(value, name))
    elif isinstance(messages, (list, tuple)):
        for item in messages:
            if isinstance(item, (dict, list)):
                details.extend(_flatten_messages(item, prefix))
            else:
                text = str(item)
                if text == "Unknown field.":
                    text = f"Unknown query parameter '{prefix}'."
                details.append({"field": prefix or "request", "message": text})
    else:
        details.append({"field": prefix or "request", "message": str(messages)})
    return details


def handle_http_exception(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    original = getattr(exc, "original_exception", None)
    if original is not None:
        # Flask answers an exception raised after the view (in an after_request hook) as a 500 and
        # hands it to this handler, not to the one for its own type. The rate limiter's response
        # headers read the store again: when the store dies mid-request that is a 503, not a 500.
        answer = translated(original)
        if answer is not None:
            return error_response(answer)
    data = getattr(exc, "data", None) or {}
    if status in (400, 422) and "messages" in data:
        details = _flatten_messages(data["messages"])
        fields = ", ".join(dict.fromkeys(d["field"] for d in details))
        headers = data.get("headers") or {}
        return error_response(ApiError(400, f"Invalid request: {fields}", details=details, headers=headers))
    code = CODES_BY_STATUS.get(status, "ERROR")
    message = exc.description or exc.name
    if status == 429:
        message = f"Too many requests: limit is {exc.description}. Retry later."
    if status == 404:
        message = "Resource not found"
    response = error_response(ApiError(status, message, code=code))
    # Keep headers werkzeug computed (Allow on 405, Retry-After on 429).
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value  # type: ignore[union-attr]
    return response


def handle_api_error(exc: ApiError) -> ResponseReturnValue:
    return error_response(exc)


def handle_translated(exc: Exception) -> ResponseReturnValue:
    answer = translated(exc)
    return error_response(answer) if answer is not None else handle_unexpected(exc)


# What PostgreSQL says about a value it refuses (SQLSTATE class 22, data exception): the request
# held it, so it is the client's error. Validation rejects such values first (clock.parse_instant,
# jobs/schemas.text_problem); this is the net under it.
DATA_REFUSED = "A value in the request cannot be used by the database."


def database_failure(exc: DBAPIError) -> str:
    """A log line for a failed statement without the values it was sent: the statement with its
    placeholders, the driver's error class and SQLSTATE. Not the server's message: psycopg2
    interpolates parameters on the client, so PostgreSQL quotes them back (`LINE 1: ...`, or
    `invalid input syntax ...: "<value>"`); the engine's hide_parameters keeps SQLAlchemy's
    own `[parameters: ...]` out of the exception's text too."""
    original = exc.orig
    return (
        f"{type(exc).__name__}: {type(original).__name__} (SQLSTATE {getattr(original, 'pgcode', None)}) "
        f"in: {' '.join(str(exc.statement or '').split())[:500]}"
    )


def log_database_failure(exc: DBAPIError) -> None:
    """The traceback (where it failed) and database_failure (what), never the exception's text."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unhandled database error: %s\nTraceback (most recent call last):\n%s", database_failure(exc), frames)


def handle_database_error(exc: DBAPIError | PoolTimeoutError) -> ResponseReturnValue:
    original = getattr(exc, "orig", None)
    if isinstance(exc, DataError):
        log.warning("database refused a value: %s", database_failure(exc))
        return error_response(ApiError(400, DATA_REFUSED, details=[{"field": "request", "message": DATA_REFUSED}]))
    if original is not None and getattr(original, "pgcode", None) == "57014":
        message = "The database did not answer in time; retry shortly"
    elif isinstance(exc, PoolTimeoutError):
        message = "The service is saturated; retry shortly"
    elif isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        message = "The database is unreachable; retry shortly"
    else:
        return handle_unexpected(exc)
    log.warning(
        "database unavailable: %s", str(original or exc).strip().splitlines()[0] if str(original or exc) else type(exc).__name__
    )
    return error_response(unavailable(message))


def handle_unexpected(exc: Exception) -> ResponseReturnValue:
    if isinstance(exc, DBAPIError):
        log_database_failure(exc)
    else:
        log.exception("unhandled error")
    return internal_error(exc)


def internal_error(exc: Exception) -> ResponseReturnValue:
    message = "Internal server error"
    if current_app.debug:
        message = f"{type(exc).__name__}: {exc}"
    return error_response(ApiError(500, message))


def register_error_handlers(app: Flask) -> None:
    """Register after flask-smorest's Api so these replace its HTTPException handler."""
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ApiError, handle_api_error)
    for exc_type in _TRANSLATIONS:
        app.register_error_handler(exc_type, handle_translated)
    app.register_error_handler(DBAPIError, handle_database_error)
    app.register_error_handler(PoolTimeoutError, handle_database_error)
    app.register_error_handler(Exception, handle_unexpected)
