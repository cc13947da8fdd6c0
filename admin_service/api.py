"""flask-smorest set up once for the contract: 400 (not 422) in the envelope, and
unknown query parameters named (webargs drops them silently by default)."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar, cast

import flask_smorest  # type: ignore[import-untyped]  # no stubs, no py.typed
import marshmallow as ma
from webargs.flaskparser import FlaskParser

from admin_service.jobs.schemas import ErrorEnvelopeSchema


class StrictParser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400
    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": ma.RAISE,
        "querystring": ma.RAISE,
    }


ViewT = TypeVar("ViewT", bound=Callable[..., Any])


class ApiBlueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = StrictParser()

    # flask-smorest has no type hints: these typed pass-throughs keep the views' own
    # signatures visible to mypy (--strict rejects untyped decorators).
    def route(self, rule: str, **options: Any) -> Callable[[ViewT], ViewT]:
        return cast(Callable[[ViewT], ViewT], super().route(rule, **options))

    def arguments(self, schema: Any, **options: Any) -> Callable[[ViewT], ViewT]:
        return cast(Callable[[ViewT], ViewT], super().arguments(schema, **options))

    def response(self, status_code: int, schema: Any = None, **options: Any) -> Callable[[ViewT], ViewT]:
        return cast(Callable[[ViewT], ViewT], super().response(status_code, schema, **options))

    def alt_response(self, status_code: int, **options: Any) -> Callable[[ViewT], ViewT]:
        return cast(Callable[[ViewT], ViewT], super().alt_response(status_code, **options))

    @staticmethod
    def doc(**kwargs: Any) -> Callable[[ViewT], ViewT]:
        return cast(Callable[[ViewT], ViewT], flask_smorest.Blueprint.doc(**kwargs))

    def before_request(self, func: ViewT) -> ViewT:
        return cast(ViewT, super().before_request(func))

    def errors(self, *codes: int) -> Callable[[Any], Any]:
        """Document error responses (all in the error envelope) on a view."""

        def decorator(func: Any) -> Any:
            for code in codes:
                func = self.alt_response(code, response=HTTPStatus(code).name)(func)
            return func

        return decorator


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ErrorEnvelopeSchema


API_CONFIG = {
    "API_TITLE": "admin-service",
    "API_VERSION": "1.0.0",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/admin",
    "OPENAPI_JSON_PATH": "openapi.json",
    # The docs page is admin_service/docs.py's (no inline script), not flask-smorest's.
    "API_SPEC_OPTIONS": {
        "info": {
            "description": "Admin monitoring of analysis jobs. Every response is an envelope: "
            "{success, message, data, timestamp} or {success: false, error: {code, message, details}, timestamp}.",
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    },
}
