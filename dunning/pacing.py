"""The provider's pace: at most `rate_per_second` calls, a pause when it answers 429 until its
`X-RateLimit-Reset`, and a breaker that stops the channel for the run after a run of
consecutive transport failures (a provider that hangs costs seconds, not hours)."""

from __future__ import annotations

import threading
import time


class Gate:
    """Spaces the calls of every thread: one each 1/`rate_per_second` s (None: no limit), none
    before the end of a pause a 429 asked for."""

    def __init__(self, rate_per_second: float | None) -> None:
        self.interval = 1 / rate_per_second if rate_per_second else 0.0
        self.lock = threading.Lock()
        self.next = 0.0  # time.monotonic() of the next free slot

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next)
            self.next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)

    def pause(self, seconds: float) -> None:
        """No call for `seconds` (a 429's reset), whichever thread asks next."""
        with self.lock:
            self.next = max(self.next, time.monotonic() + seconds)


class Breaker:
    """Open after `limit` transport failures in a row (timeouts, refused connections, 5xx,
    unknown outcomes); a delivered message closes the count again."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.in_a_row = 0
        self.last_error: str | None = None

    def record(self, delivered: bool, transport_failure: bool, error: str | None) -> None:
        with self.lock:
            if delivered:
                self.in_a_row = 0
            elif transport_failure:
                self.in_a_row += 1
                self.last_error = error

    @property
    def open(self) -> bool:
        return self.in_a_row >= self.limit
