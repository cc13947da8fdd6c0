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
import errno
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from admin_service.config import ConfigError, Settings, load_settings
from admin_service.db.fixtures import ADMIN_EMAIL
from admin_service.db.tables import JOBS_TABLE

ROOT = Path(__file__).resolve().parent.parent
OPENAPI_PATH = ROOT / "openapi" / "openapi.json"


# The embedded server this command process attached to (kept referenced: pgserver stops the
# server when its last handle goes, so `serve`'s keeps it up after this command).
_attached: list[Any] = []


def _settings() -> Settings:
    """The settings from the environment; without DATABASE_URL, the embedded default's database
    and secret, found as `serve` finds them (so `token` works beside `make run`)."""
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        url, secret = _embedded_default(env)
        env["DATABASE_URL"] = url
        env.setdefault("JWT_SECRET", secret)
        # No platform here: unless a real transport is configured, the demo executor plays it
        # (re-queues a retried job in the demo database, then moves it on), for this database only.
        env["ADMIN_SERVICE_EMBEDDED_DEMO"] = "true"
        if not (env.get("ACTION_TRANSPORT") or env.get("ACTION_AMQP_URL") or env.get("JOB_ACTIONS_URL")):
            env["ACTION_TRANSPORT"] = "demo"
    return _load_or_exit(env)


def _embedded_default(env: dict[str, str]) -> tuple[str, str]:
    """Attach to (or start) the embedded server `serve` created; its URL and signing secret."""
    from admin_service.db.embedded import UNAVAILABLE, available, initialised, start_embedded

    if not available():
        sys.exit(UNAVAILABLE)
    data_dir = _load_or_exit({**env, "JWT_SECRET": PLACEHOLDER_SECRET}).embedded_pg_dir
    if not initialised(data_dir):
        sys.exit(
            f"DATABASE_URL is not set and there is no embedded database in {data_dir} yet: start it with `make run`, or set DATABASE_URL"
        )
    print(f"using the embedded PostgreSQL in {data_dir} (DATABASE_URL is not set)", file=sys.stderr)
    server, url = start_embedded(data_dir)
    _attached.append(server)
    return url, _embedded_secret(data_dir)


def _embedded_secret(data_dir: Path) -> str:
    """The embedded default's signing secret, beside its data dir: tokens survive restarts."""
    secret_file = data_dir.parent / "jwt_secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(48))
        secret_file.chmod(0o600)
    return secret_file.read_text().strip()


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from admin_service.db.engine import make_engine

    return make_engine(settings)


def cmd_seed(args: argparse.Namespace) -> None:
    from admin_service.db.fixtures import seed_demo

    engine = _engine(_settings())
    started = time.perf_counter()
    with engine.begin() as conn:
        seeded = seed_demo(conn, args.jobs)
    print(f"{seeded.summary()} in {time.perf_counter() - started:.1f} s")


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
    from admin_service.db.archive_options import (
        TRIGRAM_EXTENSION,
        drop_index_ddl,
        index_ddl,
        invalid_indexes,
        run_each,
        trigram_available,
    )

    engine = _engine(_settings())
    trigram = not args.drop and trigram_available(engine)
    if not args.drop and not trigram:
        print(f"-- {TRIGRAM_EXTENSION} is not available on this server: the user email/username filters keep reading auth.users")
    statements = drop_index_ddl() if args.drop else index_ddl(invalid_indexes(engine), trigram=trigram)
    started = time.perf_counter()
    run_each(engine, statements)
    verb = "dropped" if args.drop else "in place"
    print(f"done in {time.perf_counter() - started:.1f} s: the admin-service indexes are {verb}")


def admin_token(engine: Engine, settings: Settings, email: str, ttl: int = 12 * 3600) -> str:
    from admin_service.auth import sign_token
    from admin_service.db.tables import USERS_TABLE, users

    with engine.connect() as conn:
        row = conn.execute(select(users.c.id, users.c.user_type, users.c.is_active).where(users.c.email == email)).first()
    if row is None:
        sys.exit(f"no user with email {email!r} in {USERS_TABLE}")
    if not settings.may_sign_in(row.user_type) or not row.is_active:
        print(f"warning: {email} is not an active admin; the service will refuse this token", file=sys.stderr)
    if ttl > settings.jwt_max_lifetime_s:
        print(f"warning: --ttl {ttl} exceeds JWT_MAX_LIFETIME_S; the service will refuse this token", file=sys.stderr)
    return sign_token(settings, str(row.id), ttl_seconds=ttl)


