"""mnpd's side of shared.nft.handover: take the CNI plugin's committed NETLINK_NETFILTER sockets, so that the
plugin's exit is not their last reference, and release them later on a thread of our own.

A received descriptor is close-on-exec (MSG_CMSG_CLOEXEC: nothing mnpd runs inherits a pod's socket) and is
checked before it is kept — it is a netlink socket (SO_DOMAIN AF_NETLINK) of protocol
NETLINK_NETFILTER (SO_PROTOCOL), and the network namespace it belongs to (ioctl SIOCGSKNS) is the one the path in
the datagram names now (shared.netns.netns_identity) — else it is closed at once and counted as refused. Only
root can send (the state dir is 0700), but nothing received is trusted further: a kept socket is only ever
closed, or handed (`take`, checked again) to the netlink backend of that very path (daemon/apply.py real_nft),
which keeps it as the namespace's nfnetlink socket instead of opening one.

Each socket is held `HOLD_S` (by then the grace period its release waited for is long over) and at most
`MAX_HELD` at once (the oldest are released first), so a burst of pod starts pins few namespaces for long.
Releasing happens on a closer thread of the keeper's own, which may wait for the kernel without holding up the
thread that receives (a unix datagram queue holds only `net.unix.max_dgram_qlen` messages, 10 by default: beyond
that the plugin keeps its socket and pays the wait).

Should receiving itself fail (an error of the listening socket, not of one datagram), the failure is logged once
— again only when it changes or after it stops, with how often it happened — and receiving is retried after a
pause that doubles from `POLL_S` to `RETRY_MAX_S`, so a socket that keeps failing neither floods the log nor
spins.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import os
import queue
import socket
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import NetnsGone, NetnsUnusable
from shared.netns import netns_identity
from shared.nft.handover import MAGIC, MAX_MESSAGE, keeper_path
from shared.nft.nfnl import NETLINK_NETFILTER
from shared.state import valid_netns_path

log = logging.getLogger(__name__)

SIOCGSKNS = 0x894C  # linux/sockios.h: a socket's network namespace, as a new descriptor (Linux 4.9)
SO_DOMAIN, SO_PROTOCOL = 39, 38
HOLD_S = 1.0
MAX_HELD = 256
POLL_S = 0.2
RETRY_MAX_S = 5.0


MAX_FDS = 4  # descriptors read from one datagram (the plugin sends one); a datagram with more is truncated: refused


def receive(listener: socket.socket) -> tuple[bytes, list[int], int]:
    """One datagram: its payload, the descriptors it carried (close-on-exec), recvmsg's flags. Not socket.recv_fds,
    which does not pass its `flags` on to recvmsg (CPython 3.11): MSG_CMSG_CLOEXEC would not reach the kernel."""
    fds = array.array("i")
    payload, ancillary, flags, _ = listener.recvmsg(
        MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * fds.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return payload, list(fds), flags


class RefusedSocket(ValueError):
    """A received descriptor that is not a NETLINK_NETFILTER socket of the namespace its datagram names."""


def socket_netns(fd: int) -> tuple[int, int]:
    """(st_dev, st_ino) of the network namespace socket `fd` belongs to."""
    ns = fcntl.ioctl(fd, SIOCGSKNS)
    try:
        st = os.fstat(ns)
    finally:
        os.close(ns)
    return st.st_dev, st.st_ino


def checked(sock: socket.socket, payload: bytes) -> str:
    """The netns path of one received datagram whose descriptor is `sock`; RefusedSocket unless `sock` is a
    NETLINK_NETFILTER socket of the namespace the path names. The caller closes a refused socket."""
    if not payload.startswith(MAGIC):
        raise RefusedSocket("not a handover datagram")
    netns = os.fsdecode(payload[len(MAGIC) :])
    if not valid_netns_path(netns):
        raise RefusedSocket(f"netns path {netns[:80]!r}")
    try:
        domain = sock.getsockopt(socket.SOL_SOCKET, SO_DOMAIN)
        protocol = sock.getsockopt(socket.SOL_SOCKET, SO_PROTOCOL)
    except OSError as exc:
        raise RefusedSocket(f"cannot read its domain and protocol: {exc.strerror or exc}") from exc
    if (domain, protocol) != (socket.AF_NETLINK, NETLINK_NETFILTER):
        raise RefusedSocket(f"socket of domain {domain}, protocol {protocol}")
    try:
        same = socket_netns(sock.fileno()) == netns_identity(netns)
    except (OSError, NetnsGone, NetnsUnusable) as exc:
        raise RefusedSocket(f"cannot compare its namespace with {netns}: {exc}") from exc
    if not same:
        raise RefusedSocket(f"not a socket of {netns}")
    return netns


@dataclass
class Failing:
    """A receive error repeating: its text, how often it happened in a row, the pause before the next attempt."""

    error: str
    count: int = 1
    pause: float = POLL_S


class SocketKeeper:
    """The unix datagram socket `<state_dir>/.nfnl-keeper` and the thread that takes, checks, holds and releases
    what the plugin sends there. `kept` and `refused` count since start."""

    def __init__(self, state_dir: str, hold_s: float = HOLD_S, max_held: int = MAX_HELD) -> None:
        self.path = keeper_path(state_dir)
        self.hold_s = hold_s
        self.max_held = max_held
        self.kept = 0
        self.refused = 0
        self._held: OrderedDict[int, tuple[float, str, socket.socket]] = OrderedDict()  # by fd, oldest first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing: queue.SimpleQueue[socket.socket | None] = queue.SimpleQueue()
        self._closer: threading.Thread | None = None
        self._pause: Callable[[float], object] = self._stop.wait  # between failed receives (tests count them)

    def start(self) -> SocketKeeper:
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise OSError(f"{self.path} exists and is not a socket")
            os.unlink(self.path)  # a previous mnpd's
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            listener.bind(self.path)
            os.chmod(self.path, 0o600)
        except BaseException:
            listener.close()
            raise
        listener.settimeout(POLL_S)
        self._listener = listener
        self._thread = threading.Thread(target=self._run, name="mnp-nfnl-keeper", daemon=True)
        self._closer = threading.Thread(target=self._close_queued, name="mnp-nfnl-closer", daemon=True)
        self._thread.start()
        self._closer.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        with self._lock:
            held, self._held = list(self._held.values()), OrderedDict()
        for _, _, sock in held:
            self._closing.put(sock)
        self._closing.put(None)
        if self._closer is not None:
            self._closer.join()

    def take(self, netns: str) -> tuple[socket.socket, tuple[int, int]] | None:
        """A kept socket of `netns` and the identity of its namespace, now the caller's to keep and close; None if
        there is none — or if the path names another namespace than the socket's by now (the socket is released)."""
        with self._lock:
            found = next(((fd, sock) for fd, (_, path, sock) in self._held.items() if path == netns), None)
            if found is None:
                return None
            del self._held[found[0]]
        sock = found[1]
        try:
            identity = socket_netns(sock.fileno())
            if identity == netns_identity(netns):
                return sock, identity
        except (OSError, NetnsGone, NetnsUnusable):
            pass
        self._closing.put(sock)
        return None

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def _run(self) -> None:
        assert self._listener is not None
        failing: Failing | None = None
        while not self._stop.is_set():
            try:
                payload, fds, flags = receive(self._listener)
            except TimeoutError:
                payload, fds, flags = b"", [], 0
            except OSError as exc:
                failing = self._receive_failed(failing, exc)
                self._release(time.monotonic())
                self._pause(failing.pause)
                continue
            if failing is not None:
                log.info("netlink socket keeper: receiving works again (after %d failures)", failing.count)
                failing = None
            if fds:
                try:
                    self._receive(payload, fds, truncated=bool(flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC)))
                except Exception:  # whatever one datagram holds, the keeper goes on
                    log.exception("netlink socket keeper: a datagram could not be handled")
            self._release(time.monotonic())

    @staticmethod
    def _receive_failed(failing: Failing | None, exc: OSError) -> Failing:
        """The repeating failure after `exc`: logged when it starts or changes, its pause doubled while it lasts."""
        error = str(exc)
        if failing is not None and failing.error == error:
            failing.count += 1
            failing.pause = min(failing.pause * 2, RETRY_MAX_S)
            return failing
        if failing is not None:
            log.info("netlink socket keeper: %s (%d times in a row), now another error", failing.error, failing.count)
        log.warning("netlink socket keeper: cannot receive: %s (retrying, logged again when it changes)", error)
        return Failing(error)

    def _receive(self, payload: bytes, fds: list[int], truncated: bool) -> None:
        if truncated or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            self.refused += 1
            log.warning("netlink socket keeper: refused a datagram with %d descriptors", len(fds))
            return
        try:
            sock = socket.socket(fileno=fds[0])
        except OSError as exc:  # not a socket at all
            os.close(fds[0])
            self.refused += 1
            log.warning("netlink socket keeper: refused a descriptor: not a socket (%s)", exc.strerror or exc)
            return
        try:
            netns = checked(sock, payload)
        except RefusedSocket as exc:
            self._closing.put(sock)
            self.refused += 1
            log.warning("netlink socket keeper: refused a descriptor: %s", exc)
            return
        with self._lock:
            self._held[sock.fileno()] = (time.monotonic(), netns, sock)
        self.kept += 1

    def _release(self, now: float) -> None:
        with self._lock:
            due = []
            while self._held:
                fd, (since, _, sock) = next(iter(self._held.items()))
                if now - since < self.hold_s and len(self._held) <= self.max_held:
                    break
                del self._held[fd]
                due.append(sock)
        for sock in due:
            self._closing.put(sock)

    def _close_queued(self) -> None:
        """Close what the receiving thread let go: a release may wait for the kernel (an RCU grace period after a
        recent commit), and the datagrams must not queue up behind it (the queue holds only a few)."""
        while True:
            sock = self._closing.get()
            if sock is None:
                return
            sock.close()


# The keeper mnpd runs (daemon/main.py), for the netlink backend of a pod netns to adopt the plugin's socket.
RUNNING: SocketKeeper | None = None


def take(netns: str) -> tuple[socket.socket, tuple[int, int]] | None:
    """The plugin's committed socket of `netns`, if mnpd's keeper holds one (SocketKeeper.take)."""
    return RUNNING.take(netns) if RUNNING is not None else None
