"""A stateful fake Kubernetes API server over real HTTP, for testing the node daemon through the official client.

Why it exists: no kube-apiserver can run on the machines this project is tested on, and the off-the-shelf stand-ins
fall short where the daemon's correctness lives (machine-notes §4): kmock has no resourceVersions, no 410, ignores
``timeoutSeconds`` and label selectors; mockernetes is not a server at all. The daemon's list/watch/relist logic has
to be tested against something that behaves like the real thing on the wire, so this module serves, with the standard
library only (``ThreadingHTTPServer``, HTTP/1.1, chunked watch streams):

* core/v1 ``namespaces`` (cluster-scoped), ``pods``, ``events``; events.k8s.io/v1 ``events``;
  k8s.cni.cncf.io/v1 ``network-attachment-definitions``; k8s.cni.cncf.io/v1beta1 ``multi-networkpolicies``;
  minimal but valid discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/<g>``, ``/apis/<g>/<v>``, ``/version``).
* get, list (cluster-wide and per namespace), create (201; uid, resourceVersion, creationTimestamp, generation for
  custom resources; 409 on duplicates; 404 if the namespace is missing), replace (PUT, optimistic concurrency),
  merge / strategic-merge (built-in kinds only, as on a real server) / JSON patch, delete (200 with the object;
  preconditions; deleting a namespace deletes its contents); no-op writes do not bump the resourceVersion.
  Errors are ``Status`` objects with the real reasons and messages.
* one global resourceVersion counter; ``limit``/``continue`` pagination over a consistent snapshot;
  ``resourceVersionMatch=Exact``.
* watch: replay from a resourceVersion out of a bounded history, synthetic ADDED without one (or with "0"),
  ``timeoutSeconds``, BOOKMARKs, and an in-stream ERROR event with a 410 ``Expired`` Status for a compacted
  resourceVersion (the official client turns it into ``ApiException(410)``, after retrying once when no timeout
  was given). With selectors, an object that stops matching is sent as DELETED and one that starts matching as
  ADDED, as the real watch cache does.
* label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``) and field selectors
  (``=``, ``==``, ``!=`` on metadata.name, metadata.namespace and the kind's real selectable fields, e.g.
  ``spec.nodeName`` for pods; anything else is a 400 as on a real server).
* fault injection: drop open watches (gracefully or abruptly), fail the next N requests with any code, delay
  answers; plus a request log and ``compact()`` to force 410s.

Deliberately not emulated: authentication, authorization, TLS; admission and schema validation beyond names;
defaulting (pods get no status or spec defaults); graceful deletion, finalizers, ownerReference garbage collection
and the namespace ``Terminating`` phase; the spec/status split and subresources (writes may change status directly);
server-side apply; strategic merge patch list semantics (``patchMergeKey``, ``$patch`` directives: lists are
replaced as in a merge patch); dryRun, managedFields, ``sendInitialEvents``, DELETE collection, protobuf/CBOR/YAML
and table output, the deprecated ``/watch/`` paths. Core and events.k8s.io events are separate stores here. Watches
have no default server-side timeout, bookmarks come every ``bookmark_interval`` seconds (not about once a minute),
a resourceVersion newer than the current one is not rejected, and ``resourceVersionMatch=NotOlderThan`` reads the
current state.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import itertools
import json
import math
import random
import re
import select
import socket
import socketserver
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes.client
import pytest

JSON = dict[str, Any]
Key = tuple[str, str]  # (namespace, or "" for cluster-scoped objects; name)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    custom: bool = False  # a custom resource (CRD) rather than a built-in kind
    fields: tuple[str, ...] = ()  # selectable fields besides metadata.name / metadata.namespace

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:  # how the real server names the resource in messages
        return f"{self.plural}.{self.group}" if self.group else self.plural


_INVOLVED = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
_POD_FIELDS: tuple[str, ...] = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.hostNetwork")
_POD_FIELDS += ("spec.serviceAccountName", "status.phase", "status.podIP", "status.nominatedNodeName")
_EVENT_FIELDS = (*(f"involvedObject.{f}" for f in _INVOLVED), "reason", "reportingComponent", "source", "type")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False, fields=("status.phase",))
RESOURCES = (
    NAMESPACES,
    Resource("", "v1", "pods", "Pod", fields=_POD_FIELDS),
    Resource("", "v1", "events", "Event", fields=_EVENT_FIELDS),
    Resource("events.k8s.io", "v1", "events", "Event"),
    Resource("k8s.cni.cncf.io", "v1", "network-attachment-definitions", "NetworkAttachmentDefinition", custom=True),
    Resource("k8s.cni.cncf.io", "v1beta1", "multi-networkpolicies", "MultiNetworkPolicy", custom=True),
)
_FIELD_PATHS = {"source": "source.component"}  # field selector labels that are not plain paths
_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
_PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}
_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
    500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}  # fmt: skip
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class KubeStatusError(Exception):
    """An API error; served as a ``Status`` body, raised as is by the direct helpers."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: JSON | None = None) -> None:
        super().__init__(f"{code} {message}")
        self.code, self.message, self.details = code, message, details
        self.reason = reason or _REASONS.get(code, "Unknown")

    def status(self) -> JSON:
        body: JSON = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        body.update(message=self.message, reason=self.reason, code=self.code)
        if self.details:
            body["details"] = self.details
        return body


