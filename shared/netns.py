"""Entering a pod's network namespace — the one side effect every other module reaches only through here.

`setns(2)` switches the namespace of the calling OS *thread* only (see containernetworking/plugins pkg/ns
README): a daemon that switched one of its Python threads could send any later work of that thread, or of a
library pooling it, into the wrong pod. So the daemon never switches a thread it keeps. Three ways in, all by
the namespace's path (CNI_NETNS may be `/var/run/netns/x` or `/proc/PID/ns/net`; `ip netns exec` takes names):

* `netns_command`: a command that needs the pod's namespace (`conntrack`, `ip`, the `nft` fallback) runs under
  `nsenter --net=PATH`, a separate process;
* `in_netns`: a function runs on a new thread that enters the namespace first and ends when the function
  returns. It is for creating what stays bound to the namespace afterwards — a netlink socket belongs to the
  namespace it was opened in for its whole life (netlink(7)), so the libnftables context of shared.nft.libnft
  is opened there once and then used from any thread;
* `in_netns_here`: the same on the calling thread, switched in and back — only for the CNI plugin, a
  single-threaded process that exits right after its verb.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from _socket import if_nametoindex  # the C module: `socket` brings selectors & co onto the plugin's ADD path

from shared.errors import NetnsGone, NetnsInvisible, NetnsUnusable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the CNI plugin's start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TypeVar

    T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl_ns(2), Linux 4.11: the CLONE_NEW* type of a namespace file descriptor
_NS_TYPES = {0x00020000: "mount", 0x40000000: "network", 0x20000000: "PID", 0x04000000: "UTS", 0x08000000: "IPC"}
_NS_TYPES |= {0x10000000: "user", 0x02000000: "cgroup", 0x00000080: "time"}


def netns_command(netns: str | None, argv: Sequence[str]) -> list[str]:
    """`argv` run inside `netns` (a path), or as is when `netns` is None (the caller's own namespace)."""
    if netns is None:
        return list(argv)
    return ["nsenter", f"--net={netns}", "--", *argv]


def netns_path_error(
    netns: str, exc: OSError | ValueError, *, gone_needs_visible_dir: bool = False
) -> NetnsGone | NetnsUnusable:
    """What a failed stat/open of the netns path `netns` means — the one place that decides "gone" from an error.

    | error                                     | answer                                                      |
    |-------------------------------------------|-------------------------------------------------------------|
    | ENOENT                                    | NetnsGone                                                   |
    | ENOENT, gone_needs_visible_dir, and the   | NetnsInvisible (a NetnsUnusable): this process cannot see   |
    | path's directory is not visible here      | where the namespace would be, so it cannot tell             |
    | EACCES, ELOOP, ENOTDIR, EIO … ValueError  | NetnsUnusable: the namespace may well exist, and an entry   |
    |                                           | must never be dropped because this process cannot see it    |

    Only ENOENT means gone. gone_needs_visible_dir is for mnpd and mnpctl, whose mount view may lack the host's
    netns directory (a DaemonSet without /run/netns mounted sees every path there missing): ENOENT is then "gone"
    only if the path's directory is visible — for `/proc/PID/ns/net`, if /proc is mounted (the PID directory goes
    with its process). The plugin leaves it off: CNI_NETNS comes from the runtime, in the plugin's own view."""
    if getattr(exc, "errno", None) == errno.ENOENT:
        if gone_needs_visible_dir and not _directory_visible(netns):
            return NetnsInvisible(f"cannot check network namespace {netns}: its directory is not visible here")
        return NetnsGone(f"network namespace {netns} does not exist")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return NetnsUnusable(f"cannot check network namespace {netns}: {reason}")


def _directory_visible(netns: str) -> bool:
    """Whether this process sees the directory a missing `netns` path would be in (for /proc/PID/…: /proc)."""
    if netns.startswith("/proc/"):
        return os.path.exists("/proc/self/ns/net")
    return os.path.isdir(os.path.dirname(netns))


def check_netns(netns: str, *, gone_needs_visible_dir: bool = False) -> None:
    """Return if `netns` is an existing network namespace file; raise NetnsGone if it certainly no longer exists,
    NetnsUnusable if it is something else or cannot be checked (netns_path_error says which error is which).

    Every namespace file lives on the one nsfs instance. An empty plain file that is not (the mount point `ip netns`
    and CNI's pkg/ns create, left under /run/netns after its mount went away in a crashed teardown) exists but is
    no namespace any more: gone. Anything else off nsfs (a file with content, a directory, FIFO, device) never was
    a namespace, nor is anything but an empty regular file where nsfs cannot be told (no /proc); on nsfs, ioctl
    NS_GET_NSTYPE tells a network namespace from the others (`/proc/self/ns/mnt`)."""
    try:
        st = os.stat(netns)
    except (OSError, ValueError) as exc:
        raise netns_path_error(netns, exc, gone_needs_visible_dir=gone_needs_visible_dir) from exc
    nsfs = _nsfs_device()
    if nsfs is not None and st.st_dev != nsfs:
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            raise NetnsGone(f"{netns} is not a network namespace file (not on nsfs: its mount is gone)")
        raise NetnsUnusable(f"{netns} is not a network namespace file (mode {st.st_mode:o})")
    if not stat.S_ISREG(st.st_mode) or st.st_size != 0:  # a namespace file is an empty regular file, on nsfs or not
        raise NetnsUnusable(f"{netns} is not a network namespace file (mode {st.st_mode:o}, {st.st_size} bytes)")
    kind = _namespace_type(netns, gone_needs_visible_dir)
    if kind is not None and kind != CLONE_NEWNET:
        name = _NS_TYPES.get(kind, f"type {kind:#x}")
        raise NetnsUnusable(f"{netns} is a {name} namespace, not a network namespace")


def _nsfs_device() -> int | None:
    """st_dev of the nsfs instance every namespace file lives on; None without /proc (nothing to compare with)."""
    try:
        return os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return None


def _namespace_type(netns: str, gone_needs_visible_dir: bool) -> int | None:
    """The CLONE_NEW* type of the namespace file `netns`, or None where the kernel cannot say (before 4.11)."""
    import fcntl

    try:
        # O_NONBLOCK: a FIFO swapped in since the stat must not wait for a writer
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except (OSError, ValueError) as exc:
        raise netns_path_error(netns, exc, gone_needs_visible_dir=gone_needs_visible_dir) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NetnsUnusable(f"{netns} is not a network namespace file (changed while checked)")
        return int(fcntl.ioctl(fd, NS_GET_NSTYPE))
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL):
            return None
        raise NetnsUnusable(f"cannot check network namespace {netns}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def is_own_netns(netns: str) -> bool:
    """Whether `netns` is the namespace this process runs in: acting there would close the host itself."""
    try:
        own, other = os.stat("/proc/self/ns/net"), os.stat(netns)
    except (OSError, ValueError):  # the callers go on to check_netns, which says what is wrong with the path
        return False
    return (own.st_dev, own.st_ino) == (other.st_dev, other.st_ino)


def netns_identity(netns: str, *, gone_needs_visible_dir: bool = False) -> tuple[int, int]:
    """(st_dev, st_ino) of a namespace file: the namespace itself, whatever path names it. A path can name
    another namespace later (a reused /proc/PID, a recreated /run/netns/NAME); its identity changes then.
    Raises NetnsGone or NetnsUnusable as netns_path_error decides."""
    try:
        st = os.stat(netns)
    except (OSError, ValueError) as exc:
        raise netns_path_error(netns, exc, gone_needs_visible_dir=gone_needs_visible_dir) from exc
    return st.st_dev, st.st_ino


def identity_if_usable(netns: str) -> tuple[int, int] | None:
    """netns_identity, or None when there is none to pin: no path, a gone path or one that cannot be checked."""
    try:
        return netns_identity(netns) if netns else None
    except (NetnsGone, NetnsUnusable):
        return None


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """`fn()` run on a fresh thread inside `netns`; its result, or its exception, comes back to the caller.

    The thread exists only for `fn`, so no thread of this process stays in the pod's namespace. Raises NetnsGone
    when `netns` is gone, NetnsUnusable when it cannot be entered for another reason."""
    import threading  # only here: the CNI plugin enters namespaces with in_netns_here and never starts a thread

    check_netns(netns)
    outcome: list[object] = []

    def run() -> None:
        try:
            _enter(netns)
        except (NetnsGone, NetnsUnusable) as exc:
            outcome.append(exc)
            return
        try:
            outcome.append(("ok", fn()))
        except BaseException as exc:  # handed to the caller's thread, raised there
            outcome.append(exc)

    thread = threading.Thread(target=run, name=f"netns:{os.path.basename(netns)}", daemon=True)
    thread.start()
    thread.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result[1]  # type: ignore[index,no-any-return]


def in_netns_here(netns: str, fn: Callable[[], T]) -> T:
    """`fn()` run on the calling thread, switched into `netns` for the call and back into its own namespace
    before this returns or raises. For the CNI plugin only: a single-threaded process that exits right after
    its verb, so no other code can run on the thread while it is in the pod's namespace, and a thread of its own
    (in_netns) would cost far more than setns itself (docs/benchmarks.md, CNI ADD, has the figures). Never use
    it in the daemon, whose threads are shared. Raises NetnsGone/NetnsUnusable when `netns` cannot be entered; if
    the thread cannot return to its namespace, it raises OSError rather than let the process go on in the pod's."""
    check_netns(netns)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _enter(netns)
        try:
            return fn()
        finally:
            if _libc().setns(home, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"cannot return to this process's network namespace: {os.strerror(err)}")
    finally:
        os.close(home)


def interface_index(netns: str, ifname: str) -> int:
    """The index of interface `ifname` inside `netns`, looked up on a thread of its own (`in_netns`: for the
    daemon). Raises NetnsGone, or OSError when there is no such interface."""
    return in_netns(netns, lambda: if_nametoindex(ifname))


def interface_index_here(netns: str, ifname: str) -> int:
    """The index of interface `ifname` inside `netns` (if_nametoindex on the calling thread, switched in and back:
    `in_netns_here`, so for the CNI plugin only). Raises NetnsGone, or OSError when there is no such interface."""
    return in_netns_here(netns, lambda: if_nametoindex(ifname))


def _enter(netns: str) -> None:
    """Move the calling thread into `netns` (NetnsGone if it is gone, NetnsUnusable if it cannot for another
    reason)."""
    try:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:
        raise netns_path_error(netns, exc) from exc
    try:
        if _libc().setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsUnusable(f"cannot enter network namespace {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC
