"""nft in-process: libnftables through ctypes, one context per pod network namespace, kept open.

`nsenter --net=PATH nft -f -` costs two execs, a fresh ruleset cache and a fresh netlink socket for every
transaction — about 29 ms on the benchmark machine, of a few ms the kernel needs (docs/benchmarks.md). nft is a
thin front of libnftables, which takes the very same text (`nft_run_cmd_from_buffer`) and reports the very same
error text, so a Transaction means exactly what it means to `nft -f`, and `error_from_stderr` types its errors.

A libnftables context opens its netlink socket when it is created (nft_ctx_new), and a netlink socket belongs to
the network namespace it was opened in for its whole life (netlink(7)). So `NetnsNft` creates its context on a
short-lived thread inside the pod netns (shared.netns.in_netns) and then uses it from any thread: no thread this
process keeps ever changes namespace. Two consequences the owner must handle:

* the socket keeps the namespace alive: `close()` it when the pod's attachment is gone;
* a path can come to name another namespace (a reused /proc/PID): every call compares the path's identity with
  the one the context was opened for and raises NetnsGone when they differ (or the path is gone).

ctypes releases the GIL during the call, so contexts of different namespaces can commit concurrently; one
context is used by one thread at a time (a lock per context).
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from shared.errors import NetnsGone
from shared.netns import in_netns, netns_identity
from shared.nft.errors import NftError, error_from_stderr
from shared.nft.transaction import Transaction

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the CNI plugin imports this module)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from shared.nft.fake import TableView

LIBRARY = "libnftables.so.1"
KEEP_CONTEXTS = 16  # contexts kept open by a ContextPool, least recently used closed first
CLOSERS = 4  # threads closing contexts: each close waits for the kernel, without CPU
NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4  # enum nft_ctx_output_flags: what `nft -j` sets


class LibnftUnavailable(NftError):
    """libnftables cannot be loaded here; callers fall back to the nft command."""


@cache
def library(name: str = LIBRARY) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise LibnftUnavailable(f"cannot load {name}: {exc}") from exc
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.restype = None
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    for fn in (lib.nft_ctx_buffer_output, lib.nft_ctx_buffer_error):
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p]
    for fn in (lib.nft_ctx_get_output_buffer, lib.nft_ctx_get_error_buffer):
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
    lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.restype = None
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


def available() -> bool:
    try:
        library()
    except LibnftUnavailable:
        return False
    return True


class Context:
    """One libnftables context, bound to the network namespace of the thread that created it."""

    def __init__(self) -> None:
        self._lib = library()
        ctx = self._lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise NftError("nft_ctx_new failed (out of memory, or no netlink socket)")
        self._ctx: int | None = ctx
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)
        self._lock = threading.Lock()

    def command(self, text: str) -> str:
        """Run `text` as `nft -f` would (one transaction); its output, or the typed error of its error text."""
        with self._lock:
            if self._ctx is None:
                raise NftError("libnftables context already closed")
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise error_from_stderr(err.strip() or f"libnftables returned {rc}")
        return out

    def output_json(self) -> None:
        """Print what later commands list as JSON, exactly as `nft -j` does."""
        with self._lock:
            if self._ctx is None:
                raise NftError("libnftables context already closed")
            flags = self._lib.nft_ctx_output_get_flags(self._ctx)
            self._lib.nft_ctx_output_set_flags(self._ctx, flags | NFT_CTX_OUTPUT_JSON)

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None


class NetnsNft:
    """nft of one network namespace (`netns` path), in-process: `run` as `RealNft.run`, and `close`."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.identity = netns_identity(netns)
        self.context = in_netns(netns, Context)

    def _context(self) -> Context:
        if netns_identity(self.netns) != self.identity:
            raise NetnsGone(f"{self.netns} names another network namespace now")
        return self.context

    def run(self, tx: Transaction) -> None:
        """Apply `tx` atomically: all of it or, on any error, none of it."""
        if tx.error is not None:
            raise tx.error
        self._context().command(str(tx))

    apply_delta = run  # libnftables takes an element delta as any other transaction

    def list_table(self, family: str = "inet", table: str = "mnp") -> TableView:
        """The live table as the tracer and the Fake see it (what `nft -j list table` shows)."""
        from shared.nft.trace import table_from_nft_json  # the daemon's; the CNI plugin never lists

        context = self._context()
        context.output_json()
        return table_from_nft_json(context.command(f"list table {family} {table}"), family, table)

    def close(self) -> None:
        self.context.close()


def malloc_trim() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class ContextPool:
    """At most `keep` libnftables contexts open at once, one per netns, the least recently used closed first.

    A context holds ≈ 0.5 MB from its first transaction on (measured: mallinfo2's in-use bytes), so keeping one
    per pod would cost a 110-pod node 55 MB; reopening one costs ≈ 1 ms (docs/benchmarks.md, Scale). Closing a
    context whose socket committed waits ≈ 10 ms for the kernel, so closes run on `CLOSERS` threads; when the
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
