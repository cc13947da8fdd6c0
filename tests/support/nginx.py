"""Debian's nginx in front of running instances, on the shipped deploy/nginx.conf.

`render_nginx_conf` fills the file's ${...} placeholders as `envsubst` does for an operator (and
nothing else: nginx's own $variables stay); `run_nginx` runs /usr/sbin/nginx in the foreground
with a prefix of its own (logs, pid, temporary files) on a free port, and stops it afterwards.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support import ROOT
from tests.support.service import RunningService, free_port

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
NGINX = "/usr/sbin/nginx"
_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")
_UPSTREAM = re.compile(r" upstream=(.*?) upstream_status=")


def render_nginx_conf(values: dict[str, str], template: Path = NGINX_CONF) -> str:
    text = template.read_text()
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    assert not missing, f"deploy/nginx.conf needs values for {missing}"
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


class RunningNginx:
    def __init__(self, process: subprocess.Popen[bytes], port: int, prefix: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.prefix = prefix

    def access_log(self) -> list[str]:
        path = self.prefix / "logs" / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def upstreams(self, uri: str) -> list[str]:
        """The instance (host:port) that answered each logged request for `uri`, in order."""
        return [answered_by(line) for line in self.access_log() if f' {uri}" ' in line]


def answered_by(line: str) -> str:
    """The instance that answered a request in deploy/nginx.conf's log format: the last of
    $upstream_addr ("a, b" when nginx retried the request on the next instance)."""
    found = _UPSTREAM.search(line)
    assert found, line
    return found.group(1).split(",")[-1].strip()


@contextmanager
def run_nginx(instances: Sequence[RunningService], start_timeout: float = 10) -> Iterator[RunningNginx]:
    binary = shutil.which("nginx") or NGINX
    assert Path(binary).exists(), "nginx is missing: `make test-tools` installs it (Debian's nginx)"
    # Not under pytest's 0700 basetemp: nginx's workers (user nobody when started as root) write
    # their temporary files under the prefix.
    prefix = Path(tempfile.mkdtemp(prefix="admin-service-nginx-"))
    prefix.chmod(0o755)
    (prefix / "logs").mkdir()
    (prefix / "temp").mkdir()
    port = free_port()
    values = {"LISTEN": f"127.0.0.1:{port}"}
    values.update({f"INSTANCE_{n}": f"127.0.0.1:{s.port}" for n, s in enumerate(instances, start=1)})
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(values))
    command = [binary, "-p", str(prefix), "-c", str(conf), "-e", "logs/error.log", "-g", "daemon off;"]
    check = subprocess.run([*command[:-2], "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    running = RunningNginx(process, port, prefix)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited at start:\n{running.error_log()}")
            try:
                if requests.get(f"{running.url}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not answer:\n{running.error_log()}")
            time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(prefix, ignore_errors=True)
