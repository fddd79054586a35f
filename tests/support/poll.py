"""Waiting for a condition in a test: polled until a deadline, never a sleep standing in for synchronisation
(docs: the test standards). One helper for the test modules that wait on a daemon, a keeper or an API fake."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], what: str = "condition", *, timeout: float = 10.0) -> None:
    """Return once `condition()` is true; AssertionError naming `what` when it is not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        time.sleep(0.01)  # polling interval; the deadline decides
