"""Raw Kubernetes objects (API JSON or YAML manifests) → the keys and parsed values the store holds.

Both object sources go through here, so the API and the manifests directory can never disagree about what an
object means. Parsing is shared.model's; this module adds the daemon's two decisions:

* A pod that has no secondary network at all (no `k8s.v1.cni.cncf.io/networks` request and no non-default
  network-status entry), or runs in the host network, can neither be guarded nor be a peer: it is not kept
  (value None), which is most of a cluster's pods and most of the memory the pod cache would otherwise cost.
* A pod records whether Multus has reported its network-status (`PodObject.status_reported`): before that its
  attachments are guesses from the request, good enough for a peer's static addresses but not to program it.
* A kept pod is kept compact (`compact`): only what the compiler and the controller read. Its primary-network
  attachment and its parsed network requests are dropped (the attachments already reflect the requests), and
  equal label dicts are shared — the pods of one Deployment carry the same labels, so 10,000 pods hold a few
  hundred dicts, not 10,000. Strings are interned by shared.model's parsers.
* What the parsers could not read (`Converted.problems`: a garbled network-status or networks annotation, a bad
  container port, a NAD config that is no JSON object, a pod's or namespace's labels or annotations that are no map
  of string to string — `shared.model.metadata_type_problems`) is returned beside the value, never dropped: the
  value keeps what could be read — fail closed, as shared.model's parsers decide — and the daemon reports the rest
  (an Event on the object, a log line, `mnp_object_problems`, `mnpctl status`; daemon.controller). At most
  MAX_PROBLEMS messages per object are kept (a policy's too): a hostile object with 10,000 bad entries costs ten
  short lines, not 10,000.
"""

from __future__ import annotations

import dataclasses
import sys
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from daemon.store import NAD, NAMESPACE, POD, POLICY, ObjectProblems, PodObject
from shared.model import (
    NETWORK_STATUS,
    NETWORKS,
    POLICY_TYPES,
    MultiNetworkPolicy,
    Namespace,
    NetworkAttachmentDefinition,
    Pod,
    metadata_type_problems,
    parse_nad,
    parse_namespace,
    parse_pod,
    parse_policy,
)
from shared.selectors import MATCH_EVERYTHING, UNREADABLE_LABELS, UnreadableLabels, excerpt

MAX_PROBLEMS = 10  # messages kept per object; the rest are counted

API_KINDS = {
    "Namespace": NAMESPACE,
    "Pod": POD,
    "NetworkAttachmentDefinition": NAD,
    "MultiNetworkPolicy": POLICY,
}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def object_key(kind: str, obj: Mapping[str, Any]) -> str:
    meta = _meta(obj)
    name = str(meta.get("name", ""))
    if kind == NAMESPACE:
        return name
    return f"{meta.get('namespace') or 'default'}/{name}"


def status_reported(obj: Mapping[str, Any]) -> bool:
    annotations = _meta(obj).get("annotations")
    return isinstance(annotations, dict) and NETWORK_STATUS in annotations


def _names_networks(obj: Mapping[str, Any]) -> bool:
    """The pod has a Multus annotation, or annotations that are no map (which may hold one): a problem in it may
    be what hides a secondary network."""
    annotations = _meta(obj).get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        return True
    return isinstance(annotations, dict) and (NETWORK_STATUS in annotations or NETWORKS in annotations)


class SharedLabels(dict[str, str]):
    """A label dict held by one or more pods: a plain dict that can be weakly referenced (`_LABEL_SETS`)."""

    __slots__ = ("__weakref__",)


# Equal label sets by the hash of their items, as long as some pod still holds them: a set no pod holds any more
# (a pod deleted, a label changed) drops out by itself, so the table never holds more than the live pods' sets —
# a bounded table of strong references kept thousands of dead sets (+4.5 MB over the scale benchmark's 6,000
# label changes; docs/benchmarks.md, Scale). Two sets with the same hash share one slot, the later one wins:
# sharing is only a saving.
_LABEL_SETS: weakref.WeakValueDictionary[int, SharedLabels] = weakref.WeakValueDictionary()


def shared_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """An equal label dict already held by another pod, or `labels` as a `SharedLabels` (remembered for the next
    ones). Pods never mutate their labels (`Pod.labels` is a read-only Mapping), so sharing one dict is safe.
    `UNREADABLE_LABELS` stays itself: it is no empty dict."""
    if isinstance(labels, UnreadableLabels):
        return labels
    digest = hash(frozenset(labels.items()))
    found = _LABEL_SETS.get(digest)
    if found is None or found != labels:
        found = _LABEL_SETS[digest] = SharedLabels(labels)
    return found


