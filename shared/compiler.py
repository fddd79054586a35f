"""The pure policy compiler: (policies, pods, namespaces, NADs) → what each pod interface must admit.

For every secondary interface of every pod it produces an `InterfaceRules`: per direction whether the interface
is isolated and, if so, the list of `Allow`s (peer address prefixes × port ranges, or every protocol). The
renderer turns that into nftables text; the reference evaluator (`shared.evaluate`) decides the same questions
packet by packet, and tests compare the two.

No I/O, no clock, no logging: the same input always gives the same output.

NetworkPolicy semantics implemented here (quotes from the networking.k8s.io/v1 API reference):

* A policy applies to the pods its podSelector selects "in the policy's namespace", and — MultiNetworkPolicy —
  only on interfaces attached to a network named in its `policy-for` annotation.
* Isolation is per direction: a pod is isolated for ingress (egress) on an interface if any policy selecting it
  there has Ingress (Egress) in its policyTypes. Policies are additive: the allowed traffic is the union.
* "If this field is empty or missing, this rule matches all sources/destinations" (`from`/`to`);
  "If this field is empty or missing, this rule matches all ports" (`ports`).
* A peer with only a podSelector "selects particular Pods in the same namespace as the NetworkPolicy"; with only a
  namespaceSelector, all pods of the selected namespaces; with both, the pods matching podSelector in the
  namespaces matching namespaceSelector.
* ipBlock: "a particular CIDR … that is allowed … Except is a slice of CIDRs that should not be included within
  an IPBlock" — the except applies to its own block only. It matches any address, pod addresses included.
* Named ports: "If present, only traffic on the specified protocol AND port will be matched", a named port being
  resolved against the *destination* pod's containerPorts with the same protocol: for ingress the selected pod's
  own, for egress each peer pod's — so an egress named port produces one allow per resolved number.
* Peers count only by their addresses on the same network as the interface being guarded.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.model import Cluster, MultiNetworkPolicy, Peer, Pod, Rule
from shared.rules import CLOSED as CLOSED
from shared.rules import EGRESS, INGRESS, IPAddress, IPNetwork
from shared.rules import OPEN as OPEN
from shared.rules import Allow as Allow
from shared.rules import DirectionRules as DirectionRules
from shared.rules import InterfaceRules as InterfaceRules
from shared.rules import PortRange as PortRange
from shared.rules import collapse as collapse

ALL_V4 = ipaddress.ip_network("0.0.0.0/0")
ALL_V6 = ipaddress.ip_network("::/0")
DIRECTIONS = (INGRESS, EGRESS)


def subtract(network: IPNetwork, excepts: Iterable[IPNetwork]) -> list[IPNetwork]:
    """`network` minus every except (each inside it), as prefixes."""
    remaining = [network]
    for exc in excepts:
        nxt: list[IPNetwork] = []
        for net in remaining:
            if exc.version != net.version or not net.overlaps(exc):
                nxt.append(net)
            elif net.subnet_of(exc):  # type: ignore[arg-type]
                continue
            else:
                nxt.extend(net.address_exclude(exc))  # type: ignore[arg-type]
        remaining = nxt
    return remaining


def host_network(address: IPAddress) -> IPNetwork:
    """`address`/32 (or /128). Built from the integer: `ip_network(address)` formats and re-parses a string,
    which was the compiler's largest single cost with thousands of peers."""
    if address.version == 4:
        return ipaddress.IPv4Network((int(address), 32))
    return ipaddress.IPv6Network((int(address), 128))


@dataclass
class ClusterIndex:
    """Lookups the compiler needs many times, built once per cluster snapshot."""

    cluster: Cluster
    members: dict[str, list[tuple[Pod, tuple[IPAddress, ...]]]] = field(default_factory=dict)
    # A rule's peers do not depend on the pod it guards: computed once per (rule, network) and snapshot, not once
    # per selected pod (the daemon's largest cost with many local pods under one policy).
    _peers: dict[tuple[int, str, str], tuple[IPNetwork, ...]] = field(default_factory=dict)

    def rule_peers(self, policy: MultiNetworkPolicy, rule: Rule, network: str) -> tuple[IPNetwork, ...]:
        # peers depend on the rule, the network and (podSelector-only peers) the policy's namespace; the snapshot
        # holds every rule for the index's lifetime, so ids stay unique
        key = (id(rule), policy.namespace, network)
        if key not in self._peers:
            self._peers[key] = collapse(_rule_peers(self, policy, rule, network))
        return self._peers[key]

    @staticmethod
    def build(cluster: Cluster) -> ClusterIndex:
        members: dict[str, list[tuple[Pod, tuple[IPAddress, ...]]]] = defaultdict(list)
        for pod in cluster.pods:
            if not pod.is_active:
                continue
            for attachment in pod.secondary_attachments():
                if attachment.ips:
                    members[attachment.network].append((pod, attachment.ips))
        return ClusterIndex(cluster, dict(members))

    def peer_pods(
        self, policy: MultiNetworkPolicy, peer: Peer, network: str
    ) -> list[tuple[Pod, tuple[IPAddress, ...]]]:
        out = []
        for pod, ips in self.members.get(network, ()):
            if peer.namespace_selector is None:
                if pod.namespace != policy.namespace:  # podSelector alone: the policy's own namespace
                    continue
            elif not peer.namespace_selector.matches(self.cluster.namespace_labels(pod.namespace)):
                continue
            if peer.pod_selector is not None and not peer.pod_selector.matches(pod.labels):
                continue
            out.append((pod, ips))
        return out


