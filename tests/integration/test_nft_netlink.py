"""The netlink backend (shared.nft.backend.NetlinkNft, shared.nft.netlink) against the real kernel, in throwaway
namespaces: element deltas sent as one nfnetlink batch leave exactly what the full transaction leaves, a batch
the kernel refuses changes nothing, and the daemon's actuator falls back to the full form when a delta is refused
or the table is gone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from daemon.apply import Applier, real_nft
from daemon.testbed.netns import NetNS
from shared.nft import libnft
from shared.nft.backend import NetlinkNft
from shared.nft.errors import ExistsError, NotFoundError
from shared.nft.fake import FakeNft
from shared.nft.objects import Element
from shared.nft.pool import ContextPool
from shared.nft.render import RenderOptions, render_interface, render_remove_table, render_update
from shared.nft.transaction import Transaction
from shared.rules import Allow, DirectionRules, InterfaceRules, PortRange
from tests.integration.test_render_kernel import delta_pair
from tests.support.host import host_untouched

pytestmark = [pytest.mark.netns, pytest.mark.skipif(not libnft.available(), reason="no libnftables.so.1")]


@pytest.fixture(scope="module")
def pod() -> Iterator[NetNS]:
    with host_untouched(), NetNS.create("nl") as ns:
        yield ns


@pytest.fixture
def nft(pod: NetNS) -> Iterator[NetlinkNft]:
    pool = ContextPool(keep=1)
    backend = NetlinkNft(pod.path, pool)
    try:
        pod.run("nft", "flush", "ruleset")
        yield backend
    finally:
        backend.close()
        pool.close()


def rules(
    v4_all: list[str], v4_ports: list[str], ports: tuple[PortRange, ...] = (PortRange("tcp", 80, 90),)
) -> InterfaceRules:
    def nets(texts: list[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(t) for t in texts)

    allows = (Allow("ns/all ingress[0]", nets(v4_all), None), Allow("ns/ports ingress[0]", nets(v4_ports), ports))
    return InterfaceRules("ns/pod", "net1", "ns/net", DirectionRules(True, allows, ("ns/all", "ns/ports")), ifindex=2)


OLD = rules(["10.0.1.0/24", "10.0.3.7/32", "fd00::1/128"], ["10.1.0.0/16", "fd01::/64"])
NEW = rules(
    ["10.0.1.0/24", "10.0.4.0/30", "255.255.255.0/24", "fd00::2/128"], ["10.1.0.0/16", "10.2.0.1/32", "fd01::/64"]
)


def expected(rules: InterfaceRules) -> object:
    return FakeNft.from_transaction(render_interface(rules)).list_table()


def test_full_then_delta_over_netlink(nft: NetlinkNft) -> None:
    """The full form goes through libnftables, the delta as one netlink batch; the table is then exactly what
    the full form of the new rules would be — keys, ranges, comments, an interval reaching the top address."""
    nft.run(render_interface(OLD))
    assert nft.list_table() == expected(OLD)
    delta = render_update(OLD, NEW, priced=False)
    assert delta is not None and len(delta)
    nft.apply_delta(delta)
    assert nft.list_table() == expected(NEW)
    nft.apply_delta(render_update(NEW, OLD, priced=False) or Transaction())  # and back
    assert nft.list_table() == expected(OLD)


def test_a_refused_batch_changes_nothing(nft: NetlinkNft) -> None:
    """An addition that the kernel accepts, then a deletion of an element that is not there: the batch is one
    kernel transaction, so the addition is not applied either, and the error is typed as nft's would be."""
    nft.run(render_interface(OLD))
    before = nft.list_table()
    tx = Transaction().add(Element("ingress_net1_v4_peers", "192.0.2.0/24", "accept", comment="x"))
    tx.delete(Element("ingress_net1_v4_peers", "198.51.100.7"))
    with pytest.raises(NotFoundError):
        nft.apply_delta(tx)
    assert nft.list_table() == before
    overlap = Transaction().add(Element("ingress_net1_v4_peers", "10.1.2.0/24", "accept"))
    with pytest.raises(ExistsError):
        nft.apply_delta(overlap)
    (ports,) = (name for name in before.sets if name.endswith("_ports"))
    with pytest.raises(ExistsError):
        nft.apply_delta(Transaction().add(Element(ports, "tcp . 85")))
    with pytest.raises(NotFoundError):  # a jump to a chain that is not there
        nft.apply_delta(Transaction().add(Element("ingress_net1_v4_peers", "192.0.2.0/24", "jump g_nope")))
    assert nft.list_table() == before


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delta_pair())
def test_generated_deltas_leave_what_the_full_form_leaves(nft: NetlinkNft, pair: tuple[InterfaceRules, ...]) -> None:
    old, new = pair
    delta = render_update(old, new, priced=False)
    assert delta is not None
    nft.run(render_remove_table())
    nft.run(render_interface(old))
    nft.apply_delta(delta)
    assert nft.list_table() == expected(new)


