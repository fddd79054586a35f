"""The model: MultiNetworkPolicies, Pods and NADs parsed from plain dicts, with every problem reported at once.

Address plan: pod networks 10.10.0.0/24 and fd00:10::/64 (RFC 1918 / ULA); the primary network 10.244.0.0/16.
What a policy *means* once parsed (isolation, allows) is tested through the compiler and the evaluator in
test_compiler.py and test_evaluate.py; here: reading, defaulting and validation.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.model import (
    POLICY_FOR,
    Attachment,
    ContainerPort,
    IPBlock,
    PortSpec,
    is_port_name,
    parse_nad,
    parse_namespace,
    parse_network_requests,
    parse_network_status,
    parse_pod,
    parse_policy,
    parse_policy_for,
)
from shared.rules import EGRESS, INGRESS
from shared.selectors import MATCH_EVERYTHING


def policy(spec: dict[str, Any] | None = None, policy_for: object = "net1", namespace: str = "ns1", **meta: Any):
    annotations = {} if policy_for is None else {POLICY_FOR: policy_for}
    return parse_policy(
        {
            "apiVersion": "k8s.cni.cncf.io/v1beta1",
            "kind": "MultiNetworkPolicy",
            "metadata": {"name": "p", "namespace": namespace, "annotations": annotations, **meta},
            "spec": {"podSelector": {}} if spec is None else spec,
        }
    )


def problems_of(spec: dict[str, Any]) -> tuple[str, ...]:
    return policy(spec).problems


# ------------------------------------------------------------------------------------------- policy-for


@pytest.mark.parametrize(
    ("value", "networks"),
    [
        ("net1", ("ns1/net1",)),  # a bare name is in the policy's namespace
        ("other/net1", ("other/net1",)),  # ns/name is used as written
        ("net1,net2", ("ns1/net1", "ns1/net2")),
        (" net1 ,  default/net2 ", ("ns1/net1", "default/net2")),  # whitespace around names is ignored
        ("net1,\tnet2\n", ("ns1/net1", "ns1/net2")),  # tabs and newlines too (iptables strips only spaces)
        ("net1, ns1/net1", ("ns1/net1",)),  # duplicates collapse
        ("macvlan.conf-1", ("ns1/macvlan.conf-1",)),
    ],
)
def test_policy_for_is_a_comma_list_of_names_normalised_to_namespace_slash_name(
    value: str, networks: tuple[str, ...]
) -> None:
    assert parse_policy_for(value, "ns1") == (networks, [])


@pytest.mark.parametrize(
    ("value", "kept", "fragment"),
    [
        (None, (), "missing"),
        ("", (), "empty"),
        ("   ", (), "empty"),
        (["net1"], (), "must be a string"),
        ("a/b/c", (), "'a/b/c' is not '<name>' or '<namespace>/<name>'"),
        ("net1,", ("ns1/net1",), "'' is not"),  # a trailing comma is reported, the readable name kept
        ("net1, Net_2", ("ns1/net1",), "'Net_2' is not"),
        ("/net1", (), "'/net1' is not"),
    ],
)
def test_missing_empty_or_garbled_policy_for_is_reported(value: object, kept: tuple[str, ...], fragment: str) -> None:
    networks, problems = parse_policy_for(value, "ns1")
    assert networks == kept
    assert len(problems) == 1 and fragment in problems[0]
    assert problems[0].startswith(f"metadata.annotations[{POLICY_FOR}]")


def test_a_policy_without_policy_for_applies_to_no_network_and_is_invalid() -> None:
    p = policy(policy_for=None)
    assert p.policy_for == () and not p.valid


# ------------------------------------------------------------------------------------------- policyTypes


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({}, {INGRESS}),  # Ingress always
        ({"ingress": [{}]}, {INGRESS}),
        ({"egress": [{}]}, {INGRESS, EGRESS}),  # Egress iff egress is non-empty
        ({"egress": []}, {INGRESS}),  # `egress: []` is empty: no Egress
        ({"egress": None}, {INGRESS}),
        ({"policyTypes": [], "egress": [{}]}, {INGRESS, EGRESS}),  # an empty list defaults too
        ({"policyTypes": ["Egress"]}, {EGRESS}),
        ({"policyTypes": ["Egress"], "ingress": [{}]}, {EGRESS}),
        ({"policyTypes": ["Ingress", "Egress"]}, {INGRESS, EGRESS}),
    ],
)
def test_policy_types_default_exactly_as_the_networkpolicy_api(spec: dict[str, Any], types: set[str]) -> None:
    p = policy({"podSelector": {}, **spec})
    assert p.valid, p.problems
    assert p.policy_types == frozenset(types)


def test_explicit_policy_types_ignore_the_rules_of_unlisted_directions() -> None:
    p = policy({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}], "egress": [{"ports": [{"port": 80}]}]})
    assert p.rules(INGRESS) == ()
    assert len(p.rules(EGRESS)) == 1
    assert len(p.ingress) == 1  # parsed and kept for inspection, just not in force


@pytest.mark.parametrize("types", [["Ingres"], ["Ingress", "egress"], "Ingress", [None]])
def test_unknown_policy_types_make_the_policy_invalid_and_isolate_both_directions(types: object) -> None:
    p = policy({"podSelector": {}, "policyTypes": types})
    assert not p.valid
    assert any(problem.startswith("spec.policyTypes") for problem in p.problems)
    assert p.policy_types == frozenset({INGRESS, EGRESS})


# ------------------------------------------------------------------------------------------- rules, peers, ports


def test_absent_and_empty_from_to_and_ports_parse_as_no_restriction() -> None:
    p = policy({"podSelector": {}, "ingress": [{}, {"from": [], "ports": []}, {"from": None}], "egress": [None]})
    assert p.valid
    assert all(rule.peers == () and rule.ports == () for rule in (*p.ingress, *p.egress))
    assert len(p.ingress) == 3 and len(p.egress) == 1


def test_protocol_defaults_to_tcp_also_when_null() -> None:
    p = policy({"podSelector": {}, "ingress": [{"ports": [{"port": 53}, {"port": 54, "protocol": None}]}]})
    assert p.valid
    assert [s.protocol for s in p.ingress[0].ports] == ["TCP", "TCP"]


@pytest.mark.parametrize(
    ("raw", "spec"),
    [
        ({"port": 80}, PortSpec("TCP", 80)),
        ({"port": "80"}, PortSpec("TCP", 80)),  # IntOrString given as a string of digits
        ({"protocol": "UDP", "port": 53}, PortSpec("UDP", 53)),
        ({"protocol": "SCTP", "port": 3868}, PortSpec("SCTP", 3868)),
        ({"port": 32000, "endPort": 32768}, PortSpec("TCP", 32000, 32768)),
        ({"port": 80, "endPort": 80}, PortSpec("TCP", 80, 80)),
        ({"protocol": "UDP"}, PortSpec("UDP", None)),  # protocol only: every port of it
        ({"port": "http"}, PortSpec("TCP", "http")),
    ],
)
def test_ports_by_number_range_name_and_protocol_only(raw: dict[str, Any], spec: PortSpec) -> None:
    p = policy({"podSelector": {}, "ingress": [{"ports": [raw]}]})
    assert p.valid, p.problems
    assert p.ingress[0].ports == (spec,)


def test_a_peer_with_both_selectors_keeps_both_and_an_ipblock_peer_keeps_its_excepts() -> None:
    p = policy(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"a": "b"}}, "namespaceSelector": {}},
                        {"ipBlock": {"cidr": "10.10.0.0/24", "except": ["10.10.0.128/25"]}},
                    ]
                }
            ],
        }
    )
    both, block = p.ingress[0].peers
    assert both.pod_selector is not None and both.namespace_selector == MATCH_EVERYTHING
    assert block.ip_block == IPBlock(ipaddress.ip_network("10.10.0.0/24"), (ipaddress.ip_network("10.10.0.128/25"),))


def test_a_null_selector_field_is_the_field_being_absent() -> None:
    """Bug fixed: `namespaceSelector: null` used to parse as an empty selector, i.e. *every* namespace."""
    p = policy(
        {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"a": "b"}}, "namespaceSelector": None}]}],
        }
    )
    assert p.valid
    assert p.ingress[0].peers[0].namespace_selector is None  # the policy's own namespace


def test_a_peer_whose_only_field_is_null_is_an_empty_peer() -> None:
    p = policy({"podSelector": {}, "ingress": [{"from": [{"podSelector": None}]}]})
    assert not p.valid
    assert any("a peer needs a podSelector, a namespaceSelector or an ipBlock" in x for x in p.problems)


def test_ipblock_except_must_lie_inside_its_cidr_and_be_of_its_family() -> None:
    problems = problems_of(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {"ipBlock": {"cidr": "10.10.0.0/24", "except": ["10.10.1.0/24", "fd00::/64", "10.10.0.0/24"]}}
                    ]
                }
            ],
        }
    )
    assert len(problems) == 3
    assert "except[0]: 10.10.1.0/24 is not inside the cidr 10.10.0.0/24" in problems[0]
    assert "except[1]: fd00::/64 is not inside" in problems[1]
    assert "except[2]: 10.10.0.0/24 is the whole cidr; an except must be a strict subset" in problems[2]


# ------------------------------------------------------------------------------------------- validation


INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "invalid CIDR",
        {"from": [{"ipBlock": {"cidr": "10.10.0.300/24"}}]},
        "from[0].ipBlock.cidr: '10.10.0.300/24' is not a valid CIDR",
    ),
    ("host bits", {"from": [{"ipBlock": {"cidr": "10.10.0.1/24"}}]}, "has host bits set"),
    ("cidr missing", {"from": [{"ipBlock": {}}]}, "ipBlock.cidr: must be a CIDR string"),
    (
        "except not a list",
        {"from": [{"ipBlock": {"cidr": "10.10.0.0/24", "except": "10.10.0.0/25"}}]},
        "except: must be a list",
    ),
    (
        "except outside",
        {"from": [{"ipBlock": {"cidr": "10.10.0.0/24", "except": ["10.20.0.0/25"]}}]},
        "is not inside the cidr",
    ),
    ("endPort < port", {"ports": [{"port": 90, "endPort": 80}]}, "ports[0].endPort: 80 is smaller than port 90"),
    ("endPort with name", {"ports": [{"port": "http", "endPort": 90}]}, "cannot be used with the named port 'http'"),
    ("endPort without port", {"ports": [{"endPort": 90}]}, "endPort: requires port"),
    ("endPort too big", {"ports": [{"port": 90, "endPort": 70000}]}, "endPort: 70000 is not in 1-65535"),
    ("endPort not a number", {"ports": [{"port": 90, "endPort": "95"}]}, "endPort: must be a number"),
    ("port 0", {"ports": [{"port": 0}]}, "port: 0 is not in 1-65535"),
    ("port name", {"ports": [{"port": "HTTP_1"}]}, "'HTTP_1' is not a valid port name"),
    ("port type", {"ports": [{"port": 1.5}]}, "port: must be a number or a port name"),
    ("unknown protocol", {"ports": [{"protocol": "ICMP"}]}, "protocol: 'ICMP' is not one of TCP, UDP, SCTP"),
    ("lowercase protocol", {"ports": [{"protocol": "tcp", "port": 80}]}, "'tcp' is not one of"),
    (
        "ipBlock + selector",
        {"from": [{"ipBlock": {"cidr": "10.10.0.0/24"}, "podSelector": {}}]},
        "ipBlock cannot be combined",
    ),
    ("empty peer", {"from": [{}]}, "a peer needs a podSelector, a namespaceSelector or an ipBlock"),
    ("peer not an object", {"from": ["10.10.0.0/24"]}, "from[0]: must be an object"),
    ("from not a list", {"from": {"podSelector": {}}}, "from: must be a list of peers"),
    ("ports not a list", {"ports": {"port": 80}}, "ports: must be a list of ports"),
    ("unknown peer field", {"from": [{"podSelector": {}, "podselector": {}}]}, "unknown field(s) podselector"),
    ("unknown rule field", {"form": []}, "unknown field(s) form"),
    (
        "bad operator",
        {"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}]},
        "'Is' is not one of",
    ),
    (
        "bad values",
        {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]},
        "must be non-empty",
    ),
]


@pytest.mark.parametrize(("what", "rule", "fragment"), INVALID, ids=[case[0] for case in INVALID])
def test_each_invalid_field_is_reported_with_its_path(what: str, rule: dict[str, Any], fragment: str) -> None:
    problems = problems_of({"podSelector": {}, "ingress": [rule]})
    assert problems, what
    assert any(fragment in p and p.startswith("spec.ingress[0]") for p in problems), problems


def test_every_problem_of_a_policy_is_reported_at_once() -> None:
    p = parse_policy(
        {
            "kind": "MultiNetworkPolicy",
            "metadata": {"name": "bad", "namespace": "ns1", "annotations": {POLICY_FOR: "net1, a/b/c"}},
            "spec": {
                "podSelector": {"matchExpressions": [{"key": "app", "operator": "Matches"}]},
                "policyTypes": ["Ingress", "Sideways"],
                "ingress": [
                    {
                        "from": [
                            {"ipBlock": {"cidr": "10.10.0.0/33"}},
                            {"ipBlock": {"cidr": "10.10.0.0/24", "except": ["10.20.0.0/24"]}},
                            {"ipBlock": {"cidr": "10.10.0.0/24"}, "namespaceSelector": {}},
                            {},
                        ],
                        "ports": [{"port": 90, "endPort": 80}, {"port": "http", "endPort": 90}, {"protocol": "GRE"}],
                    }
                ],
                "egress": [
                    {"to": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}}]}
                ],
            },
        }
    )
    expected = [
        "policy-for",  # a/b/c
        "spec.podSelector.matchExpressions[0].operator",
        "spec.ingress[0].from[0].ipBlock.cidr",
        "spec.ingress[0].from[1].ipBlock.except[0]",
        "spec.ingress[0].from[2]: ipBlock cannot be combined",
        "spec.ingress[0].from[3]: a peer needs",
        "spec.ingress[0].ports[0].endPort",
        "spec.ingress[0].ports[1].endPort",
        "spec.ingress[0].ports[2].protocol",
        "spec.egress[0].to[0].podSelector.matchExpressions[0].values",
        "spec.policyTypes",
    ]
    assert len(p.problems) == len(expected), p.problems
    for fragment in expected:
        assert any(fragment in problem for problem in p.problems), fragment


def test_an_invalid_policy_keeps_what_it_can_read_for_the_fail_closed_rule() -> None:
    """It keeps its readable networks and isolates, but `rules()` gives no allow in either direction."""
    p = policy(
        {"podSelector": {"matchLabels": {"app": "x"}}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "net1, bad/x/y"
    )
    assert not p.valid
    assert p.policy_for == ("ns1/net1",)
    assert p.policy_types == frozenset({INGRESS})
    assert p.rules(INGRESS) == () and p.rules(EGRESS) == ()


def test_an_unreadable_pod_selector_selects_the_whole_namespace() -> None:
    p = policy({"podSelector": {"matchExpressions": [{"key": "app", "operator": "Matches", "values": ["x"]}]}})
    assert not p.valid
    assert p.pod_selector == MATCH_EVERYTHING


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ({"spec": "nope"}, "spec: missing or not an object"),
        ({"spec": {"podSelector": {}, "ingres": []}}, "spec: unknown field(s) ingres"),
        ({"spec": {"podSelector": {}, "ingress": {"from": []}}}, "spec.ingress: must be a list of rules"),
        ({"spec": {"podSelector": {}, "ingress": ["x"]}}, "spec.ingress[0]: must be an object"),
        ({"kind": "NetworkPolicy", "spec": {"podSelector": {}}}, "is not MultiNetworkPolicy"),
    ],
)
def test_a_garbled_spec_is_reported_not_raised(obj: dict[str, Any], fragment: str) -> None:
    p = parse_policy({"metadata": {"name": "p", "namespace": "ns1", "annotations": {POLICY_FOR: "net1"}}, **obj})
    assert any(fragment in problem for problem in p.problems), p.problems


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "podSelector",
                        "ingress",
                        "egress",
                        "from",
                        "to",
                        "ports",
                        "port",
                        "ipBlock",
                        "cidr",
                        "policyTypes",
                        "protocol",
                        "endPort",
                        "except",
                        "matchLabels",
                        "namespaceSelector",
                    ]
                ),
                c,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_parsing_never_raises_on_arbitrary_input(spec: object) -> None:
    p = parse_policy({"metadata": {"name": "p", "namespace": "ns1", "annotations": {POLICY_FOR: "net1"}}, "spec": spec})
    assert p.valid or p.problems


# ------------------------------------------------------------------------------------------- pods, namespaces, NADs


def pod_obj(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p1", "namespace": "ns1", "labels": {"app": "x"}, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}], **spec},
    }


def test_network_status_gives_the_attachments_and_the_default_entry_is_the_primary_network() -> None:
    status = [
        {"name": "kindnet", "interface": "eth0", "ips": ["10.244.1.5"], "default": True},
        {"name": "net1", "interface": "net1", "ips": ["10.10.0.5", "fd00:10::5"], "mac": "02:00:00:00:00:05"},
        {"name": "other/net2", "interface": "net2", "ips": []},
    ]
    pod, problems = parse_pod(pod_obj({"k8s.v1.cni.cncf.io/network-status": json.dumps(status)}))
    assert problems == []
    primary, net1, net2 = pod.attachments
    assert primary.default and primary.network == "kindnet"
    assert net1 == Attachment(
        "ns1/net1", "net1", (ipaddress.ip_address("10.10.0.5"), ipaddress.ip_address("fd00:10::5")), "02:00:00:00:00:05"
    )
    assert net2.network == "other/net2" and net2.ips == ()
    assert pod.secondary_attachments() == (net1, net2)
    assert pod.addresses_on("ns1/net1") == net1.ips


def test_without_network_status_the_requested_interfaces_and_ips_are_used() -> None:
    request = [{"name": "net1", "ips": ["10.10.0.7/24"]}, {"name": "net2", "namespace": "other", "interface": "blue"}]
    pod, problems = parse_pod(pod_obj({"k8s.v1.cni.cncf.io/networks": json.dumps(request)}))
    assert problems == []
    assert [(a.network, a.interface, a.ips) for a in pod.attachments] == [
        ("ns1/net1", "net1", (ipaddress.ip_address("10.10.0.7"),)),
        ("other/net2", "blue", ()),  # Multus names interfaces net1, net2 … unless asked otherwise
    ]


def test_the_networks_annotation_short_form_is_understood() -> None:
    requests, problems = parse_network_requests("net1, other/net2@blue", "ns1")
    assert problems == []
    assert [(r.network, r.interface) for r in requests] == [("ns1/net1", ""), ("other/net2", "blue")]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("[{", "not valid JSON"),
        ('[{"interface": "x"}]', "needs a string 'name'"),
        (42, "must be a string"),
        ('{"name": "net1"}', "must be a JSON list"),
        ('[{"name": "net1", "interface": 7}]', "'interface' and 'mac' must be strings"),
        ('[{"name": "net1", "mac": ["02:00:00:00:00:01"]}]', "'interface' and 'mac' must be strings"),
    ],
)
def test_a_garbled_networks_annotation_is_reported(value: object, fragment: str) -> None:
    requests, problems = parse_network_requests(value, "ns1")
    assert requests == () and any(fragment in p for p in problems), problems


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{", "not valid JSON"),
        ('{"name": "x"}', "must be a JSON list"),
        ('[{"ips": []}]', "needs a string 'name'"),
        ('[{"name": "n", "ips": ["10.10.0.300"]}]', "is not an IP address"),
    ],
)
def test_a_garbled_network_status_is_reported(value: str, fragment: str) -> None:
    _, problems = parse_network_status(value, "ns1")
    assert any(fragment in p for p in problems)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"name": "net1", "interface": "net1", "default": "false"}, "'default' must be true or false"),
        ({"name": "net1", "interface": "net1", "default": 0}, "'default' must be true or false"),
        ({"name": "net1", "interface": {"x": 1}}, "'interface' and 'mac' must be strings"),
        ({"name": "net1", "interface": "net1", "mac": 5}, "'interface' and 'mac' must be strings"),
    ],
)
def test_a_network_status_entry_of_the_wrong_types_is_reported_and_its_interface_stays_unresolved(
    entry: dict[str, object], fragment: str
) -> None:
    """A string "false" is truthy: read as the primary network, the interface would silently drop out of every
    policy's view. The entry is refused and reported instead (its interface stays pending: closed)."""
    good = {"name": "net2", "interface": "net2", "ips": ["10.10.0.6"]}
    status = json.dumps([entry, good])
    pod, problems = parse_pod(pod_obj({"k8s.v1.cni.cncf.io/network-status": status}))
    assert any(fragment in p for p in problems), problems
    assert [(a.network, a.interface) for a in pod.secondary_attachments()] == [("ns1/net2", "net2")]


