"""Golden files: the exact text the renderer writes for a few representative interfaces.

A change to render.py shows up here as a diff of nft text a reviewer can read; `pytest --update-golden` accepts
it. tests/integration/test_render_kernel.py feeds the same files to the real nft.

Address plan (RFC 5737 / RFC 3849 documentation ranges): pods on the secondary networks have addresses in
192.0.2.0/24 and 2001:db8:1::/64; hosts outside the cluster are in 198.51.100.0/24, 203.0.113.0/24 and
2001:db8:2::/48.
"""

from __future__ import annotations

import ipaddress

import pytest

from shared.compiler import subtract
from shared.nft.fake import FakeNft
from shared.nft.render import OperatorAdditions, RenderOptions, render_interface, render_remove_interface
from shared.nft.transaction import Transaction
from shared.rules import INGRESS, Allow, DirectionRules, InterfaceRules, IPNetwork, PortRange, collapse
from tests.conftest import Golden


def nets(*texts: str) -> tuple[IPNetwork, ...]:
    return collapse(ipaddress.ip_network(text) for text in texts)


# Two policies open overlapping port ranges to overlapping peers: the renderer must split them into disjoint
# (prefix × port range) elements, tcp 8000-8079 for the two web clients and 8080-9090 for the whole /28.
WEB = Allow(
    "ns1/allow-web ingress[0]",
    nets("192.0.2.10", "192.0.2.11", "2001:db8:1::10"),
    (PortRange("tcp", 8000, 8100), PortRange("udp", 53, 53)),
)
MONITORING = Allow(
    "ns1/allow-monitoring ingress[0]", nets("192.0.2.0/28", "2001:db8:1::/120"), (PortRange("tcp", 8080, 9090),)
)
ADMIN = Allow("ns1/allow-admin ingress[0]", nets("198.51.100.7"), None)

# An ipBlock with excepts, as the compiler hands it over: the excepts already subtracted.
INTERNET = Allow(
    "ns1/egress-internet egress[0]",
    collapse(
        [
            *subtract(ipaddress.ip_network("203.0.113.0/24"), nets("203.0.113.128/25", "203.0.113.64/27")),
            *subtract(ipaddress.ip_network("2001:db8:2::/48"), nets("2001:db8:2:ff::/64")),
        ]
    ),
    None,
)
VLAN = Allow("ns1/allow-vlan ingress[0]", nets("192.0.2.0/24"), (PortRange("sctp", 5000, 5000),))

# Interface indexes inside the pod netns (the kernel tests apply the files where no such interfaces exist: nft
# takes any index).
NET1, NET2, VLAN_IF = 2, 3, 4

VLAN_RULES = InterfaceRules(
    "ns1/vlan", "eth0.100", "ns1/vlan-100", ingress=DirectionRules(True, (VLAN,), ("ns1/allow-vlan",)), ifindex=VLAN_IF
)


def _listed(rules: InterfaceRules) -> list[str]:
    """The chain and set names a listing of the table of `rules` shows."""
    view = FakeNft.from_transaction(render_interface(rules)).list_table()
    return [*view.chains, *view.sets]


CASES: dict[str, Transaction] = {
    "pending": render_interface(InterfaceRules.pending("net1", "ns1/client", "ns1/net-a", NET1)),
    "open": render_interface(InterfaceRules("ns1/client", "net1", "ns1/net-a", ifindex=NET1)),
    "ingress_ports_dual_stack": render_interface(
        InterfaceRules(
            "ns1/server",
            "net1",
            "ns1/net-a",
            ingress=DirectionRules(
                True, (WEB, MONITORING, ADMIN), ("ns1/allow-admin", "ns1/allow-monitoring", "ns1/allow-web")
            ),
            ifindex=NET1,
        )
    ),
    "egress_ipblock_except": render_interface(
        InterfaceRules(
            "ns1/client",
            "net1",
            "ns1/net-a",
            ingress=DirectionRules(True, (), ("ns1/deny-all",)),
            egress=DirectionRules(True, (INTERNET,), ("ns1/egress-internet",)),
            ifindex=NET1,
        )
    ),
    "accept_icmp": render_interface(
        InterfaceRules.pending("net2", "ns1/client", "ns1/net-b", NET2),
        RenderOptions(accept_icmp=True, accept_icmpv6=True),
    ),
    "ifname_hash": render_interface(VLAN_RULES),
    # the plugin's DEL: the names it lists in the table (the port groups of `ifname_hash`) and one of another
    # interface, which stays
    "remove_ifname_hash": render_remove_interface(
        "eth0.100",
        VLAN_IF,
        [*_listed(VLAN_RULES), "g_ingress_net1_aaaaaaaa", "g_ingress_if_swn2nv4d_aaaa"],
    ),
    # mnpd --allow-src-prefix / --allow-dst-prefix / --custom-v4-ingress-rule-file (daemon/operator.py)
    "operator_additions": render_interface(
        InterfaceRules(
            "ns1/server", "net1", "ns1/net-a", ingress=DirectionRules(True, (WEB,), ("ns1/allow-web",)), ifindex=NET1
        ),
        RenderOptions(
            additions=OperatorAdditions(
                allow_src=nets("198.51.100.0/24", "2001:db8:2::/48"),
                allow_dst=nets("203.0.113.7/32"),
                custom=((INGRESS, "meta nfproto ipv4 tcp dport 22 accept", "/etc/mnp/v4-ingress.rules:1"),),
            )
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_text_matches_golden(name: str, golden: Golden) -> None:
    golden.check(f"{name}.nft", str(CASES[name]))


def test_every_golden_file_has_a_case(golden: Golden) -> None:
    assert sorted(path.stem for path in golden.directory.glob("*.nft")) == sorted(CASES)