def test_the_applier_falls_back_to_the_full_form(pod: NetNS) -> None:
    """A delta refused because someone removed an element, then because the whole table is gone: each time the
    actuator applies the full form, and the table ends as the full form of the new rules."""
    pod.run("nft", "flush", "ruleset")
    applier = Applier(real_nft, RenderOptions())
    try:
        applier.apply(pod.path, OLD)
        applier.apply(pod.path, NEW, OLD)
        assert applier.deltas == 1
        pod.run("nft", "delete", "element", "inet", "mnp", "ingress_net1_v4_peers", "{ 10.0.4.0/30 }")
        applier.apply(pod.path, OLD, NEW)  # the delta deletes 10.0.4.0/30: refused, full form instead
        assert applier.deltas == 1
        assert listed(pod) == expected(OLD)
        pod.run("nft", "delete", "table", "inet", "mnp")
        applier.apply(pod.path, NEW, OLD)
        assert applier.deltas == 1
        assert listed(pod) == expected(NEW)
        applier.apply(pod.path, OLD, NEW)
        assert applier.deltas == 2 and listed(pod) == expected(OLD)
    finally:
        applier.close()


def listed(pod: NetNS) -> object:
    from shared.nft.trace import table_from_nft_json

    return table_from_nft_json(pod.run("nft", "-j", "list", "table", "inet", "mnp").stdout)


def test_conntrack_entries_no_longer_admitted_are_deleted_in_process() -> None:
    """daemon.conntrack over ctnetlink on the kernel: two UDP flows from a peer namespace into a pod, both
    admitted; then the rules admit only port 5000: the pass deletes the flow to 5001 (by its own tuple) and
    keeps the one to 5000 and a flow that is not on the interface's address."""
    import ipaddress as ipa

    from daemon.conntrack import ConntrackCleaner

    def udp_rules(*ports: int) -> InterfaceRules:
        allow = Allow(
            "ns/udp ingress[0]", (ipa.ip_network("10.99.0.2/32"),), tuple(PortRange("udp", p, p) for p in ports)
        )
        return InterfaceRules("ns/pod", "p0", "ns/net", DirectionRules(True, (allow,), ("ns/udp",)), ifindex=index)

    with NetNS.create("ctpod") as pod, NetNS.create("ctpeer") as peer:  # the module fixture checks the host
        pod.add_veth("p0", "q0")
        index = pod.link("p0").index  # type: ignore[union-attr]
        pod.run("ip", "link", "set", "q0", "netns", peer.name)
        pod.add_address("p0", "10.99.0.1/24")
        pod.set_up("p0")
        peer.add_address("q0", "10.99.0.2/24")
        peer.set_up("q0")
        applier = Applier(real_nft, RenderOptions())
        try:
            applier.apply(pod.path, udp_rules(5000, 5001))
            send = (
                "import socket\n"
                "for port in (5000, 5001):\n"
                "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "    s.sendto(b'x', ('10.99.0.1', port))\n"
            )
            peer.run("python3", "-c", send)
            pod.run(
                "python3",
                "-c",
                "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', 9))",
            )

            def flows() -> set[tuple[str, int | None]]:
                from daemon.conntrack import dump_request, parse_entry

                with applier.netlink_socket(pod.path) as sock:
                    entries = [parse_entry(p) for _, p in sock.dump(dump_request, "conntrack dump")]
                return {(str(e.flow.dst), e.flow.dport) for e in entries if e is not None and e.flow.protocol == "udp"}

            assert {("10.99.0.1", 5000), ("10.99.0.1", 5001), ("127.0.0.1", 9)} <= flows()
            narrowed = udp_rules(5000)
            applier.apply(pod.path, narrowed, udp_rules(5000, 5001))
            cleaner = ConntrackCleaner(RenderOptions(), applier.netlink_socket)
            assert cleaner.clean(pod.path, narrowed, [ipa.ip_address("10.99.0.1")]) == 1
            left = flows()
            assert ("10.99.0.1", 5001) not in left
            assert {("10.99.0.1", 5000), ("127.0.0.1", 9)} <= left
            assert cleaner.clean(pod.path, narrowed, [ipa.ip_address("10.99.0.1")]) == 0
        finally:
            applier.close()