def test_a_requested_address_that_is_no_address_is_reported_and_the_interfaces_keep_their_names() -> None:
    request = [{"name": "net1", "ips": ["10.10.0.300/24"]}, {"name": "net2", "ips": ["10.20.0.7/24"]}]
    pod, problems = parse_pod(pod_obj({"k8s.v1.cni.cncf.io/networks": json.dumps(request)}))
    assert problems == ["annotation k8s.v1.cni.cncf.io/networks[0].ips: '10.10.0.300/24' is not an IP address"]
    assert [(a.interface, a.ips) for a in pod.attachments] == [
        ("net1", ()),
        ("net2", (ipaddress.ip_address("10.20.0.7"),)),
    ]


def test_host_network_pods_have_no_secondary_attachments() -> None:
    status = json.dumps([{"name": "net1", "interface": "net1", "ips": ["10.10.0.5"]}])
    pod, _ = parse_pod(pod_obj({"k8s.v1.cni.cncf.io/network-status": status}, hostNetwork=True))
    assert pod.host_network and pod.secondary_attachments() == () and pod.addresses_on("ns1/net1") == ()


@pytest.mark.parametrize(
    ("phase", "active"), [(None, True), ("Pending", True), ("Running", True), ("Succeeded", False), ("Failed", False)]
)
def test_terminated_pods_are_not_active(phase: str | None, active: bool) -> None:
    obj = pod_obj()
    if phase:
        obj["status"] = {"phase": phase}
    assert parse_pod(obj)[0].is_active is active


