"""daemon.keeper's receive loop when receiving itself keeps failing: one warning, not one per pass, a pause that
doubles up to a bound, and one line with the count when it works again. Driven synchronously with a listener that
fails on demand; the pauses are recorded, never slept."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any, cast

import pytest

from daemon import keeper
from daemon.keeper import POLL_S, RETRY_MAX_S, SocketKeeper


class FailingListener:
    """recvmsg raises each error of `script` in turn (TimeoutError: nothing arrived), then stops the keeper."""

    def __init__(self, owner: SocketKeeper, script: list[OSError]) -> None:
        self.owner = owner
        self.script = list(script)
        self.calls = 0

    def recvmsg(self, *args: Any) -> tuple[bytes, list[Any], int, Any]:
        self.calls += 1
        if not self.script:
            self.owner._stop.set()
            raise TimeoutError("timed out")
        raise self.script.pop(0)


def run(tmp_path: Path, script: list[OSError]) -> list[float]:
    owner = SocketKeeper(str(tmp_path))
    pauses: list[float] = []
    owner._pause = pauses.append
    owner._listener = cast(Any, FailingListener(owner, script))
    owner._run()
    return pauses


def test_a_receive_that_keeps_failing_is_logged_once_and_backs_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=keeper.__name__)
    failure = OSError(errno.ENOBUFS, "No buffer space available")
    pauses = run(tmp_path, [failure] * 50 + [TimeoutError("timed out")])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "netlink socket keeper: cannot receive: [Errno 105] No buffer space available (retrying, "
        "logged again when it changes)"
    ]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "netlink socket keeper: receiving works again (after 50 failures)"
    ]
    assert len(pauses) == 50 and pauses[0] == POLL_S and max(pauses) == RETRY_MAX_S
    assert pauses == sorted(pauses) and pauses[-10:] == [RETRY_MAX_S] * 10


def test_another_error_is_logged_and_its_pause_starts_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=keeper.__name__)
    first = OSError(errno.ENOBUFS, "No buffer space available")
    second = OSError(errno.EBADF, "Bad file descriptor")
    pauses = run(tmp_path, [first] * 3 + [second] * 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "No buffer space" in warnings[0] and "Bad file descriptor" in warnings[1]
    assert pauses == [POLL_S, 2 * POLL_S, 4 * POLL_S, POLL_S, 2 * POLL_S]
