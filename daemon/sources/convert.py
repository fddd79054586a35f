"""Raw Kubernetes objects (API JSON or YAML manifests) → the keys and parsed values the store holds.

Both object sources go through here, so the API and the manifests directory can never disagree about what an
object means. Parsing is shared.model's; this module adds the daemon's two decisions:

* A pod that has no secondary network at all (no `k8s.v1.cni.cncf.io/networks` request and no non-default
  network-status entry), or runs in the host network, can neither be guarded nor be a peer: it is not kept
  (value None), which is most of a cluster's pods and most of the memory the pod cache would otherwise cost.
* A pod records whether Multus has reported its network-status (`PodObject.status_reported`): before that its
  attachments are guesses from the request, good enough for a peer's static addresses but not to program it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.store import NAD, NAMESPACE, POD, POLICY, PodObject
from shared.model import NETWORK_STATUS, Pod, parse_nad, parse_namespace, parse_pod, parse_policy

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


def pod_value(pod: Pod, reported: bool) -> PodObject | None:
    """What the store keeps of a pod, or None for a pod that can be neither guarded nor a peer."""
    relevant = not pod.host_network and bool(pod.requests or pod.secondary_attachments())
    return PodObject(pod, reported) if relevant else None


def convert(kind: str, obj: Mapping[str, Any]) -> tuple[str, Any, str]:
    """(store key, parsed value or None when the daemon does not keep it, uid)."""
    key = object_key(kind, obj)
    uid = str(_meta(obj).get("uid") or "")
    value: Any
    if kind == NAMESPACE:
        value = parse_namespace(obj)
    elif kind == POD:
        value = pod_value(parse_pod(obj)[0], status_reported(obj))
    elif kind == NAD:
        value, _ = parse_nad(obj)
    elif kind == POLICY:
        value = parse_policy(obj)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return key, value, uid
