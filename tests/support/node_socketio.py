"""The npm socket.io-client (v4, under Node) that existing dashboards use, driven from tests.

tests/live/socketio/node/client.js connects with the dashboard's options (or the transports it
is given), emits subscribe:jobs and prints what it receives as JSON lines. socket.io-client is
installed into tests/live/socketio/node/node_modules (git-ignored) by `make test` (.ci/tools.sh:
`npm ci`, the versions tests/live/socketio/node/package-lock.json pins).
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import ROOT

NODE_DIR = ROOT / "tests" / "live" / "socketio" / "node"


def node_client_script() -> Path:
    """tests/live/socketio/node/client.js, with socket.io-client installed next to it (by `make test-tools`)."""
    assert shutil.which("node"), "node is missing: `make test-tools` installs it (Debian's nodejs)"
    package = NODE_DIR / "node_modules" / "socket.io-client" / "package.json"
    assert package.is_file(), f"{package.parent} is missing: `make test-tools` installs it (npm ci in {NODE_DIR})"
    installed = json.loads(package.read_text())
    assert installed["version"].startswith("4."), installed["version"]
    return NODE_DIR / "client.js"


class NodeClient:
    """One `node client.js URL TOKEN [TRANSPORTS] [ALSO]` process and the JSON lines it prints."""

    def __init__(
        self, script: Path, url: str, token: str | None, transports: list[str] | None = None, also: list[str] | None = None
    ) -> None:
        self.process = subprocess.Popen(
            ["node", str(script), url, token or "", ",".join(transports or []), ",".join(also or [])],
            cwd=script.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.records: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def wait_for(self, what: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        for record in self.records:
            if what(record):
                return record
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                record = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if record is None:
                raise AssertionError(f"the client exited ({self.process.wait()}): {self.records}\n{self.stderr()}")
            self.records.append(record)
            if what(record):
                return record
        raise AssertionError(f"nothing matching within {timeout}s; the client printed: {self.records}")

    def event(self, name: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = 10) -> Any:
        return self.wait_for(lambda r: r["type"] == "event" and r["name"] == name and where(r["data"]), timeout)["data"]

    def stderr(self) -> str:
        return self.process.stderr.read() if self.process.stderr and self.process.poll() is not None else ""

    def close(self) -> int:
        """Close its stdin (it disconnects and exits), keep what it printed, return its exit code."""
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            code = self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        while (record := self._lines.get(timeout=5)) is not None:
            self.records.append(record)
        self._lines.put(None)  # a second close finds the end again
        return code
