"""Port groups with real packets: two namespaces joined by a veth, the server's `net1` (and then the client's
`eth0`) programmed through the daemon's backend (shared.nft.backend.NetlinkNft: full forms through libnftables,
element deltas over netlink), and TCP/UDP connections over IPv4 and IPv6 that must pass or not.

What the layout must get right (shared/nft/README.md): a peer admitted by two allows with different ports gets
the union; an allow of every port admits its peer on any port; an ipBlock's except stays closed; an endPort range
is a range; a port change — narrowing and widening — reaches the kernel as a few port-set elements and changes
what passes at once; egress named ports that resolve to different numbers for different peers open each peer
only on its own port. SCTP is covered by the tracer and the Fake (tests/unit/test_trace.py): this kernel has no
SCTP sockets to send it with.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from daemon.testbed.netns import NetNS, Probe, Server, run_probes
from shared.compiler import subtract
from shared.netns import interface_index
from shared.nft import libnft
from shared.nft.backend import NetlinkNft
from shared.nft.objects import Element
from shared.nft.pool import ContextPool
from shared.nft.render import DEFAULTS, render_direction, render_interface, render_update
from shared.rules import INGRESS, OPEN, Allow, DirectionRules, InterfaceRules, IPNetwork, PortRange, collapse
from tests.support.host import host_untouched

pytestmark = [pytest.mark.netns, pytest.mark.skipif(not libnft.available(), reason="no libnftables.so.1")]

SERVER4, SERVER4_B, SERVER6 = "10.77.0.1", "10.77.0.4", "fd77::1"
WEB4, EXCEPTED4, ADMIN4, WEB6, OTHER6 = "10.77.0.2", "10.77.0.3", "10.77.0.9", "fd77::2", "fd77::3"
PORTS = [("tcp", 80), ("tcp", 81), ("tcp", 8080), ("tcp", 8081), ("tcp", 8082), ("udp", 53)]


def nets(*texts: str) -> tuple[IPNetwork, ...]:
    return collapse(ipaddress.ip_network(t) for t in texts)


def web(*ports: PortRange) -> Allow:
    return Allow("ns/web ingress[0]", nets(f"{WEB4}/32", f"{WEB6}/128"), ports)


# an ipBlock 10.77.0.0/28 except 10.77.0.3/32, as the compiler hands it over; it covers WEB4 too
OTHER = Allow(
    "ns/other ingress[0]",
    collapse(subtract(ipaddress.ip_network("10.77.0.0/28"), nets("10.77.0.3/32"))),
    (PortRange("tcp", 81, 81), PortRange("udp", 53, 53)),
)
ADMIN = Allow("ns/admin ingress[0]", nets(f"{ADMIN4}/32"), None)
WIDE = web(PortRange("tcp", 80, 80), PortRange("tcp", 8080, 8081))  # endPort: 8080-8081


@dataclass
class Pair:
    server: NetNS
    client: NetNS
    nft: NetlinkNft
    client_nft: NetlinkNft

    def server_rules(self, *allows: Allow) -> InterfaceRules:
        ingress = DirectionRules(True, allows, ("ns/admin", "ns/other", "ns/web"))
        return InterfaceRules("ns/server", "net1", "ns/net", ingress, OPEN, interface_index(self.server.path, "net1"))

    def port_change(self, old: InterfaceRules, new: InterfaceRules) -> None:
        """Apply a port change as the daemon does: an element delta (over netlink), a few port-set elements of
        the groups that hold the changed allow, no peer element."""
        delta = render_update(old, new)
        assert delta is not None and {type(op.obj) for op in delta.operations} == {Element}
        assert len(delta) <= 6 and all(op.obj.set.endswith("_ports") for op in delta.operations), str(delta)
        self.nft.apply_delta(delta)

    def passes(self, *probes: tuple[str, str, str, int]) -> list[bool]:
        """Whether each (source, destination, protocol, port) connection from the client gets its answer."""
        results = run_probes(self.client, [Probe(proto, dst, port, 0.5, src) for src, dst, proto, port in probes])
        return [r.allowed for r in results]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    pool = ContextPool(keep=2)
    with host_untouched(), NetNS.create("pgsrv") as server, NetNS.create("pgcli") as client:
        server.run("ip", "link", "add", "net1", "type", "veth", "peer", "name", "eth0", "netns", client.name)
        for ns, ifname, addresses in (
            (server, "net1", [f"{SERVER4}/24", f"{SERVER4_B}/24", f"{SERVER6}/64", "fd77::4/64"]),
            (client, "eth0", [f"{WEB4}/24", f"{EXCEPTED4}/24", f"{ADMIN4}/24", f"{WEB6}/64", f"{OTHER6}/64"]),
        ):
            for address in addresses:
                ns.run("ip", "addr", "add", address, "dev", ifname, *(["nodad"] if ":" in address else []))
            ns.set_up(ifname)
        backends = NetlinkNft(server.path, pool), NetlinkNft(client.path, pool)
        try:
            with Server(server, PORTS):
                yield Pair(server, client, *backends)
        finally:
            for backend in backends:
                backend.close()
            pool.close()


def test_union_every_port_except_and_ranges_then_a_port_change_both_ways(pair: Pair) -> None:
    wide = pair.server_rules(WIDE, OTHER, ADMIN)
    pair.nft.run(render_interface(wide))
    assert pair.passes(
        (WEB4, SERVER4, "tcp", 80),  # web
        (WEB4, SERVER4, "tcp", 81),  # other: the union of the two allows that admit WEB4
        (WEB4, SERVER4, "tcp", 8081),  # web's endPort range
        (WEB4, SERVER4, "udp", 53),  # other
        (WEB4, SERVER4, "tcp", 8082),  # neither
        (EXCEPTED4, SERVER4, "tcp", 81),  # the ipBlock's except
        (ADMIN4, SERVER4, "tcp", 8082),  # every port
        (ADMIN4, SERVER4, "udp", 53),
        (WEB6, SERVER6, "tcp", 8080),  # web over IPv6
        (WEB6, SERVER6, "tcp", 81),  # other has no IPv6 prefix
        (OTHER6, SERVER6, "tcp", 80),
    ) == [True, True, True, True, False, False, True, True, True, False, False]

    narrow = pair.server_rules(web(PortRange("tcp", 80, 80)), OTHER, ADMIN)
    pair.port_change(wide, narrow)
    assert pair.passes(
        (WEB4, SERVER4, "tcp", 80),
        (WEB4, SERVER4, "tcp", 8080),
        (WEB4, SERVER4, "tcp", 81),
        (WEB6, SERVER6, "tcp", 8081),
        (WEB6, SERVER6, "tcp", 80),
    ) == [True, False, True, False, True]

    wider = pair.server_rules(web(PortRange("tcp", 80, 80), PortRange("tcp", 8080, 8082)), OTHER, ADMIN)
    pair.port_change(narrow, wider)
    assert pair.passes(
        (WEB4, SERVER4, "tcp", 8082),
        (WEB6, SERVER6, "tcp", 8082),
        (EXCEPTED4, SERVER4, "tcp", 8082),
        (OTHER6, SERVER6, "tcp", 8082),
    ) == [True, True, False, False]


def test_a_new_rule_gets_a_new_port_group_and_loses_it(pair: Pair) -> None:
    """A rule that opens tcp/8082 to the excepted address: a combination of allows no peer had — a delta that
    adds a port group (through libnftables) — and back, which removes it."""
    before = pair.server_rules(WIDE, OTHER, ADMIN)
    extra = Allow("ns/extra ingress[0]", nets(f"{EXCEPTED4}/32"), (PortRange("tcp", 8082, 8082),))
    after = pair.server_rules(WIDE, OTHER, ADMIN, extra)
    pair.nft.run(render_interface(before))
    delta = render_update(before, after)
    assert delta is not None and {type(op.obj) for op in delta.operations} != {Element}
    pair.nft.apply_delta(delta)
    assert pair.passes((EXCEPTED4, SERVER4, "tcp", 8082), (EXCEPTED4, SERVER4, "tcp", 81)) == [True, False]
    back = render_update(after, before)
    assert back is not None
    pair.nft.apply_delta(back)
    assert pair.passes((EXCEPTED4, SERVER4, "tcp", 8082), (WEB4, SERVER4, "tcp", 80)) == [False, True]
    groups = {name for name in pair.nft.list_table().chains if name.startswith("g_")}
    assert groups == {g.chain for g in render_direction("net1", INGRESS, before.ingress, DEFAULTS).groups}


def test_egress_named_ports_resolved_per_peer(pair: Pair) -> None:
    """One egress rule with a named port that the two destinations resolve to different numbers (the compiler
    gives one allow per resolution, same rule): each destination is open on its own port only."""
    pair.nft.run(render_interface(pair.server_rules().replace(ingress=OPEN)))
    named = DirectionRules(
        True,
        (
            Allow("ns/named egress[0]", nets(f"{SERVER4}/32"), (PortRange("tcp", 80, 80),)),
            Allow("ns/named egress[0]", nets(f"{SERVER4_B}/32"), (PortRange("tcp", 81, 81),)),
        ),
        ("ns/named",),
    )
    client = InterfaceRules("ns/client", "eth0", "ns/net", OPEN, named, interface_index(pair.client.path, "eth0"))
    pair.client_nft.run(render_interface(client))
    try:
        assert pair.passes(
            (WEB4, SERVER4, "tcp", 80),
            (WEB4, SERVER4, "tcp", 81),
            (WEB4, SERVER4_B, "tcp", 81),
            (WEB4, SERVER4_B, "tcp", 80),
        ) == [True, False, True, False]
    finally:
        pair.client_nft.run(render_interface(client.replace(egress=OPEN)))


# ----------------------------------------------------------------------------------------- SCTP, raw
#
# This kernel has no SCTP sockets (no sctp module), but netfilter and conntrack know SCTP: an INIT chunk sent on
# a raw IP socket is a new SCTP connection to them. The server counts what its own raw socket for protocol 132
# receives — raw sockets get a packet after the input hook accepted it.


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the SCTP checksum (RFC 9260, appendix A)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def sctp_init(sport: int, dport: int, tag: int) -> bytes:
    """An SCTP packet holding one INIT chunk (verification tag 0, as an INIT must have)."""
    import struct

    chunk = struct.pack("!BBHIIHHI", 1, 0, 20, tag, 65535, 1, 1, tag)
    head = struct.pack("!HHII", sport, dport, 0, 0)
    checksum = _crc32c(head + chunk)
    return head[:8] + struct.pack("<I", checksum) + chunk


def test_sctp_by_port_group(pair: Pair) -> None:
    import select
    import socket

    from shared.netns import in_netns

    def raw(path: str) -> socket.socket:
        return in_netns(path, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 132))

    rules = pair.server_rules(Allow("ns/sctp ingress[0]", nets(f"{WEB4}/32"), (PortRange("sctp", 9, 9),)), OTHER)
    pair.nft.run(render_interface(rules))
    receiver, sender = raw(pair.server.path), raw(pair.client.path)
    try:
        for n, (source, port) in enumerate([(WEB4, 9), (WEB4, 10), (EXCEPTED4, 9), (ADMIN4, 9)]):
            sender.bind((source, 0))  # a raw socket may bind again: the source of what it sends next
            sender.sendto(sctp_init(40000 + n, port, 1000 + n), (SERVER4, 0))
        got = []
        while select.select([receiver], [], [], 0.5)[0]:  # until nothing more arrives for 0.5 s
            packet = receiver.recv(2048)
            got.append((socket.inet_ntoa(packet[12:16]), int.from_bytes(packet[22:24], "big")))
        assert got == [(WEB4, 9)]
    finally:
        receiver.close()
        sender.close()
