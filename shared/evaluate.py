"""The reference evaluator: NetworkPolicy semantics decided for one packet, with the reason.

This is deliberately written *independently* of `shared.compiler`: it never builds allow sets, it asks the API's
questions directly for one (network, source address, destination address, protocol, port). Tests check that
tracing the rendered nftables rules gives the same answer (the differential test), and `mnpctl matrix` uses it to
explain each verdict.

A packet between two pod interfaces must pass the source's egress policy *and* the destination's ingress policy:
"when a pod is isolated for egress … the only allowed connections from the pod are those allowed by the egress
list of some policy that applies to the pod"; likewise for ingress. An address no pod has on the network is a
host outside the cluster: it is never isolated, and only ipBlocks match it.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.model import Cluster, MultiNetworkPolicy, Peer, Pod, PortSpec, Rule
from shared.rules import EGRESS, INGRESS, IPAddress


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str


def owner(cluster: Cluster, network: str, address: IPAddress) -> Pod | None:
    """The active pod that has `address` on `network`, if any."""
    for pod in cluster.pods:
        if pod.is_active and address in pod.addresses_on(network):
            return pod
    return None


def _selects(policy: MultiNetworkPolicy, pod: Pod, network: str, direction: str) -> bool:
    return (
        direction in policy.policy_types
        and policy.namespace == pod.namespace
        and policy.applies_on(network)
        and policy.pod_selector.matches(pod.labels)
    )


def _peer_matches(cluster: Cluster, policy: MultiNetworkPolicy, peer: Peer, network: str, address: IPAddress) -> bool:
    if peer.ip_block is not None:
        return peer.ip_block.contains(address)
    pod = owner(cluster, network, address)
    if pod is None:
        return False  # selectors match pods only; a host outside the cluster is matched by ipBlocks alone
    if peer.namespace_selector is None:
        if pod.namespace != policy.namespace:
            return False
    elif not peer.namespace_selector.matches(cluster.namespace_labels(pod.namespace)):
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)


def _port_matches(spec: PortSpec, destination: Pod | None, protocol: str, port: int) -> bool:
    if spec.protocol != protocol:
        return False
    if spec.port is None:
        return True
    if isinstance(spec.port, str):
        number = destination.resolve_named_port(spec.port, protocol) if destination else None
        return number == port
    return spec.port <= port <= (spec.end_port if spec.end_port is not None else spec.port)


def _rule_matches(
    cluster: Cluster,
    policy: MultiNetworkPolicy,
    rule: Rule,
    network: str,
    peer_address: IPAddress,
    destination: Pod | None,
    protocol: str,
    port: int,
) -> bool:
    if rule.peers and not any(_peer_matches(cluster, policy, p, network, peer_address) for p in rule.peers):
        return False
    return not rule.ports or any(_port_matches(s, destination, protocol, port) for s in rule.ports)


def _side(
    cluster: Cluster,
    direction: str,
    pod: Pod | None,
    network: str,
    peer_address: IPAddress,
    destination: Pod | None,
    protocol: str,
    port: int,
) -> Verdict:
    label = "egress from" if direction == EGRESS else "ingress to"
    if pod is None:
        return Verdict(True, f"{label} a host outside the cluster: not isolated")
    policies = sorted((p for p in cluster.policies if _selects(p, pod, network, direction)), key=lambda p: p.key)
    if not policies:
        return Verdict(True, f"{label} {pod.key}: not isolated (no policy for {network} selects it)")
    for policy in policies:
        for number, rule in enumerate(policy.rules(direction)):
            if _rule_matches(cluster, policy, rule, network, peer_address, destination, protocol, port):
                return Verdict(True, f"{label} {pod.key}: allowed by {policy.key} {direction.lower()}[{number}]")
    names = ", ".join(p.key + ("" if p.valid else " (invalid: no allows)") for p in policies)
    return Verdict(False, f"{label} {pod.key}: denied (isolated by {names}; no rule matches)")


def evaluate(
    cluster: Cluster, network: str, source: IPAddress, destination: IPAddress, protocol: str, port: int
) -> Verdict:
    """May a new connection `source` → `destination`:`port`/`protocol` on `network` be established?"""
    src_pod = owner(cluster, network, source)
    dst_pod = owner(cluster, network, destination)
    egress = _side(cluster, EGRESS, src_pod, network, destination, dst_pod, protocol, port)
    if not egress.allowed:
        return egress
    ingress = _side(cluster, INGRESS, dst_pod, network, source, dst_pod, protocol, port)
    if not ingress.allowed:
        return ingress
    return Verdict(True, f"{egress.reason}; {ingress.reason}")
