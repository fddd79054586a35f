"""The pure compiler: NetworkPolicy semantics → per-interface allow sets (InterfaceRules).

Each test states one rule of the API and checks it on the IR, mostly through `admits()`, a ten-line reading of
the IR (is this peer address × port in some Allow?), plus exact allow sets where the shape matters (excepts
subtracted, named ports resolved per peer). test_evaluate.py checks the same semantics on the evaluator, and
test_differential.py checks that the rendered nftables rules agree with the evaluator everywhere.

Address plan: networks default/blue 10.10.0.0/24 + fd00:10::/64 and default/red 10.20.0.0/24 (RFC 1918 / ULA);
hosts outside the cluster 192.0.2.0/24 and 2001:db8::/32 (RFC 5737 / RFC 3849). The builders below are shared
with test_evaluate.py.
"""

from __future__ import annotations

import ipaddress
import json
import random
from typing import Any

import pytest

from shared.compiler import ALL_V4, ALL_V6, compile_cluster, subtract
from shared.manifests import build_cluster
from shared.model import POLICY_FOR, Cluster
from shared.rules import EGRESS, INGRESS, OPEN, Allow, InterfaceRules, PortRange, collapse

BLUE, RED = "default/blue", "default/red"

# ------------------------------------------------------------------------------------------- builders


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def nad(key: str, *subnets: str) -> dict[str, Any]:
    ns, name = key.split("/")
    ranges = [[{"subnet": s}] for s in subnets or ("10.10.0.0/24",)]
    config = {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "macvlan", "master": "eth1", "ipam": {"type": "host-local", "ranges": ranges}},
            {"type": "mnp"},
        ],
    }
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"config": json.dumps(config)},
    }


def pod(
    ref: str,
    labels: dict[str, str] | None = None,
    nets: dict[str, str] | None = None,
    ports: str = "",
    phase: str | None = None,
    host_network: bool = False,
) -> dict[str, Any]:
    """`nets`: network key → comma-separated addresses ("" = attached, no address yet); interfaces net1, net2 …
    `ports`: "80 53/UDP http=8080" — containerPorts, optionally named."""
    ns, name = ref.split("/")
    status = [
        {"name": network, "interface": f"net{i}", "ips": [ip for ip in ips.split(",") if ip]}
        for i, (network, ips) in enumerate((nets or {}).items(), start=1)
    ]
    container_ports = []
    for item in ports.split():
        port_name, _, rest = item.rpartition("=")
        number, _, protocol = rest.partition("/")
        entry: dict[str, Any] = {"containerPort": int(number), "protocol": protocol or "TCP"}
        if port_name:
            entry["name"] = port_name
        container_ports.append(entry)
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels or {},
            "annotations": {"k8s.v1.cni.cncf.io/network-status": json.dumps(status)},
        },
        "spec": {"hostNetwork": host_network, "containers": [{"name": "c", "ports": container_ports}]},
    }
    if phase:
        obj["status"] = {"phase": phase}
    return obj


def mnp(ref: str, spec: dict[str, Any], policy_for: str | None = BLUE) -> dict[str, Any]:
    ns, name = ref.split("/")
    annotations = {} if policy_for is None else {POLICY_FOR: policy_for}
    return {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": spec,
    }


def cluster(*objects: dict[str, Any]) -> Cluster:
    return build_cluster(("test", obj) for obj in objects).cluster


def with_base(*objects: dict[str, Any]) -> Cluster:
    """The usual backdrop: namespaces ns1 (team=a) and ns2 (team=b), NADs blue (dual-stack) and red."""
    return cluster(
        namespace("ns1", team="a"),
        namespace("ns2", team="b"),
        nad(BLUE, "10.10.0.0/24", "fd00:10::/64"),
        nad(RED, "10.20.0.0/24"),
        *objects,
    )


def rules_of(c: Cluster, pod_key: str, ifname: str = "net1") -> InterfaceRules:
    return compile_cluster(c)[(pod_key, ifname)]


