"""The API docs page (GET /admin/docs): Swagger UI, served from the swagger-ui-bundle package, so
the docs need no CDN.

flask-smorest's own page starts Swagger UI with an inline script, which a Content-Security-Policy
can only allow with 'unsafe-inline' (any injected script too). This page loads the same assets
and starts Swagger UI from a served file (docs_static/swagger-init.js) that reads the document's
URL from the page: scripts from this origin only. Swagger UI sets style attributes as it renders,
so inline styles stay allowed.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, request, send_from_directory, url_for
from markupsafe import escape
from swagger_ui_bundle import swagger_ui_path

from admin_service.api import API_CONFIG

blp = Blueprint("docs_assets", __name__)

INIT_FOLDER = Path(__file__).resolve().parent / "docs_static"
INIT_SCRIPT = "swagger-init.js"
ASSETS_PREFIX = "/admin/docs-assets/"
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
MAX_AGE = 3600

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link href="{assets}swagger-ui.css" rel="stylesheet" type="text/css">
</head>
<body>
<div id="swagger-ui-container" data-spec-url="{spec_url}"></div>
<script src="{assets}swagger-ui-standalone-preset.js"></script>
<script src="{assets}swagger-ui-bundle.js"></script>
<script src="{init_url}"></script>
</body>
</html>
"""


@blp.get("/admin/docs")
def page() -> Response:
    html = PAGE.format(
        title=escape(f"{API_CONFIG['API_TITLE']} API"),
        assets=ASSETS_PREFIX,
        spec_url=escape(url_for("api-docs.openapi_json")),
        init_url=escape(url_for("docs_assets.init_script")),
    )
    return Response(html, mimetype="text/html")


@blp.get(f"{ASSETS_PREFIX}<path:filename>")
def asset(filename: str) -> Response:
    response = send_from_directory(swagger_ui_path, filename, max_age=MAX_AGE)
    response.headers["Cache-Control"] = f"public, max-age={MAX_AGE}"
    return response


@blp.get(f"/admin/docs-init/{INIT_SCRIPT}")
def init_script() -> Response:
    response = send_from_directory(INIT_FOLDER, INIT_SCRIPT, max_age=MAX_AGE)
    response.headers["Cache-Control"] = f"public, max-age={MAX_AGE}"
    return response


@blp.after_app_request
def _docs_csp(response: Response) -> Response:
    if request.path.startswith("/admin/docs"):
        response.headers["Content-Security-Policy"] = DOCS_CSP
    return response