def _not_found(res: Resource, name: str) -> KubeStatusError:
    details = {"name": name, "group": res.group, "kind": res.plural}
    return KubeStatusError(404, f'{res.qualified} "{name}" not found', details=details)


def _expired(since: int, floor: int) -> KubeStatusError:
    return KubeStatusError(410, f"too old resource version: {since} ({floor})", "Expired")


def _key(obj: JSON) -> Key:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


# --- selectors ---------------------------------------------------------------------------------------------


_LKEY, _LVAL = r"[A-Za-z0-9][-A-Za-z0-9_./]*", r"[-A-Za-z0-9_.]*"
_SET_REQ = re.compile(rf"({_LKEY})\s+(in|notin)\s*\(([^()]*)\)")
_EQ_REQ = re.compile(rf"({_LKEY})\s*(==|!=|=)\s*({_LVAL})")
_EXISTS_REQ = re.compile(rf"(!?)\s*({_LKEY})")
_FIELD_REQ = re.compile(r"([A-Za-z.]+)\s*(==|!=|=)\s*(.*)")


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op in ("exists", "!exists"):
            return present == (self.op == "exists")
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class _Selector:
    labels: tuple[_Requirement, ...] = ()
    fields: tuple[tuple[str, bool, str], ...] = ()  # (path, must equal?, value)

    @classmethod
    def parse(cls, res: Resource, params: dict[str, str]) -> _Selector:
        labels: list[_Requirement] = []
        for part in re.split(r",(?![^()]*\))", params.get("labelSelector", "")):
            part = part.strip()
            if not part:
                continue
            if m := _SET_REQ.fullmatch(part):
                labels.append(_Requirement(m[1], m[2], frozenset(v.strip() for v in m[3].split(","))))
            elif m := _EQ_REQ.fullmatch(part):
                labels.append(_Requirement(m[1], "!=" if m[2] == "!=" else "=", frozenset({m[3]})))
            elif m := _EXISTS_REQ.fullmatch(part):
                labels.append(_Requirement(m[2], "!exists" if m[1] else "exists"))
            else:
                raise KubeStatusError(400, f"unable to parse requirement: {part!r}")
        allowed = {"metadata.name", *(["metadata.namespace"] if res.namespaced else []), *res.fields}
        fields: list[tuple[str, bool, str]] = []
        for term in filter(None, (t.strip() for t in params.get("fieldSelector", "").split(","))):
            if not (m := _FIELD_REQ.fullmatch(term)):
                raise KubeStatusError(400, f"invalid selector: '{term}'; can't understand '{term}'")
            if m[1] not in allowed:
                raise KubeStatusError(400, f"field label not supported: {m[1]}")
            fields.append((_FIELD_PATHS.get(m[1], m[1]), m[2] != "!=", m[3].strip()))
        return cls(tuple(labels), tuple(fields))

    @property
    def empty(self) -> bool:
        return not self.labels and not self.fields

    def matches(self, obj: JSON) -> bool:
        labels = obj["metadata"].get("labels") or {}
        return all(r.matches(labels) for r in self.labels) and all(
            (_field_value(obj, path) == value) == equal for path, equal, value in self.fields
        )


def _field_value(obj: Any, path: str) -> str:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    if isinstance(obj, bool):
        return str(obj).lower()
    return "" if obj is None else str(obj)


