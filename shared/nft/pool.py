"""The daemon's bounded pool of libnftables contexts (shared.nft.libnft), one per pod netns at most.

Kept apart from libnft.py, which the CNI plugin imports on its ADD path: the pool needs threads and
collections the frozen plugin neither ships nor should load.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from shared.nft.libnft import NetnsNft

# Contexts kept open, least recently used closed first: one per apply worker (daemon.apply.WORKERS). Element deltas
# go over netlink and need none; a change that takes the full form on every pod of a node reopens nearly every
# context whatever the bound; each one kept holds ≈ 0.7–2 MB (docs/benchmarks.md, Scale).
KEEP_CONTEXTS = 4
CLOSERS = 4  # threads closing contexts: each close waits for the kernel, without CPU


def malloc_trim() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class ContextPool:
    """At most `keep` libnftables contexts open at once, one per netns, the least recently used closed first.

    A context holds memory from its first transaction on, so keeping one per pod would cost a full node more
    than reopening the few it needs (docs/benchmarks.md, Scale, has the figures). Closing a context whose socket
    committed waits for the kernel, so closes run on `CLOSERS` threads; when the
    last pending close is done, glibc's heaps are trimmed (what libnftables freed otherwise stays as RSS: one heap
    per thread that allocated). A context in use (`use`) is never closed meanwhile. `open` is the factory (netns
    path → an object with `close()`; the tests pass their own)."""

    def __init__(self, open: Callable[[str], NetnsNft] | None = None, keep: int = KEEP_CONTEXTS) -> None:
        self.open: Callable[[str], NetnsNft] = open or NetnsNft
        self.keep = keep
        self._lock = threading.Lock()
        self._open: OrderedDict[str, NetnsNft] = OrderedDict()  # least recently used first
        self._in_use: Counter[str] = Counter()
        self._closer: ThreadPoolExecutor | None = None
        self._closing = 0

    @contextlib.contextmanager
    def use(self, netns: str) -> Iterator[NetnsNft]:
        """The context of `netns`, opened if it is not (in the namespace: NetnsGone if the path is gone)."""
        with self._lock:
            self._in_use[netns] += 1
            nft = self._open.get(netns)
            if nft is not None:
                self._open.move_to_end(netns)
        try:
            if nft is None:
                nft = self.open(netns)
                with self._lock:
                    raced = self._open.get(netns)
                    if raced is None:
                        self._open[netns] = nft
                if raced is not None:
                    self.close_later(nft)
                    nft = raced
            yield nft
        finally:
            with self._lock:
                self._in_use[netns] -= 1
                if not self._in_use[netns]:
                    del self._in_use[netns]
            self._close_least_used()

    def is_open(self, netns: str) -> bool:
        with self._lock:
            return netns in self._open

    def discard(self, netns: str) -> None:
        """Close the context of `netns`, if one is open (its namespace is let go)."""
        with self._lock:
            nft = self._open.pop(netns, None)
        if nft is not None:
            self.close_later(nft)

    def _close_least_used(self) -> None:
        with self._lock:
            excess = len(self._open) - self.keep
            victims = []
            for netns in list(self._open):
                if excess <= 0:
                    break
                if netns not in self._in_use:
                    victims.append(self._open.pop(netns))
                    excess -= 1
        for nft in victims:
            self.close_later(nft)

    def close_later(self, nft: NetnsNft) -> None:
        with self._lock:
            if self._closer is None:
                self._closer = ThreadPoolExecutor(CLOSERS, thread_name_prefix="mnp-nft-close")
            closer = self._closer
            self._closing += 1
        closer.submit(self._close, nft)

    def _close(self, nft: NetnsNft) -> None:
        try:
            nft.close()
        finally:
            with self._lock:
                self._closing -= 1
                last = not self._closing
            if last:
                malloc_trim()

    def close(self) -> None:
        """Close every context and wait until all are closed."""
        with self._lock:
            victims = list(self._open.values())
            self._open.clear()
        for nft in victims:
            self.close_later(nft)
        self.wait_closed()

    def wait_closed(self) -> None:
        """Wait until every context handed to the closer threads is closed."""
        with self._lock:
            closer, self._closer = self._closer, None
        if closer is not None:
            closer.shutdown(wait=True)
