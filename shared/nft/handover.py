"""Handing a committed NETLINK_NETFILTER socket from the CNI plugin to mnpd, so the plugin's exit is not its last
reference — both sides of the one datagram, its path and its format.

Why: releasing a NETLINK_NETFILTER socket right after it committed waits for nf_tables' deferred destruction of
the committed transaction — the NETLINK_URELEASE handler (`nft_rcv_nl_event`, net/netfilter/nf_tables_api.c)
flushes the destroy work, which waits for an RCU grace period: 9–15 ms of the plugin's ADD on a busy node, with
no CPU (docs/benchmarks.md, CNI ADD). A socket whose last reference mnpd holds is released there, later, on a
thread of its own.

The plugin sends one datagram, without waiting, to the unix socket `<stateDir>/.nfnl-keeper` (a dot-file: the
state dir's readers ignore it; the dir is 0700, so only root can send): the payload `MAGIC` + the CNI_NETNS path,
the socket as SCM_RIGHTS. Anything failing — no mnpd listening, its queue full — and the plugin keeps the socket
and pays the wait at its exit, as without mnpd. mnpd (daemon/keeper.py) checks what it got before keeping it, and
its netlink backend of that pod netns adopts it (daemon/apply.py real_nft).
"""

from __future__ import annotations

import _socket
import os
import struct

KEEPER_NAME = ".nfnl-keeper"
MAGIC = b"mnp-nfnl 1\n"
MAX_MESSAGE = len(MAGIC) + 4096  # PATH_MAX


def keeper_path(state_dir: str) -> str:
    return os.path.join(state_dir, KEEPER_NAME)


def hand_over(sock: _socket.socket, state_dir: str, netns: str) -> bool:
    """Send `sock` to mnpd's keeper without blocking; True when it is on its way (the caller may then close its
    own descriptor at once: the datagram in flight holds a reference until mnpd takes it)."""
    payload = MAGIC + os.fsencode(netns)
    if len(payload) > MAX_MESSAGE:
        return False
    out = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC)
    try:
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", sock.fileno()))]
        out.sendmsg([payload], rights, 0, keeper_path(state_dir))
    except OSError:  # nobody listening (ENOENT, ECONNREFUSED), a full queue (EAGAIN), a path too long …
        return False
    finally:
        out.close()
    return True