def admits(rules: InterfaceRules, direction: str, peer: str, port: int = 80, protocol: str = "tcp") -> bool:
    """Does the IR let a new connection with this peer address and destination port through in `direction`?"""
    side = rules.direction(direction)
    if not side.isolated:
        return True
    address = ipaddress.ip_address(peer)
    for allow in side.allows:
        if not any(address in net for net in allow.peers):
            continue
        if allow.ports is None or any(r.protocol == protocol and r.first <= port <= r.last for r in allow.ports):
            return True
    return False


SERVER = pod("ns1/server", {"app": "server"}, {BLUE: "10.10.0.10,fd00:10::10"}, "80 443 53/UDP")
CLIENT = pod("ns1/client", {"app": "client"}, {BLUE: "10.10.0.11,fd00:10::11"})
OTHER = pod("ns1/other", {"app": "other"}, {BLUE: "10.10.0.12"})
REMOTE = pod("ns2/client", {"app": "client"}, {BLUE: "10.10.0.21"})
FROM_CLIENT = {
    "podSelector": {"matchLabels": {"app": "server"}},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
}


# ------------------------------------------------------------------------------------------- which pods, which networks


def test_a_pod_no_policy_selects_is_open_both_ways() -> None:
    r = rules_of(with_base(SERVER, CLIENT), "ns1/server")
    assert r.ingress == OPEN and r.egress == OPEN


def test_a_policy_selects_only_pods_of_its_own_namespace() -> None:
    c = with_base(SERVER, REMOTE, mnp("ns2/deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    assert rules_of(c, "ns1/server").ingress == OPEN
    assert rules_of(c, "ns2/client").ingress.isolated


def test_a_policy_applies_only_on_the_networks_of_its_policy_for() -> None:
    server = pod("ns1/server", {"app": "server"}, {BLUE: "10.10.0.10", RED: "10.20.0.10"})
    c = with_base(server, mnp("ns1/deny", {"podSelector": {}}, policy_for=RED))
    assert rules_of(c, "ns1/server", "net1").ingress == OPEN  # blue: untouched
    assert rules_of(c, "ns1/server", "net2").ingress.isolated  # red


def test_policy_for_bare_names_are_in_the_policys_namespace() -> None:
    local = nad("ns1/blue", "10.30.0.0/24")
    server = pod("ns1/server", {}, {BLUE: "10.10.0.10", "ns1/blue": "10.30.0.10"})
    c = with_base(local, server, mnp("ns1/deny", {"podSelector": {}}, policy_for="blue"))
    assert rules_of(c, "ns1/server", "net1").ingress == OPEN  # default/blue
    assert rules_of(c, "ns1/server", "net2").ingress.isolated  # ns1/blue


def test_a_policy_without_policy_for_applies_nowhere() -> None:
    c = with_base(SERVER, mnp("ns1/deny", {"podSelector": {}}, policy_for=None))
    assert rules_of(c, "ns1/server").ingress == OPEN


def test_isolation_is_per_direction() -> None:
    c = with_base(SERVER, CLIENT, mnp("ns1/in", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    r = rules_of(c, "ns1/server")
    assert r.ingress.isolated and r.ingress.allows == ()
    assert r.egress == OPEN


def test_an_egress_rule_without_policy_types_isolates_both_directions() -> None:
    c = with_base(SERVER, CLIENT, mnp("ns1/out", {"podSelector": {}, "egress": [{"to": [{"podSelector": {}}]}]}))
    r = rules_of(c, "ns1/server")
    assert r.ingress.isolated and r.ingress.allows == ()  # Ingress always, no ingress rule
    assert r.egress.isolated and admits(r, EGRESS, "10.10.0.11")


def test_egress_empty_list_does_not_isolate_egress() -> None:
    c = with_base(SERVER, mnp("ns1/p", {"podSelector": {}, "egress": []}))
    assert rules_of(c, "ns1/server").egress == OPEN


def test_explicit_policy_types_ignore_rules_of_unlisted_directions() -> None:
    c = with_base(
        SERVER, CLIENT, mnp("ns1/p", {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}], "egress": []})
    )
    r = rules_of(c, "ns1/server")
    assert r.ingress == OPEN
    assert r.egress.isolated and r.egress.allows == ()


def test_policies_are_a_union() -> None:
    allow_client = mnp("ns1/a", FROM_CLIENT)
    allow_other = mnp(
        "ns1/b",
        {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "other"}}}], "ports": [{"port": 443}]}],
        },
    )
    r = rules_of(with_base(SERVER, CLIENT, OTHER, allow_client, allow_other), "ns1/server")
    assert r.ingress.policies == ("ns1/a", "ns1/b")
    assert admits(r, INGRESS, "10.10.0.11", 80)
    assert admits(r, INGRESS, "10.10.0.12", 443)
    assert not admits(r, INGRESS, "10.10.0.12", 80)


