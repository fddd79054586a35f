"""One sync function, run at a bounded frequency: the daemon's only way of acting on change.

Modelled on Kubernetes' BoundedFrequencyRunner (as kube-proxy and kube-network-policies use it). Sources never
program anything; they update the store and call `request()`. The runner then calls the sync function

* at most `burst` runs in any `min_interval` (a burst of events costs one sync). Kubernetes' `burstRuns` is 2;
  ours is 3 because a pod start is three events close together — the Pod created, its state entry (the CNI
  ADD), its network-status — and only the third can program it: with 3, a pod starting on a quiet node is
  programmed as soon as its network-status arrives instead of waiting out the interval (docs/benchmarks.md,
  Pod start). Under a storm it still means at most 3 syncs per `min_interval`,
* at the latest `max_interval` after it (the periodic full resync that also covers a missed event),
* after a failure, again after a retry delay that doubles from `retry_initial` up to `retry_max`, with jitter
  (still no sooner than `min_interval`).

The first run is due at once. The decision logic (`due_at`, `run_if_due`) reads time only from the injected
`Clock`, so unit tests step it with a `FakeClock` and never sleep; `loop()` is the thin real-time driver a thread
runs in production, and it is also where `/healthz` learns that the loop is alive and not stuck.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from daemon.clock import Clock

log = logging.getLogger(__name__)

SyncFunction = Callable[[bool], bool]  # (periodic) -> success
LOOP_WAKE_S = 1.0  # the real loop wakes at least this often, to notice `stop` and to prove it is alive


@dataclass(frozen=True)
class RunnerTimings:
    min_interval: float = 0.2
    max_interval: float = 60.0
    retry_initial: float = 0.5
    retry_max: float = 30.0
    burst: int = 3


class BoundedFrequencyRunner:
    """Calls `fn(periodic)`; `periodic` is True when the run is (also) the max-interval resync. `fn` returns
    whether it succeeded; an exception counts as a failure (logged here)."""

    def __init__(
        self,
        fn: SyncFunction,
        timings: RunnerTimings,
        clock: Clock,
        *,
        name: str = "sync",
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if timings.min_interval < 0 or timings.max_interval < timings.min_interval or timings.burst < 1:
            raise ValueError(f"bad runner timings {timings}")
        self.fn = fn
        self.timings = timings
        self.clock = clock
        self.name = name
        self._jitter = jitter
        self._cond = threading.Condition()
        self._last_start: float | None = None
        self._starts: list[float] = []  # the last `burst` run starts
        self._requested = False
        self._retry_at: float | None = None
        self._backoff = timings.retry_initial
        self._busy_since: float | None = None
        self._last_wake: float | None = None
        self.runs = 0
        self.failures = 0

    # ------------------------------------------------------------------------------------------- requests

    def request(self) -> None:
        """Ask for a sync as soon as the min interval allows. Thread-safe, cheap, never blocks on a sync."""
        with self._cond:
            self._requested = True
            self._cond.notify_all()

    # ------------------------------------------------------------------------------------------- decisions

    def due_at(self) -> float:
        """When the next run is due, on the runner's clock."""
        with self._cond:
            return self._due_at_locked()

    def _due_at_locked(self) -> float:
        last = self._last_start
        if last is None:
            return float("-inf")
        candidates = [last + self.timings.max_interval]
        window = self._starts[-self.timings.burst :]
        earliest = window[0] + self.timings.min_interval if len(window) == self.timings.burst else last
        if self._requested:
            candidates.append(earliest)
        if self._retry_at is not None:
            candidates.append(max(self._retry_at, earliest))
        return min(candidates)

    def run_if_due(self) -> bool:
        """Run the sync function if it is due now; returns whether it ran. Not reentrant (one loop calls it)."""
        now = self.clock.now()
        with self._cond:
            if now < self._due_at_locked():
                return False
            last = self._last_start
            periodic = last is None or now >= last + self.timings.max_interval
            self._requested = False
            self._last_start = now
            self._starts = [*self._starts[-(self.timings.burst - 1) :], now] if self.timings.burst > 1 else [now]
            self._busy_since = now
        ok = False
        try:
            ok = bool(self.fn(periodic))
        except Exception:
            log.exception("%s failed with an unexpected error; retrying with backoff", self.name)
            ok = False
        finally:
            with self._cond:
                self._busy_since = None
                self.runs += 1
                if ok:
                    self._retry_at = None
                    self._backoff = self.timings.retry_initial
                else:
                    self.failures += 1
                    delay = self._backoff * (0.5 + 0.5 * self._jitter())
                    self._retry_at = self.clock.now() + delay
                    self._backoff = min(self._backoff * 2, self.timings.retry_max)
        return True

    @property
    def retry_pending(self) -> bool:
        with self._cond:
            return self._retry_at is not None

    # ------------------------------------------------------------------------------------------- real time

    def loop(self, stop: threading.Event) -> None:
        """Drive the runner in real time until `stop` is set. Waits on the condition, so `request()` wakes it."""
        while not stop.is_set():
            self.run_if_due()
            with self._cond:
                self._last_wake = self.clock.now()
                wait = min(max(self._due_at_locked() - self.clock.now(), 0.0), LOOP_WAKE_S)
                if wait > 0 and not stop.is_set():
                    self._cond.wait(wait)

    def wake(self) -> None:
        """Wake the real loop (used on stop)."""
        with self._cond:
            self._cond.notify_all()

    def stuck_for(self) -> float:
        """How long the current sync has been running (0 when idle)."""
        with self._cond:
            return 0.0 if self._busy_since is None else self.clock.now() - self._busy_since

    def idle_for(self) -> float | None:
        """Seconds since the real loop last woke, or None if it never ran."""
        with self._cond:
            return None if self._last_wake is None else self.clock.now() - self._last_wake
