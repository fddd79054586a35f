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
from collections import defaultdict
from collections.abc import Iterable, Mapping

from shared.model import MultiNetworkPolicy, Namespace, Peer, Pod, Rule
from shared.rules import EGRESS, INGRESS
from shared.selectors import LabelSelector


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


Entry = tuple[str, LabelSelector | None]  # a policy's key and the podSelector of one of its peers
Label = tuple[str, str] | None  # a (key, value) a peer's podSelector requires; None: it requires none


class PolicyIndex:
    """The pod peers of a collection of policies, filed so that a changed pod meets only the peers that can match
    it instead of every rule of every policy.

    Per network of a policy's `policy-for`, each peer that is not an ipBlock is filed under the (key, value)s of
    its podSelector's most selective `In` requirement (a pod without one of them cannot match it), or under None
    when it has no such requirement; a peer without namespaceSelector also under the policy's namespace, one
    with a namespaceSelector grouped by that selector, which is then evaluated once per pod rather than once per
    peer. A policy with an egress rule on named ports sees every pod of its networks. `seeing` tests the peers it
    meets exactly, so its answer is `policy_sees_pod`'s for every policy (tests/unit/test_scale_indexes.py)."""

    def __init__(self, policies: Iterable[MultiNetworkPolicy]) -> None:
        self.policies = tuple(policies)
        self._everything: dict[str, set[str]] = defaultdict(set)  # network → policies seeing all of its pods
        self._same_namespace: dict[tuple[str, str, Label], list[Entry]] = defaultdict(list)
        self._by_namespaces: dict[tuple[str, Label], dict[LabelSelector, list[Entry]]] = defaultdict(dict)
        for policy in self.policies:
            rules = list(_rules(policy))
            if any(direction == EGRESS and _has_named_ports(rule) for direction, rule in rules):
                for network in policy.policy_for:
                    self._everything[network].add(policy.key)
                continue
            for _, rule in rules:
                for peer in rule.peers:
                    if peer.ip_block is None:
                        self._file(policy, peer)

    def _file(self, policy: MultiNetworkPolicy, peer: Peer) -> None:
        requirement = min(
            (r for r in peer.pod_selector.requirements if r.operator == "In") if peer.pod_selector else (),
            key=lambda r: len(r.values),
            default=None,
        )
        labels: list[Label] = [(requirement.key, v) for v in requirement.values] if requirement else [None]
        entry = (policy.key, peer.pod_selector)
        for network in policy.policy_for:
            for label in labels:
                if peer.namespace_selector is None:
                    self._same_namespace[(network, policy.namespace, label)].append(entry)
                else:
                    self._by_namespaces[(network, label)].setdefault(peer.namespace_selector, []).append(entry)

    def seeing(self, pods: Iterable[Pod | None], namespaces: Mapping[str, Namespace]) -> set[str]:
        """Keys of the policies that see any of `pods` (None: a version that does not exist)."""
        found: set[str] = set()
        for pod in pods:
            if pod is None:
                continue
            ns_labels = namespace_labels(namespaces, pod.namespace)
            labels: list[Label] = [None, *pod.labels.items()]
            for network in _networks(pod):
                found.update(self._everything.get(network, ()))
                for label in labels:
                    self._match(self._same_namespace.get((network, pod.namespace, label), ()), pod, found)
                    for selector, entries in self._by_namespaces.get((network, label), {}).items():
                        if selector.matches(ns_labels):
                            self._match(entries, pod, found)
        return found

    @staticmethod
    def _match(entries: Iterable[Entry], pod: Pod, found: set[str]) -> None:
        for key, selector in entries:
            if key not in found and (selector is None or selector.matches(pod.labels)):
                found.add(key)


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