# ------------------------------------------------------------------------------------------- peers


@pytest.mark.parametrize(("direction", "key"), [(INGRESS, "from"), (EGRESS, "to")])
def test_absent_or_empty_peers_and_ports_allow_everything(direction: str, key: str) -> None:
    """ "If this field is empty or missing, this rule matches all sources/destinations … all ports"."""
    field = direction.lower()
    for rule in ({}, {key: []}, {"ports": []}, {key: [], "ports": []}, {key: None}):
        spec = {"podSelector": {}, "policyTypes": [direction], field: [rule]}
        r = rules_of(with_base(SERVER, mnp("ns1/p", spec)), "ns1/server")
        assert r.direction(direction).allows == (Allow(f"ns1/p {field}[0]", (ALL_V4, ALL_V6), None),), rule


def test_a_pod_selector_peer_stays_in_the_policys_namespace() -> None:
    r = rules_of(with_base(SERVER, CLIENT, REMOTE, mnp("ns1/p", FROM_CLIENT)), "ns1/server")
    assert admits(r, INGRESS, "10.10.0.11") and admits(r, INGRESS, "fd00:10::11")
    assert not admits(r, INGRESS, "10.10.0.21")  # same labels, other namespace


def test_a_namespace_selector_peer_admits_every_pod_of_the_selected_namespaces() -> None:
    spec = {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]}
    r = rules_of(with_base(SERVER, CLIENT, REMOTE, mnp("ns1/p", spec)), "ns1/server")
    assert admits(r, INGRESS, "10.10.0.21")
    assert not admits(r, INGRESS, "10.10.0.11")


def test_a_namespace_without_a_namespace_object_still_has_its_name_label() -> None:
    spec = {
        "podSelector": {},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns3"}}}]}],
    }
    stray = pod("ns3/x", {}, {BLUE: "10.10.0.30"})
    r = rules_of(with_base(SERVER, stray, mnp("ns1/p", spec)), "ns1/server")
    assert admits(r, INGRESS, "10.10.0.30")


def test_both_selectors_in_one_peer_are_anded_two_peers_are_ored() -> None:
    both = [{"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {"matchLabels": {"app": "client"}}}]
    either = [
        {"namespaceSelector": {"matchLabels": {"team": "b"}}},
        {"podSelector": {"matchLabels": {"app": "client"}}},
    ]
    remote_other = pod("ns2/other", {"app": "other"}, {BLUE: "10.10.0.22"})
    base = (SERVER, CLIENT, REMOTE, remote_other)
    and_ = rules_of(with_base(*base, mnp("ns1/p", {"podSelector": {}, "ingress": [{"from": both}]})), "ns1/server")
    or_ = rules_of(with_base(*base, mnp("ns1/p", {"podSelector": {}, "ingress": [{"from": either}]})), "ns1/server")
    assert [admits(and_, INGRESS, a) for a in ("10.10.0.21", "10.10.0.22", "10.10.0.11")] == [True, False, False]
    assert [admits(or_, INGRESS, a) for a in ("10.10.0.21", "10.10.0.22", "10.10.0.11")] == [True, True, True]


def test_match_expressions_in_peers_including_missing_keys() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "server"}},
        "ingress": [
            {
                "from": [
                    {
                        "podSelector": {
                            "matchExpressions": [
                                {"key": "app", "operator": "NotIn", "values": ["other"]},
                                {"key": "quarantined", "operator": "DoesNotExist"},
                            ]
                        }
                    }
                ]
            }
        ],
    }
    unlabelled = pod("ns1/unlabelled", {}, {BLUE: "10.10.0.13"})
    quarantined = pod("ns1/q", {"app": "client", "quarantined": "yes"}, {BLUE: "10.10.0.14"})
    r = rules_of(with_base(SERVER, CLIENT, OTHER, unlabelled, quarantined, mnp("ns1/p", spec)), "ns1/server")
    assert admits(r, INGRESS, "10.10.0.11")
    assert admits(r, INGRESS, "10.10.0.13")  # NotIn and DoesNotExist match a pod without the keys
    assert not admits(r, INGRESS, "10.10.0.12")
    assert not admits(r, INGRESS, "10.10.0.14")
    assert admits(r, INGRESS, "10.10.0.10")  # the server itself (app=server) is a matching peer too


