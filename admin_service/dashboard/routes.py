"""GET /admin/dashboard (the page) and /admin/dashboard/assets/<file> (its scripts and styles);
`/` and `/admin` redirect to the page.

Public: the page is the same for everyone and carries no data. Its own Content-Security-Policy
allows only this origin's scripts, styles and connections: no inline script, no inline style,
no form submissions (the sign-in form is handled by the script, so a token never ends up in
a URL) and Trusted Types, so the script cannot turn strings into HTML.

The script is ES modules: the entry, static/dashboard.js, imports static/js/*.js by relative
URL. The names it needs (event names, alert rules) come from admin_service/names.py through
the template, as a JSON block the script reads (data, never executed: the CSP allows it).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, abort, redirect, render_template, send_from_directory, url_for
from werkzeug.wrappers import Response as BaseResponse

from admin_service.names import ALERT_NEW, ALERT_UPDATE, EPISODE_RULES, JOB_ACTION, JOB_ALERT, JOB_STATS, JOB_UPDATE

blp = Blueprint("dashboard", __name__, template_folder="templates")

STATIC = Path(__file__).resolve().parent / "static"
ENTRY = "dashboard.js"
# The modules the entry imports, preloaded by the page so that they load side by side.
MODULES = tuple(sorted(path.relative_to(STATIC).as_posix() for path in (STATIC / "js").glob("*.js")))
ASSETS = frozenset({ENTRY, "dashboard.css", "favicon.svg", *MODULES})

DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
ASSET_MAX_AGE = 3600

PAGE_NAMES = {
    "events": {
        "stats": JOB_STATS,
        "update": JOB_UPDATE,
        "alert": JOB_ALERT,
        "action": JOB_ACTION,
        "alertNew": ALERT_NEW,
        "alertUpdate": ALERT_UPDATE,
    },
    # The table-wide rules: raised once per episode, shown until resolved (not the per-job rule).
    "episodeRules": list(EPISODE_RULES),
}


@cache
def asset_version(filename: str) -> str:
    """A content hash for the asset URL: a new release is never served a stale cached script."""
    return hashlib.sha256((STATIC / filename).read_bytes()).hexdigest()[:12]


def asset_url(filename: str) -> str:
    return url_for("dashboard.asset", filename=filename, v=asset_version(filename))


def module_url(filename: str) -> str:
    """As the entry's imports resolve it: no version (revalidated instead, see asset())."""
    return url_for("dashboard.asset", filename=filename)


@blp.get("/")
@blp.get("/admin")
@blp.get("/admin/")
def home() -> BaseResponse:
    """The root and /admin lead to the dashboard (the URL `make run` prints), not to a 404."""
    return redirect(url_for("dashboard.page"), code=302)


@blp.get("/admin/dashboard")
def page() -> Response:
    html = render_template(
        "dashboard/index.html",
        asset_url=asset_url,
        module_urls=[module_url(name) for name in MODULES],
        names=PAGE_NAMES,
        api_base=url_for("dashboard.page").rsplit("/dashboard", 1)[0],
    )
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DASHBOARD_CSP
    # The page is static apart from asset versions; revalidate so a release shows at once.
    response.headers["Cache-Control"] = "no-cache"
    return response


@blp.get("/admin/dashboard/assets/<path:filename>")
def asset(filename: str) -> Response:
    if filename not in ASSETS:
        abort(404)
    # A module script is refused unless served as JavaScript: say so whatever the system's MIME table holds.
    mimetype = "text/javascript" if filename.endswith(".js") else None
    response = send_from_directory(STATIC, filename, max_age=ASSET_MAX_AGE, mimetype=mimetype)
    if filename in MODULES:
        # Imported by URLs without a version: revalidated on every load (ETag, mostly a 304), so a
        # release's entry never runs with the previous release's modules.
        response.headers["Cache-Control"] = "no-cache"
    else:
        response.headers["Cache-Control"] = f"public, max-age={ASSET_MAX_AGE}"
    response.headers["Content-Security-Policy"] = DASHBOARD_CSP
    return response
