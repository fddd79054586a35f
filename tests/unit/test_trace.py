"""The packet tracer on rendered tables: where packets go, and which allow let them through.

Address plan (RFC 5737 / RFC 3849): the pod under test has 192.0.2.1 and 2001:db8:1::1 on net1. Other pods of
the network are in 192.0.2.0/24 and 2001:db8:1::/64 — 192.0.2.10 and 2001:db8:1::10 are the web clients,
192.0.2.0/28 and 2001:db8:1::/120 the monitoring range, 192.0.2.16 a neighbour just outside it. Hosts outside the
cluster: 198.51.100.7 (admin), 203.0.113.0/24 and 2001:db8:2::/48 (the "internet" ipBlock).
"""

from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any

import pytest

from shared.compiler import subtract
from shared.nft.fake import ChainView, FakeNft, RuleView, TableView
from shared.nft.objects import Chain, Element, Rule, Set, Table
from shared.nft.render import DROP_LOG_GROUP, ND_TYPES, RenderOptions, chain_name, drop_log_rule, render_interface
from shared.nft.trace import Packet, Trace, TraceError, send, table_from_nft_json, trace
from shared.nft.transaction import Transaction
from shared.rules import INGRESS, Allow, DirectionRules, InterfaceRules, IPNetwork, PortRange, collapse

POD4, POD6 = "192.0.2.1", "2001:db8:1::1"
PENDING = "default deny (pending: not yet programmed)"


def nets(*texts: str) -> tuple[IPNetwork, ...]:
    return collapse(ipaddress.ip_network(text) for text in texts)


WEB = Allow(
    "ns1/web ingress[0]",
    nets("192.0.2.10", "192.0.2.11", "2001:db8:1::10"),
    (PortRange("tcp", 8000, 8100), PortRange("udp", 53, 53)),
)
MONITORING = Allow(
    "ns1/monitoring ingress[0]", nets("192.0.2.0/28", "2001:db8:1::/120"), (PortRange("tcp", 8080, 9090),)
)
ADMIN = Allow("ns1/admin ingress[0]", nets("198.51.100.7"), None)
INTERNET = Allow(
    "ns1/internet egress[0]",
    collapse(
        [
            *subtract(ipaddress.ip_network("203.0.113.0/24"), nets("203.0.113.128/25", "203.0.113.64/27")),
            *subtract(ipaddress.ip_network("2001:db8:2::/48"), nets("2001:db8:2:ff::/64")),
        ]
    ),
    None,
)

SERVER = InterfaceRules(
    "ns1/server", "net1", "ns1/net", ingress=DirectionRules(True, (WEB, MONITORING, ADMIN), ("ns1/web",))
)
CLIENT = InterfaceRules(
    "ns1/client",
    "net1",
    "ns1/net",
    ingress=DirectionRules(True, (), ("ns1/deny-all",)),
    egress=DirectionRules(True, (INTERNET,), ("ns1/internet",)),
)


def table(rules: InterfaceRules, options: RenderOptions | None = None) -> TableView:
    return FakeNft.from_transaction(
        render_interface(rules.at(rules.ifindex or 2), options or RenderOptions())
    ).list_table()


def inbound(src: str, proto: str = "tcp", port: int | None = None, **kw: Any) -> Packet:
    """A packet arriving on net1 from `src` for the pod."""
    dst = POD6 if ":" in src else POD4
    return Packet("input", kw.pop("ifname", "net1"), src, dst, proto, port, **kw)


def outbound(dst: str, proto: str = "tcp", port: int | None = None, **kw: Any) -> Packet:
    """A packet the pod sends out of net1 to `dst`."""
    src = POD6 if ":" in dst else POD4
    return Packet("output", kw.pop("ifname", "net1"), src, dst, proto, port, **kw)


def assert_trace(result: Trace, verdict: str, comment: str | None) -> None:
    assert (result.verdict, result.comment) == (verdict, comment), str(result)


# ----------------------------------------------------------------------------------------- pending


@pytest.mark.parametrize(
    "packet",
    [
        inbound("192.0.2.10", "tcp", 80),
        inbound("2001:db8:1::10", "udp", 53),
        inbound("192.0.2.10", "icmp"),
        inbound("2001:db8:1::10", "ipv6-icmp", icmpv6_type="echo-request"),
        outbound("203.0.113.5", "tcp", 443),
        outbound("2001:db8:2::1", "sctp", 9),
    ],
)
def test_pending_drops_new_traffic_both_ways(packet: Packet) -> None:
    assert_trace(trace(table(InterfaceRules.pending("net1", ifindex=2)), packet), "drop", PENDING)


