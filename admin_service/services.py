"""The app's long-lived services, built once by create_app and reached through one accessor.

Views ask `services()` for what they need and hand it to the code below them (queries,
stats), which never reaches into the app context itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    from flask_limiter import Limiter
    from flask_smorest import Api
    from sqlalchemy import Engine

    from admin_service.auth import Authenticator
    from admin_service.config import Settings
    from admin_service.jobs.stats import SharedStats
    from admin_service.live.runtime import LiveRuntime

EXTENSION = "admin_service"


@dataclass
class Services:
    settings: Settings
    engine: Engine
    authenticator: Authenticator
    stats: SharedStats
    runtime: LiveRuntime  # the live loops: started per worker (wsgi.py), never in tests' apps
    limiter: Limiter
    api: Api


def install_services(app: Flask, built: Services) -> Services:
    app.extensions[EXTENSION] = built
    return built


def services(app: Flask | None = None) -> Services:
    """This app's services (the current app's, inside a request or app context)."""
    found: Services = (app if app is not None else current_app).extensions[EXTENSION]
    return found
