"""The live dashboard page: /admin/dashboard.

One HTML page, its script (ES modules: static/dashboard.js and static/js/) and one stylesheet,
all served from this folder (no build step, no CDN). The page holds no data: it asks for an admin token and reads everything through
the REST API and the SSE stream with it.
"""

from admin_service.dashboard.routes import blp

__all__ = ["blp"]
