"""Probes: reading probe files, the default probes, and resolving a probe to a network and two addresses.

Address plan: default/blue 10.10.0.0/24 + fd00:10::/64 and default/red 10.20.0.0/24 (RFC 1918 / ULA) hold the
pods; default/lan 192.0.2.0/24 (RFC 5737) holds a pod and hosts outside the cluster; the static-IPAM networks below
say their own plan.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from shared.model import NETWORKS
from shared.probes import Probe, ResolvedProbe, default_probes, on_link_prefixes, parse_probes, resolve
from tests.unit.test_compiler import BLUE, RED, cluster, nad, namespace, pod

LAN = "default/lan"
C = cluster(
    namespace("ns1"),
    nad(BLUE, "10.10.0.0/24", "fd00:10::/64"),
    nad(RED, "10.20.0.0/24"),
    nad(LAN, "192.0.2.0/24"),
    pod("ns1/a", {}, {BLUE: "10.10.0.10,fd00:10::10", RED: "10.20.0.10"}, "80 53/UDP"),
    pod("ns1/b", {}, {BLUE: "10.10.0.11,fd00:10::11", RED: "10.20.0.11"}, "8080"),
    pod("ns1/c", {}, {BLUE: "fd00:10::12"}, "443"),
    pod("ns1/gw", {}, {LAN: "192.0.2.10"}, "22"),
    pod("default/d", {}, {BLUE: "10.10.0.13"}),
    pod("ns1/host", {}, {}, "9100", host_network=True),
    pod("ns1/done", {}, {BLUE: "10.10.0.14"}, "80", phase="Succeeded"),
    pod("ns1/new", {}, {BLUE: ""}, "80"),
)


def resolved(source: str, target: str, port: int = 80, network: str | None = None) -> ResolvedProbe:
    answer = resolve(C, Probe(source, target, port, "TCP", network))
    assert isinstance(answer, ResolvedProbe), answer
    return answer


# ------------------------------------------------------------------------------------------- probe files


def test_a_probe_file_is_a_list_of_from_to_port_protocol_network_expect() -> None:
    probes, problems = parse_probes(
        [
            {"from": "ns1/a", "to": "ns1/b", "port": 8080},
            {"from": "192.0.2.1", "to": "ns1/gw", "port": 22, "protocol": "udp", "network": "lan", "expect": "deny"},
            {"from": "ns1/a", "to": "ns1/b", "port": 8080, "expect": True},
        ]
    )
    assert problems == []
    assert probes == [
        Probe("ns1/a", "ns1/b", 8080, "TCP"),
        Probe("192.0.2.1", "ns1/gw", 22, "UDP", "lan", False),  # protocol is case-insensitive in probe files
        Probe("ns1/a", "ns1/b", 8080, "TCP", None, True),
    ]


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("ns1/a -> ns1/b", "probes[0]: must be a mapping"),
        ({"from": "ns1/a", "port": 80}, "probes[0]: missing to"),
        ({"from": "ns1/a", "to": "ns1/b", "port": 0}, "probes[0].port: 0 is not a port number"),
        ({"from": "ns1/a", "to": "ns1/b", "port": "http"}, "probes[0].port: 'http' is not a port number"),
        ({"from": "ns1/a", "to": "ns1/b", "port": 80, "protocol": "ICMP"}, "probes[0].protocol: 'ICMP'"),
        (
            {"from": "ns1/a", "to": "ns1/b", "port": 80, "expect": "maybe"},
            "probes[0].expect: 'maybe' is not allow or deny",
        ),
        ({"from": "ns1/a", "to": "ns1/b", "port": 80, "proto": "TCP"}, "probes[0]: unknown field(s) proto"),
    ],
)
def test_bad_probes_are_reported_with_their_index(item: object, fragment: str) -> None:
    _, problems = parse_probes([item])
    assert any(fragment in p for p in problems), problems


def test_a_probe_file_that_is_not_a_list_is_reported() -> None:
    assert parse_probes({"from": "a"}, "f.yaml") == ([], ["f.yaml: must be a YAML list of {from, to, port, protocol}"])
    assert parse_probes(None) == ([], [])


# ------------------------------------------------------------------------------------------- default probes


def test_default_probes_are_every_pod_pair_sharing_a_network_times_the_destinations_container_ports() -> None:
    probes = default_probes(C)
    pairs = {(p.source, p.target, p.port, p.protocol, p.network) for p in probes}
    # a and b share blue and red: one probe per network, each naming it
    assert ("ns1/a", "ns1/b", 8080, "TCP", BLUE) in pairs and ("ns1/a", "ns1/b", 8080, "TCP", RED) in pairs
    assert ("ns1/b", "ns1/a", 53, "UDP", BLUE) in pairs
    # c shares only blue (IPv6) with a: no network needed
    assert ("ns1/a", "ns1/c", 443, "TCP", None) in pairs
    # pods on no common network, hostNetwork, terminated or address-less pods are never probed
    assert not {
        p for p in pairs if "ns1/gw" in p[:2] or "ns1/host" in p[:2] or "ns1/done" in p[:2] or "ns1/new" in p[:2]
    }
    # no self-probes, and pods without containerPorts are sources only
    assert all(p.source != p.target for p in probes)
    assert not [p for p in probes if p.target == "default/d"]
    for probe in probes:
        assert isinstance(resolve(C, probe), ResolvedProbe), probe


# ------------------------------------------------------------------------------------------- resolution


def test_a_pod_to_pod_probe_uses_the_one_network_they_share() -> None:
    r = resolved("ns1/a", "ns1/c", 443)
    assert r.network == BLUE
    assert (str(r.source.address), str(r.target.address)) == ("fd00:10::10", "fd00:10::12")  # c is IPv6 only


def test_pods_sharing_several_networks_need_the_network_named() -> None:
    assert "share several networks (default/blue, default/red): set 'network:'" in str(
        resolve(C, Probe("ns1/a", "ns1/b", 8080))
    )
    r = resolved("ns1/a", "ns1/b", 8080, network="default/red")
    assert (r.network, str(r.source.address), str(r.target.address)) == (RED, "10.20.0.10", "10.20.0.11")


def test_a_bare_pod_name_is_in_the_default_namespace() -> None:
    assert resolved("d", "ns1/a", network=BLUE).source.pod is not None


def test_an_address_no_pod_has_is_a_host_outside_the_cluster_on_the_network_whose_subnet_holds_it() -> None:
    r = resolved("192.0.2.99", "ns1/gw", 22)
    assert r.network == LAN and r.source.pod is None and r.target.pod is not None


def test_an_address_of_a_pod_is_that_pod() -> None:
    r = resolved("10.10.0.11", "ns1/a")
    assert r.network == BLUE and r.source.pod is not None and r.source.pod.key == "ns1/b"


def test_a_dual_stack_pod_answers_on_the_address_family_of_the_other_end() -> None:
    """Bug fixed: the pod end always used its first address, so a probe from an IPv6 address failed."""
    r = resolved("fd00:10::99", "ns1/a")
    assert str(r.target.address) == "fd00:10::10"
    r = resolved("ns1/a", "fd00:10::11")
    assert str(r.source.address) == "fd00:10::10" and r.target.pod is not None


def test_two_pod_addresses_make_a_probe() -> None:
    """Bug fixed: a probe between two addresses was refused even when both belong to pods."""
    r = resolved("fd00:10::10", "fd00:10::11")
    assert r.source.pod is not None and r.target.pod is not None


def test_a_terminated_pods_address_is_a_host_outside_the_cluster() -> None:
    r = resolved("10.10.0.14", "ns1/a")
    assert r.source.pod is None


@pytest.mark.parametrize(
    ("source", "target", "network", "fragment"),
    [
        ("ns1/zz", "ns1/a", None, "'ns1/zz' is neither an IP address nor a known pod"),
        ("192.0.2.1", "198.51.100.1", None, "share no secondary network"),
        ("192.0.2.1", "192.0.2.2", None, "at least one side of a probe must be a pod"),
        ("ns1/a", "ns1/gw", None, "share no secondary network"),
        ("ns1/a", "ns1/c", "default/red", "network default/red does not connect"),
        ("ns1/host", "ns1/a", None, "share no secondary network"),
        ("ns1/new", "ns1/a", None, "share no secondary network"),
        ("ns1/c", "10.10.0.10", None, "no address on default/blue of IP version 4"),
    ],
)
def test_probes_that_cannot_be_answered_say_why(source: str, target: str, network: str | None, fragment: str) -> None:
    answer = resolve(C, Probe(source, target, 80, "TCP", network))
    assert isinstance(answer, str) and fragment in answer, answer


def test_resolution_gives_addresses_of_one_family() -> None:
    for probe in default_probes(C):
        r = resolve(C, probe)
        assert isinstance(r, ResolvedProbe)
        assert r.source.address.version == r.target.address.version
        assert ipaddress.ip_address(r.source.address) != r.target.address


# ------------------------------------------------------------------------------- static IPAM (no NAD subnet)

# The Multus documentation's macvlan example: `"ipam": {"type": "static"}` in the NAD and each pod's address with
# its prefix in its network request. default/lan2 198.51.100.0/24 and default/mgmt 203.0.113.0/24 (RFC 5737).
LAN2, MGMT = "default/lan2", "default/mgmt"


def static_nad(key: str) -> dict[str, Any]:
    ns, name = key.split("/")
    plugins = [{"type": "macvlan", "master": "eth1", "ipam": {"type": "static"}}, {"type": "mnp"}]
    config = {"cniVersion": "1.0.0", "name": name, "plugins": plugins}
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"config": json.dumps(config)},
    }


def requesting(ref: str, requests: dict[str, str]) -> dict[str, Any]:
    """A pod that requests `network → "addr/len"` and has no network-status yet."""
    ns, name = ref.split("/")
    networks = [{"name": k.split("/")[1], "namespace": k.split("/")[0], "ips": [v]} for k, v in requests.items()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": {NETWORKS: json.dumps(networks)}},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
    }


STATIC = cluster(
    namespace("ns1"),
    static_nad(LAN2),
    static_nad(MGMT),
    requesting("ns1/db", {LAN2: "198.51.100.10/24"}),
    requesting("ns1/app", {LAN2: "198.51.100.11/24", MGMT: "203.0.113.11/24"}),
    requesting("ns1/solo", {MGMT: "203.0.113.12/32"}),  # a host route: says nothing about the segment
)


def static(source: str, target: str, network: str | None = None) -> ResolvedProbe | str:
    return resolve(STATIC, Probe(source, target, 80, "TCP", network))


def test_without_a_nad_subnet_the_prefixes_pods_request_place_an_outside_address() -> None:
    """Bug fixed: every outside address on a static-IPAM network was refused ('share no secondary network')."""
    assert on_link_prefixes(STATIC, LAN2) == [ipaddress.ip_network("198.51.100.0/24")]
    assert on_link_prefixes(STATIC, MGMT) == [ipaddress.ip_network("203.0.113.0/24")]  # not solo's /32
    for source, target in (("198.51.100.200", "ns1/db"), ("ns1/app", "198.51.100.200")):
        r = static(source, target)
        assert isinstance(r, ResolvedProbe), r
        assert r.network == LAN2
    r = static("203.0.113.99", "ns1/app")  # app is on two networks: the prefix decides
    assert isinstance(r, ResolvedProbe) and r.network == MGMT and str(r.target.address) == "203.0.113.11"


def test_an_outside_address_on_no_known_prefix_goes_to_the_only_network_of_the_pod() -> None:
    r = static("192.0.2.7", "ns1/db")
    assert isinstance(r, ResolvedProbe) and r.network == LAN2 and r.source.pod is None


def test_an_explicit_network_places_an_outside_address() -> None:
    r = static("192.0.2.7", "ns1/app", network=MGMT)
    assert isinstance(r, ResolvedProbe) and r.network == MGMT and r.source.pod is None
    r = static("198.51.100.200", "ns1/app", network=MGMT)  # named, even against the prefix
    assert isinstance(r, ResolvedProbe) and r.network == MGMT
    assert "network default/lan2 does not connect" in str(static("192.0.2.7", "ns1/solo", network=LAN2))


def test_a_truly_ambiguous_outside_address_names_the_fix() -> None:
    answer = static("192.0.2.7", "ns1/app")
    assert isinstance(answer, str)
    assert "several (default/lan2, default/mgmt)" in answer and "set 'network:' on the probe" in answer
