"""Swagger UI assets, served from the swagger-ui-bundle package: the docs need no CDN."""

from __future__ import annotations

from flask import Blueprint, Response, request, send_from_directory
from swagger_ui_bundle import swagger_ui_path

blp = Blueprint("docs_assets", __name__)

# Swagger UI's page (rendered by flask-smorest) starts itself with an inline script.
DOCS_CSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"


@blp.get("/admin/docs-assets/<path:filename>")
def asset(filename: str) -> Response:
    response = send_from_directory(swagger_ui_path, filename, max_age=3600)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@blp.after_app_request
def _docs_csp(response: Response) -> Response:
    if request.path.startswith("/admin/docs"):
        response.headers["Content-Security-Policy"] = DOCS_CSP
    return response