def cmd_token(args: argparse.Namespace) -> None:
    settings = _settings()
    print(admin_token(_engine(settings), settings, args.email, args.ttl))


def cmd_smoke(args: argparse.Namespace) -> None:
    from admin_service.smoke import run_smoke

    results = run_smoke(args.url, args.token)
    sys.exit(0 if all(c.ok for c in results) else 1)


def cmd_notify_test(args: argparse.Namespace) -> None:
    """Send a test message to one channel, now (not through the outbox), and say whether it was accepted."""
    from admin_service.live.notify.dispatcher import send_test

    # Only the notification settings matter here: no database, no token verification.
    settings = _load_or_exit({**os.environ, "JWT_SECRET": os.environ.get("JWT_SECRET") or "-" * 32})
    channel = settings.notify.channel(args.channel)
    if channel is None:
        names = ", ".join(c.name for c in settings.notify.channels) or "none (set NOTIFY_CHANNELS or NOTIFY_CHANNELS_FILE)"
        print(f"no channel named {args.channel!r}; configured: {names}", file=sys.stderr)
        sys.exit(2)
    error = send_test(channel, settings.dashboard_url)
    if error is None:
        print(f"accepted: {channel.describe()} took the test message")
        return
    print(f"refused: {channel.describe()}: {error}", file=sys.stderr)
    sys.exit(1)


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
    return server, url, _embedded_secret(data_dir)


PLACEHOLDER_SECRET = "placeholder-secret-replaced-before-serving"
# How long `serve` waits for gunicorn to answer before it prints the URLs anyway.
READY_TIMEOUT_S = 60


def cmd_serve(args: argparse.Namespace) -> None:
    from admin_service.db.embedded import UNAVAILABLE, available

    env = dict(os.environ)
    if args.port:
        env["PORT"] = str(args.port)
    if args.workers:
        env["WEB_CONCURRENCY"] = str(args.workers)
    embedded = not env.get("DATABASE_URL")
    # Every setting checked (PORT first of all) before anything starts; the embedded default's
    # secret is only known once its data dir is.
    settings = _load_or_exit({**env, "JWT_SECRET": env.get("JWT_SECRET") or PLACEHOLDER_SECRET} if embedded else env)
    host, port = env.get("HOST", "0.0.0.0"), settings.port
    if port_in_use(host, port):
        sys.exit(port_in_use_line(port))
    if embedded and not available():
        sys.exit(UNAVAILABLE)
    server = None
    if embedded:
        server, url, secret = _embedded_database(settings, args.demo_jobs)
        env["DATABASE_URL"] = url
        env.setdefault("JWT_SECRET", secret)
        # No platform here: unless a real transport is configured, the demo executor plays it
        # (re-queues a retried job in the demo database, then moves it on), for this database only.
        env["ADMIN_SERVICE_EMBEDDED_DEMO"] = "true"
        if not (env.get("ACTION_TRANSPORT") or env.get("ACTION_AMQP_URL") or env.get("JOB_ACTIONS_URL")):
            env["ACTION_TRANSPORT"] = "demo"
    settings = _load_or_exit(env)
    from admin_service.db.engine import make_engine
    from admin_service.db.migrations import upgrade

    engine = make_engine(settings)
    upgrade(engine, settings)
    token = admin_token(engine, settings, ADMIN_EMAIL) if server is not None else None
    engine.dispose()
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"]
    # gunicorn in a process group of its own, so that the terminal's Ctrl+C reaches this process
    # only: it stops gunicorn gracefully (SIGTERM: streams end with a retry hint), where workers
    # sent SIGINT by the terminal would quit abruptly, each with a traceback. A second one stops
    # it at once.
    child = subprocess.Popen(gunicorn, env=env, cwd=ROOT, process_group=0)
    stops = 0

    def forward(_signum: int, _frame: object) -> None:
        nonlocal stops
        stops += 1
        child.send_signal(signal.SIGTERM if stops == 1 else signal.SIGINT)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    # The URLs (and the token) only once the port answers: a start that fails prints none.
    ready = wait_until_serving(child, host, port, READY_TIMEOUT_S)
    if child.poll() is None:
        if not ready:
            print(f"gunicorn has not answered /health within {READY_TIMEOUT_S} s (its log is above)", file=sys.stderr)
        print(banner(port, token, settings.database_url if server is not None else None), flush=True)
    elif port_in_use(host, port):  # taken between the check above and gunicorn's bind
        print(port_in_use_line(port), file=sys.stderr)
    code = child.wait()
    del server  # the embedded PostgreSQL stops when this process exits
    sys.exit(code)