@pytest.mark.parametrize("nd_type", ND_TYPES.split(", "))
def test_pending_lets_neighbour_discovery_through_both_ways(nd_type: str) -> None:
    pending = table(InterfaceRules.pending("net1", ifindex=2))
    for packet in (
        inbound("fe80::2", "ipv6-icmp", icmpv6_type=nd_type),
        Packet("output", "net1", "fe80::1", "ff02::1:ff00:2", "ipv6-icmp", icmpv6_type=nd_type),
    ):
        assert_trace(trace(pending, packet), "accept", "IPv6 neighbour discovery")


@pytest.mark.parametrize("ifname", ["lo", "eth0", "net2", "net10"])
def test_other_interfaces_are_untouched(ifname: str) -> None:
    pending = table(InterfaceRules.pending("net1", ifindex=2))
    for packet in (
        inbound("192.0.2.10", "tcp", 80, ifname=ifname),
        outbound("2001:db8:2::1", "udp", 53, ifname=ifname),
    ):
        result = trace(pending, packet)
        assert result == Trace("accept"), "no map entry: past the vmap, to the base chain's policy"


# ----------------------------------------------------------------------------------------- conntrack


def test_established_and_related_are_accepted_even_from_a_denied_peer() -> None:
    for state in ("established", "related"):
        result = trace(
            table(InterfaceRules.pending("net1", ifindex=2)), inbound("203.0.113.9", "tcp", 22, ct_state=state)
        )
        assert result.verdict == "accept"
        assert result.steps[-1].rule.text == "ct state established,related accept"


def test_invalid_is_dropped_even_from_an_allowed_peer() -> None:
    result = trace(table(SERVER), inbound("198.51.100.7", "tcp", 22, ct_state="invalid"))
    assert_trace(result, "drop", None)
    assert result.steps[-1].rule.text == "ct state invalid drop"


# ----------------------------------------------------------------------------------------- peers × ports


@pytest.mark.parametrize(
    ("packet", "verdict", "why"),
    [
        (inbound("192.0.2.10", "tcp", 8000), "accept", "ns1/web ingress[0]"),
        (inbound("192.0.2.11", "tcp", 8079), "accept", "ns1/web ingress[0]"),
        (inbound("192.0.2.10", "udp", 53), "accept", "ns1/web ingress[0]"),
        (inbound("192.0.2.3", "tcp", 9090), "accept", "ns1/monitoring ingress[0]"),
        (inbound("198.51.100.7", "sctp", 1), "accept", "ns1/admin ingress[0]"),
        (inbound("198.51.100.7", "icmp"), "accept", "ns1/admin ingress[0]"),
        # a neighbour of the allowed peers, another port, another protocol
        (inbound("192.0.2.16", "tcp", 9000), "drop", "default deny (ns1/web)"),
        (inbound("192.0.2.12", "tcp", 8000), "drop", "default deny (ns1/web)"),
        (inbound("198.51.100.8", "tcp", 8000), "drop", "default deny (ns1/web)"),
        (inbound("192.0.2.10", "tcp", 9091), "drop", "default deny (ns1/web)"),
        (inbound("192.0.2.10", "tcp", 7999), "drop", "default deny (ns1/web)"),
        (inbound("192.0.2.3", "udp", 53), "drop", "default deny (ns1/web)"),
        (inbound("192.0.2.10", "tcp", 53), "drop", "default deny (ns1/web)"),
        (inbound("192.0.2.10", "sctp", 8000), "drop", "default deny (ns1/web)"),
        (inbound("192.0.2.10", "icmp"), "drop", "default deny (ns1/web)"),
        # IPv6
        (inbound("2001:db8:1::10", "tcp", 8050), "accept", "ns1/web ingress[0]"),
        (inbound("2001:db8:1::10", "tcp", 8080), "accept", "ns1/monitoring ingress[0], ns1/web ingress[0]"),
        (inbound("2001:db8:1::ff", "tcp", 8080), "accept", "ns1/monitoring ingress[0]"),
        (inbound("2001:db8:1::100", "tcp", 8080), "drop", "default deny (ns1/web)"),
        (inbound("2001:db8:1::11", "udp", 53), "drop", "default deny (ns1/web)"),
        (inbound("2001:db8:1::10", "ipv6-icmp", icmpv6_type="echo-request"), "drop", "default deny (ns1/web)"),
        # egress is not isolated
        (outbound("203.0.113.200", "tcp", 25), "accept", "not isolated for egress"),
    ],
)
def test_isolated_ingress(packet: Packet, verdict: str, why: str) -> None:
    assert_trace(trace(table(SERVER), packet), verdict, why)


