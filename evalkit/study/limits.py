"""Abuse limits of the study server: new participants per client address, and who the client is.

Every new session takes a slot of the balanced deal (participant ``n`` judges the next block of comparisons), so a
script that starts sessions without answering them would skew which comparisons real participants see. New sessions
per address are therefore limited over a sliding window; returning participants (with their cookie) are never
limited. The count is in memory: a restart forgets it, which only ever errs on the side of letting people in.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads the defaults without importing the web stack
    from starlette.requests import Request

DEFAULT_NEW_PER_ADDRESS = 20
DEFAULT_WINDOW_S = 600.0


@dataclass
class RateLimiter:
    """At most ``limit`` events per key in any ``window_s`` seconds (``limit`` 0: unlimited)."""

    limit: int = DEFAULT_NEW_PER_ADDRESS
    window_s: float = DEFAULT_WINDOW_S
    clock: object = time.monotonic
    _events: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, key: str) -> bool:
        """Record an event for ``key`` and say whether it is within the limit (a refused one is not recorded)."""
        if self.limit <= 0:
            return True
        now = self.clock()  # type: ignore[operator]
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and now - events[0] >= self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            if len(self._events) > 100_000:  # bound memory under a flood of distinct addresses
                for stale in [k for k, v in self._events.items() if not v or now - v[-1] >= self.window_s]:
                    del self._events[stale]
            return True

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may start a new session again."""
        with self._lock:
            events = self._events.get(key)
            if not events:
                return 0
            return max(1, int(self.window_s - (self.clock() - events[0])) + 1)  # type: ignore[operator]


def client_address(request: Request, trust_proxy: bool) -> str:
    """The client's address: the socket peer, or behind a trusted reverse proxy the last ``X-Forwarded-For`` hop
    (the one the proxy itself appended; earlier hops are whatever the client chose to send)."""
    if trust_proxy:
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    return request.client.host if request.client else "unknown"
