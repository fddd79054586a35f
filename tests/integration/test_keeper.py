"""mnpd's netlink socket keeper (daemon/keeper.py) and the plugin's handover (shared.nft.handover), in a throwaway
namespace: the committed socket of an ADD reaches the keeper and is released there later; without a keeper the
plugin keeps it for its exit; what is not a NETLINK_NETFILTER socket of the namespace its datagram names is
refused and closed.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from cni import plugin
from daemon.keeper import SocketKeeper
from daemon.testbed.netns import NetNS
from shared.netns import in_netns_here, netns_identity
from shared.nft import libnft, netlink
from shared.nft.batch import encode
from shared.nft.handover import MAGIC, hand_over, keeper_path
from shared.nft.nfnl import open_socket
from shared.nft.render import render_interface
from shared.rules import InterfaceRules
from tests.support.host import host_untouched
from tests.support.poll import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.skipif(not libnft.available(), reason="no libnftables.so.1")]


@pytest.fixture(scope="module")
def pod() -> Iterator[NetNS]:
    with host_untouched(), NetNS.create("keeper") as ns:
        ns.add_veth("net1", "peer1")
        yield ns


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[SocketKeeper]:
    keeper = SocketKeeper(str(tmp_path), hold_s=0.3).start()
    try:
        yield keeper
    finally:
        keeper.stop()


def pending(pod: NetNS) -> object:
    return render_interface(InterfaceRules.pending("net1", "ns/pod", "ns/net", pod.ifindex("net1")))


def netlink_sockets(pod: NetNS) -> int:
    """NETLINK_NETFILTER sockets open in the pod's namespace (/proc/net/netlink, protocol 12)."""
    rows = pod.run("cat", "/proc/net/netlink").stdout.splitlines()[1:]
    return sum(1 for row in rows if row.split()[1] == "12")


def test_the_committed_socket_goes_to_the_keeper_and_is_released_there(
    pod: NetNS, keeper: SocketKeeper, tmp_path: Path
) -> None:
    pod.run("nft", "flush", "ruleset")
    plugin.release_kept()
    before = netlink_sockets(pod)  # the kernel's own nfnetlink socket is listed too
    nft = plugin.NetlinkNft(pod.path, lambda netns: pytest.fail("no fallback expected"), str(tmp_path))
    nft.run(pending(pod))  # type: ignore[arg-type]
    assert plugin.KEPT == []  # handed over: the plugin's exit is not its last reference
    wait_for(lambda: keeper.kept == 1)
    assert keeper.refused == 0 and netlink_sockets(pod) == before + 1
    wait_for(lambda: keeper.held() == 0)  # released after hold_s, on the keeper's thread
    wait_for(lambda: netlink_sockets(pod) == before)
    assert "chain ingress_net1" in pod.run("nft", "list", "table", "inet", "mnp").stdout
    pod.run("nft", "flush", "ruleset")


def test_without_a_keeper_the_plugin_keeps_the_socket_for_its_exit(pod: NetNS, tmp_path: Path) -> None:
    pod.run("nft", "flush", "ruleset")
    plugin.release_kept()
    nft = plugin.NetlinkNft(pod.path, lambda netns: pytest.fail("no fallback expected"), str(tmp_path))
    nft.run(pending(pod))  # type: ignore[arg-type]
    assert len(plugin.KEPT) == 1
    plugin.release_kept()
    pod.run("nft", "flush", "ruleset")


def test_a_kept_socket_is_adopted_by_the_daemons_backend_of_its_namespace(
    pod: NetNS, keeper: SocketKeeper, tmp_path: Path
) -> None:
    keeper.hold_s = 60.0
    sock = in_netns_here(pod.path, open_socket)
    assert hand_over(sock, str(tmp_path), pod.path)
    sock.close()
    wait_for(lambda: keeper.kept == 1)
    assert keeper.take("/run/netns/elsewhere") is None
    taken = keeper.take(pod.path)
    assert taken is not None and taken[1] == netns_identity(pod.path)
    assert fcntl.fcntl(taken[0].fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # never inherited by what mnpd runs
    assert keeper.held() == 0
    # the daemon's netlink socket of that netns, on the adopted socket: a batch applied through it lands there
    pod.run("nft", "flush", "ruleset")
    adopted = netlink.NfnetlinkSocket(pod.path, taken)
    try:
        adopted.batch(lambda seq: encode(pending(pod), seq), "pending table through the adopted socket")  # type: ignore[arg-type]
    finally:
        adopted.close()
    assert "chain ingress_net1" in pod.run("nft", "list", "table", "inet", "mnp").stdout
    pod.run("nft", "flush", "ruleset")


def send(path: str, payload: bytes, fds: list[int]) -> None:
    out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        out.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))], 0, path)
    finally:
        out.close()