# --- patches -----------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; returns a new value and never modifies ``target``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: Any, ops: list[Any]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test) on a copy of ``doc``."""

    def pointer(text: Any) -> list[str]:
        if not isinstance(text, str) or (text and not text.startswith("/")):
            raise KubeStatusError(400, f"invalid JSON pointer: {text!r}")
        return [t.replace("~1", "/").replace("~0", "~") for t in text.split("/")[1:]]

    def walk(node: Any, path: list[str]) -> Any:
        for tok in path:
            if isinstance(node, dict) and tok in node:
                node = node[tok]
            elif isinstance(node, list) and tok.isdigit() and int(tok) < len(node):
                node = node[int(tok)]
            else:
                raise KubeStatusError(422, f"the path {'/'.join(['', *path])!r} does not exist")
        return node

    def add(root: Any, path: list[str], value: Any) -> Any:
        if not path:
            return value
        parent, tok = walk(root, path[:-1]), path[-1]
        if isinstance(parent, dict):
            parent[tok] = value
        elif isinstance(parent, list) and (tok == "-" or (tok.isdigit() and int(tok) <= len(parent))):
            parent.insert(len(parent) if tok == "-" else int(tok), value)
        else:
            raise KubeStatusError(422, f"cannot add at {'/'.join(['', *path])!r}")
        return root

    def remove(root: Any, path: list[str]) -> Any:
        walk(root, path)  # must exist
        parent = walk(root, path[:-1]) if path else None
        if parent is None:
            raise KubeStatusError(422, "cannot remove the whole document")
        return parent.pop(path[-1] if isinstance(parent, dict) else int(path[-1]))

    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise KubeStatusError(400, f"invalid JSON patch operation: {op!r}")
        kind, path = op.get("op"), pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise KubeStatusError(400, f"missing value in JSON patch operation: {op!r}")
        if kind == "add":
            doc = add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            remove(doc, path)
        elif kind == "replace":
            if path:
                remove(doc, path)
            doc = add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = pointer(op.get("from"))
            value = remove(doc, source) if kind == "move" else copy.deepcopy(walk(doc, source))
            doc = add(doc, path, value)
        elif kind == "test":
            if walk(doc, path) != op["value"]:
                raise KubeStatusError(422, f"testing value {op['path']} failed")
        else:
            raise KubeStatusError(400, f"unknown JSON patch operation: {kind!r}")
    return doc


# --- the server --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    rv: int
    res: Resource
    type: str  # ADDED, MODIFIED, DELETED
    obj: JSON  # the object after the change; for DELETED the last state stamped with the deletion's rv
    prev: JSON | None  # the object before the change


@dataclass(eq=False)
class _Watch:
    res: Resource
    drop: str = ""  # "", "graceful" or "abrupt"


@dataclass
class _Fault:
    remaining: int
    code: int
    path_contains: str | None
    method: str | None
    message: str
    raw: bytes | None = None  # the whole answer, bytes as they go on the wire (then the connection is closed)


class _RawAnswer(Exception):
    def __init__(self, data: bytes) -> None:
        super().__init__("raw answer")
        self.data = data


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]


def _frame(event_type: str, obj: JSON) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _int_param(params: dict[str, str], name: str) -> int | None:
    if not params.get(name):
        return None
    try:
        return int(params[name])
    except ValueError:
        raise KubeStatusError(400, f"invalid {name}: {params[name]!r}") from None