def test_a_selector_matching_no_pod_allows_nothing() -> None:
    spec = {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"foo": "bar"}}}]}]}
    r = rules_of(with_base(SERVER, CLIENT, mnp("ns1/p", spec)), "ns1/server")
    assert r.ingress.isolated and r.ingress.allows == ()


def test_ipblock_except_is_subtracted_from_its_own_block_only() -> None:
    spec = {
        "podSelector": {},
        "ingress": [
            {
                "from": [
                    {"ipBlock": {"cidr": "10.10.0.0/24", "except": ["10.10.0.0/28", "10.10.0.200/32"]}},
                    {"podSelector": {"matchLabels": {"app": "other"}}},  # 10.10.0.12, inside the except
                ]
            }
        ],
    }
    r = rules_of(with_base(SERVER, CLIENT, OTHER, mnp("ns1/p", spec)), "ns1/server")
    (allow,) = r.ingress.allows
    expected = collapse(
        [
            *subtract(
                ipaddress.ip_network("10.10.0.0/24"),
                [ipaddress.ip_network("10.10.0.0/28"), ipaddress.ip_network("10.10.0.200/32")],
            ),
            ipaddress.ip_network("10.10.0.12/32"),
        ]
    )
    assert allow.peers == expected
    assert admits(r, INGRESS, "10.10.0.12")  # the other peer is not narrowed by the except
    assert not admits(r, INGRESS, "10.10.0.11")  # client: in the except, selected by nothing else
    assert not admits(r, INGRESS, "10.10.0.200")
    assert admits(r, INGRESS, "10.10.0.201")