def test_what_is_not_a_netfilter_socket_of_the_named_namespace_is_refused(
    pod: NetNS, keeper: SocketKeeper, tmp_path: Path
) -> None:
    path = keeper_path(str(tmp_path))
    host_nfnl = open_socket()  # a NETLINK_NETFILTER socket, but of this (the host's) namespace
    route = in_netns_here(pod.path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))  # NETLINK_ROUTE
    pod_nfnl = in_netns_here(pod.path, open_socket)
    read_end, write_end = os.pipe()
    try:
        cases = [
            (MAGIC + pod.path.encode(), [host_nfnl.fileno()]),  # another namespace than the one named
            (MAGIC + pod.path.encode(), [route.fileno()]),  # another netlink protocol
            (MAGIC + pod.path.encode(), [read_end]),  # no socket at all
            (b"hello" + pod.path.encode(), [pod_nfnl.fileno()]),  # not the handover format
            (MAGIC + b"relative/path", [pod_nfnl.fileno()]),
            (MAGIC + pod.path.encode(), [pod_nfnl.fileno(), pod_nfnl.fileno()]),  # two descriptors
        ]
        for payload, fds in cases:
            send(path, payload, fds)
        wait_for(lambda: keeper.refused == len(cases))
        assert keeper.kept == 0 and keeper.held() == 0
    finally:
        for sock in (host_nfnl, route, pod_nfnl):
            sock.close()
        os.close(read_end)
        os.close(write_end)


def test_hostile_datagrams_are_refused_and_the_keeper_goes_on_keeping(
    pod: NetNS, keeper: SocketKeeper, tmp_path: Path
) -> None:
    path = keeper_path(str(tmp_path))
    fifo, link = tmp_path / "fifo", tmp_path / "link"
    os.mkfifo(fifo)  # stat, never opened: a FIFO would block an open
    link.symlink_to("/proc/self/ns/net")  # a symlink to another namespace than the socket's
    pod_nfnl = in_netns_here(pod.path, open_socket)
    try:
        cases = [
            (MAGIC + pod.path.encode(), [pod_nfnl.fileno()] * 8),  # more descriptors than the keeper reads
            (MAGIC + pod.path.encode() + b"/" * (64 * 1024), [pod_nfnl.fileno()]),  # beyond MAX_MESSAGE
            (MAGIC + os.fsencode(fifo), [pod_nfnl.fileno()]),
            (MAGIC + os.fsencode(link), [pod_nfnl.fileno()]),
            (MAGIC + pod.path.encode() + b"\0x", [pod_nfnl.fileno()]),
        ]
        for payload, fds in cases:
            send(path, payload, fds)
        wait_for(lambda: keeper.refused == len(cases))
        assert keeper.kept == 0 and keeper.held() == 0
        # and then a good handover is still taken
        assert hand_over(pod_nfnl, str(tmp_path), pod.path)
        wait_for(lambda: keeper.kept == 1)
        assert keeper.refused == len(cases) and keeper.held() == 1
    finally:
        pod_nfnl.close()


def test_a_keeper_path_that_is_a_symlink_or_a_fifo_is_not_replaced(tmp_path: Path) -> None:
    elsewhere = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    elsewhere.bind(str(tmp_path / "elsewhere"))
    try:
        Path(keeper_path(str(tmp_path))).symlink_to(tmp_path / "elsewhere")  # even to a socket
        with pytest.raises(OSError, match="not a socket"):
            SocketKeeper(str(tmp_path)).start()
        assert Path(keeper_path(str(tmp_path))).is_symlink() and (tmp_path / "elsewhere").is_socket()
        os.unlink(keeper_path(str(tmp_path)))
        os.mkfifo(keeper_path(str(tmp_path)))
        with pytest.raises(OSError, match="not a socket"):
            SocketKeeper(str(tmp_path)).start()
        assert Path(keeper_path(str(tmp_path))).is_fifo()
    finally:
        elsewhere.close()


def test_a_stale_keeper_path_is_replaced_but_a_foreign_file_is_not(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(keeper_path(str(tmp_path)))
    stale.close()  # a previous mnpd's socket file, nobody listening
    SocketKeeper(str(tmp_path)).start().stop()
    Path(keeper_path(str(tmp_path))).write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        SocketKeeper(str(tmp_path)).start()