def test_container_ports_default_to_tcp_and_bad_entries_are_reported() -> None:
    obj = pod_obj()
    obj["spec"]["containers"].append(
        {"name": "d", "ports": [{"containerPort": 53, "protocol": "UDP", "name": "dns"}, {"name": "x"}]}
    )
    pod, problems = parse_pod(obj)
    assert pod.container_ports == (ContainerPort(80, "TCP", "http"), ContainerPort(53, "UDP", "dns"))
    assert len(problems) == 1 and "spec.containers[].ports: bad entry" in problems[0]


def test_a_named_port_resolves_only_with_the_rules_protocol() -> None:
    obj = pod_obj()
    obj["spec"]["containers"][0]["ports"] = [{"containerPort": 53, "protocol": "UDP", "name": "dns"}]
    pod, _ = parse_pod(obj)
    assert pod.resolve_named_port("dns", "UDP") == 53
    assert pod.resolve_named_port("dns", "TCP") is None
    assert pod.resolve_named_port("http", "TCP") is None


def test_namespaces_always_carry_their_metadata_name_label() -> None:
    ns = parse_namespace({"kind": "Namespace", "metadata": {"name": "ns1", "labels": {"team": "a"}}})
    assert ns.labels == {"team": "a", "kubernetes.io/metadata.name": "ns1"}
    # the API server sets it to the name whatever a manifest says (bug fixed: a manifest's value used to win)
    forged = parse_namespace({"metadata": {"name": "ns1", "labels": {"kubernetes.io/metadata.name": "kube-system"}}})
    assert forged.labels == {"kubernetes.io/metadata.name": "ns1"}