def test_an_except_does_not_narrow_another_rule_or_policy() -> None:
    excepting = mnp(
        "ns1/a",
        {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.10.0.0/24", "except": ["10.10.0.11/32"]}}]}],
        },
    )
    allowing = mnp(
        "ns1/b",
        {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.10.0.11/32"}}], "ports": [{"port": 443}]}]},
    )
    r = rules_of(with_base(SERVER, CLIENT, excepting, allowing), "ns1/server")
    assert admits(r, INGRESS, "10.10.0.11", 443) and not admits(r, INGRESS, "10.10.0.11", 80)


def test_ipblocks_match_pod_addresses_and_outside_hosts_alike() -> None:
    spec = {
        "podSelector": {},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.10.0.8/29"}}, {"ipBlock": {"cidr": "192.0.2.0/24"}}]}],
    }
    r = rules_of(with_base(SERVER, CLIENT, mnp("ns1/p", spec)), "ns1/server")
    assert admits(r, INGRESS, "10.10.0.11") and admits(r, INGRESS, "192.0.2.7")
    assert not admits(r, INGRESS, "10.10.0.16") and not admits(r, INGRESS, "fd00:10::11")


def test_subtract_splits_a_block_into_the_fewest_prefixes() -> None:
    got = subtract(ipaddress.ip_network("10.0.0.0/24"), [ipaddress.ip_network("10.0.0.0/25")])
    assert got == [ipaddress.ip_network("10.0.0.128/25")]
    assert subtract(ipaddress.ip_network("10.0.0.0/24"), [ipaddress.ip_network("10.0.0.0/24")]) == []
    assert subtract(ipaddress.ip_network("10.0.0.0/24"), [ipaddress.ip_network("fd00::/64")]) == [
        ipaddress.ip_network("10.0.0.0/24")
    ]


def test_peers_count_only_by_their_addresses_on_the_same_network() -> None:
    client = pod("ns1/client", {"app": "client"}, {RED: "10.20.0.11", BLUE: "10.10.0.11"})
    only_red = pod("ns1/far", {"app": "client"}, {RED: "10.20.0.12"})
    r = rules_of(with_base(SERVER, client, only_red, mnp("ns1/p", FROM_CLIENT)), "ns1/server")
    (allow,) = r.ingress.allows
    assert allow.peers == (ipaddress.ip_network("10.10.0.11/32"),)


def test_ipv4_and_ipv6_addresses_of_dual_stack_peers_are_both_allowed() -> None:
    r = rules_of(with_base(SERVER, CLIENT, mnp("ns1/p", FROM_CLIENT)), "ns1/server")
    assert r.ingress.allows[0].peers == (ipaddress.ip_network("10.10.0.11/32"), ipaddress.ip_network("fd00:10::11/128"))


# ------------------------------------------------------------------------------------------- ports


def ports_rule(*ports: dict[str, Any]) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{"ports": list(ports)}]}


def test_ports_by_number_range_and_protocol_only() -> None:
    c = with_base(
        SERVER,
        mnp(
            "ns1/p",
            ports_rule(
                {"port": 80}, {"port": 8000, "endPort": 8080}, {"protocol": "UDP"}, {"protocol": "SCTP", "port": 3868}
            ),
        ),
    )
    (allow,) = rules_of(c, "ns1/server").ingress.allows
    assert allow.ports == (
        PortRange("sctp", 3868, 3868),
        PortRange("tcp", 80, 80),
        PortRange("tcp", 8000, 8080),  # endPort is inclusive
        PortRange("udp", 0, 65535),  # protocol only: every port of UDP
    )


def test_the_protocol_defaults_to_tcp() -> None:
    r = rules_of(with_base(SERVER, mnp("ns1/p", ports_rule({"port": 53}))), "ns1/server")
    assert admits(r, INGRESS, "10.10.0.11", 53, "tcp") and not admits(r, INGRESS, "10.10.0.11", 53, "udp")


def test_peers_and_ports_of_one_rule_are_anded_rules_are_ored() -> None:
    spec = {
        "podSelector": {},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 80}]},
            {"from": [{"podSelector": {"matchLabels": {"app": "other"}}}], "ports": [{"port": 443}]},
        ],
    }
    r = rules_of(with_base(SERVER, CLIENT, OTHER, mnp("ns1/p", spec)), "ns1/server")
    assert admits(r, INGRESS, "10.10.0.11", 80) and not admits(r, INGRESS, "10.10.0.11", 443)
    assert admits(r, INGRESS, "10.10.0.12", 443) and not admits(r, INGRESS, "10.10.0.12", 80)


def test_an_ingress_named_port_resolves_against_the_selected_pods_own_container_ports() -> None:
    web1 = pod("ns1/web-1", {"app": "web"}, {BLUE: "10.10.0.31"}, "http=8080 dns=53/UDP")
    web2 = pod("ns1/web-2", {"app": "web"}, {BLUE: "10.10.0.32"}, "http=9090")
    none = pod("ns1/web-3", {"app": "web"}, {BLUE: "10.10.0.33"}, "8080")
    c = with_base(
        web1,
        web2,
        none,
        mnp(
            "ns1/p",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"ports": [{"port": "http"}, {"protocol": "UDP", "port": "dns"}]}],
            },
        ),
    )
    assert rules_of(c, "ns1/web-1").ingress.allows[0].ports == (PortRange("tcp", 8080, 8080), PortRange("udp", 53, 53))
    assert rules_of(c, "ns1/web-2").ingress.allows[0].ports == (PortRange("tcp", 9090, 9090),)
    assert rules_of(c, "ns1/web-3").ingress.allows == ()  # no port of that name: nothing opens


