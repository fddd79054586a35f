"""Entering a pod's network namespace — the one side effect every other module reaches only through here.

`setns(2)` switches the namespace of the calling OS *thread* only (see containernetworking/plugins pkg/ns
README): a daemon that switched one of its Python threads could send any later work of that thread, or of a
library pooling it, into the wrong pod. So mnp never switches its own threads; it runs the one command that needs
the pod's namespace (`nft`, `conntrack`, `ip`) under `nsenter --net=PATH`, a separate process entering the
namespace by its path (CNI_NETNS may be `/var/run/netns/x` or `/proc/PID/ns/net`; `ip netns exec` takes names).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from shared.errors import NetnsGone


def netns_command(netns: str | None, argv: Sequence[str]) -> list[str]:
    """`argv` run inside `netns` (a path), or as is when `netns` is None (the caller's own namespace)."""
    if netns is None:
        return list(argv)
    return ["nsenter", f"--net={netns}", "--", *argv]


def check_netns(netns: str) -> None:
    """Raise NetnsGone if `netns` is not an existing network namespace file."""
    try:
        st = os.stat(netns)
    except OSError as exc:
        raise NetnsGone(f"network namespace {netns} does not exist: {exc.strerror}") from exc
    if not os.path.isfile(netns) and not netns.startswith("/proc/"):
        raise NetnsGone(f"{netns} is not a network namespace file (mode {st.st_mode:o})")
    # Every namespace file lives on the one nsfs instance. A plain file left under /run/netns after its mount
    # went away (a crashed teardown) exists but is no namespace: nsenter would fail on it forever.
    try:
        nsfs = os.stat("/proc/self/ns/net").st_dev
    except OSError:  # no /proc: nothing to compare with
        return
    if st.st_dev != nsfs:
        raise NetnsGone(f"{netns} is not a network namespace file (not on nsfs: its mount is gone)")


def is_own_netns(netns: str) -> bool:
    """Whether `netns` is the namespace this process runs in: acting there would close the host itself."""
    try:
        own, other = os.stat("/proc/self/ns/net"), os.stat(netns)
    except OSError:
        return False
    return (own.st_dev, own.st_ino) == (other.st_dev, other.st_ino)