class FakeKubeAPI:
    """The fake API server. All state lives behind one condition variable; every write, whether it comes over
    HTTP or from the direct helpers, goes through ``_commit`` so watches see it. Start/stop it with ``with``."""

    def __init__(
        self,
        *,
        history_size: int = 5000,
        bookmark_interval: float = 1.0,
        require_namespaces: bool = True,
        namespaces: Iterable[str] = ("default",),
    ) -> None:
        self.bookmark_interval = bookmark_interval
        self.require_namespaces = require_namespaces  # like a real server: no objects in missing namespaces
        self.server_errors: list[str] = []  # tracebacks of bugs in this module (the fixture asserts none)
        self._cond = threading.Condition()
        self._store: dict[Resource, dict[Key, JSON]] = {res: {} for res in RESOURCES}
        self._rv = self._floor = 1000  # events with rv > _floor are all in _history
        self._history: deque[_Event] = deque(maxlen=history_size)
        self._watches: set[_Watch] = set()
        self._faults: list[_Fault] = []
        self._delay: tuple[float, str | None] = (0.0, None)
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        for name in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # lifecycle

    def start(self) -> FakeKubeAPI:
        if self._httpd is None:
            self._httpd = _Server(self)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeapi", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Ends every watch, closes every connection and joins every server thread. Not restartable."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeKubeAPI is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def client_configuration(self) -> kubernetes.client.Configuration:
        config = kubernetes.client.Configuration(host=self.url)
        config.proxy = None  # never go through a proxy from the environment
        return config

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig file for this server at `path` (what mnpd's `--kubeconfig` reads)."""
        return write_kubeconfig(path, self.url)

    # direct state helpers (same code path as HTTP; they raise KubeStatusError)

    @staticmethod
    def resource(kind: str) -> Resource:
        """Resolves "Pod", "pods", "multi-networkpolicies.k8s.cni.cncf.io", "event.events.k8s.io", …"""
        for res in RESOURCES:
            names = {res.kind.lower(), res.plural, f"{res.plural}.{res.group}", f"{res.kind.lower()}.{res.group}"}
            if kind.lower() in names:
                return res
        raise ValueError(f"unknown kind {kind!r}")

    @staticmethod
    def _resource_of(obj: JSON) -> Resource:
        for res in RESOURCES:
            if (obj.get("apiVersion"), obj.get("kind")) == (res.api_version, res.kind):
                return res
        raise ValueError(f"unknown apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')}")

    def create(self, obj: JSON) -> JSON:
        res = self._resource_of(obj)
        with self._cond:
            return copy.deepcopy(self._create(res, obj.get("metadata", {}).get("namespace"), obj))

    def update(self, obj: JSON) -> JSON:
        """Replaces an object; unconditional unless ``obj`` carries a resourceVersion."""
        res = self._resource_of(obj)
        meta = obj.get("metadata", {})
        with self._cond:
            return copy.deepcopy(self._update(res, meta.get("namespace"), meta["name"], obj, force=True))

    def patch(self, kind: str, namespace: str | None, name: str, patch: Any, patch_type: str = "merge") -> JSON:
        """``patch_type``: "merge", "strategic" (built-in kinds only) or "json"."""
        with self._cond:
            return copy.deepcopy(self._patch(self.resource(kind), namespace, name, patch_type, patch))

    def delete(self, kind: str, namespace: str | None, name: str) -> JSON:
        with self._cond:
            return copy.deepcopy(self._delete(self.resource(kind), namespace, name))

    def get(self, kind: str, namespace: str | None, name: str) -> JSON | None:
        with self._cond:
            return copy.deepcopy(self._store[self.resource(kind)].get((namespace or "", name)))

    def objects(self, kind: str, namespace: str | None = None) -> list[JSON]:
        with self._cond:
            store = self._store[self.resource(kind)]
            return [copy.deepcopy(o) for k, o in sorted(store.items()) if namespace in (None, k[0])]

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    # fault injection and inspection (all thread-safe)

    def compact(self) -> None:
        """Forgets the event history: watches and continue tokens from before now get 410 Expired."""
        with self._cond:
            self._history.clear()
            self._floor = self._rv
            self._cond.notify_all()

    def drop_watches(self, *, abrupt: bool = False) -> int:
        """Ends all open watches now, like a server restart: gracefully (the stream ends normally) or abruptly
        (the connection is cut mid-stream). Returns how many were dropped."""
        with self._cond:
            for w in self._watches:
                w.drop = "abrupt" if abrupt else "graceful"
            self._cond.notify_all()
            return len(self._watches)

    def fail_next(
        self,
        count: int = 1,
        code: int = 500,
        *,
        path_contains: str | None = None,
        method: str | None = None,
        message: str = "injected failure",
    ) -> None:
        """The next ``count`` requests whose path-with-query contains ``path_contains`` (and whose method is
        ``method``) get ``code`` with a Status body. Rules are used in the order they were added."""
        with self._cond:
            self._faults.append(_Fault(count, code, path_contains, method, message))

    def answer_raw_next(self, data: bytes, count: int = 1, *, path_contains: str | None = None) -> None:
        """The next ``count`` requests whose path-with-query contains ``path_contains`` get ``data`` as their whole
        answer, status line and headers included, as a hostile or broken server would send it; then the connection
        is closed."""
        with self._cond:
            self._faults.append(_Fault(count, 0, path_contains, None, "", data))

    def set_delay(self, seconds: float, *, path_contains: str | None = None) -> None:
        """Delays every answer (or those whose path-with-query contains ``path_contains``); 0 turns it off."""
        with self._cond:
            self._delay = (seconds, path_contains)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    def watch_count(self, kind: str | None = None) -> int:
        with self._cond:
            return sum(1 for w in self._watches if kind is None or w.res == self.resource(kind))

    def wait_for_watches(self, count: int, kind: str | None = None, timeout: float = 5.0) -> bool:
        """Waits until at least ``count`` watches (of ``kind``) are open."""
        with self._cond:
            return self._cond.wait_for(lambda: self.watch_count(kind) >= count, timeout)

    # operations (the caller holds self._cond)

    def _existing(self, res: Resource, ns: str | None, name: str) -> JSON:
        obj = self._store[res].get((ns or "", name) if res.namespaced else ("", name))
        if obj is None:
            raise _not_found(res, name)
        return obj

    def _checked_body(self, res: Resource, ns: str | None, body: Any, name: str | None = None) -> JSON:
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise KubeStatusError(400, "the body of the request is not a valid object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        for field, want in (("apiVersion", res.api_version), ("kind", res.kind)):
            if obj.setdefault(field, want) != want:
                raise KubeStatusError(400, f"the {field} in the data ({obj[field]}) does not match {want}")
        if res.namespaced:
            if ns and meta.get("namespace", ns) != ns:
                msg = "the namespace of the provided object does not match the namespace sent on the request"
                raise KubeStatusError(400, msg)
            meta["namespace"] = ns or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        if name is not None and meta.setdefault("name", name) != name:
            raise KubeStatusError(400, f"the name of the object ({meta['name']}) does not match the name ({name})")
        return obj

    def _create(self, res: Resource, ns: str | None, body: Any) -> JSON:
        obj = self._checked_body(res, ns, body)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        name = meta.get("name") or ""
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            what = "Required value: name or generateName is required" if not name else f"Invalid value: {name!r}"
            msg = f'{res.kind} "{name}" is invalid: metadata.name: {what}'
            raise KubeStatusError(422, msg, details={"name": name, "group": res.group, "kind": res.kind})
        if res.namespaced and self.require_namespaces and ("", meta["namespace"]) not in self._store[NAMESPACES]:
            raise _not_found(NAMESPACES, meta["namespace"])
        if _key(obj) in self._store[res]:
            details = {"name": name, "group": res.group, "kind": res.plural}
            raise KubeStatusError(409, f'{res.qualified} "{name}" already exists', "AlreadyExists", details)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        if res.custom:
            meta["generation"] = 1
        if res is NAMESPACES and isinstance(obj.setdefault("status", {}), dict):
            obj["status"].setdefault("phase", "Active")
        return self._commit(res, "ADDED", obj, None)

    def _update(self, res: Resource, ns: str | None, name: str, body: Any, *, force: bool = False) -> JSON:
        old = self._existing(res, ns, name)
        new = self._checked_body(res, ns, body, name)
        if res.custom and not force and not new["metadata"].get("resourceVersion"):
            msg = f'{res.kind}.{res.group} "{name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
            raise KubeStatusError(422, msg + "must be specified for an update")
        return self._modify(res, old, new)

    def _patch(self, res: Resource, ns: str | None, name: str, patch_type: str, patch: Any) -> JSON:
        old = self._existing(res, ns, name)
        if patch_type == "strategic" and res.custom:
            accepted = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            raise KubeStatusError(
                415, f"the body of the request was in an unknown format - accepted media types include: {accepted}"
            )
        if patch_type == "json" and isinstance(patch, list):
            new = json_patch(old, patch)
        elif patch_type in ("merge", "strategic") and isinstance(patch, dict):
            new = merge_patch(old, patch)
        else:
            raise KubeStatusError(400, f"invalid {patch_type} patch body")
        return self._modify(res, old, self._checked_body(res, ns, new, name))

    def _modify(self, res: Resource, old: JSON, new: JSON) -> JSON:
        meta, old_meta = new["metadata"], old["metadata"]
        if meta.get("resourceVersion") not in (None, "", old_meta["resourceVersion"]):
            msg = f'Operation cannot be fulfilled on {res.qualified} "{old_meta["name"]}": the object has been '
            raise KubeStatusError(409, msg + "modified; please apply your changes to the latest version and try again")
        for field in ("uid", "creationTimestamp", "generation", "resourceVersion"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if new == old:
            return old  # a no-op write: no new resourceVersion, no event
        if res.custom and new.get("spec") != old.get("spec"):
            meta["generation"] = old_meta.get("generation", 0) + 1
        return self._commit(res, "MODIFIED", new, old)

    def _delete(self, res: Resource, ns: str | None, name: str, options: Any = None) -> JSON:
        old = self._existing(res, ns, name)
        pre = options.get("preconditions") if isinstance(options, dict) else None
        for field in ("uid", "resourceVersion"):
            want = (pre or {}).get(field)
            if want not in (None, old["metadata"].get(field)):
                msg = f"Precondition failed: {field} in precondition: {want}, {field} in object meta: "
                raise KubeStatusError(409, msg + str(old["metadata"].get(field)))
        if res is NAMESPACES:  # a real server marks it Terminating first and deletes the contents; we just delete
            for other in RESOURCES:
                for key in sorted(k for k in self._store[other] if other.namespaced and k[0] == name):
                    self._commit(other, "DELETED", self._store[other][key], self._store[other][key])
        return self._commit(res, "DELETED", old, old)

    def _commit(self, res: Resource, event_type: str, obj: JSON, prev: JSON | None) -> JSON:
        self._rv += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._rv)}}
        if event_type == "DELETED":
            del self._store[res][_key(obj)]
        else:
            self._store[res][_key(obj)] = obj
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0].rv
        self._history.append(_Event(self._rv, res, event_type, obj, prev))
        self._cond.notify_all()
        return obj

    def _state_at(self, res: Resource, rv: int) -> dict[Key, JSON]:
        """The objects of ``res`` as they were at ``rv``, rebuilt by undoing the retained history."""
        state = dict(self._store[res])
        for ev in reversed(self._history):
            if ev.rv <= rv:
                break
            if ev.res is res:
                if ev.prev is None:
                    del state[_key(ev.obj)]
                else:
                    state[_key(ev.prev)] = ev.prev
        return state

    def _list(self, res: Resource, ns: str | None, params: dict[str, str]) -> JSON:
        selector = _Selector.parse(res, params)
        limit = _int_param(params, "limit")
        start: Key | None = None
        if token := params.get("continue"):
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                list_rv, start = int(decoded["rv"]), (decoded["start"][0], decoded["start"][1])
            except (ValueError, KeyError, TypeError, IndexError):
                raise KubeStatusError(400, "continue key is not valid") from None
            if list_rv < self._floor:
                msg = "The provided continue parameter is too old to display a consistent list result. "
                raise KubeStatusError(410, msg + "You can start a new list without the continue parameter.")
            state = self._state_at(res, list_rv)
        elif params.get("resourceVersionMatch") == "Exact" and (exact := _int_param(params, "resourceVersion")):
            if exact < self._floor:
                raise _expired(exact, self._floor)
            list_rv, state = exact, self._state_at(res, exact)
        else:
            list_rv, state = self._rv, self._store[res]
        items = [
            obj
            for key, obj in sorted(state.items())
            if (start is None or key > start) and ns in (None, key[0]) and selector.matches(obj)
        ]
        meta: JSON = {"resourceVersion": str(list_rv)}
        if limit and len(items) > limit:
            remaining, items = len(items) - limit, items[:limit]
            token = json.dumps({"rv": list_rv, "start": list(_key(items[-1]))})
            meta["continue"] = base64.urlsafe_b64encode(token.encode()).decode()
            if selector.empty:
                meta["remainingItemCount"] = remaining
        if not res.custom:  # the real server leaves kind/apiVersion out of built-in list items
            items = [{k: v for k, v in obj.items() if k not in ("apiVersion", "kind")} for obj in items]
        return {"apiVersion": res.api_version, "kind": f"{res.kind}List", "metadata": meta, "items": items}

    # watch

    def _serve_watch(self, handler: _Handler, res: Resource, ns: str | None, params: dict[str, str]) -> None:
        selector = _Selector.parse(res, params)
        timeout = _int_param(params, "timeoutSeconds")
        deadline = time.monotonic() + timeout if timeout else math.inf
        bookmarks = params.get("allowWatchBookmarks") in ("1", "true", "True")
        since = params.get("resourceVersion", "")
        if since not in ("", "0") and not since.isdigit():
            raise KubeStatusError(400, f"invalid resource version: {since!r}")
        watch = _Watch(res)
        with self._cond:
            cursor, first = self._rv, []  # cursor: the last rv this watch has dealt with; -1 ends it
            if since in ("", "0"):  # synthetic ADDED for what exists, then changes
                matching = (
                    o for k, o in sorted(self._store[res].items()) if ns in (None, k[0]) and selector.matches(o)
                )
                first = [_frame("ADDED", obj) for obj in matching]
            elif int(since) < self._floor:
                cursor, first = -1, [_frame("ERROR", _expired(int(since), self._floor).status())]
            else:
                cursor = int(since)
            self._watches.add(watch)
            self._cond.notify_all()
        try:
            handler.begin_stream()
            for frame in first:
                handler.send_chunk(frame)
            next_bookmark = time.monotonic() + self.bookmark_interval
            while cursor >= 0:
                with self._cond:
                    due = min(deadline, next_bookmark if bookmarks else math.inf) - time.monotonic()

                    def ready(seen: int = cursor) -> bool:
                        return bool(watch.drop) or self._stopping.is_set() or self._rv > seen

                    # wake now and then even without news, to notice a vanished client
                    self._cond.wait_for(ready, timeout=max(0.0, min(due, 0.25)))
                    if watch.drop or self._stopping.is_set():
                        break
                    if cursor < self._floor:  # fell out of the history while we were sending
                        events, error = [], _frame("ERROR", _expired(cursor, self._floor).status())
                    else:
                        events, error = list(itertools.islice(self._history, cursor - self._floor, None)), b""
                    cursor = max(cursor, self._rv)
                for ev in events:
                    if ev.res is res and (converted := self._convert(ev, ns, selector)):
                        handler.send_chunk(converted)
                if error:
                    handler.send_chunk(error)
                    break
                now = time.monotonic()
                if now >= deadline:
                    break
                if bookmarks and now >= next_bookmark:
                    meta = {"resourceVersion": str(cursor)}
                    bookmark = {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}
                    handler.send_chunk(_frame("BOOKMARK", bookmark))
                    next_bookmark = now + self.bookmark_interval
                if handler.client_gone():
                    watch.drop = "abrupt"
                    break
            if watch.drop == "abrupt":
                handler.abort()
            else:
                handler.end_stream()
        except OSError:  # the client went away
            handler.close_connection = True
        finally:
            with self._cond:
                self._watches.discard(watch)
                self._cond.notify_all()

    @staticmethod
    def _convert(ev: _Event, ns: str | None, selector: _Selector) -> bytes | None:
        """What a watcher with this namespace and selector sees of an event (the watch cache's rules)."""

        def visible(obj: JSON | None) -> bool:
            return obj is not None and ns in (None, _key(obj)[0]) and selector.matches(obj)

        now, before = ev.type != "DELETED" and visible(ev.obj), visible(ev.prev)
        if now:
            return _frame("MODIFIED" if before else "ADDED", ev.obj)
        if before and ev.prev is not None:  # gone, or no longer matching: the old state at the new rv
            return _frame("DELETED", {**ev.prev, "metadata": {**ev.prev["metadata"], "resourceVersion": str(ev.rv)}})
        return None

    # HTTP routing

    def _before_request(self, method: str, raw_path: str, path: str, query: dict[str, str]) -> None:
        with self._cond:
            self._requests.append(RecordedRequest(method, path, query))
            delay, where = self._delay
            matching = (f for f in self._faults if f.method in (None, method) and (f.path_contains or "") in raw_path)
            fault = next(matching, None)
            if fault is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
        if delay > 0 and (where is None or where in raw_path):
            self._stopping.wait(delay)
        if fault is not None and fault.raw is not None:
            raise _RawAnswer(fault.raw)
        if fault is not None:
            raise KubeStatusError(fault.code, fault.message)

    def _discovery(self, parts: list[str]) -> JSON | None:
        groups: dict[str, list[str]] = {}
        for res in RESOURCES:
            if res.group and res.version not in groups.setdefault(res.group, []):
                groups[res.group].append(res.version)

        def group(name: str) -> JSON:
            versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in groups[name]]
            return {"name": name, "versions": versions, "preferredVersion": versions[0]}

        def resources(group_name: str, version: str) -> JSON | None:
            found = [
                {"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced, "kind": r.kind}
                | {"verbs": _VERBS}
                for r in RESOURCES
                if (r.group, r.version) == (group_name, version)
            ]
            gv = f"{group_name}/{version}" if group_name else version
            listing = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": found}
            return listing if found else None

        match parts:
            case ["api"]:
                address = self.url.removeprefix("http://")
                cidrs = [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]
                return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": cidrs}
            case ["apis"]:
                return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group(g) for g in groups]}
            case ["apis", name] if name in groups:
                return {"kind": "APIGroup", "apiVersion": "v1", **group(name)}
            case ["api", version]:
                return resources("", version)
            case ["apis", name, version]:
                return resources(name, version)
            case ["version"]:
                info = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fakeapi", "gitCommit": "0" * 40}
                build = {"gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24"}
                return info | build | {"compiler": "gc", "platform": "linux/amd64"}
        return None

    @staticmethod
    def _resolve(parts: list[str]) -> tuple[Resource, str | None, str | None]:
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            rest = []
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        res = next((r for r in RESOURCES if rest and (r.group, r.version, r.plural) == (group, version, rest[0])), None)
        if (
            res is None
            or len(rest) > 2
            or (ns is not None and not res.namespaced)
            or (len(rest) == 2 and res.namespaced and ns is None)
        ):
            raise KubeStatusError(404, "the server could not find the requested resource")
        return res, ns, rest[1] if len(rest) == 2 else None

    def _route(self, handler: _Handler, path: str, query: dict[str, str], body: Any) -> tuple[int, JSON] | None:
        method, parts = handler.command, [p for p in path.split("/") if p]
        if method == "GET" and (doc := self._discovery(parts)) is not None:
            return 200, doc
        res, ns, name = self._resolve(parts)
        if method == "GET" and name is None and query.get("watch") in ("1", "true", "True"):
            self._serve_watch(handler, res, ns, query)
            return None
        with self._cond:
            if name is None and method == "GET":
                return 200, self._list(res, ns, query)
            if name is None and method == "POST" and (ns is not None or not res.namespaced):
                return 201, self._create(res, ns, body)
            if name is not None and method == "GET":
                return 200, self._existing(res, ns, name)
            if name is not None and method == "PUT":
                return 200, self._update(res, ns, name, body)
            if name is not None and method == "PATCH":
                content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
                if content_type not in _PATCH_TYPES:
                    raise KubeStatusError(415, f"the server does not support patch type {content_type!r}")
                return 200, self._patch(res, ns, name, _PATCH_TYPES[content_type], body)
            if name is not None and method == "DELETE":
                return 200, self._delete(res, ns, name, body)
        raise KubeStatusError(405, f"the server does not allow this method on the requested resource ({method})")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else small answers stall ~45 ms on Nagle + delayed ACK (machine-notes §4)
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        api = self.server.api
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer: tuple[int, JSON] | None
        try:
            api._before_request(self.command, self.path, url.path, query)
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                raise KubeStatusError(400, "the request body is not valid JSON") from None
            answer = api._route(self, url.path, query, body)
        except _RawAnswer as raw_answer:
            with contextlib.suppress(OSError):
                self.wfile.write(raw_answer.data)
                self.wfile.flush()
            self.abort()
            return
        except KubeStatusError as e:
            answer = e.code, e.status()
        except Exception:
            api.server_errors.append(traceback.format_exc())
            answer = 500, KubeStatusError(500, "internal error in fakeapi").status()
        if answer is not None:
            data = json.dumps(answer[1]).encode()
            self.send_response(answer[0])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def begin_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def client_gone(self) -> bool:
        try:
            readable = select.select([self.connection], [], [], 0)[0]
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # so that server_close() joins the handler threads
    block_on_close = True

    def __init__(self, api: FakeKubeAPI) -> None:
        self.api = api
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:  # HTTPServer's would do a reverse DNS lookup (getfqdn)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conns_lock:  # registered before the thread starts, so close_connections() cannot miss it
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.conns_lock:
            conns = list(self.conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a vanished client is not a bug
            self.api.server_errors.append(traceback.format_exc())


@pytest.fixture
def fake_api() -> Iterator[FakeKubeAPI]:
    """A running FakeKubeAPI; fails the test at teardown if the fake itself hit an internal error."""
    with FakeKubeAPI() as api:
        yield api
    assert not api.server_errors, "fakeapi internal errors:\n" + "\n".join(api.server_errors)


def write_kubeconfig(path: Path, url: str) -> Path:
    """A kubeconfig file at `path` for the API server at `url`, with a dummy token (what mnpd's `--kubeconfig`
    reads): for this fake and for the benchmark's API process (tests/bench/apiserver.py)."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "fake", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path
