"""Which policies can see an object: the index that keeps a label change on one pod from recomputing every pod.

An interface's rules (shared.compiler) depend on exactly these inputs:

1. its own pod — labels (which policies select it), containerPorts (ingress named ports), phase;
2. the policies of its pod's namespace that select it on its network (`selects`);
3. for each of those policies, the pods its peers match on that network and, through namespaceSelectors, the
   labels of their namespaces; for egress rules with named ports, every pod on the network inside the rule's
   peers (each resolves the name for itself).

So a changed **policy** dirties the interfaces it selects before or after the change; a changed **pod** dirties
its own interfaces and the interfaces of every policy whose peers may match it before or after the change
(`policies_seeing_pod`); a changed **namespace** dirties the interfaces of every policy with a namespaceSelector
peer matching its labels before or after (`policies_seeing_namespace`). The controller keeps, per interface, the
policies that selected it when it was last computed (`DirectionRules.policies`) and unions the two.

NetworkAttachmentDefinitions are not read by the compiler, so they dirty nothing. These functions
over-approximate (they ignore addresses, phases and port numbers), never under-approximate; the periodic full
resync recomputes everything anyway and is the safety net, and a unit test checks incremental == full.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shared.model import EGRESS, INGRESS, MultiNetworkPolicy, Namespace, Peer, Pod, Rule


def namespace_labels(namespaces: Mapping[str, Namespace], name: str) -> Mapping[str, str]:
    ns = namespaces.get(name)
    return ns.labels if ns else {"kubernetes.io/metadata.name": name}


def _networks(pod: Pod) -> set[str]:
    return {a.network for a in pod.secondary_attachments()}


def _peer_may_match(policy: MultiNetworkPolicy, peer: Peer, pod: Pod, ns_labels: Mapping[str, str]) -> bool:
    if peer.ip_block is not None:
        return False
    if peer.namespace_selector is None:
        if pod.namespace != policy.namespace:
            return False
    elif not peer.namespace_selector.matches(ns_labels):
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)


def _rules(policy: MultiNetworkPolicy) -> Iterable[tuple[str, Rule]]:
    for direction in (INGRESS, EGRESS):
        for rule in policy.rules(direction):  # empty for invalid policies: they allow nothing
            yield direction, rule


def _has_named_ports(rule: Rule) -> bool:
    return any(isinstance(p.port, str) for p in rule.ports)


def policy_sees_pod(policy: MultiNetworkPolicy, pod: Pod, ns_labels: Mapping[str, str]) -> bool:
    """Whether `pod` may contribute addresses or ports to `policy`'s allows."""
    if not _networks(pod) & set(policy.policy_for):
        return False
    for direction, rule in _rules(policy):
        if direction == EGRESS and _has_named_ports(rule):
            return True  # every pod on the network inside the peers resolves the name itself
        if any(_peer_may_match(policy, peer, pod, ns_labels) for peer in rule.peers):
            return True
    return False


def policies_seeing_pod(
    policies: Iterable[MultiNetworkPolicy], pods: Iterable[Pod | None], namespaces: Mapping[str, Namespace]
) -> set[str]:
    """Keys of the policies whose allows may change when a pod goes from one version to another."""
    found = set()
    versions = [p for p in pods if p is not None]
    for policy in policies:
        for pod in versions:
            if policy_sees_pod(policy, pod, namespace_labels(namespaces, pod.namespace)):
                found.add(policy.key)
                break
    return found


def policies_seeing_namespace(policies: Iterable[MultiNetworkPolicy], labels: Iterable[Mapping[str, str]]) -> set[str]:
    """Keys of the policies with a namespaceSelector peer matching any of the given label sets."""
    label_sets = list(labels)
    found = set()
    for policy in policies:
        for _, rule in _rules(policy):
            if any(
                peer.namespace_selector is not None and any(peer.namespace_selector.matches(ls) for ls in label_sets)
                for peer in rule.peers
            ):
                found.add(policy.key)
                break
    return found