@pytest.mark.parametrize(
    ("dst", "verdict"),
    [
        ("203.0.113.5", "accept"),
        ("203.0.113.63", "accept"),
        ("203.0.113.64", "drop"),  # except 203.0.113.64/27
        ("203.0.113.95", "drop"),
        ("203.0.113.96", "accept"),
        ("203.0.113.127", "accept"),
        ("203.0.113.128", "drop"),  # except 203.0.113.128/25
        ("203.0.113.255", "drop"),
        ("198.51.100.7", "drop"),  # outside the block
        ("2001:db8:2::1", "accept"),
        ("2001:db8:2:fe:ffff:ffff:ffff:ffff", "accept"),
        ("2001:db8:2:ff::1", "drop"),  # except 2001:db8:2:ff::/64
        ("2001:db8:2:100::1", "accept"),
        ("2001:db8:3::1", "drop"),
    ],
)
def test_egress_ipblock_except_holes(dst: str, verdict: str) -> None:
    client = table(CLIENT)
    for proto, port in (("tcp", 443), ("udp", 53)):
        assert_trace(
            trace(client, outbound(dst, proto, port)),
            verdict,
            "ns1/internet egress[0]" if verdict == "accept" else "default deny (ns1/internet)",
        )
    assert_trace(trace(client, inbound("203.0.113.5", "tcp", 80)), "drop", "default deny (ns1/deny-all)")


def test_accept_icmp_options() -> None:
    opened = table(InterfaceRules.pending("net1", ifindex=2), RenderOptions(accept_icmp=True, accept_icmpv6=True))
    assert_trace(trace(opened, inbound("203.0.113.9", "icmp")), "accept", "--accept-icmp")
    assert_trace(
        trace(opened, outbound("2001:db8:2::9", "ipv6-icmp", icmpv6_type="echo-request")), "accept", "--accept-icmpv6"
    )
    assert_trace(trace(opened, inbound("203.0.113.9", "tcp", 1)), "drop", PENDING)
    only_v4 = table(InterfaceRules.pending("net1", ifindex=2), RenderOptions(accept_icmp=True))
    assert_trace(trace(only_v4, inbound("2001:db8:2::9", "ipv6-icmp", icmpv6_type="echo-reply")), "drop", PENDING)


def test_interface_with_a_hashed_name() -> None:
    vlan = table(InterfaceRules.pending("eth0.100", ifindex=4))
    result = trace(vlan, inbound("192.0.2.10", "tcp", 80, ifname="eth0.100"))
    assert_trace(result, "drop", PENDING)
    chain = chain_name(INGRESS, "eth0.100")
    assert [step.chain for step in result.steps] == ["input", chain, chain]  # the drop log, then the drop
    assert result.steps[1].rule.text == drop_log_rule("eth0.100", INGRESS)  # the real name, not the hash
    assert trace(vlan, inbound("192.0.2.10", "tcp", 80, ifname="eth0")).verdict == "accept"


def test_steps_show_the_way() -> None:
    """Dispatch, the peer map's element (a jump to the port group of the allows that admit the peer), the port
    group's port set: three lookups."""
    result = trace(table(SERVER), inbound("192.0.2.10", "udp", 53))
    group = result.steps[2].chain
    assert group.startswith("g_ingress_net1_")
    assert [(step.chain, step.index) for step in result.steps] == [("input", 0), ("ingress_net1", 3), (group, 0)]
    assert result.steps[0].element is not None and result.steps[0].element.value == "jump ingress_net1"
    both = "ns1/monitoring ingress[0], ns1/web ingress[0]"
    assert str(result) == (
        "input[0] iif vmap @ingress_ifindex  ← 2 : jump ingress_net1 (net1)\n"
        f"ingress_net1[3] ip saddr vmap @ingress_net1_v4_peers  ← 192.0.2.10/31 : jump {group} ({both})\n"
        f"{group}[0] meta l4proto . th dport @{group}_ports accept  # {both}  ← udp . 53 (ns1/web ingress[0])\n"
        "→ accept"
    )


