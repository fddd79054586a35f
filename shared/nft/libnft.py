"""nft in-process: libnftables through ctypes, one context per pod network namespace, kept open.

`nsenter --net=PATH nft -f -` costs two execs, a fresh ruleset cache and a fresh netlink socket for every
transaction — several times what the kernel needs (docs/benchmarks.md has the figures). nft is a
thin front of libnftables, which takes the very same text (`nft_run_cmd_from_buffer`) and reports the very same
error text, so a Transaction means exactly what it means to `nft -f`, and `error_from_stderr` types its errors.

A libnftables context opens its netlink socket when it is created (nft_ctx_new), and a netlink socket belongs to
the network namespace it was opened in for its whole life (netlink(7)). So `NetnsNft` creates its context on a
short-lived thread inside the pod netns (shared.netns.in_netns) and then uses it from any thread: no thread this
process keeps ever changes namespace. Two consequences the owner must handle:

* the socket keeps the namespace alive: `close()` it when the pod's attachment is gone;
* a path can come to name another namespace (a reused /proc/PID): every call compares the path's identity with
  the one the context was opened for and raises NetnsGone when they differ (or the path is gone).

One context is used by one thread at a time (a lock per context), and the library runs one call at a time in
this process (`Instance.lock`, taken by every call, `nft_ctx_new` included): libnftables keeps a single interface
cache (src/iface.c, a global list), which every command that parses or prints an interface index — mnp's dispatch
maps — builds in the netns of the calling thread, and which every command and every `nft_ctx_free` frees again
(checked with 1.0.6: a listing from the daemon's thread names a pod's index 2 after the host's interface 2). Two
threads doing so at once would free the list under each other. Loading the library more than once (a memfd copy
dlopen'ed through /proc/self/fd/N, with globals of its own) was tried and removed: the copies share libnftnl,
libmnl, libjansson and libgmp, and two threads listing side by side aborted the process in about one run in ten
(tests/integration/test_libnft.py; docs/benchmarks.md). Policy changes are netlink deltas that take no context;
full forms and the tamper check's listings queue behind the one lock.
The CNI plugin uses the same library and lock (`Context()`): one command at a time anyway.
"""

from __future__ import annotations

import ctypes
import threading
from functools import cache

from shared.errors import NetnsGone
from shared.netns import in_netns, netns_identity
from shared.nft.errors import NftError, error_from_stderr
from shared.nft.nfnl import NETLINK_NETFILTER
from shared.nft.transaction import Transaction

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the CNI plugin imports this module)
if TYPE_CHECKING:
    from shared.nft.fake import TableView

LIBRARY = "libnftables.so.1"
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
    return _declared(lib)


def _declared(lib: ctypes.CDLL) -> ctypes.CDLL:
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


class Instance:
    """The loaded libnftables and the lock of its global interface cache (see the module docstring)."""

    __slots__ = ("lib", "lock")

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.lock = threading.Lock()


@cache
def instance() -> Instance:
    """The library itself, as `library()` loads it."""
    return Instance(library())


def _host_ifindex(name: str) -> int:
    """The index of interface `name` in this thread's netns (0 when there is none): what libnftables printed as
    `name` for a listing run on this thread."""
    import socket

    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def _fd_numbers() -> set[int]:
    """The numbers of this process's open descriptors (one getdents: cheap however many are open)."""
    import os

    return {int(name) for name in os.listdir("/proc/self/fd")}


def _lowest_free_fd() -> int:
    """The number the next descriptor this process opens gets (POSIX: the lowest free one), unless another thread
    opens one first."""
    import os

    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    return fd


def _connect_to_kernel(candidates: set[int]) -> int:
    """Connect the NETLINK_NETFILTER sockets among the descriptors `candidates` to the kernel; how many there were.

    A pod's process with NET_ADMIN can otherwise send netlink messages to a context's socket, which lives in the
    pod netns (its port id is in /proc/net/netlink there), and every listing and transaction failed ("cache
    initialization failed: Protocol error") — or read what it forged. A connected netlink socket takes unicast
    messages from its peer alone (af_netlink.c, netlink_getsockbyportid: ECONNREFUSED to anyone else); the
    kernel's answers come from port id 0, its peer. Connecting another NETLINK_NETFILTER socket of this process
    changes nothing for it: the kernel is the only peer mnp's sockets talk to."""
    import os
    import socket

    connected = 0
    for fd in candidates:
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:  # closed again, or not a socket
            continue
        try:
            if sock.family == socket.AF_NETLINK and sock.proto == NETLINK_NETFILTER:
                sock.connect((0, 0))
                connected += 1
        finally:
            sock.close()  # the duplicate only
    return connected


def _new_context(lib: ctypes.CDLL) -> int | None:
    """`nft_ctx_new`, with the netlink socket it opens connected to the kernel (`_connect_to_kernel`).

    libnftables does not tell which descriptor its socket is. It is one opened during the call: a number not open
    before it, or — POSIX hands out the lowest free number, and the listing of the numbers before the call used
    that one itself and closed it again — the number that was the lowest free one. Listing numbers, not reading
    every descriptor's link, keeps this cheap however many descriptors mnpd holds (docs/benchmarks.md, Listing a
    table). If another thread's descriptors moved under the call and none of those is the socket,
    every NETLINK_NETFILTER socket of the process is connected."""
    lowest = _lowest_free_fd()
    before = _fd_numbers()
    ctx: int | None = lib.nft_ctx_new(NFT_CTX_DEFAULT)
    if ctx and not _connect_to_kernel((_fd_numbers() - before) | {lowest}):
        _connect_to_kernel(_fd_numbers())
    return ctx


class Context:
    """One libnftables context, bound to the network namespace of the thread that created it."""

    def __init__(self) -> None:
        self._instance = instance()
        self._lib = self._instance.lib
        with self._instance.lock:
            ctx = _new_context(self._lib)
        if not ctx:
            raise NftError("nft_ctx_new failed (out of memory, or no netlink socket)")
        self._ctx: int | None = ctx
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)
        self._lock = threading.Lock()

    def command(self, text: str) -> str:
        """Run `text` as `nft -f` would (one transaction); its output, or the typed error of its error text."""
        with self._lock, self._instance.lock:
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
        with self._lock, self._instance.lock:
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
        """The live table as the tracer and the Fake see it (what `nft -j list table` shows). What mnp never
        writes — a rule of another shape, a set of another type, another kind of object — someone with NET_ADMIN
        in the pod netns did: it is kept as its JSON text (`opaque`), unequal to all mnp renders, so that the
        tamper check (daemon.apply `repair`) sees a difference and restores the table instead of failing to read."""
        from shared.nft.trace import table_from_nft_json  # the daemon's; the CNI plugin never lists

        context = self._context()
        context.output_json()
        text = context.command(f"list table {family} {table}")  # on this thread: names are this netns'
        return table_from_nft_json(text, family, table, ifindex_of=_host_ifindex, opaque=True)

    def close(self) -> None:
        self.context.close()
