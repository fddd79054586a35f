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

import operator
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


class PolicyIndex:
    """The policies of one collection by the pod labels their peers require, so that a pod's change tests only
    the policies that can see it, not all of them.

    A peer whose podSelector has an `In` requirement can only match pods carrying its key with one of its values;
    the policy is filed under each such (key, value) of every peer (one requirement per peer suffices). A policy
    that has a peer without one (no podSelector, an empty one, only NotIn/Exists/DoesNotExist) or an egress rule
    with named ports (every pod of the network counts) is tested for every pod; a policy whose rules have no pod
    peers at all never sees a pod. The candidates are then tested exactly (`policy_sees_pod`), so the answer is
    the full scan's (tests/unit/test_scale_indexes.py)."""

    def __init__(self, policies: Iterable[MultiNetworkPolicy]) -> None:
        self.policies = tuple(policies)
        self._always: list[int] = []
        self._by_label: dict[tuple[str, str], list[int]] = {}
        for position, policy in enumerate(self.policies):
            labels = _required_labels(policy)
            if labels is None:
                self._always.append(position)
            for item in labels or ():
                self._by_label.setdefault(item, []).append(position)

    def candidates(self, pod: Pod) -> set[int]:
        """Positions of the policies that may see `pod` (a superset of those that do)."""
        found = set(self._always)
        for item in pod.labels.items():
            found.update(self._by_label.get(item, ()))
        return found

    def seeing(self, pods: Iterable[Pod | None], namespaces: Mapping[str, Namespace]) -> set[str]:
        found = set()
        for pod in pods:
            if pod is None:
                continue
            ns_labels = namespace_labels(namespaces, pod.namespace)
            for position in self.candidates(pod):
                policy = self.policies[position]
                if policy.key not in found and policy_sees_pod(policy, pod, ns_labels):
                    found.add(policy.key)
        return found


def _required_labels(policy: MultiNetworkPolicy) -> set[tuple[str, str]] | None:
    """The (key, value) pairs a pod must carry one of to be seen by `policy`; None: any pod may be."""
    out: set[tuple[str, str]] = set()
    for direction, rule in _rules(policy):
        if direction == EGRESS and _has_named_ports(rule):
            return None
        for peer in rule.peers:
            if peer.ip_block is not None:
                continue  # never a pod
            requirement = min(
                (r for r in peer.pod_selector.requirements if r.operator == "In") if peer.pod_selector else (),
                key=lambda r: len(r.values),
                default=None,
            )
            if requirement is None:
                return None
            out.update((requirement.key, value) for value in requirement.values)
    return out


_last_index = PolicyIndex(())


def policy_index(policies: Iterable[MultiNetworkPolicy]) -> PolicyIndex:
    """The index of `policies`, reused while the collection holds the very same policy objects (the store's
    values are immutable: a changed policy is a new object). The controller passes a new list on every sync
    but the same policies between policy changes, so the index is rebuilt only when a policy changes."""
    global _last_index
    current = policies if isinstance(policies, list | tuple) else list(policies)
    last = _last_index
    if len(last.policies) != len(current) or not all(map(operator.is_, last.policies, current)):
        last = _last_index = PolicyIndex(current)
    return last


def policies_seeing_pod(
    policies: Iterable[MultiNetworkPolicy], pods: Iterable[Pod | None], namespaces: Mapping[str, Namespace]
) -> set[str]:
    """Keys of the policies whose allows may change when a pod goes from one version to another."""
    return policy_index(policies).seeing(pods, namespaces)


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