def selects(policy: MultiNetworkPolicy, pod: Pod, network: str) -> bool:
    """Whether `policy` applies to `pod`'s interface on `network`."""
    return (
        pod.is_active
        and policy.namespace == pod.namespace
        and network in policy.policy_for
        and policy.pod_selector.matches(pod.labels)
    )


def _rule_peers(index: ClusterIndex, policy: MultiNetworkPolicy, rule: Rule, network: str) -> list[IPNetwork]:
    if not rule.peers:
        return [ALL_V4, ALL_V6]
    nets: list[IPNetwork] = []
    for peer in rule.peers:
        if peer.ip_block is not None:
            nets.extend(subtract(peer.ip_block.cidr, peer.ip_block.excepts))
        else:
            nets.extend(host_network(ip) for _, ips in index.peer_pods(policy, peer, network) for ip in ips)
    return nets


def _numeric_ranges(rule: Rule) -> list[PortRange]:
    out = []
    for spec in rule.ports:
        if isinstance(spec.port, str):
            continue
        first = spec.port if spec.port is not None else 0
        last = spec.end_port if spec.end_port is not None else (spec.port if spec.port is not None else 65535)
        out.append(PortRange(spec.protocol.lower(), first, last))
    return out


def _rule_allows(
    index: ClusterIndex,
    policy: MultiNetworkPolicy,
    direction: str,
    number: int,
    rule: Rule,
    pod: Pod,
    network: str,
) -> list[Allow]:
    source = f"{policy.key} {direction.lower()}[{number}]"
    peers = index.rule_peers(policy, rule, network)
    if not peers:
        return []
    if not rule.ports:
        return [Allow(source, peers, None)]
    allows = []
    numeric = _numeric_ranges(rule)
    if numeric:
        allows.append(Allow(source, peers, tuple(sorted(set(numeric)))))
    named = [s for s in rule.ports if isinstance(s.port, str)]
    if not named:
        return allows
    if direction == INGRESS:  # the destination is the selected pod itself
        resolved = _resolve(pod, named)
        if resolved:
            allows.append(Allow(source, peers, resolved))
        return allows
    # Egress: every destination pod on this network inside the rule's peers resolves the names for itself.
    by_ports: dict[tuple[PortRange, ...], list[IPNetwork]] = defaultdict(list)
    for member, ips in index.members.get(network, ()):
        inside = [ip for ip in ips if any(ip in net for net in peers)]
        resolved = _resolve(member, named) if inside else ()
        if resolved:
            by_ports[resolved].extend(host_network(ip) for ip in inside)
    for ports, addresses in sorted(by_ports.items()):
        allows.append(Allow(source, collapse(addresses), ports))
    return allows


def _resolve(pod: Pod, named: list) -> tuple[PortRange, ...]:  # type: ignore[type-arg]
    out = set()
    for spec in named:
        number = pod.resolve_named_port(spec.port, spec.protocol)
        if number is not None:
            out.add(PortRange(spec.protocol.lower(), number, number))
    return tuple(sorted(out))


def compile_direction(index: ClusterIndex, pod: Pod, network: str, direction: str) -> DirectionRules:
    policies = sorted(
        (p for p in index.cluster.policies if direction in p.policy_types and selects(p, pod, network)),
        key=lambda p: p.key,
    )
    if not policies:
        return OPEN
    allows: list[Allow] = []
    for policy in policies:
        for number, rule in enumerate(policy.rules(direction)):
            allows.extend(_rule_allows(index, policy, direction, number, rule, pod, network))
    return DirectionRules(True, tuple(allows), tuple(p.key for p in policies))


def compile_pod(index: ClusterIndex, pod: Pod) -> list[InterfaceRules]:
    """The rules of every secondary interface of one pod (hostNetwork pods have none)."""
    out = []
    for attachment in pod.secondary_attachments():
        out.append(
            InterfaceRules(
                pod.key,
                attachment.interface,
                attachment.network,
                compile_direction(index, pod, attachment.network, INGRESS),
                compile_direction(index, pod, attachment.network, EGRESS),
            )
        )
    return out


def compile_cluster(cluster: Cluster, node: str | None = None) -> dict[tuple[str, str], InterfaceRules]:
    """Every pod interface (of `node`, when given), keyed by (pod "ns/name", interface name)."""
    index = ClusterIndex.build(cluster)
    out = {}
    for pod in cluster.pods:
        if node is not None and pod.node_name != node:
            continue
        for rules in compile_pod(index, pod):
            out[(rules.pod, rules.ifname)] = rules
    return out
