"""Kubernetes Events for what a user must see with `kubectl describe`: invalid policies and pods left pending.

The reasons, all `Warning` (daemon.operator adds its own on the Node):

* `InvalidPolicy` on a MultiNetworkPolicy with validation problems (the message lists them all). The policy is
  still enforced fail-closed (shared.model): it isolates what it selects and allows nothing.
* `RulesNotApplied` on a Pod whose interface could not be programmed (the nft or conntrack error). The pod
  keeps its previous, never wider, rules while the daemon retries.
* `RulesTampered` on a Pod whose interface table the periodic resync found removed or edited, and restored.
* `InvalidPod`, `InvalidNetworkAttachmentDefinition`, `InvalidNamespace` on an object from the API with parts
  mnpd cannot read (a garbled network-status annotation, a NAD config that is no JSON object, labels that are no
  map of string to string; daemon.controller). What could not be read is left out, fail closed.

Events are deduplicated: one per (object, reason, message) until the condition clears (`clear`) — a retry loop
or a periodic resync does not post the same Event again. Posting happens on a background thread from a
bounded queue, so a slow or unreachable API server never stalls the sync loop; an Event that cannot be posted
is logged and dropped (and posted again if the condition is reported again after it cleared). With the
manifests source there is no API server and `LogEvents` only logs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.logs import fields

log = logging.getLogger(__name__)

COMPONENT = "mnpd"
MAX_MESSAGE = 1024  # the API server truncates longer Event messages


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    api_version: str
    namespace: str
    name: str
    uid: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def policy_ref(key: str, uid: str = "") -> ObjectRef:
    namespace, _, name = key.partition("/")
    return ObjectRef("MultiNetworkPolicy", "k8s.cni.cncf.io/v1beta1", namespace, name, uid)


def pod_ref(key: str, uid: str = "") -> ObjectRef:
    namespace, _, name = key.partition("/")
    return ObjectRef("Pod", "v1", namespace, name, uid)


def object_ref(kind: str, key: str, uid: str = "") -> ObjectRef:
    """A reference to an object of one of the store's kinds by its store key ("ns/name", a namespace's name)."""
    if kind == "Namespace":
        return ObjectRef("Namespace", "v1", "", key, uid)
    if kind == "NetworkAttachmentDefinition":
        namespace, _, name = key.partition("/")
        return ObjectRef(kind, "k8s.cni.cncf.io/v1", namespace, name, uid)
    if kind == "MultiNetworkPolicy":
        return policy_ref(key, uid)
    return pod_ref(key, uid)


def node_ref(name: str) -> ObjectRef:
    """A Node: cluster-scoped, so its Events live in `default` (as the kubelet posts them)."""
    return ObjectRef("Node", "v1", "", name, name)


def _event_namespace(ref: ObjectRef) -> str:
    return ref.namespace or "default"


class EventRecorder(Protocol):
    def warn(self, ref: ObjectRef, reason: str, message: str) -> None: ...

    def clear(self, ref: ObjectRef, reason: str) -> None: ...


class _Dedup:
    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def first(self, ref: ObjectRef, reason: str, message: str) -> bool:
        with self._lock:
            key = (ref.key, reason)
            if self._seen.get(key) == message:
                return False
            self._seen[key] = message
            return True

    def clear(self, ref: ObjectRef, reason: str) -> bool:
        with self._lock:
            return self._seen.pop((ref.key, reason), None) is not None

    def forget_message(self, ref: ObjectRef, reason: str, message: str) -> None:
        with self._lock:
            if self._seen.get((ref.key, reason)) == message:
                del self._seen[(ref.key, reason)]


def log_fields(ref: ObjectRef) -> dict[str, Any]:
    """The log fields naming `ref`'s object: pod=, policy=, network= (a NAD), else kind= and object=."""
    who = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
    if ref.kind == "MultiNetworkPolicy":
        return fields(policy=who)
    if ref.kind == "Pod":
        return fields(pod=who)
    if ref.kind == "NetworkAttachmentDefinition":
        return fields(network=who)
    return fields(kind=ref.kind, object=who)


def _log_warning(ref: ObjectRef, reason: str, message: str) -> None:
    log.warning("%s: %s", reason, message, extra=log_fields(ref))


class LogEvents:
    """Events as log lines only (no API server). Deduplicated like the real thing; `posted` is for tests."""

    def __init__(self) -> None:
        self._dedup = _Dedup()
        self.posted: list[tuple[ObjectRef, str, str]] = []

    def warn(self, ref: ObjectRef, reason: str, message: str) -> None:
        if self._dedup.first(ref, reason, message):
            self.posted.append((ref, reason, message))
            _log_warning(ref, reason, message)

    def clear(self, ref: ObjectRef, reason: str) -> None:
        self._dedup.clear(ref, reason)


def event_body(ref: ObjectRef, reason: str, message: str, node: str, now: float) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    involved: dict[str, Any] = {
        "kind": ref.kind,
        "apiVersion": ref.api_version,
        "namespace": ref.namespace,
        "name": ref.name,
    }
    if ref.uid:
        involved["uid"] = ref.uid
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{ref.name}.{time.time_ns():x}", "namespace": _event_namespace(ref)},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": "Warning",
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT,
        "reportingInstance": node,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class KubeEvents:
    """Posts core/v1 Events through the official client (`CoreV1Api`), from a background thread."""

    def __init__(self, core_api: Any, node: str, max_queue: int = 1000) -> None:
        self.core_api = core_api
        self.node = node
        self._dedup = _Dedup()
        self._queue: queue.Queue[tuple[ObjectRef, str, str] | None] = queue.Queue(max_queue)
        self._thread = threading.Thread(target=self._run, name="mnpd-events", daemon=True)
        self.posted = 0

    def start(self) -> KubeEvents:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(timeout)

    def warn(self, ref: ObjectRef, reason: str, message: str) -> None:
        if not self._dedup.first(ref, reason, message):
            return
        _log_warning(ref, reason, message)
        try:
            self._queue.put_nowait((ref, reason, message))
        except queue.Full:
            self._dedup.forget_message(ref, reason, message)
            log.warning("event queue full; dropped %s event", reason, extra=fields(kind=ref.kind))

    def clear(self, ref: ObjectRef, reason: str) -> None:
        self._dedup.clear(ref, reason)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            ref, reason, message = item
            body = event_body(ref, reason, message, self.node, time.time())
            try:
                resp = self.core_api.create_namespaced_event(_event_namespace(ref), body, _preload_content=False)
                _ = resp.data  # read the answer, so the connection goes back to the pool clean
                resp.release_conn()
                self.posted += 1
            except Exception as exc:  # the API is best effort here: never let it kill the thread
                self._dedup.forget_message(ref, reason, message)
                log.warning("could not post %s event: %s", reason, _short(exc), extra=fields(kind=ref.kind))


def _short(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message", body))
        except (ValueError, AttributeError):
            return str(body)[:200]
    return str(exc)[:200]
