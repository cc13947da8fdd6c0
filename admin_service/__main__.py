"""Command line: python -m admin_service <command>.

serve                     run under gunicorn (gevent); embedded PostgreSQL without DATABASE_URL
db seed --jobs N          create the fixture tables if missing and fill demo data
db upgrade                create/migrate the service's own schema
db install-notify-trigger opt-in trigger on archive.analysis_jobs: live events without polling delay
db install-change-capture opt-in row trigger on archive.analysis_jobs: every change, exactly once
db install-indexes        opt-in indexes on the archive tables for list sorts/filters, capture, stats (prints its DDL)
token --email E           print a signed admin token for a user (development)
smoke --url U --token T   post-deploy check of a running instance
openapi export [--check]  write (or verify) openapi/openapi.json
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import Engine, select, text

from admin_service.config import ConfigError, Settings, load_settings
from admin_service.db.tables import JOBS_TABLE

ROOT = Path(__file__).resolve().parent.parent
OPENAPI_PATH = ROOT / "openapi" / "openapi.json"


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from admin_service.db.engine import make_engine

    if not settings.database_url:
        sys.exit("DATABASE_URL is not set (the embedded default is started by `serve`)")
    return make_engine(settings)


def cmd_seed(args: argparse.Namespace) -> None:
    from admin_service.db.fixtures import seed_demo

    engine = _engine(_settings())
    started = time.perf_counter()
    with engine.begin() as conn:
        seed_demo(conn, args.jobs)
    print(f"seeded {args.jobs} jobs in {time.perf_counter() - started:.1f} s")


def cmd_upgrade(_: argparse.Namespace) -> None:
    from admin_service.db.migrations import upgrade

    settings = _settings()
    upgrade(_engine(settings), settings)
    print(f"schema {settings.admin_schema} is up to date")


def cmd_notify_trigger(args: argparse.Namespace) -> None:
    from admin_service.db.archive_options import drop_notify_trigger_ddl, notify_trigger_ddl, run_ddl

    settings = _settings()
    ddl = drop_notify_trigger_ddl(settings) if args.drop else notify_trigger_ddl(settings)
    print(ddl)
    run_ddl(_engine(settings), ddl)
    print("done: capture now wakes on every job change" if not args.drop else "done: capture polls again")


def cmd_change_capture(args: argparse.Namespace) -> None:
    from admin_service.db.archive_options import change_capture_ddl, drop_change_capture_ddl, run_ddl
    from admin_service.db.migrations import upgrade

    settings = _settings()
    engine = _engine(settings)
    if not args.drop:
        upgrade(engine, settings)  # the change table must exist before any writer fires the trigger
    ddl = drop_change_capture_ddl(settings) if args.drop else change_capture_ddl(settings)
    print(ddl)
    run_ddl(engine, ddl)
    print("done: capture logs every job change exactly once" if not args.drop else "done: capture samples rows again")


def cmd_indexes(args: argparse.Namespace) -> None:
    from admin_service.db.archive_options import drop_index_ddl, index_ddl, invalid_indexes, run_each

    engine = _engine(_settings())
    statements = drop_index_ddl() if args.drop else index_ddl(invalid_indexes(engine))
    started = time.perf_counter()
    run_each(engine, statements)
    verb = "dropped" if args.drop else "in place"
    print(f"done in {time.perf_counter() - started:.1f} s: the admin-service indexes are {verb}")


def admin_token(engine: Engine, settings: Settings, email: str, ttl: int = 12 * 3600) -> str:
    from admin_service.auth import ADMIN_TYPES, sign_token
    from admin_service.db.tables import USERS_TABLE, users

    with engine.connect() as conn:
        row = conn.execute(select(users.c.id, users.c.user_type, users.c.is_active).where(users.c.email == email)).first()
    if row is None:
        sys.exit(f"no user with email {email!r} in {USERS_TABLE}")
    if row.user_type not in ADMIN_TYPES or not row.is_active:
        print(f"warning: {email} is not an active admin; the service will refuse this token", file=sys.stderr)
    return sign_token(settings, str(row.id), ttl_seconds=ttl)


def cmd_token(args: argparse.Namespace) -> None:
    settings = _settings()
    print(admin_token(_engine(settings), settings, args.email, args.ttl))


def cmd_smoke(args: argparse.Namespace) -> None:
    from admin_service.smoke import run_smoke

    results = run_smoke(args.url, args.token)
    sys.exit(0 if all(c.ok for c in results) else 1)


def generated_openapi() -> dict:
    from sqlalchemy import create_engine

    from admin_service import create_app
    from admin_service.config import load_settings as load
    from admin_service.services import services

    # The document depends on the code only: build the app with inert settings.
    settings = load(
        {"JWT_SECRET": "openapi-export-secret-not-used-for-anything"}, database_url="postgresql://unused@localhost/unused"
    )
    app = create_app(settings, engine=create_engine("postgresql+psycopg2://unused@localhost/unused"))
    return services(app).api.spec.to_dict()


def cmd_openapi(args: argparse.Namespace) -> None:
    document = json.dumps(generated_openapi(), indent=2, sort_keys=True) + "\n"
    if args.check:
        if not OPENAPI_PATH.exists() or OPENAPI_PATH.read_text() != document:
            sys.exit("openapi/openapi.json is out of date: run `python -m admin_service openapi export`")
        print("openapi/openapi.json is up to date")
        return
    OPENAPI_PATH.parent.mkdir(exist_ok=True)
    OPENAPI_PATH.write_text(document)
    print(f"wrote {OPENAPI_PATH}")


def _embedded_database(settings: Settings, demo_jobs: int) -> tuple[object, str, str]:
    """Start the private PostgreSQL, create and seed it on first start; keep a JWT secret."""
    from admin_service.db.embedded import start_embedded
    from admin_service.db.engine import make_engine
    from admin_service.db.fixtures import seed_demo

    data_dir = settings.embedded_pg_dir
    print(f"starting embedded PostgreSQL in {data_dir} ...", flush=True)
    server, url = start_embedded(data_dir)
    engine = make_engine(settings, url)
    with engine.begin() as conn:
        has_jobs = conn.execute(text(f"SELECT to_regclass('{JOBS_TABLE}') IS NOT NULL")).scalar()
        empty = not has_jobs or conn.execute(text(f"SELECT NOT EXISTS (SELECT 1 FROM {JOBS_TABLE})")).scalar()
        if empty:
            print(f"seeding {demo_jobs} demo jobs ...", flush=True)
            seed_demo(conn, demo_jobs)
    engine.dispose()
    secret_file = data_dir.parent / "jwt_secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(48))
        secret_file.chmod(0o600)
    return server, url, secret_file.read_text().strip()


def cmd_serve(args: argparse.Namespace) -> None:
    env = dict(os.environ)
    if args.port:
        env["PORT"] = str(args.port)
    if args.workers:
        env["WEB_CONCURRENCY"] = str(args.workers)
    server = None
    if not os.environ.get("DATABASE_URL"):
        # Embedded default: settings without a database, and a dev secret kept across restarts.
        base_env = {**env, "JWT_SECRET": env.get("JWT_SECRET") or "placeholder-secret-replaced-before-serving"}
        settings = _load_or_exit(base_env)
        server, url, secret = _embedded_database(settings, args.demo_jobs)
        env["DATABASE_URL"] = url
        env.setdefault("JWT_SECRET", secret)
    settings = _load_or_exit(env)
    from admin_service.db.engine import make_engine
    from admin_service.db.migrations import upgrade

    engine = make_engine(settings)
    upgrade(engine, settings)
    port = settings.port
    base = f"http://localhost:{port}"
    print(f"\nadmin-service on {base}")
    print(f"  API docs:   {base}/admin/docs")
    print(f"  Live:       {base}/admin/jobs/stream (SSE), socket.io path /admin/socket.io")
    print(f"  Stats:      {base}/admin/jobs/stats")
    if server is not None:
        token = admin_token(engine, settings, "admin@example.com")
        print(f"  Admin token (12 h):\n    {token}")
        print(f"  Dashboard:  {base}/admin/dashboard#token={token}")
        print(f"  Try: curl -H 'Authorization: Bearer {token[:16]}...' {base}/admin/jobs/stats")
    engine.dispose()
    sys.stdout.flush()
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"]
    child = subprocess.Popen(gunicorn, env=env, cwd=ROOT)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    del server  # the embedded PostgreSQL stops when this process exits
    sys.exit(code)


def _load_or_exit(env: dict[str, str]) -> Settings:
    try:
        return load_settings(env)
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m admin_service", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service under gunicorn")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--demo-jobs", type=int, default=20_000, help="jobs seeded on the embedded default's first start")
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    seed = db_sub.add_parser("seed", help="create fixture tables if missing and fill demo data")
    seed.add_argument("--jobs", type=int, default=10_000)
    seed.set_defaults(func=cmd_seed)
    db_sub.add_parser("upgrade", help="create/migrate the service's own schema").set_defaults(func=cmd_upgrade)
    trigger = db_sub.add_parser("install-notify-trigger", help="opt-in: NOTIFY on job changes so capture wakes at once")
    trigger.add_argument("--drop", action="store_true", help="remove it again")
    trigger.set_defaults(func=cmd_notify_trigger)
    changes = db_sub.add_parser(
        "install-change-capture",
        help="opt-in: a row trigger records every job change in the service's schema, so capture logs each "
        "transition exactly once (prints the DDL it runs)",
    )
    changes.add_argument("--drop", action="store_true", help="remove it again (capture falls back to polling)")
    changes.set_defaults(func=cmd_change_capture)
    indexes = db_sub.add_parser(
        "install-indexes",
        help="opt-in: indexes on the archive tables for list sorts and filters, capture and stats "
        "(prints the DDL it runs; built CONCURRENTLY)",
    )
    indexes.add_argument("--drop", action="store_true", help="remove them again")
    indexes.set_defaults(func=cmd_indexes)

    token = sub.add_parser("token", help="print a signed admin token (development)")
    token.add_argument("--email", required=True)
    token.add_argument("--ttl", type=int, default=12 * 3600, help="seconds")
    token.set_defaults(func=cmd_token)

    smoke = sub.add_parser("smoke", help="check a running instance")
    smoke.add_argument("--url", required=True)
    smoke.add_argument("--token", required=True)
    smoke.set_defaults(func=cmd_smoke)

    openapi = sub.add_parser("openapi", help="the OpenAPI document")
    openapi_sub = openapi.add_subparsers(dest="openapi_command", required=True)
    export = openapi_sub.add_parser("export", help="write openapi/openapi.json")
    export.add_argument("--check", action="store_true", help="fail if the file differs from the code")
    export.set_defaults(func=cmd_openapi)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
