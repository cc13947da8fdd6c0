"""The embedded default: a private PostgreSQL (pgserver) when no DATABASE_URL is given.

Started once by the `serve` process (never per worker); it stops when that process
exits. pgserver listens on a Unix socket only. As root it runs as the OS user
`pgserver` and makes every parent folder of the data dir world-traversable, so the
data dir lives in the project's own `.data/` folder, not under /root.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from admin_service.db.engine import sqlalchemy_url

# pgserver is a development dependency (requirements-dev.txt): the production image has none.
UNAVAILABLE = (
    "DATABASE_URL is not set, and the embedded PostgreSQL for development (the pgserver package, "
    "in requirements-dev.txt) is not installed: set DATABASE_URL to the PostgreSQL to use"
)


class EmbeddedUnavailable(RuntimeError):
    """No DATABASE_URL and no pgserver to start a private server with."""


def available() -> bool:
    """Whether pgserver is installed (checked before `serve` prints that it starts one)."""
    import importlib.util

    return importlib.util.find_spec("pgserver") is not None


def start_embedded(data_dir: Path, *, keep_running: bool = False) -> tuple[Any, str]:
    """Start (or attach to) the server in data_dir; return the handle and its URL. Another
    process's handle on the same data_dir (`serve`'s) keeps the server up when this one ends."""
    import logging
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its /tmp fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    try:
        import pgserver
    except ImportError as exc:
        raise EmbeddedUnavailable(UNAVAILABLE) from exc

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode=None if keep_running else "stop")
    return server, sqlalchemy_url(server.get_uri())


def initialised(data_dir: Path) -> bool:
    """True once a server was created in data_dir (by the first `serve`)."""
    return (data_dir / "PG_VERSION").is_file()


def psql_command(url: str) -> str:
    """A pasteable shell command opening psql (the one pgserver ships) on the embedded server."""
    from pgserver._commands import POSTGRES_BIN_PATH

    parsed = make_url(url)
    # pgserver listens on a Unix socket only: its folder is the `host` parameter.
    libpq_url = f"postgresql://{parsed.username}@/{parsed.database}?host={parsed.query['host']}"
    return shlex.join([str(POSTGRES_BIN_PATH / "psql"), libpq_url])
