"""The bounded-frequency runner, stepped with a fake clock: no sleeps, exact times."""

from __future__ import annotations

import threading

import pytest

from daemon.clock import FakeClock
from daemon.runner import BoundedFrequencyRunner, RunnerTimings

TIMINGS = RunnerTimings(min_interval=1.0, max_interval=60.0, retry_initial=2.0, retry_max=16.0, burst=1)


class Recorder:
    def __init__(self, clock: FakeClock, results: list[bool] | None = None) -> None:
        self.clock = clock
        self.calls: list[tuple[float, bool]] = []
        self.results = list(results or [])

    def __call__(self, periodic: bool) -> bool:
        self.calls.append((self.clock.now(), periodic))
        return self.results.pop(0) if self.results else True


def make(results: list[bool] | None = None, jitter: float = 1.0) -> tuple[FakeClock, Recorder, BoundedFrequencyRunner]:
    clock = FakeClock(start=0.0)
    fn = Recorder(clock, results)
    return clock, fn, BoundedFrequencyRunner(fn, TIMINGS, clock, jitter=lambda: jitter)


def test_first_run_is_due_at_once_and_is_periodic() -> None:
    _, fn, runner = make()
    assert runner.run_if_due()
    assert fn.calls == [(0.0, True)]
    assert not runner.run_if_due()  # nothing requested, max interval far away


def test_requests_are_coalesced_and_bounded_by_min_interval() -> None:
    clock, fn, runner = make()
    runner.run_if_due()
    for _ in range(100):
        runner.request()
    clock.advance(0.5)
    assert not runner.run_if_due()
    assert runner.due_at() == 1.0
    clock.advance(0.5)
    assert runner.run_if_due()
    assert fn.calls[-1] == (1.0, False)
    assert not runner.run_if_due()
    assert len(fn.calls) == 2  # a hundred requests, one run


def test_request_long_after_the_last_run_runs_at_once() -> None:
    clock, fn, runner = make()
    runner.run_if_due()
    clock.advance(30.0)
    runner.request()
    assert runner.run_if_due()
    assert fn.calls[-1] == (30.0, False)


def test_max_interval_is_a_periodic_resync() -> None:
    clock, fn, runner = make()
    runner.run_if_due()
    clock.advance(59.9)
    assert not runner.run_if_due()
    clock.advance(0.1)
    assert runner.run_if_due()
    assert fn.calls[-1] == (60.0, True)


def test_failures_retry_with_doubling_capped_backoff() -> None:
    clock, _, runner = make(results=[False, False, False, False, False, True])
    runner.run_if_due()  # fails at 0: retry after 2
    due = []
    for _ in range(5):
        due.append(runner.due_at())
        clock.advance(runner.due_at() - clock.now())
        assert runner.run_if_due()
    assert due == [2.0, 6.0, 14.0, 30.0, 46.0]  # +2, +4, +8, +16, +16 (capped)
    assert not runner.retry_pending  # the last one succeeded
    assert runner.due_at() == 46.0 + 60.0
    assert runner.failures == 5


def test_retry_jitter_shortens_the_delay_by_at_most_half() -> None:
    _, _, runner = make(results=[False], jitter=0.0)
    runner.run_if_due()
    assert runner.due_at() == 1.0  # 2 s backoff × 0.5, still no sooner than the min interval (1 s)


def test_retry_is_still_bounded_by_min_interval() -> None:
    clock = FakeClock(start=0.0)
    fn = Recorder(clock, [False])
    runner = BoundedFrequencyRunner(fn, RunnerTimings(5.0, 60.0, 0.1, 1.0, burst=1), clock, jitter=lambda: 1.0)
    runner.run_if_due()
    assert runner.due_at() == 5.0


def test_an_exception_counts_as_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(start=0.0)

    def boom(periodic: bool) -> bool:
        raise RuntimeError("bug")

    runner = BoundedFrequencyRunner(boom, TIMINGS, clock, jitter=lambda: 1.0)
    assert runner.run_if_due()
    assert runner.retry_pending
    assert "unexpected error" in caplog.text


def test_bad_timings_are_refused() -> None:
    with pytest.raises(ValueError):
        BoundedFrequencyRunner(lambda p: True, RunnerTimings(10.0, 1.0), FakeClock())


def test_real_loop_runs_on_request_and_stops() -> None:
    from daemon.clock import SystemClock

    first, second = threading.Event(), threading.Event()
    count = []

    def fn(periodic: bool) -> bool:
        count.append(periodic)
        (second if first.is_set() else first).set()
        return True

    runner = BoundedFrequencyRunner(fn, RunnerTimings(0.0, 3600.0), SystemClock())
    stop = threading.Event()
    thread = threading.Thread(target=runner.loop, args=(stop,))
    thread.start()
    try:
        assert first.wait(5.0)
        runner.request()
        assert second.wait(5.0)
        assert count[:2] == [True, False]
        assert runner.stuck_for() == 0.0
    finally:
        stop.set()
        runner.wake()
        thread.join(5.0)
    assert not thread.is_alive()


def test_burst_lets_the_run_after_an_idle_one_go_at_once_but_still_bounds_the_rate() -> None:
    clock = FakeClock(start=0.0)
    calls: list[float] = []
    runner = BoundedFrequencyRunner(
        lambda periodic: calls.append(clock.now()) or True, RunnerTimings(1.0, 60.0, burst=2), clock
    )
    assert runner.run_if_due()  # t=0: the first run
    clock.advance(0.1)
    runner.request()
    assert runner.run_if_due()  # t=0.1: the second run of the window goes at once
    clock.advance(0.1)
    runner.request()
    assert not runner.run_if_due()  # t=0.2: two runs in the last second already
    assert runner.due_at() == 1.0  # one second after the first of the two
    clock.advance(0.8)
    assert runner.run_if_due()
    assert calls == [0.0, 0.1, 1.0]