# ----------------------------------------------------------------------------------------- the drop log


def test_the_drop_log_is_passed_by_refused_packets_only_and_decides_nothing() -> None:
    """`limit … log … group N` sits just before the counted drop: what reaches it is about to be dropped, and it
    sends the packet on (to the drop) — the verdicts are exactly those of a table without it."""
    log = (
        'limit rate 10/second burst 20 packets log prefix "mnp drop net1 ingress: " '
        f"group {DROP_LOG_GROUP} queue-threshold 1"
    )
    assert drop_log_rule("net1", INGRESS) == log
    server = table(SERVER)
    assert [r.text for r in server.chains["ingress_net1"].rules][-2:] == [log, "counter drop"]
    assert server.chains["ingress_net1"].rules[-2].packets is None, "the log rule has no counter"
    refused = trace(server, inbound("192.0.2.16", "tcp", 80))
    assert_trace(refused, "drop", "default deny (ns1/web)")
    assert [(s.chain, s.index, s.rule.text) for s in refused.steps[1:]] == [
        ("ingress_net1", 5, log),
        ("ingress_net1", 6, "counter drop"),
    ]
    assert str(refused).splitlines()[1] == f"ingress_net1[5] {log}"
    allowed = trace(server, inbound("192.0.2.10", "tcp", 8000))
    assert allowed.verdict == "accept" and all("log" not in s.rule.text for s in allowed.steps)
    established = trace(server, inbound("192.0.2.16", "tcp", 80, ct_state="established"))
    assert established.verdict == "accept" and len(established.steps) == 2

    quiet = RenderOptions(drop_log=False)
    for rules in (SERVER, CLIENT, InterfaceRules.pending("net1", ifindex=2)):
        logged, unlogged = table(rules), table(rules, quiet)
        assert not any("log" in r.text for c in unlogged.chains.values() for r in c.rules)
        for packet in (
            inbound("192.0.2.16", "tcp", 80),
            inbound("192.0.2.10", "udp", 53),
            inbound("2001:db8:1::11", "udp", 53),
            outbound("203.0.113.5", "tcp", 443),
            outbound("203.0.113.200", "tcp", 443),
            outbound("2001:db8:2:ff::1", "udp", 53),
        ):
            with_log, without = trace(logged, packet), trace(unlogged, packet)
            assert (with_log.verdict, with_log.comment) == (without.verdict, without.comment), packet
            assert [s.rule.text for s in with_log.steps if "log" not in s.rule.text] == [
                s.rule.text for s in without.steps
            ]


def test_open_directions_have_no_drop_log() -> None:
    egress = table(SERVER).chains["egress_net1"]
    assert [r.text for r in egress.rules][-1] == "accept" and not any("log" in r.text for r in egress.rules)


# ----------------------------------------------------------------------------------------- verdict semantics


def verdict_map_table(value: str) -> TableView:
    """input: `iifname vmap @ifaces` then `counter drop`; `net1` goes to an empty chain by `value`."""
    return FakeNft.from_transaction(
        Transaction()
        .add(Table())
        .add(Chain("input", hook="input"))
        .add(Chain("empty"))
        .add(Set("ifaces", "ifname", value_type="verdict"))
        .add(Rule("input", "iifname vmap @ifaces"))
        .add(Rule("input", "counter drop", "after the map"))
        .add(Element("ifaces", '"net1"', value))
    ).list_table()


@pytest.mark.parametrize(
    ("value", "verdict"),
    [
        ("jump empty", "drop"),  # back from the jump, on to the next rule
        ("goto empty", "accept"),  # no way back: the base chain's policy
        ("continue", "drop"),
        ("return", "accept"),
        ("accept", "accept"),
        ("drop", "drop"),
    ],
)
def test_verdict_map_values(value: str, verdict: str) -> None:
    assert trace(verdict_map_table(value), inbound("192.0.2.10", "tcp", 80)).verdict == verdict


