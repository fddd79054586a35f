"""The reference evaluator: one packet, the API's questions asked directly, and the reason for the verdict.

The same semantics as test_compiler.py, seen from the evaluator (which shares no code with the compiler but the
model), plus what only the evaluator does: both ends of a connection (the source's egress and the destination's
ingress), hosts outside the cluster, and the reason naming the deciding policy and rule.

Address plan: default/blue 10.10.0.0/24 + fd00:10::/64, default/red 10.20.0.0/24 (RFC 1918 / ULA); hosts outside
the cluster 192.0.2.0/24 and 2001:db8::/32 (RFC 5737 / RFC 3849).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from shared.evaluate import Verdict, evaluate, owner
from shared.model import Cluster
from tests.unit.test_compiler import BLUE, CLIENT, FROM_CLIENT, OTHER, RED, REMOTE, SERVER, mnp, pod, with_base


def verdict(c: Cluster, src: str, dst: str, port: int = 80, protocol: str = "TCP", network: str = BLUE) -> Verdict:
    return evaluate(c, network, ipaddress.ip_address(src), ipaddress.ip_address(dst), protocol, port)


def allowed(c: Cluster, src: str, dst: str, port: int = 80, protocol: str = "TCP", network: str = BLUE) -> bool:
    return verdict(c, src, dst, port, protocol, network).allowed


# ------------------------------------------------------------------------------------------- reasons


def test_without_policies_everything_is_allowed_and_the_reason_says_not_isolated() -> None:
    v = verdict(with_base(SERVER, CLIENT), "10.10.0.11", "10.10.0.10")
    assert v.allowed
    assert v.reason == (
        "egress from ns1/client: not isolated (no policy for default/blue selects it); "
        "ingress to ns1/server: not isolated (no policy for default/blue selects it)"
    )


def test_an_allowed_connection_names_the_policy_and_rule_of_each_side() -> None:
    c = with_base(
        SERVER,
        CLIENT,
        mnp("ns1/in", FROM_CLIENT),
        mnp("ns1/out", {"podSelector": {"matchLabels": {"app": "client"}}, "egress": [{"ports": [{"port": 443}]}, {}]}),
    )
    v = verdict(c, "10.10.0.11", "10.10.0.10")
    assert v.allowed
    assert (
        v.reason
        == "egress from ns1/client: allowed by ns1/out egress[1]; ingress to ns1/server: allowed by ns1/in ingress[0]"
    )


def test_a_denied_connection_names_the_isolating_policies_and_the_side_that_denies() -> None:
    c = with_base(SERVER, CLIENT, OTHER, mnp("ns1/in", FROM_CLIENT), mnp("ns1/deny", {"podSelector": {}}))
    v = verdict(c, "10.10.0.12", "10.10.0.10")
    assert not v.allowed
    assert v.reason == "ingress to ns1/server: denied (isolated by ns1/deny, ns1/in; no rule matches)"


def test_the_source_egress_is_checked_before_the_destination_ingress() -> None:
    c = with_base(SERVER, CLIENT, mnp("ns1/deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    assert verdict(c, "10.10.0.11", "10.10.0.10").reason.startswith("egress from ns1/client: denied")


def test_an_invalid_policy_is_named_as_such_in_the_reason() -> None:
    c = with_base(SERVER, CLIENT, mnp("ns1/bad", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "GRE"}]}]}))
    assert "isolated by ns1/bad (invalid: no allows)" in verdict(c, "10.10.0.11", "10.10.0.10").reason


# ------------------------------------------------------------------------------------------- outside hosts


def test_a_host_outside_the_cluster_is_not_isolated_and_matched_only_by_ipblocks() -> None:
    by_selector = mnp("ns1/p", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})
    by_block = mnp("ns1/q", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/28"}}]}]})
    c = with_base(SERVER, by_selector, by_block)
    assert allowed(c, "192.0.2.5", "10.10.0.10")
    assert not allowed(c, "192.0.2.20", "10.10.0.10")  # namespaceSelector {} selects pods, never outside hosts
    to_outside = verdict(c, "10.10.0.10", "192.0.2.20")
    assert to_outside.allowed and to_outside.reason.endswith("ingress to a host outside the cluster: not isolated")


def test_the_owner_of_an_address_is_an_active_pod_on_that_network() -> None:
    c = with_base(SERVER, pod("ns1/done", {}, {BLUE: "10.10.0.60"}, phase="Succeeded"))
    assert owner(c, BLUE, ipaddress.ip_address("10.10.0.10")) is not None
    assert owner(c, RED, ipaddress.ip_address("10.10.0.10")) is None
    assert owner(c, BLUE, ipaddress.ip_address("10.10.0.60")) is None


# ------------------------------------------------------------------------------------------- semantics


def test_policy_types_default_ingress_always_egress_iff_egress_rules() -> None:
    bare = with_base(SERVER, CLIENT, mnp("ns1/p", {"podSelector": {"matchLabels": {"app": "server"}}}))
    assert not allowed(bare, "10.10.0.11", "10.10.0.10") and allowed(bare, "10.10.0.10", "10.10.0.11")
    egress = with_base(
        SERVER,
        CLIENT,
        mnp("ns1/p", {"podSelector": {"matchLabels": {"app": "server"}}, "egress": [{"ports": [{"port": 443}]}]}),
    )
    assert not allowed(egress, "10.10.0.11", "10.10.0.10")  # Ingress implied, no ingress rule
    assert not allowed(egress, "10.10.0.10", "10.10.0.11", 80) and allowed(egress, "10.10.0.10", "10.10.0.11", 443)
    empty = with_base(SERVER, CLIENT, mnp("ns1/p", {"podSelector": {"matchLabels": {"app": "server"}}, "egress": []}))
    assert allowed(empty, "10.10.0.10", "10.10.0.11")


def test_explicit_policy_types_ignore_rules_of_unlisted_directions() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "server"}},
        "policyTypes": ["Egress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.10.0.99/32"}}]}],
    }
    c = with_base(SERVER, CLIENT, mnp("ns1/p", spec))
    assert allowed(c, "10.10.0.11", "10.10.0.10")
    assert not allowed(c, "10.10.0.10", "10.10.0.11")


def test_a_policy_selects_only_pods_of_its_own_namespace_and_pod_selector_peers_stay_there() -> None:
    c = with_base(
        SERVER,
        CLIENT,
        REMOTE,
        mnp("ns1/p", FROM_CLIENT),
        mnp("ns2/p", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
    )
    assert allowed(c, "10.10.0.11", "10.10.0.10")
    assert not allowed(c, "10.10.0.21", "10.10.0.10")  # same labels in ns2: not selected by the podSelector peer


def test_namespace_and_pod_selector_in_one_peer_are_anded_and_separate_peers_ored() -> None:
    remote_other = pod("ns2/other", {"app": "other"}, {BLUE: "10.10.0.22"})
    both = mnp(
        "ns1/p",
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": "b"}},
                            "podSelector": {"matchLabels": {"app": "client"}},
                        }
                    ]
                }
            ],
        },
    )
    either = mnp(
        "ns1/p",
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"team": "b"}}},
                        {"podSelector": {"matchLabels": {"app": "client"}}},
                    ]
                }
            ],
        },
    )
    sources = ("10.10.0.21", "10.10.0.22", "10.10.0.11")
    assert [allowed(with_base(SERVER, CLIENT, REMOTE, remote_other, both), s, "10.10.0.10") for s in sources] == [
        True,
        False,
        False,
    ]
    assert [allowed(with_base(SERVER, CLIENT, REMOTE, remote_other, either), s, "10.10.0.10") for s in sources] == [
        True,
        True,
        True,
    ]


def test_ipblock_except_narrows_only_its_own_block() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "server"}},
        "ingress": [
            {
                "from": [
                    {"ipBlock": {"cidr": "10.10.0.0/24", "except": ["10.10.0.8/29"]}},
                    {"podSelector": {"matchLabels": {"app": "other"}}},
                ]
            }
        ],
    }
    c = with_base(SERVER, CLIENT, OTHER, mnp("ns1/p", spec))
    assert not allowed(c, "10.10.0.11", "10.10.0.10")
    assert allowed(c, "10.10.0.12", "10.10.0.10")  # excepted by peer 0, selected by peer 1
    assert allowed(c, "10.10.0.16", "10.10.0.10")


@pytest.mark.parametrize(
    ("ports", "probe", "expected"),
    [
        ([{"port": 80}], (80, "TCP"), True),
        ([{"port": 80}], (80, "UDP"), False),  # protocol defaults to TCP
        ([{"port": 8000, "endPort": 8080}], (8080, "TCP"), True),  # endPort inclusive
        ([{"port": 8000, "endPort": 8080}], (8081, "TCP"), False),
        ([{"protocol": "UDP"}], (5353, "UDP"), True),  # protocol only: all ports
        ([{"protocol": "UDP"}], (5353, "TCP"), False),
        ([{"protocol": "SCTP", "port": 3868}], (3868, "SCTP"), True),
        ([{"protocol": "SCTP", "port": 3868}], (3868, "TCP"), False),
        ([], (1, "SCTP"), True),  # empty ports: every port and protocol
    ],
)
def test_ports_numbers_ranges_protocols(ports: list[dict[str, Any]], probe: tuple[int, str], expected: bool) -> None:
    c = with_base(
        SERVER, CLIENT, mnp("ns1/p", {"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{"ports": ports}]})
    )
    assert allowed(c, "10.10.0.11", "10.10.0.10", *probe) is expected


def test_named_ports_resolve_against_the_destination_pod_for_ingress_and_egress() -> None:
    web1 = pod("ns1/web-1", {"app": "web"}, {BLUE: "10.10.0.31"}, "http=8080 9090")
    web2 = pod("ns1/web-2", {"app": "web"}, {BLUE: "10.10.0.32"}, "8080 http=9090")
    ingress = with_base(
        CLIENT,
        web1,
        web2,
        mnp("ns1/p", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}]}]}),
    )
    egress = with_base(
        CLIENT,
        web1,
        web2,
        mnp(
            "ns1/p",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": "http"}]}],
            },
        ),
    )
    for c in (ingress, egress):
        assert allowed(c, "10.10.0.11", "10.10.0.31", 8080) and not allowed(c, "10.10.0.11", "10.10.0.31", 9090)
        assert allowed(c, "10.10.0.11", "10.10.0.32", 9090) and not allowed(c, "10.10.0.11", "10.10.0.32", 8080)
    assert not allowed(egress, "10.10.0.11", "192.0.2.1", 8080)  # an outside host has no named ports


def test_peers_count_only_by_their_addresses_on_the_same_network() -> None:
    client = pod("ns1/client", {"app": "client"}, {BLUE: "10.10.0.11", RED: "10.20.0.11"})
    c = with_base(SERVER, client, mnp("ns1/p", FROM_CLIENT))
    assert allowed(c, "10.10.0.11", "10.10.0.10")
    assert not allowed(c, "10.20.0.11", "10.10.0.10")  # the client's red address, seen on blue: an outside host


def test_dual_stack_peers_are_allowed_on_both_families() -> None:
    c = with_base(SERVER, CLIENT, mnp("ns1/p", FROM_CLIENT))
    assert allowed(c, "10.10.0.11", "10.10.0.10") and allowed(c, "fd00:10::11", "fd00:10::10")
    assert not allowed(c, "fd00:10::99", "fd00:10::10")


def test_pods_without_addresses_host_network_and_terminated_pods_are_no_peers() -> None:
    objects = [
        pod("ns1/new", {"app": "client"}, {BLUE: ""}),
        pod("ns1/agent", {"app": "client"}, {BLUE: "10.10.0.40"}, host_network=True),
        pod("ns1/done", {"app": "client"}, {BLUE: "10.10.0.41"}, phase="Failed"),
    ]
    c = with_base(SERVER, *objects, mnp("ns1/p", FROM_CLIENT))
    assert not allowed(c, "10.10.0.40", "10.10.0.10")
    assert not allowed(c, "10.10.0.41", "10.10.0.10")


# ------------------------------------------------------------------------------------------- fail closed


@pytest.mark.parametrize(
    "spec",
    [
        {"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{}, {"ports": [{"port": 90, "endPort": 80}]}]},
        {
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.10.0.0/33"}}]}],
        },
        {"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{"from": [{}]}]},
        {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress", "Egres"], "ingress": [{}]},
    ],
)
def test_an_invalid_policy_still_isolates_and_contributes_no_allows(spec: dict[str, Any]) -> None:
    c = with_base(SERVER, CLIENT, OTHER, mnp("ns1/bad", spec))
    assert not allowed(c, "10.10.0.11", "10.10.0.10")
    assert allowed(c, "10.10.0.11", "10.10.0.12")  # pods it does not select are untouched
    unreadable_types = "Egres" in str(spec)  # then both directions are isolated
    assert allowed(c, "10.10.0.10", "10.10.0.11") is not unreadable_types


def test_an_unreadable_pod_selector_isolates_the_whole_namespace() -> None:
    spec = {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Matches"}]}, "ingress": [{}]}
    c = with_base(SERVER, CLIENT, REMOTE, mnp("ns1/bad", spec))
    assert not allowed(c, "10.10.0.10", "10.10.0.11") and not allowed(c, "10.10.0.11", "10.10.0.10")
    assert allowed(c, "10.10.0.11", "10.10.0.21")
