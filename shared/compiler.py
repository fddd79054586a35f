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
from shared.rules import (
    EGRESS,
    INGRESS,
    OPEN,
    Allow,
    DirectionRules,
    InterfaceRules,
    IPAddress,
    IPNetwork,
    PortRange,
    collapse,
)
from shared.selectors import LabelSelector

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


Member = tuple[Pod, tuple[IPAddress, ...]]


@dataclass
class ClusterIndex:
    """Lookups the compiler needs many times, built once per cluster snapshot.

    `members` is built eagerly (one pass over the pods); the rest lazily, on the first lookup that needs it: the
    members of a network grouped by namespace, and per (network, namespace) the members carrying each label
    (key, value). With them a peer's pods are found by visiting only the namespaces its namespaceSelector matches
    and, when its podSelector has an `In` requirement, only the pods carrying one of its values — not every pod
    on the network (tests/unit/test_scale_indexes.py checks the result against the plain scan)."""

    cluster: Cluster
    members: dict[str, list[Member]] = field(default_factory=dict)
    # A rule's peers do not depend on the pod it guards, nor on the rule beyond its peer specs: computed once per
    # (peer specs, policy namespace, network) while the pods and namespaces stay as they are, not once per
    # selected pod (the daemon's largest cost with many local pods under one policy) nor once per policy edit.
    _peers: dict[tuple[tuple[Peer, ...], str, str], tuple[IPNetwork, ...]] = field(default_factory=dict, repr=False)
    _by_namespace: dict[str, dict[str, list[int]]] = field(default_factory=dict, repr=False)
    _by_label: dict[tuple[str, str], dict[tuple[str, str], list[int]]] = field(default_factory=dict, repr=False)
    _policies_in: dict[str, tuple[MultiNetworkPolicy, ...]] | None = field(default=None, repr=False)
    # One Allow object per (source, peers tuple, ports) in the index's lifetime: a rule shared by the pods of
    # several groups (one policy selecting them all) is then one object, hashed and compared once, not per group.
    _allows: dict[tuple[str, int, tuple[PortRange, ...] | None], Allow] = field(default_factory=dict, repr=False)

    def allow(self, source: str, peers: tuple[IPNetwork, ...], ports: tuple[PortRange, ...] | None) -> Allow:
        key = (source, id(peers), ports)
        found = self._allows.get(key)
        if found is None or found.peers is not peers:  # the entry holds its peers: an id is never reused meanwhile
            found = self._allows[key] = Allow(source, peers, ports)
        return found

    def rule_peers(self, policy: MultiNetworkPolicy, rule: Rule, network: str) -> tuple[IPNetwork, ...]:
        # peers depend on the rule's peer specs, the network and (podSelector-only peers) the policy's namespace
        key = (rule.peers, policy.namespace, network)
        found = self._peers.get(key)
        if found is None:
            found = self._peers[key] = _rule_peers(self, policy, rule, network)
        return found

    @staticmethod
    def build(cluster: Cluster, previous: ClusterIndex | None = None) -> ClusterIndex:
        """The index of `cluster`. With `previous`, an index of an earlier snapshot: when the pods are equal (same
        pods, same order — what a policy or namespace change leaves as it was), its pod-side lookups (`members`
        and the groups by namespace and label built so far, which depend on the pods alone) are shared instead of
        rebuilt, and when the namespaces are equal too, the peers found for each peer spec (a policy edit then
        recomputes only the peers of specs that are new); `policies_in` is always this cluster's own."""
        if previous is not None and previous.cluster.pods == cluster.pods:
            peers = previous._peers if previous.cluster.namespaces == cluster.namespaces else {}
            if len(peers) > 2 * sum(len(p.ingress) + len(p.egress) for p in cluster.policies) + 64:
                peers = {}  # mostly rules that are gone: start again rather than grow
            return ClusterIndex(
                cluster,
                previous.members,
                _peers=peers,
                _by_namespace=previous._by_namespace,
                _by_label=previous._by_label,
            )
        members: dict[str, list[Member]] = defaultdict(list)
        for pod in cluster.pods:
            if not pod.is_active:
                continue
            for attachment in pod.secondary_attachments():
                if attachment.ips:
                    members[attachment.network].append((pod, attachment.ips))
        return ClusterIndex(cluster, dict(members))

    def policies_in(self, namespace: str) -> tuple[MultiNetworkPolicy, ...]:
        """The policies of one namespace (the only ones that can select its pods), in the cluster's order."""
        if self._policies_in is None:
            grouped: dict[str, list[MultiNetworkPolicy]] = defaultdict(list)
            for policy in self.cluster.policies:
                grouped[policy.namespace].append(policy)
            self._policies_in = {ns: tuple(ps) for ns, ps in grouped.items()}
        return self._policies_in.get(namespace, ())

    def _namespaces(self, network: str) -> dict[str, list[int]]:
        """Positions in `members[network]` by pod namespace, ascending."""
        groups = self._by_namespace.get(network)
        if groups is None:
            groups = self._by_namespace[network] = defaultdict(list)
            for position, (pod, _) in enumerate(self.members.get(network, ())):
                groups[pod.namespace].append(position)
        return groups

    def _labelled(self, network: str, namespace: str) -> dict[tuple[str, str], list[int]]:
        """Positions of one namespace's members on `network` by label (key, value), ascending."""
        index = self._by_label.get((network, namespace))
        if index is None:
            index = self._by_label[(network, namespace)] = defaultdict(list)
            members = self.members[network]
            for position in self._namespaces(network)[namespace]:
                for item in members[position][0].labels.items():
                    index[item].append(position)
        return index

    def _candidates(self, network: str, namespace: str, selector: LabelSelector | None) -> list[int]:
        """Positions of the namespace's members that `selector` may match: the pods carrying a value of its most
        selective `In` requirement (a pod without one cannot match), or every pod of the namespace."""
        best: list[int] | None = None
        for requirement in selector.requirements if selector is not None else ():
            if requirement.operator != "In":
                continue
            index = self._labelled(network, namespace)
            found = [p for value in requirement.values for p in index.get((requirement.key, value), ())]
            if best is None or len(found) < len(best):
                best = found
        return self._namespaces(network)[namespace] if best is None else best

    def peer_pods(self, policy: MultiNetworkPolicy, peer: Peer, network: str) -> list[Member]:
        """The members of `network` that `peer` (of `policy`) selects, in the order of `members[network]`."""
        members = self.members.get(network)
        if not members:
            return []
        groups = self._namespaces(network)
        if peer.namespace_selector is None:  # podSelector alone: the policy's own namespace
            namespaces = [policy.namespace] if policy.namespace in groups else []
        else:
            selector = peer.namespace_selector
            namespaces = [ns for ns in groups if selector.matches(self.cluster.namespace_labels(ns))]
        positions: list[int] = []
        for namespace in namespaces:
            positions.extend(self._candidates(network, namespace, peer.pod_selector))
        positions.sort()
        pod_selector = peer.pod_selector
        return [members[p] for p in positions if pod_selector is None or pod_selector.matches(members[p][0].labels)]