def port_in_use_line(port: int) -> str:
    return f"port {port} is in use; set PORT to a free one (PORT={port + 1} make run)"


def port_in_use(host: str, port: int) -> bool:
    """True when another process listens on host:port (gunicorn would retry for 5 s, then fail)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As gunicorn binds: a port left in TIME_WAIT by a previous run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def wait_until_serving(child: subprocess.Popen[bytes], host: str, port: int, timeout: float) -> bool:
    """Poll /health until it answers 200 (True), gunicorn exits or `timeout` passes (False)."""
    probe = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    deadline = time.monotonic() + timeout
    while child.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{probe}:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def banner(port: int, token: str | None, embedded_url: str | None) -> str:
    """What `serve` prints once it answers: the dashboard first, then what to paste."""
    base = f"http://localhost:{port}"
    dashboard = f"{base}/admin/dashboard"
    lines = [f"\nadmin-service is up: {dashboard}" + (f"#token={token}" if token else "")]
    if token:
        lines.append(f"  (signed in as {ADMIN_EMAIL} for 12 h; the token is kept in the tab only)")
    lines += [
        f"  API docs:   {base}/admin/docs",
        f"  Live:       {base}/admin/jobs/stream (SSE), Socket.IO at path /admin/socket.io",
    ]
    if token:
        lines += [
            f"  Token:      {token}",
            f"  Try:        curl -H 'Authorization: Bearer {token}' {base}/admin/jobs/stats",
        ]
    else:
        lines += [
            "  Token:      TOKEN=$(python -m admin_service token --email EMAIL)   (EMAIL: an active admin's)",
            f'  Try:        curl -H "Authorization: Bearer $TOKEN" {base}/admin/jobs/stats',
        ]
    if embedded_url:
        from admin_service.db.embedded import psql_command

        lines.append(f"  Database:   {psql_command(embedded_url)}")
    lines.append("Stop with Ctrl+C.")
    return "\n".join(lines)


def _load_or_exit(env: dict[str, str]) -> Settings:
    try:
        return load_settings(env)
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help (not for required ones, nor a None whose help says it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """The command line's parsers, sub-commands' included (they are made with this class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def at_least(lowest: int) -> Any:
    """An integer option's type: refused below `lowest`, naming the option (argparse adds it)."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {raw!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m admin_service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service under gunicorn")
    serve.add_argument("--port", type=int, help="port to listen on (default: $PORT, else 3007)")
    serve.add_argument(
        "--workers", type=at_least(1), help="gunicorn workers (default: $WEB_CONCURRENCY, else one per usable CPU, at least 2)"
    )
    serve.add_argument("--demo-jobs", type=at_least(0), default=20_000, help="jobs seeded on the embedded default's first start")
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    seed = db_sub.add_parser("seed", help="create fixture tables if missing and fill demo data")
    seed.add_argument("--jobs", type=at_least(1), default=10_000, help="demo jobs to generate (rows already there are kept)")
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
    token.add_argument("--email", required=True, help="an active admin's email in auth.users")
    token.add_argument("--ttl", type=at_least(1), default=12 * 3600, help="seconds the token is valid")
    token.set_defaults(func=cmd_token)

    smoke = sub.add_parser("smoke", help="check a running instance")
    smoke.add_argument("--url", required=True, help="the instance's base URL, e.g. http://host:3007")
    smoke.add_argument("--token", required=True, help="an admin token the instance accepts")
    smoke.set_defaults(func=cmd_smoke)

    notify = sub.add_parser("notify", help="alert notification channels")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True)
    notify_test = notify_sub.add_parser("test", help="send a test message to one channel and say whether it was accepted")
    notify_test.add_argument("--channel", required=True, help="the channel's name in NOTIFY_CHANNELS / NOTIFY_CHANNELS_FILE")
    notify_test.set_defaults(func=cmd_notify_test)

    openapi = sub.add_parser("openapi", help="the OpenAPI document")
    openapi_sub = openapi.add_subparsers(dest="openapi_command", required=True)
    export = openapi_sub.add_parser("export", help="write openapi/openapi.json")
    export.add_argument("--check", action="store_true", help="fail if the file differs from the code")
    export.set_defaults(func=cmd_openapi)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
