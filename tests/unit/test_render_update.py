"""`render_update`: a delta on top of `render_interface(old)` leaves exactly what `render_interface(new)` would.

Checked on the in-memory Fake for generated pairs of rules (peers joining and leaving, overlapping and adjacent
prefixes, port ranges widening and narrowing, provenance changing), and on the kernel in
tests/integration/test_render_kernel.py. Also: when the chains' rules differ the delta refuses (None), and a
delta on a table that does not hold `old` fails as a whole.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.nft.errors import NftError
from shared.nft.fake import FakeNft
from shared.nft.render import render_interface, render_update
from shared.rules import Allow, DirectionRules, InterfaceRules, PortRange, collapse

PREFIXES = [
    "192.0.2.0/28",
    "192.0.2.8/29",
    "192.0.2.16/28",
    "192.0.2.10/32",
    "192.0.2.11/32",
    "192.0.2.32/32",
    "198.51.100.7/32",
    "2001:db8:1::/120",
    "2001:db8:1::10/128",
    "2001:db8:1::11/128",
]
PORTS = [
    PortRange("tcp", 80, 80),
    PortRange("tcp", 8000, 8100),
    PortRange("tcp", 8080, 8081),
    PortRange("udp", 53, 53),
    PortRange("sctp", 5000, 5000),
]
SOURCES = ["ns1/a ingress[0]", "ns1/b ingress[0]", "ns1/c ingress[1]"]

allows = st.builds(
    lambda source, peers, ports: Allow(source, collapse(ipaddress.ip_network(p) for p in peers), ports),
    st.sampled_from(SOURCES),
    st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=5, unique=True),
    st.one_of(st.none(), st.lists(st.sampled_from(PORTS), min_size=1, max_size=3, unique=True).map(tuple)),
)
# Fills all four sets of a direction whatever else is generated, so its lookup rules stay the same and most
# generated pairs take the delta path.
ANCHORS = (
    Allow(
        "ns1/anchor ingress[0]",
        collapse([ipaddress.ip_network("203.0.113.1"), ipaddress.ip_network("2001:db8:9::1")]),
        None,
    ),
    Allow(
        "ns1/anchor ingress[1]",
        collapse([ipaddress.ip_network("203.0.113.2"), ipaddress.ip_network("2001:db8:9::2")]),
        (PortRange("tcp", 22, 22),),
    ),
)
directions = st.builds(
    lambda allowed, anchored: DirectionRules(True, (*ANCHORS, *allowed) if anchored else tuple(allowed), ("ns1/p",)),
    st.lists(allows, min_size=1, max_size=4),
    st.sampled_from([True, True, True, False]),  # mostly anchored; sometimes a lookup rule comes or goes
)


def interface(ingress: DirectionRules, egress: DirectionRules) -> InterfaceRules:
    return InterfaceRules("ns1/pod", "net1", "ns1/net-a", ingress, egress, ifindex=2)


@settings(max_examples=300, deadline=None)
@given(directions, directions, directions, directions)
def test_delta_leaves_what_a_full_transaction_leaves(
    i1: DirectionRules, e1: DirectionRules, i2: DirectionRules, e2: DirectionRules
) -> None:
    old, new = interface(i1, e1), interface(i2, e2)
    delta = render_update(old, new)
    expected = FakeNft.from_transaction(render_interface(new)).list_table()
    if delta is None:  # a set went from empty to filled or back: its lookup rule appears or goes
        return
    nft = FakeNft.from_transaction(render_interface(old))
    nft.run(delta)
    assert nft.list_table() == expected  # exactly: the port groups no peer uses any more are gone too
    groups_before = {n for n in FakeNft.from_transaction(render_interface(old)).list_table().chains if n[:2] == "g_"}
    if groups_before == {n for n in expected.chains if n.startswith("g_")}:  # only elements change
        assert not any(op.obj.__class__.__name__ != "Element" for op in delta.operations)


def test_same_rules_no_operations() -> None:
    rules = interface(
        DirectionRules(True, (Allow(SOURCES[0], collapse([ipaddress.ip_network("192.0.2.1/32")]), None),)),
        DirectionRules(True),
    )
    delta = render_update(rules, rules)
    assert delta is not None and len(delta) == 0


def test_chain_changes_need_the_full_transaction() -> None:
    peer = Allow(SOURCES[0], collapse([ipaddress.ip_network("192.0.2.1/32")]), None)
    isolated = interface(DirectionRules(True, (peer,), ("ns1/p",)), DirectionRules(False))
    assert render_update(isolated, interface(DirectionRules(False), DirectionRules(False))) is None
    assert render_update(isolated, interface(DirectionRules(True, (peer,), ("ns1/q",)), DirectionRules(False))) is None
    renamed = InterfaceRules("ns1/pod", "net2", "ns1/net-a", isolated.ingress, isolated.egress, ifindex=3)
    assert render_update(isolated, renamed) is None


def test_a_delta_on_a_table_that_does_not_hold_old_fails_whole() -> None:
    a = Allow(SOURCES[0], collapse([ipaddress.ip_network("192.0.2.1/32")]), None)
    b = Allow(SOURCES[0], collapse([ipaddress.ip_network("192.0.2.2/32")]), None)
    c = Allow(SOURCES[0], collapse([ipaddress.ip_network("192.0.2.3/32")]), None)
    old, new = (
        interface(DirectionRules(True, (a,)), DirectionRules(True)),
        interface(DirectionRules(True, (c,)), DirectionRules(True)),
    )
    nft = FakeNft.from_transaction(render_interface(interface(DirectionRules(True, (b,)), DirectionRules(True))))
    before = nft.list_table()
    delta = render_update(old, new)
    assert delta is not None
    with pytest.raises(NftError):
        nft.run(delta)
    assert nft.list_table() == before


def test_a_delta_dearer_than_the_full_transaction_is_not_offered() -> None:
    """nft deletes interval elements one lookup at a time: replacing every peer of a 300-peer map costs more as
    a delta than as a full transaction, removing one peer does not — and a port change of all 300 peers is a
    change of one port element (the peers map to the allow's port group, whose name does not depend on ports)."""
    peers = collapse(ipaddress.ip_network(f"10.0.{i // 200}.{i % 200 + 1}") for i in range(0, 600, 2))
    moved = collapse(ipaddress.ip_network(f"10.1.{i // 200}.{i % 200 + 1}") for i in range(0, 600, 2))
    assert len(peers) == 300

    def ports(*numbers: int, peers: tuple[ipaddress.IPv4Network, ...] = peers) -> InterfaceRules:
        allow = Allow(SOURCES[0], peers, tuple(PortRange("tcp", n, n) for n in numbers))
        return interface(DirectionRules(True, (allow,), ("ns1/p",)), DirectionRules(True))

    assert render_update(ports(8080), ports(8080, peers=moved)) is None
    one_less = render_update(ports(8080), ports(8080, peers=peers[1:]))
    assert one_less is not None and len(one_less) == 1
    narrowed = render_update(ports(8080, 8081), ports(8080))
    assert narrowed is not None
    assert [(op.verb, op.obj.key) for op in narrowed.operations] == [
        ("delete", "tcp . 8080-8081"),
        ("add", "tcp . 8080"),
    ]


def test_a_policy_name_holding_a_newline_cannot_take_another_port_group_s_name() -> None:
    """Port groups are named by a hash of their allows' sources. Policy names reach the renderer unvalidated
    (hand-written manifests), so a name with a newline must not spell the sources of a legitimate group: were the
    hash taken over the sources merely joined by newlines, `a ingress[0]\\nns1/b` would collide with the group of
    `a` and `b` together and the whole pod would be refused. Both groups render, each peer reaches only its ports."""
    from shared.nft.trace import Packet, trace

    def net(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return collapse([ipaddress.ip_network(text)])

    tcp80, tcp443 = (PortRange("tcp", 80, 80),), (PortRange("tcp", 443, 443),)
    rules = interface(
        DirectionRules(
            True,
            (
                Allow("ns1/a ingress[0]", net("192.0.2.1/32"), tcp80),
                Allow("ns1/b ingress[0]", net("192.0.2.1/32"), tcp80),
                Allow("ns1/a ingress[0]\nns1/b ingress[0]", net("192.0.2.2/32"), tcp443),
            ),
            ("ns1/a", "ns1/b"),
        ),
        DirectionRules(False),
    )
    table = FakeNft.from_transaction(render_interface(rules)).list_table()
    assert len([name for name in table.chains if name.startswith("g_")]) == 2

    def verdict(peer: str, port: int) -> str:
        return trace(table, Packet("input", "net1", peer, "192.0.2.100", "tcp", port, ifindex=2)).verdict

    cases = [("192.0.2.1", 80), ("192.0.2.1", 443), ("192.0.2.2", 443), ("192.0.2.2", 80)]
    assert [verdict(peer, port) for peer, port in cases] == ["accept", "drop", "accept", "drop"]
