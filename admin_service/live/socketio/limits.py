"""What one socket and one user may do: events per second, connections open at once."""

from __future__ import annotations

import threading
import time
from collections import defaultdict


class TokenBucket:
    """A socket's event budget: `rate` events per second, bursts of twice that."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * 2)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class ConnectionsPerUser:
    """Sockets open per user in this process, at most `maximum` each."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._open: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def admit(self, user_id: str) -> bool:
        """Count one more socket for this user; False (nothing counted) when at the limit."""
        with self._lock:
            if self._open[user_id] >= self.maximum:
                return False
            self._open[user_id] += 1
            return True

    def release(self, user_id: str) -> None:
        with self._lock:
            self._open[user_id] -= 1
            if self._open[user_id] <= 0:
                del self._open[user_id]
