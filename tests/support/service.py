"""The service as production runs it: gunicorn with gunicorn.conf.py, gevent workers, a real
port. One runner for the tests (`run_service`, the tests' settings) and the bench
(bench/service.py, its own settings on `start_gunicorn`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support import ROOT
from tests.support.settings import TEST_SECRET


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_pids(service: RunningService) -> list[int]:
    """gunicorn's workers: the children of the master, sorted."""
    # Every process whose parent is the master (not /proc/PID/task/PID/children, which lists
    # only what the master's main thread forked and needs CONFIG_PROC_CHILDREN).
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == service.process.pid:
            pids.append(int(entry))
    return sorted(pids)


class RunningService:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path, scheme: str = "http") -> None:
        self.process = process
        self.port = port
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def workers(self) -> list[int]:
        return worker_pids(self)


@contextmanager
def start_gunicorn(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    ready_path: str = "/health",
    start_timeout: float = 30,
    poll_s: float = 0.1,
    stop_timeout: float = 10,
    tls: tuple[Path, Path] | None = None,
    root: Path = ROOT,
) -> Iterator[RunningService]:
    """`gunicorn -c gunicorn.conf.py wsgi:app` with `env` (the whole environment but PORT and HOST)
    on a free port, its log in a file in `log_dir`; yields once `ready_path` answers 200, and
    stops it afterwards. With `tls` (certificate, key) gunicorn serves HTTPS itself. `root` is
    the source tree it runs (the bench's comparison runs another revision's)."""
    port = free_port()
    full_env = {
        **env,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        **({"GUNICORN_CMD_ARGS": f"--certfile {tls[0]} --keyfile {tls[1]}"} if tls else {}),
    }
    log_path = log_dir / f"service-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(root / "gunicorn.conf.py"), "wsgi:app"],
            cwd=root,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    service = RunningService(process, port, log_path, "https" if tls else "http")
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"service exited at start:\n{service.log_tail(200)}")
            try:
                if requests.get(f"{service.url}{ready_path}", timeout=1, verify=str(tls[0]) if tls else True).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service did not start:\n{service.log_tail(200)}")
            time.sleep(poll_s)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def run_service(
    database_url: str,
    tmp_path: Path,
    *,
    workers: int | None = 1,
    env: dict[str, str] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[RunningService]:
    """The service with the tests' secret and generous limits, `workers` gevent workers
    (None: as many as gunicorn.conf.py chooses, as `serve` and the image start it)."""
    full_env = {
        **{k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY" or workers is not None},
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        **({"WEB_CONCURRENCY": str(workers)} if workers is not None else {}),
        "RATE_LIMIT": "100000 per minute",
        "EXPORT_RATE_LIMIT": "100000 per minute",
        "AUTH_FAILURE_LIMIT": "100000 per minute",
        # Many streams and sockets on one token (fleets, soak-like faults); the tests of the
        # per-user caps set their own.
        "SSE_MAX_STREAMS_PER_USER": "100000",
        "SOCKETIO_MAX_CONNECTIONS_PER_USER": "100000",
        "GRACEFUL_TIMEOUT": "3",
        **(env or {}),
    }
    with start_gunicorn(full_env, tmp_path, tls=tls) as service:
        yield service


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (gunicorn serving TLS itself)."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
