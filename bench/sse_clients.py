"""N Server-Sent-Events streams in one asyncio process (a load generator apart from the service).

    python -m bench.sse_clients URL TOKEN N

Opens N streams of GET /admin/jobs/stream?events=job-update (200 at a time), prints
{"ready": n, "failed": k, "seconds": s} once all answered, then notes when each job-update
arrives on each stream (time.time(), the clock the writer uses). On a line "report" on stdin
it prints {"arrivals": {job_id: [t, ...]}, "open": streams still open} and starts afresh;
it exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections import defaultdict
from urllib.parse import urlsplit

JOB_ID = re.compile(rb'"job":\{[^{}]*?"id":"([0-9a-f-]{36})"')
EVENT = b"event: job-update"


class Streams:
    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.request = (
            f"GET /admin/jobs/stream?events=job-update HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.open = 0

    async def stream(self, gate: asyncio.Semaphore, ready: list[int]) -> None:
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port, limit=2**20), 60)
                writer.write(self.request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                ready[1] += 1
                return
            if not head.startswith(b"HTTP/1.1 200"):
                ready[1] += 1
                return
            ready[0] += 1
        self.open += 1
        buf = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                now = time.time()
                buf += chunk
                while True:
                    end = buf.find(b"\n\n")
                    if end < 0:
                        break
                    block, buf = buf[:end], buf[end + 2 :]
                    if EVENT in block:
                        match = JOB_ID.search(block)
                        if match:
                            self.arrivals[match.group(1).decode()].append(now)
        except OSError:
            pass
        finally:
            self.open -= 1
            writer.close()


async def main() -> None:
    url, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    streams = Streams(url, token)
    gate = asyncio.Semaphore(200)
    ready = [0, 0]
    started = time.monotonic()
    tasks = [asyncio.create_task(streams.stream(gate, ready)) for _ in range(count)]
    while ready[0] + ready[1] < count:
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": ready[0], "failed": ready[1], "seconds": round(time.monotonic() - started, 2)}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        if line.strip() == "report":
            arrivals, streams.arrivals = streams.arrivals, defaultdict(list)
            print(json.dumps({"arrivals": arrivals, "open": streams.open}), flush=True)
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
