"""GET /admin/dashboard (the page) and /admin/dashboard/assets/<file> (its script and styles).

Public: the page is the same for everyone and carries no data. Its own Content-Security-Policy
allows only this origin's scripts, styles and connections: no inline script, no inline style,
no form submissions (the sign-in form is handled by the script, so a token never ends up in
a URL) and Trusted Types, so the script cannot turn strings into HTML.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, abort, render_template, send_from_directory, url_for

blp = Blueprint("dashboard", __name__, template_folder="templates")

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = frozenset({"dashboard.js", "dashboard.css", "favicon.svg"})

DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
ASSET_MAX_AGE = 3600


@cache
def asset_version(filename: str) -> str:
    """A content hash for the asset URL: a new release is never served a stale cached script."""
    return hashlib.sha256((STATIC / filename).read_bytes()).hexdigest()[:12]


def asset_url(filename: str) -> str:
    return url_for("dashboard.asset", filename=filename, v=asset_version(filename))


@blp.get("/admin/dashboard")
def page() -> Response:
    html = render_template(
        "dashboard/index.html",
        asset_url=asset_url,
        api_base=url_for("dashboard.page").rsplit("/dashboard", 1)[0],
    )
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DASHBOARD_CSP
    # The page is static apart from asset versions; revalidate so a release shows at once.
    response.headers["Cache-Control"] = "no-cache"
    return response


@blp.get("/admin/dashboard/assets/<string:filename>")
def asset(filename: str) -> Response:
    if filename not in ASSETS:
        abort(404)
    response = send_from_directory(STATIC, filename, max_age=ASSET_MAX_AGE)
    response.headers["Cache-Control"] = f"public, max-age={ASSET_MAX_AGE}"
    response.headers["Content-Security-Policy"] = DASHBOARD_CSP
    return response