def test_base_chain_policy_decides_at_the_end() -> None:
    dropping = TableView("inet", "mnp", {"input": ChainView("input", "input", "drop")}, {})
    assert trace(dropping, inbound("192.0.2.10", "tcp", 80)) == Trace("drop")
    assert trace(dropping, outbound("192.0.2.10", "tcp", 80)) == Trace("accept"), "no output chain"


# ----------------------------------------------------------------------------------------- failing loudly


@pytest.mark.parametrize(
    "rule",
    [
        "ip saddr 192.0.2.1 accept",  # a literal mnp never writes
        "tcp dport 80 accept",
        "ip saddr @peers counter accept",
        "ct state new,bogus accept",
        "meta l4proto gre accept",
        "iifname vmap @peers",  # the set is not an ifname map
        "ip6 saddr @peers accept",  # an IPv4 set looked up with an IPv6 address (whatever the packet)
        "ip saddr . meta l4proto . th dport @peers accept",  # a single-field set looked up with a concatenation
        "ip saddr @missing accept",
        "log prefix x drop",
        'log prefix "mnp drop net1 ingress: " group 667',  # a log without the limit: not the drop log mnp writes
        'limit rate over 10/second log prefix "x" group 667',
        'limit rate 10/second burst 20 packets log prefix "x" group 667 drop',
    ],
)
def test_rule_it_does_not_understand_raises(rule: str) -> None:
    view = TableView(
        "inet",
        "mnp",
        {"input": ChainView("input", "input", rules=(RuleView(rule),))},
        FakeNft.from_transaction(Transaction().add(Table()).add(Set("peers", "ipv4_addr", ("interval",))))
        .list_table()
        .sets,
    )
    with pytest.raises(TraceError):
        trace(view, inbound("192.0.2.10", "tcp", 80))


def test_packets_are_checked() -> None:
    for bad in (
        lambda: inbound("192.0.2.10", "tcp"),  # no port
        lambda: inbound("192.0.2.10", "icmp", 8),
        lambda: Packet("input", "net1", "192.0.2.10", POD6, "udp", 53),
        lambda: inbound("192.0.2.10", "ipv6-icmp"),
        lambda: inbound("192.0.2.10", "gre"),
        lambda: inbound("2001:db8:1::10", "tcp", 80, icmpv6_type="echo-request"),
    ):
        with pytest.raises(ValueError):
            bad()


# ----------------------------------------------------------------------------------------- counters


def test_send_counts_the_drops_of_a_fake() -> None:
    fake = FakeNft.from_transaction(render_interface(SERVER.at(2)))
    for packet in (
        inbound("192.0.2.16", "tcp", 80),
        inbound("192.0.2.10", "tcp", 8000),
        outbound("203.0.113.9", "udp", 1),
        inbound("192.0.2.17", "udp", 1),
    ):
        send(fake, packet)
    rules = fake.list_table().chains["ingress_net1"].rules
    assert [(rule.text, rule.packets) for rule in rules if rule.packets is not None] == [("counter drop", 2)]
    fake.run(render_interface(SERVER.at(2)))
    assert fake.list_table().chains["ingress_net1"].rules[-1].packets == 0, "a refilled chain counts afresh"


# ----------------------------------------------------------------------------------------- from `nft -j`


ACCEPT, DROP = {"accept": None}, {"drop": None}
CT_STATE = {"ct": {"key": "state"}}


