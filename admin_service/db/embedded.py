"""The embedded default: a private PostgreSQL (pgserver) when no DATABASE_URL is given.

Started once by the `serve` process (never per worker); it stops when that process
exits. pgserver listens on a Unix socket only. As root it runs as the OS user
`pgserver` and makes every parent folder of the data dir world-traversable, so the
data dir lives in the project's own `.data/` folder, not under /root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from admin_service.db.engine import sqlalchemy_url


def start_embedded(data_dir: Path, *, keep_running: bool = False) -> tuple[Any, str]:
    """Start (or attach to) the server in data_dir; return the handle and its URL."""
    import logging
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its /tmp fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode=None if keep_running else "stop")
    return server, sqlalchemy_url(server.get_uri())