def test_an_egress_named_port_resolves_per_destination_peer() -> None:
    web1 = pod("ns1/web-1", {"app": "web"}, {BLUE: "10.10.0.31,fd00:10::31"}, "http=8080")
    web2 = pod("ns1/web-2", {"app": "web"}, {BLUE: "10.10.0.32"}, "http=9090")
    spec = {
        "podSelector": {"matchLabels": {"app": "client"}},
        "policyTypes": ["Egress"],
        "egress": [
            {"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}, {"port": 443}]}
        ],
    }
    r = rules_of(with_base(CLIENT, web1, web2, mnp("ns1/p", spec)), "ns1/client")
    peers = collapse(ipaddress.ip_network(a) for a in ("10.10.0.31", "10.10.0.32", "fd00:10::31"))
    assert r.egress.allows == (
        Allow("ns1/p egress[0]", peers, (PortRange("tcp", 443, 443),)),
        Allow(
            "ns1/p egress[0]",
            collapse([ipaddress.ip_network("10.10.0.31"), ipaddress.ip_network("fd00:10::31")]),
            (PortRange("tcp", 8080, 8080),),
        ),
        Allow("ns1/p egress[0]", (ipaddress.ip_network("10.10.0.32/32"),), (PortRange("tcp", 9090, 9090),)),
    )
    assert admits(r, EGRESS, "10.10.0.31", 8080) and not admits(r, EGRESS, "10.10.0.31", 9090)
    assert admits(r, EGRESS, "10.10.0.32", 9090) and not admits(r, EGRESS, "10.10.0.32", 8080)


def test_an_egress_named_port_never_matches_a_host_outside_the_cluster() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "client"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": "http"}]}],
    }
    web = pod("ns1/web", {}, {BLUE: "10.10.0.31"}, "http=8080")
    r = rules_of(with_base(CLIENT, web, mnp("ns1/p", spec)), "ns1/client")
    assert admits(r, EGRESS, "10.10.0.31", 8080)
    assert not admits(r, EGRESS, "192.0.2.31", 8080)


# ------------------------------------------------------------------------------------------- pod lifecycle


def test_pods_without_addresses_are_no_peers_but_are_guarded() -> None:
    new_client = pod("ns1/new", {"app": "client"}, {BLUE: ""})
    c = with_base(SERVER, new_client, mnp("ns1/p", {**FROM_CLIENT, "podSelector": {}}))
    assert rules_of(c, "ns1/server").ingress.allows == ()
    assert rules_of(c, "ns1/new").ingress.isolated


def test_host_network_pods_get_no_rules_and_are_no_peers() -> None:
    agent = pod("ns1/agent", {"app": "client"}, {BLUE: "10.10.0.40"}, host_network=True)
    compiled = compile_cluster(with_base(SERVER, agent, mnp("ns1/p", {**FROM_CLIENT, "podSelector": {}})))
    assert ("ns1/agent", "net1") not in compiled
    assert compiled[("ns1/server", "net1")].ingress.allows == ()


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_terminated_pods_are_neither_guarded_nor_peers(phase: str) -> None:
    done = pod("ns1/done", {"app": "client"}, {BLUE: "10.10.0.41"}, phase=phase)
    c = with_base(SERVER, done, mnp("ns1/p", {**FROM_CLIENT, "podSelector": {}}))
    assert rules_of(c, "ns1/server").ingress.allows == ()
    assert rules_of(c, "ns1/done").ingress == OPEN