def test_nad_config_is_parsed_as_conflist_or_single_conf_and_yields_its_subnets() -> None:
    conflist = {
        "cniVersion": "1.0.0",
        "name": "net1",
        "plugins": [
            {
                "type": "macvlan",
                "master": "eth1",
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.10.0.0/24"}], [{"subnet": "fd00:10::/64"}]]},
            },
            {"type": "mnp"},
        ],
    }
    nad, problems = parse_nad(
        {"metadata": {"name": "net1", "namespace": "ns1"}, "spec": {"config": json.dumps(conflist)}}
    )
    assert problems == [] and nad.key == "ns1/net1"
    assert nad.plugin_types == ("macvlan", "mnp")
    assert [str(s) for s in nad.subnets] == ["10.10.0.0/24", "fd00:10::/64"]
    single, _ = parse_nad(
        {"metadata": {"name": "n"}, "spec": {"config": '{"type": "macvlan", "ipam": {"subnet": "10.20.0.0/24"}}'}}
    )
    assert single.plugin_types == ("macvlan",) and [str(s) for s in single.subnets] == ["10.20.0.0/24"]


@pytest.mark.parametrize(("config", "fragment"), [("{", "not valid JSON"), ("[1]", "must be a JSON object")])
def test_a_garbled_nad_config_is_reported(config: str, fragment: str) -> None:
    _, problems = parse_nad({"metadata": {"name": "n"}, "spec": {"config": config}})
    assert any(fragment in p for p in problems)


@pytest.mark.parametrize(
    ("name", "valid"),
    [("http", True), ("h2c-1", True), ("8080", False), ("-http", False), ("a--b", False), ("x" * 16, False)],
)
def test_port_names_follow_iana_svc_name(name: str, valid: bool) -> None:
    assert is_port_name(name) is valid