def compact(pod: Pod) -> Pod:
    """The pod with only what the daemon reads: secondary attachments, no requests, shared labels. Equal for
    every purpose of the compiler, the dependencies and the controller (tests/unit/test_daemon_builders.py)."""
    return dataclasses.replace(
        pod, labels=shared_labels(pod.labels), requests=(), attachments=pod.secondary_attachments()
    )


def pod_value(pod: Pod, reported: bool) -> PodObject | None:
    """What the store keeps of a pod, or None for a pod that can be neither guarded nor a peer."""
    relevant = not pod.host_network and bool(pod.requests or pod.secondary_attachments())
    return PodObject(compact(pod), reported) if relevant else None


class Converted(NamedTuple):
    key: str  # the store key
    value: Any  # the parsed value, or None when the daemon does not keep the object
    uid: str
    problems: ObjectProblems | None = None  # what could not be read (None: nothing)


def _capped(found: Sequence[str]) -> tuple[str, ...]:
    """At most MAX_PROBLEMS messages, and how many more there were."""
    kept = list(found[:MAX_PROBLEMS])
    if len(found) > MAX_PROBLEMS:
        kept.append(f"… and {len(found) - MAX_PROBLEMS} more")
    # interned: a controller or template writing one bad annotation repeats the same message on many pods
    return tuple(sys.intern(m) for m in kept)


def _problems(found: list[str], uid: str, node: str = "") -> ObjectProblems | None:
    return ObjectProblems(_capped(found), uid, node) if found else None


def convert(kind: str, obj: Mapping[str, Any]) -> Converted:
    """The object's store key, parsed value (None when the daemon does not keep it), uid and problems. Policies
    carry their problems in the value (`MultiNetworkPolicy.problems`, reported as InvalidPolicy). Never raises for
    an object's content: a parser that trips over some shape it did not foresee costs that object (`unparsable`),
    never its reflector — which would retry the same event for ever, and no change of its kind would be seen."""
    if kind not in API_KINDS.values():
        raise ValueError(f"unknown kind {kind!r}")
    key = object_key(kind, obj)
    uid = str(_meta(obj).get("uid") or "")
    try:
        return _convert(kind, obj, key, uid)
    except Exception as exc:
        return unparsable(kind, obj, key, uid, f"cannot be parsed ({type(exc).__name__}: {excerpt(str(exc))[1:-1]})")


def unparsable(kind: str, obj: Mapping[str, Any], key: str, uid: str, why: str) -> Converted:
    """What stands for an object the parsers tripped over, fail closed: a policy that isolates every pod of its
    namespace, both ways, on every network, and allows nothing; a pod that is not kept (no interface mnpd programs,
    no peer); a namespace whose labels cannot be read; a NAD whose config cannot be read. Each reported."""
    namespace, _, name = key.rpartition("/")
    if kind == POLICY:
        policy = MultiNetworkPolicy(
            namespace, name, (), MATCH_EVERYTHING, frozenset(POLICY_TYPES), problems=(why,), every_network=True
        )
        return Converted(key, policy, uid)
    value: Any = None
    node = ""
    if kind == NAMESPACE:
        value = Namespace(key, UNREADABLE_LABELS)
    elif kind == NAD:
        value = NetworkAttachmentDefinition(namespace, name)
    else:  # a pod: its node, if that much can be read, posts the Event (daemon.controller)
        spec = obj.get("spec")
        found = spec.get("nodeName") if isinstance(spec, dict) else None
        node = found if isinstance(found, str) else ""
    return Converted(key, value, uid, _problems([why], uid, node))


def _convert(kind: str, obj: Mapping[str, Any], key: str, uid: str) -> Converted:
    if kind == POLICY:
        policy = parse_policy(obj)
        if len(policy.problems) > MAX_PROBLEMS:  # every node logs them, and writes them to its status file
            policy = dataclasses.replace(policy, problems=_capped(policy.problems))
        return Converted(key, policy, uid)
    found: list[str] = []
    node = ""
    value: Any
    if kind == NAMESPACE:
        value = parse_namespace(obj)
        found = metadata_type_problems(obj, ("labels",))  # its annotations: mnp reads none
    elif kind == POD:
        pod, found = parse_pod(obj)
        node = pod.node_name
        value = pod_value(pod, status_reported(obj))
        if value is None and not _names_networks(obj):
            found = []  # a pod mnp reads nothing of (no secondary network claimed): none of its business
    else:
        value, found = parse_nad(obj)
    return Converted(key, value, uid, _problems(found, uid, node))