def test_the_primary_network_is_never_guarded() -> None:
    status = [
        {"name": "kindnet", "interface": "eth0", "ips": ["10.244.0.5"], "default": True},
        {"name": BLUE, "interface": "net1", "ips": ["10.10.0.5"]},
    ]
    p = pod("ns1/x", {}, {})
    p["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] = json.dumps(status)
    compiled = compile_cluster(with_base(p, mnp("ns1/p", {"podSelector": {}}, policy_for="kindnet, default/blue")))
    assert set(compiled) == {("ns1/x", "net1")}


# ------------------------------------------------------------------------------------------- fail closed


@pytest.mark.parametrize(
    "bad_rule",
    [
        {"ports": [{"port": 9000, "endPort": 8000}]},
        {"ports": [{"protocol": "ICMP"}, {"port": 80}]},
        {"from": [{"ipBlock": {"cidr": "10.10.0.300/24"}}]},
        {"from": [{"ipBlock": {"cidr": "10.10.0.0/24", "except": ["10.20.0.0/24"]}}]},
        {"from": [{"ipBlock": {"cidr": "10.10.0.0/24"}, "podSelector": {}}]},
        {"from": [{}]},
        {"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals"}]}}]},
        {"ports": [{"port": "http", "endPort": 90}]},
    ],
)
def test_an_invalid_policy_isolates_what_it_selects_and_allows_nothing(bad_rule: dict[str, Any]) -> None:
    spec = {"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{}, bad_rule]}  # rule 0 alone would open all
    c = with_base(SERVER, CLIENT, mnp("ns1/bad", spec))
    r = rules_of(c, "ns1/server")
    assert r.ingress.isolated and r.ingress.allows == () and r.ingress.policies == ("ns1/bad",)
    assert rules_of(c, "ns1/client").ingress == OPEN


def test_an_invalid_policy_does_not_take_away_what_valid_policies_allow() -> None:
    bad = mnp("ns1/bad", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "GRE"}]}]})
    r = rules_of(with_base(SERVER, CLIENT, bad, mnp("ns1/good", FROM_CLIENT)), "ns1/server")
    assert admits(r, INGRESS, "10.10.0.11") and not admits(r, INGRESS, "10.10.0.12")


def test_an_unreadable_pod_selector_selects_the_whole_namespace() -> None:
    spec = {
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "Matches", "values": ["server"]}]},
        "ingress": [{}],
    }
    c = with_base(SERVER, CLIENT, REMOTE, mnp("ns1/bad", spec))
    assert rules_of(c, "ns1/server").ingress.isolated and rules_of(c, "ns1/client").ingress.isolated
    assert rules_of(c, "ns2/client").ingress == OPEN


def test_unknown_policy_types_isolate_both_directions() -> None:
    c = with_base(SERVER, mnp("ns1/bad", {"podSelector": {}, "policyTypes": ["Ingres"], "ingress": [{}]}))
    r = rules_of(c, "ns1/server")
    assert r.ingress.isolated and r.egress.isolated and not r.ingress.allows and not r.egress.allows


# ------------------------------------------------------------------------------------------- determinism


def test_the_output_does_not_depend_on_the_order_of_the_input() -> None:
    objects = [
        SERVER,
        CLIENT,
        OTHER,
        REMOTE,
        mnp("ns1/a", FROM_CLIENT),
        mnp("ns1/b", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
    ]
    first = compile_cluster(with_base(*objects))
    for seed in range(5):
        shuffled = objects[:]
        random.Random(seed).shuffle(shuffled)
        assert compile_cluster(with_base(*shuffled)) == first


def test_compile_for_one_node_keeps_only_its_pods() -> None:
    here = pod("ns1/here", {}, {BLUE: "10.10.0.50"})
    here["spec"]["nodeName"] = "node-1"
    there = pod("ns1/there", {}, {BLUE: "10.10.0.51"})
    there["spec"]["nodeName"] = "node-2"
    assert set(compile_cluster(with_base(here, there), node="node-1")) == {("ns1/here", "net1")}


def test_the_pending_form_is_closed_both_ways_with_no_allows() -> None:
    pending = InterfaceRules.pending("net1", "ns1/x", BLUE)
    assert pending.ingress.isolated and pending.egress.isolated
    assert not admits(pending, INGRESS, "10.10.0.1") and not admits(pending, EGRESS, "10.10.0.1")