def test_answers_forged_by_another_socket_in_the_pod_are_not_taken_for_the_kernels(pod: NetNS, nft: NetlinkNft) -> None:
    """mnpd's kept nfnetlink socket and its libnftables context's socket live in the pod netns, where a process
    with NET_ADMIN may send netlink messages to them by port id (listed in /proc/net/netlink there), with the
    sequence numbers they use next. Junk made every listing fail ("cache initialization failed: Protocol error":
    the tamper check never ran again), a forged "done" cut the count that keeps a filled table from being listed
    short, a forged acknowledgement passed a batch the kernel refused as applied. Our sockets are connected to
    the kernel (which refuses the others' messages) and read only its answers."""
    import contextlib
    import socket
    import struct

    from shared.netns import in_netns
    from shared.nft import netlink
    from shared.nft.nfnl import NLMSG_DONE, NLMSG_ERROR

    def nfnetlink_ports() -> list[int]:
        with open("/proc/thread-self/net/netlink") as listing:
            lines = listing.read().splitlines()[1:]
        return [int(f[2]) for f in (line.split() for line in lines) if f[1] == "12" and f[2] != "0"]

    pod.run("nft", "add table inet mnp; add set inet mnp s { type ipv4_addr; elements = { 10.0.0.1, 10.0.0.2 } }")
    assert len(nft.list_table().sets["s"].elements) == 2  # the libnftables context is open
    sock = nft.socket
    forger = in_netns(pod.path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12))
    try:
        forger.bind((0, 0))
        ports = set(in_netns(pod.path, nfnetlink_ports)) - {forger.getsockname()[0]}
        assert sock.sock.getsockname()[0] in ports and len(ports) >= 2

        def forge(kind: int) -> None:
            for port in ports:
                for seq in range(sock._seq + 1, sock._seq + 40):
                    body = struct.pack("=i", 0) + (bytes(16) if kind == NLMSG_ERROR else b"")
                    with contextlib.suppress(ConnectionRefusedError):  # refused by the kernel: the point
                        forger.sendto(struct.pack("=IHHII", 16 + len(body), kind, 0, seq, port) + body, (port, 0))

        forge(NLMSG_DONE)
        forge(NLMSG_ERROR)
        assert netlink.table_objects(sock, "inet", "mnp", 1000) == 3  # the set and its two elements
        assert len(nft.list_table().sets["s"].elements) == 2
        nft.run(render_interface(OLD))
        forge(NLMSG_ERROR)  # "acknowledged", for the batch below
        refused = Transaction().add(Element("ingress_net1_v4_peers", "192.0.2.1", "jump nowhere"))
        with pytest.raises(NotFoundError):
            nft.apply_delta(refused)
    finally:
        forger.close()