def _match(left: object, right: object, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def _rule(chain: str, *expr: object, comment: str | None = None) -> dict[str, Any]:
    rule = {"family": "inet", "table": "mnp", "chain": chain, "expr": list(expr)}
    return {"rule": rule | ({"comment": comment} if comment else {})}


def _obj(kind: str, name: str, **fields: Any) -> dict[str, Any]:
    table = {"table": "mnp"} if kind != "table" else {}
    return {kind: {"family": fields.pop("family", "inet"), "name": name, **table, "handle": 1, **fields}}


# The shapes of `nft -j list table inet mnp` (nft 1.0.6) for a pending net1 plus two elements, and a table of
# someone else's that must be ignored.
NFT_JSON: dict[str, Any] = {
    "nftables": [
        {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
        _obj("table", "mnp"),
        {"table": {"family": "ip", "name": "someone-else", "handle": 2}},
        _obj(
            "map", "ingress_ifaces", type="ifname", map="verdict", elem=[["net1", {"jump": {"target": "ingress_net1"}}]]
        ),
        _obj(
            "set",
            "v4",
            type=["ipv4_addr", "inet_proto", "inet_service"],
            flags=["interval"],
            elem=[
                {
                    "elem": {
                        "val": {
                            "concat": [{"prefix": {"addr": "192.0.2.0", "len": 28}}, "tcp", {"range": [8080, 9090]}]
                        },
                        "comment": "ns1/monitoring ingress[0]",
                    }
                }
            ],
        ),
        _obj("set", "v6_all", type="ipv6_addr", flags=["interval"], elem=["2001:db8:1::10"]),
        _obj("chain", "input", type="filter", hook="input", prio=0, policy="accept"),
        _obj("chain", "ingress_net1"),
        {"chain": {"family": "ip", "table": "someone-else", "name": "input", "hook": "input", "policy": "drop"}},
        _rule("input", {"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@ingress_ifaces"}}),
        _rule("ingress_net1", _match(CT_STATE, ["established", "related"], "in"), ACCEPT),
        _rule("ingress_net1", _match(CT_STATE, "invalid", "in"), DROP),
        _rule(
            "ingress_net1",
            _match(_payload("icmpv6", "type"), {"set": ND_TYPES.split(", ")}),
            ACCEPT,
            comment="IPv6 neighbour discovery",
        ),
        _rule("ingress_net1", _match(_payload("ip6", "saddr"), "@v6_all"), ACCEPT),
        _rule(
            "ingress_net1",
            _match({"concat": [_payload("ip", "saddr"), {"meta": {"key": "l4proto"}}, _payload("th", "dport")]}, "@v4"),
            ACCEPT,
        ),
        _rule(
            "ingress_net1",
            {"limit": {"rate": 10, "burst": 20, "per": "second"}},
            {"log": {"prefix": "mnp drop net1 ingress: ", "group": DROP_LOG_GROUP, "queue-threshold": 1}},
        ),
        _rule("ingress_net1", {"counter": {"packets": 3, "bytes": 180}}, DROP, comment="default deny (ns1/web)"),
    ]
}


def test_table_from_nft_json_equals_the_fake_view() -> None:
    fake = FakeNft.from_transaction(
        Transaction()
        .add(Table())
        .add(Chain("input", hook="input"))
        .add(Chain("ingress_net1"))
        .add(Set("ingress_ifaces", "ifname", value_type="verdict"))
        .add(Set("v4", "ipv4_addr . inet_proto . inet_service", ("interval",)))
        .add(Set("v6_all", "ipv6_addr", ("interval",)))
        .add(Rule("input", "iifname vmap @ingress_ifaces"))
        .add(Rule("ingress_net1", "ct state established,related accept"))
        .add(Rule("ingress_net1", "ct state invalid drop"))
        .add(Rule("ingress_net1", f"icmpv6 type {{ {ND_TYPES} }} accept", "IPv6 neighbour discovery"))
        .add(Rule("ingress_net1", "ip6 saddr @v6_all accept"))
        .add(Rule("ingress_net1", "ip saddr . meta l4proto . th dport @v4 accept"))
        .add(Rule("ingress_net1", drop_log_rule("net1", INGRESS)))
        .add(Rule("ingress_net1", "counter drop", "default deny (ns1/web)"))
        .add(Element("ingress_ifaces", '"net1"', "jump ingress_net1"))
        .add(Element("v4", "192.0.2.0/28 . tcp . 8080-9090", comment="ns1/monitoring ingress[0]"))
        .add(Element("v6_all", "2001:db8:1::10"))
    )
    for _ in range(3):
        send(fake, inbound("192.0.2.99", "udp", 1))
    live = table_from_nft_json(json.dumps(NFT_JSON))
    assert live == fake.list_table()
    assert_trace(trace(live, inbound("192.0.2.5", "tcp", 9000)), "accept", "ns1/monitoring ingress[0]")
    assert_trace(trace(live, inbound("2001:db8:1::10", "sctp", 9)), "accept", None)
    assert_trace(trace(live, inbound("192.0.2.16", "tcp", 9000)), "drop", "default deny (ns1/web)")


@pytest.mark.parametrize(
    "expression",
    [
        {"match": {"op": "!=", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
        {"log": {"prefix": "x"}},  # to the kernel log, not to an nflog group
        {"log": {"prefix": "x", "group": 667, "snaplen": 64}},
        {"limit": {"rate": 10, "burst": 20, "per": "second", "inv": True}},  # limit rate over …
        {"limit": {"rate": 10, "per": "second", "rate_unit": "kbytes"}},
        {"match": {"op": "==", "left": {"osf": {"key": "name"}}, "right": "Linux"}},
    ],
)
def test_json_it_does_not_understand_raises(expression: dict[str, Any]) -> None:
    broken = copy.deepcopy(NFT_JSON)
    broken["nftables"].append(_rule("ingress_net1", expression, ACCEPT))
    with pytest.raises(TraceError):
        table_from_nft_json(json.dumps(broken))


def test_an_index_printed_as_a_name_is_mapped_back_in_the_listers_netns() -> None:
    """nft prints an interface index as the name it has where nft listed (a number where there is none): the
    reader maps names back with `ifindex_of`, refuses them without it, and matches a packet by index, or by the
    element's recorded name when the packet has only a name."""
    items = [
        _obj("table", "mnp"),
        _obj("chain", "input", type="filter", hook="input", prio=0, policy="accept"),
        _obj("chain", "ingress_net1"),
        _obj(
            "map",
            "ingress_ifindex",
            type="iface_index",
            map="verdict",
            elem=[
                [{"elem": {"val": "eth9", "comment": "net1"}}, {"jump": {"target": "ingress_net1"}}],
                ["12", {"jump": {"target": "ingress_net1"}}],
            ],
        ),
        _rule("input", {"vmap": {"key": {"meta": {"key": "iif"}}, "data": "@ingress_ifindex"}}),
        _rule("ingress_net1", {"drop": None}),
    ]
    text = json.dumps({"nftables": items})
    with pytest.raises(TraceError, match="eth9"):
        table_from_nft_json(text)
    view = table_from_nft_json(text, ifindex_of={"eth9": 7}.__getitem__)
    assert [(e.key, e.comment) for e in view.sets["ingress_ifindex"].elements] == [("7", "net1"), ("12", None)]
    assert view.chains["input"].rules[0].text == "iif vmap @ingress_ifindex"

    def verdict(ifname: str, ifindex: int | None = None) -> str:
        return trace(view, Packet("input", ifname, "192.0.2.1", "192.0.2.2", "tcp", 80, ifindex=ifindex)).verdict

    assert [verdict("x", 7), verdict("y", 12), verdict("net1"), verdict("z", 8), verdict("z")] == [
        "drop",
        "drop",
        "drop",
        "accept",
        "accept",
    ]
    assert trace(view, Packet("output", "net1", "192.0.2.2", "192.0.2.1", "tcp", 80, ifindex=7)).verdict == "accept"


def test_an_opaque_view_reads_what_mnp_never_writes_as_unequal_to_all_it_renders() -> None:
    """A listing holding a rule of another shape, a set of another type and another kind of object (a pod with
    NET_ADMIN put them there): the plain reader refuses it; the opaque one (the daemon's tamper check) reads the
    rule as its JSON, the set as unreadable, skips the object — and raises nothing, so the table is restored."""
    import json

    from shared.nft.errors import NftError
    from shared.nft.trace import TraceError, table_from_nft_json

    def item(kind: str, **fields: object) -> dict[str, object]:
        return {kind: {"family": "inet", "table": "mnp", **fields}}

    text = json.dumps(
        {
            "nftables": [
                {"metainfo": {}},
                {"table": {"family": "inet", "name": "mnp"}},
                item("chain", name="ingress_net1"),
                item(
                    "rule",
                    chain="ingress_net1",
                    handle=4,
                    expr=[{"match": {"op": "!=", "left": {"meta": {"key": "mark"}}, "right": 1}}, {"accept": None}],
                ),
                item("set", name="x", type="ether_addr", elem=["02:00:00:00:00:01"]),
                item("counter", name="c", packets=0, bytes=0),
            ]
        }
    )
    with pytest.raises((TraceError, NftError)):
        table_from_nft_json(text)
    view = table_from_nft_json(text, opaque=True)
    assert [rule.text for rule in view.chains["ingress_net1"].rules] == [
        '[{"match":{"left":{"meta":{"key":"mark"}},"op":"!=","right":1}},{"accept":null}]'
    ]
    assert view.sets["x"].key_type == 'unreadable "ether_addr"' and view.sets["x"].elements == ()
    assert sorted(view.chains) == ["ingress_net1"] and sorted(view.sets) == ["x"]
