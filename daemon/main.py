"""`mnpd`: parse the configuration, set up logging, run the daemon until SIGTERM/SIGINT. Wiring only.

Exit codes: 0 after a signal (rules left in place), 1 when the daemon cannot start, 2 for a bad configuration
(every problem is printed). `mnpd --help` documents every flag and its environment variable.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from daemon import config as daemon_config
from daemon import keeper, logs
from daemon.app import Daemon
from daemon.keeper import SocketKeeper
from shared.errors import ConfigError

log = logging.getLogger("mnpd")

M_ARENA_MAX = -8  # glibc mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """At most `arenas` glibc malloc arenas. glibc gives each thread that allocates its own arena (up to 8 per
    core); mnpd's apply and closer threads allocate in libnftables, and what one arena frees no other reuses —
    measured as RSS that only grows (docs/benchmarks.md, Scale). Python's own objects are not affected (pymalloc).
    Must run before any thread starts; a no-op where the C library is not glibc."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = daemon_config.load(argv)
    except ConfigError as exc:
        print(f"mnpd: {exc}", file=sys.stderr)
        return 2
    limit_malloc_arenas()
    logs.setup(config.log_format, config.log_level)
    for name, value in config.settings():
        log.info("setting %s = %s", name, value)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping (rules stay in place)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon = Daemon(config).start()
    except Exception as exc:
        log.error("cannot start: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return 1
    socket_keeper = _start_keeper(config.state_dir)
    while not stop.wait(1.0):
        pass
    if socket_keeper is not None:
        socket_keeper.stop()
    daemon.stop()
    return 0


def _start_keeper(state_dir: str) -> SocketKeeper | None:
    """Take the plugin's committed netlink sockets (daemon/keeper.py); without it ADD still works, slower."""
    try:
        keeper.RUNNING = SocketKeeper(state_dir).start()
        return keeper.RUNNING
    except OSError as exc:
        log.warning(
            "no netlink socket keeper in %s (the plugin's ADD then waits for its socket's release): %s", state_dir, exc
        )
        return None


if __name__ == "__main__":
    sys.exit(main())