def selects(policy: MultiNetworkPolicy, pod: Pod, network: str) -> bool:
    """Whether `policy` applies to `pod`'s interface on `network`."""
    return (
        policy.namespace == pod.namespace  # first: the cheapest test, and the one most policies fail
        and pod.is_active
        and policy.applies_on(network)
        and policy.pod_selector.matches(pod.labels)
    )


# The last peers computed for each rule slot — (policy, direction, rule number, network) — across snapshots, with
# the inputs they were computed from. A peer's change elsewhere in the cluster (most pod events) leaves most rules'
# inputs as they were; such a rule then gets the very tuple it got before, without building a /32 network per
# address and collapsing them again, and the daemon's "same rules as programmed?" test finds identical objects.
# A memo only: the result is a function of the inputs alone. Bounded; a slot whose policy is gone is dropped when
# the table is cleared.
_LAST_PEERS: dict[tuple[str, str, int, str], tuple[tuple[object, ...], tuple[IPNetwork, ...]]] = {}
_LAST_PEERS_MAX = 4096


def _slot(policy: MultiNetworkPolicy, rule: Rule, network: str) -> tuple[str, str, int, str]:
    for direction, rules in ((INGRESS, policy.ingress), (EGRESS, policy.egress)):
        for number, candidate in enumerate(rules):
            if candidate is rule:
                return (policy.key, direction, number, network)
    return (policy.key, "", id(rule), network)  # not one of the policy's own rules (a caller's own Rule)


def _rule_peers(index: ClusterIndex, policy: MultiNetworkPolicy, rule: Rule, network: str) -> tuple[IPNetwork, ...]:
    if not rule.peers:
        return (ALL_V4, ALL_V6)
    blocks: list[IPNetwork] = []
    v4: list[int] = []
    v6: list[int] = []
    for peer in rule.peers:
        if peer.ip_block is not None:
            blocks.extend(subtract(peer.ip_block.cidr, peer.ip_block.excepts))
        else:
            for _, ips in index.peer_pods(policy, peer, network):
                for ip in ips:
                    (v4 if ip.version == 4 else v6).append(int(ip))
    v4.sort()
    v6.sort()
    inputs = (tuple(blocks), tuple(v4), tuple(v6))
    slot = _slot(policy, rule, network)
    last = _LAST_PEERS.get(slot)
    if last is not None and last[0] == inputs:
        return last[1]
    hosts = [ipaddress.IPv4Network((a, 32)) for a in v4] + [ipaddress.IPv6Network((a, 128)) for a in v6]
    peers = collapse([*blocks, *hosts])
    if len(_LAST_PEERS) >= _LAST_PEERS_MAX:
        _LAST_PEERS.clear()
    _LAST_PEERS[slot] = (inputs, peers)
    return peers


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
        return [index.allow(source, peers, None)]
    allows = []
    numeric = _numeric_ranges(rule)
    if numeric:
        allows.append(index.allow(source, peers, tuple(sorted(set(numeric)))))
    named = [s for s in rule.ports if isinstance(s.port, str)]
    if not named:
        return allows
    if direction == INGRESS:  # the destination is the selected pod itself
        resolved = _resolve(pod, named)
        if resolved:
            allows.append(index.allow(source, peers, resolved))
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
        (p for p in index.policies_in(pod.namespace) if direction in p.policy_types and selects(p, pod, network)),
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
