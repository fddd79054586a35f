"""Time as a dependency: the daemon's loop asks a `Clock`, never `time` directly.

The bounded-frequency runner, the controller's latency bookkeeping and the status file all read time through
this seam, so unit tests drive them with `FakeClock.advance()` instead of sleeping (kube-network-policies' runner
takes a `clock.Clock` for the same reason). `now()` is monotonic (intervals, deadlines); `wall()` is the Unix
time written into the status file and logs.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds: only differences mean anything."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class FakeClock:
    """A clock that moves only when told to. Thread-safe; `wall()` moves with `now()`."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._offset = wall_start - start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def wall(self) -> float:
        with self._lock:
            return self._now + self._offset

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now
