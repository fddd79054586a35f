"""The Kubernetes API source: one reflector (list, then watch) per kind, through the official client.

Four kinds, cluster-wide: MultiNetworkPolicies (k8s.cni.cncf.io/v1beta1), Pods (every namespace and node:
peers live on other nodes), Namespaces (their labels feed namespaceSelectors) and NetworkAttachmentDefinitions
(k8s.cni.cncf.io/v1). Each reflector is the client-go Reflector loop, written out:

1. **list** in pages (`limit`/`continue`, PAGE_SIZE), parse every item into the store with one `replace` (objects
   missing from the list are deletions) and what could not be read in them with one `replace_object_problems`,
   remember the list's resourceVersion, and — the first time — report the source
   synced to the store;
2. **watch** from that resourceVersion with `allowWatchBookmarks` and a server-side `timeoutSeconds`; every
   event updates the store and the resourceVersion (BOOKMARKs only the latter); when the server ends the watch,
   watch again from the last resourceVersion;
3. a `410 Gone` — as an HTTP status or as an in-stream ERROR event — means the resourceVersion was compacted
   away: **relist** at once; any other failure (connection refused or cut, 5xx, a read timeout, garbage)
   reconnects after a capped exponential backoff with full jitter, and a successful list or watch resets it.

Raw JSON on the hot path: the client's model deserialisation is slow, so every call passes
`_preload_content=False`, and the bytes are parsed with `json` and handed to shared.model's parsers
(daemon.sources.convert). Watch streams are split into lines as they arrive.

Memory: the store keeps only pods with a secondary network (see convert); for each, the parsed labels, ports and
attachments — not the raw object. A cluster with 100,000 pods of which 10,000 have secondary networks costs the
daemon roughly the latter's parsed form (a few KB each).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import urllib3

from daemon.logs import fields
from daemon.sources.convert import convert
from daemon.sources.kubeclient import ApiException, k8s
from daemon.store import NAD, NAMESPACE, POD, POLICY, ObjectProblems, Store
from shared.manifests import unidentifiable
from shared.model import refuse_duplicates
from shared.selectors import excerpt

log = logging.getLogger(__name__)

# Items per list page. The whole page is decoded at once (json), so the page bounds the list's transient memory: a
# real pod (managedFields, status, ~5 KB of JSON) decodes to ~25 KB of Python objects, a page of 500 to 15 MB; of
# 100 to 3 MB (docs/benchmarks.md, Scale). client-go pages by 500; 100 means 5 times the requests for the same bytes.
PAGE_SIZE = 100
CONNECT_TIMEOUT_S = 10.0
READ_SLACK_S = 30.0  # a watch's socket read timeout = its server-side timeout + this
# The longest watch event read: etcd refuses requests over 1.5 MiB by default (--max-request-bytes), so no stored
# object comes near it; a longer line is a garbled stream, not an object.
MAX_EVENT_BYTES = 16 << 20
# A watch stream is read in pieces of at most this size, whatever size a chunk announces: read whole, a chunk
# announced at 256 TiB was one allocation, whose MemoryError ended the reflector.
READ_BYTES = 64 << 10


class ExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


class WatchError(Exception):
    """The server sent an ERROR event other than 410."""


class GarbledAnswer(ValueError):
    """An answer holding something that is no identifiable object (not an object, no readable namespace or name):
    what it would have changed cannot be known, so none of the answer is used — the store keeps its last good
    view, the problem is reported (log, `mnp_source_problems`, `mnpctl status`) and the call retried with backoff."""


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(maximum, initial × 2^attempt)]."""
        return float(rand()) * min(self.maximum, self.initial * (2.0 ** min(attempt, 30)))


@dataclass(frozen=True)
class Kind:
    name: str  # "pods": the source name is "api/pods"
    store_kind: str
    call: Callable[..., Any]  # the list function of the official client, without per-call arguments


class CoreV1:
    """The calls mnpd makes — list/watch pods, list/watch namespaces, create an Event (core/v1), and list/watch a
    custom resource cluster-wide — made the way the official client's generated `CoreV1Api` and
    `CustomObjectsApi` make them: `ApiClient.param_serialize` + `ApiClient.call_api` (the same configuration, auth,
    TLS and `ApiException`s), returning the raw urllib3 response like `_preload_content=False`. Not the generated
    classes themselves, because importing their modules costs ~21 MB of RSS (`CoreV1Api`: a pydantic-validated
    method for each of ~1,000 endpoints and the models they use) and 1.5 MB (`CustomObjectsApi`: pydantic's
    `validate_call` and more models), for calls whose answers mnpd parses as plain JSON anyway."""

    QUERY: ClassVar[dict[str, str]] = {
        "watch": "watch",
        "resource_version": "resourceVersion",
        "allow_watch_bookmarks": "allowWatchBookmarks",
        "timeout_seconds": "timeoutSeconds",
        "limit": "limit",
        "_continue": "continue",
    }

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> Any:
        return self._call("GET", "/api/v1/pods", **kwargs)

    def list_namespace(self, **kwargs: Any) -> Any:
        return self._call("GET", "/api/v1/namespaces", **kwargs)

    def create_namespaced_event(self, namespace: str, body: Any, **kwargs: Any) -> Any:
        path = "/api/v1/namespaces/{namespace}/events"
        return self._call("POST", path, path_params={"namespace": namespace}, body=body, **kwargs)

    def list_cluster_custom_object(self, group: str, version: str, plural: str, **kwargs: Any) -> Any:
        path_params = {"group": group, "version": version, "plural": plural}
        return self._call("GET", "/apis/{group}/{version}/{plural}", path_params=path_params, **kwargs)

    def _call(
        self,
        method: str,
        path: str,
        *,
        path_params: dict[str, str] | None = None,
        body: Any = None,
        _preload_content: bool = False,
        _request_timeout: Any = None,
        **query: Any,
    ) -> Any:
        if _preload_content:
            raise ValueError("CoreV1 returns raw responses only (_preload_content=False)")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            path_params=path_params,
            query_params=[(self.QUERY[k], v) for k, v in query.items() if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(*request, _request_timeout=_request_timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response


def core_v1(api_client: Any) -> Any:
    """`CoreV1` where the client has the generic request methods (the pydantic-based generated clients), else the
    generated `CoreV1Api` (older clients import it cheaply; `kinds` then uses `CustomObjectsApi` too)."""
    if hasattr(api_client, "param_serialize") and hasattr(ApiException, "from_response"):
        return CoreV1(api_client)
    return k8s.CoreV1Api(api_client)


def kinds(api_client: Any) -> list[Kind]:
    core = core_v1(api_client)
    custom = core if isinstance(core, CoreV1) else k8s.CustomObjectsApi(api_client)
    return [
        Kind(
            "multi-networkpolicies",
            POLICY,
            functools.partial(custom.list_cluster_custom_object, "k8s.cni.cncf.io", "v1beta1", "multi-networkpolicies"),
        ),
        Kind("pods", POD, core.list_pod_for_all_namespaces),
        Kind("namespaces", NAMESPACE, core.list_namespace),
        Kind(
            "network-attachment-definitions",
            NAD,
            functools.partial(
                custom.list_cluster_custom_object, "k8s.cni.cncf.io", "v1", "network-attachment-definitions"
            ),
        ),
    ]


def iter_lines(response: Any, max_bytes: int = MAX_EVENT_BYTES) -> Iterator[bytes]:
    """The newline-separated frames of a watch stream, as they arrive. A frame longer than `max_bytes` is a
    GarbledAnswer: a stream whose line never ends must not grow the daemon without bound. Linear in the stream:
    each byte is searched for the newline once and copied out once, however the server cuts it into chunks (many
    events in one chunk, one event over many)."""
    pending = bytearray()
    searched = 0  # pending[:searched] holds no newline
    for chunk in response.stream(amt=READ_BYTES, decode_content=True):
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", max(start, searched))) != -1:
            line = bytes(pending[start:end])
            start = end + 1
            if line.strip():
                yield line
        del pending[:start]
        searched = len(pending)
        if searched > max_bytes:
            raise GarbledAnswer(f"a watch event over {max_bytes} bytes")
    if pending.strip():
        yield bytes(pending)


def _decode(data: bytes) -> Any:
    """JSON, or a GarbledAnswer (reported, unlike a cut connection: a server answering garbage does so again)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nested too deep
        raise GarbledAnswer(f"an answer that is no JSON ({excerpt(str(exc))[1:-1]})") from None


class Reflector:
    """List + watch of one kind into the store, on its own thread."""

    def __init__(
        self,
        kind: Kind,
        store: Store,
        *,
        watch_timeout: float = 300.0,
        backoff: Backoff = Backoff(),
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.kind = kind
        self.store = store
        self.source = f"api/{kind.name}"
        self.watch_timeout = max(1, int(watch_timeout))
        self.backoff = backoff
        self.page_size = page_size
        self.resource_version: str | None = None
        self.lists = 0
        self.watches = 0
        self._stop = threading.Event()
        self._response: Any = None
        self._response_lock = threading.Lock()
        self._thread = threading.Thread(target=self.run, name=f"mnpd-{kind.name}", daemon=True)
        store.register_source(self.source, [kind.store_kind])

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._response_lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # best effort: unblocks a read in progress on the watch thread
                response.shutdown()
        self._thread.join(timeout)

    # ------------------------------------------------------------------------------------------- the loop

    def run(self) -> None:
        attempt = 0
        extra = fields(kind=self.kind.name)
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self.resource_version = self._list()
                    self.store.mark_synced(self.source)
                    attempt = 0
                self._watch(self.resource_version)
                attempt = 0
            except ExpiredError as exc:
                log.info("resourceVersion expired (%s); relisting", exc, extra=extra)
                self.resource_version = None
            except ApiException as exc:
                if exc.status == 410:
                    log.info("410 Gone; relisting", extra=extra)
                    self.resource_version = None
                    continue
                self._pause(attempt, f"API error {exc.status} {exc.reason}")
                attempt += 1
            except GarbledAnswer as exc:
                self.store.set_problems(self.source, [f"error: {self.source}: {exc}; keeping the last good view"])
                self._pause(attempt, f"garbled answer: {exc}")
                attempt += 1
            except (
                urllib3.exceptions.HTTPError,
                OSError,
                ValueError,
                KeyError,
                TypeError,
                AttributeError,
                RecursionError,
                WatchError,
            ) as exc:
                if self._stop.is_set():
                    break
                self._pause(attempt, f"{type(exc).__name__}: {excerpt(str(exc))[1:-1]}")
                attempt += 1
            except Exception as exc:  # unforeseen (MemoryError, a client bug): the reflector must outlive it
                if self._stop.is_set():
                    break
                log.error("%s: unexpected error", self.source, exc_info=exc, extra=extra)
                why = f"{type(exc).__name__}: {excerpt(str(exc))[1:-1]}"
                self.store.set_problems(self.source, [f"error: {self.source}: {why}; keeping the last good view"])
                self._pause(attempt, why)
                attempt += 1

    def _pause(self, attempt: int, why: str) -> None:
        delay = self.backoff.delay(attempt)
        log.warning("%s failed: %s; retrying in %.2f s", self.source, why, delay, extra=fields(kind=self.kind.name))
        self._stop.wait(delay)

    def _list(self) -> str:
        items: dict[str, Any] = {}
        uids: dict[str, str] = {}
        problems: dict[str, ObjectProblems] = {}  # only the objects with some: they are rare
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size}
            if token:
                kwargs["_continue"] = token
            response = self.kind.call(
                **kwargs, _preload_content=False, _request_timeout=(CONNECT_TIMEOUT_S, CONNECT_TIMEOUT_S * 6)
            )
            try:
                doc = _decode(response.data)
            finally:
                response.release_conn()
            del response  # the page's bytes: only one page is held at a time
            if not isinstance(doc, dict) or not isinstance(doc.get("items") or [], list):
                raise GarbledAnswer("the list is not an object with a list of items")
            for obj in doc.get("items") or ():
                self._check(obj)
                key, value, uid, found = convert(self.kind.store_kind, obj)
                if key in items and self.kind.store_kind == POLICY:
                    # A real server lists each object once: which definition is meant cannot be told, so both are
                    # refused, never wider than either (as two manifest files defining one policy are).
                    value = refuse_duplicates(items[key], value, "twice in one API list")
                if value is not None:
                    items[key] = value
                    uids[key] = uid
                if found is not None:
                    problems[key] = found
            meta = doc.get("metadata") or {}
            del doc  # the decoded page, before the next one is fetched
            token = meta.get("continue") or None
            if not token:
                break
        # the problems first: a sync in between never sees an object changed without what made it change
        self.store.replace_object_problems(self.kind.store_kind, problems)
        self.store.replace(self.kind.store_kind, items, uids)
        self.store.set_problems(self.source, [])
        self.lists += 1
        rv = str(meta.get("resourceVersion") or "")
        log.info(
            "listed %d %s at resourceVersion %s", len(items), self.kind.name, rv, extra=fields(kind=self.kind.name)
        )
        return rv

    def _watch(self, resource_version: str) -> None:
        """Watch from `resource_version` until the server ends the stream; `self.resource_version` follows every
        event, so a reconnect after a failure resumes from the last one seen."""
        response = self.kind.call(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT_S, self.watch_timeout + READ_SLACK_S),
        )
        with self._response_lock:
            self._response = response
        self.watches += 1
        finished = False
        try:
            for line in iter_lines(response):
                if self._stop.is_set():
                    break
                self.resource_version = self._handle(_decode(line), self.resource_version or resource_version)
                # Past the event that was garbled (it comes first again after a retry): the view is whole again.
                self.store.set_problems(self.source, [])
            else:
                finished = True
        finally:
            with self._response_lock:
                self._response = None
            if finished:
                response.release_conn()  # the stream ended cleanly: the connection can be reused
            else:
                response.close()  # cut mid-stream: never hand this connection to another request

    def _check(self, obj: object) -> None:
        """Raise GarbledAnswer for an object whose identity cannot be read. Stricter than a manifest: the API
        server always sends a name, and a namespace for every kind but Namespace; one missing would be taken for
        `default`'s (a manifest's convention), a peer of default's podSelectors."""
        why = unidentifiable(obj)
        meta = (obj.get("metadata") or {}) if isinstance(obj, dict) else {}
        if why is None and not (isinstance(meta.get("name"), str) and meta["name"]):
            why = "metadata.name: missing"
        if why is None and self.kind.store_kind != NAMESPACE and not meta.get("namespace"):
            why = "metadata.namespace: missing"
        if why is not None:
            raise GarbledAnswer(f"an item of {self.kind.name}: {why}")

    def _handle(self, event: object, resource_version: str) -> str:
        if not isinstance(event, dict):
            raise GarbledAnswer(f"a watch event of {self.kind.name} is not an object")
        kind, obj = event.get("type"), event.get("object") or {}
        if not isinstance(obj, dict):
            raise GarbledAnswer(f"a watch event of {self.kind.name} holds no object")
        if kind == "ERROR":
            # the server's words only as excerpts: they go into log lines
            if obj.get("code") == 410:
                raise ExpiredError(excerpt(obj.get("message", "Expired")))
            raise WatchError(f"{excerpt(obj.get('code'))} {excerpt(obj.get('reason'))}: {excerpt(obj.get('message'))}")
        why = unidentifiable(obj)
        if why is not None:
            raise GarbledAnswer(f"a watch event of {self.kind.name}: {why}")
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or resource_version)
        if kind == "BOOKMARK":
            return rv
        self._check(obj)
        key, value, uid, found = convert(self.kind.store_kind, obj)
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise WatchError(f"unknown watch event type {kind!r}")
        # The problems first (a deleted object's go with it; an object the daemon does not keep may still have
        # some): a sync in between never sees the object changed without what made it change (daemon.sources.adopt
        # keeps an adopted interface whose pod cannot be read).
        self.store.set_object_problems(self.kind.store_kind, key, None if kind == "DELETED" else found)
        if kind == "DELETED" or value is None:
            self.store.delete(self.kind.store_kind, key)
        else:
            self.store.upsert(self.kind.store_kind, key, value, uid)
        return rv


class KubeSource:
    """All four reflectors."""

    def __init__(
        self, store: Store, client: Any, *, watch_timeout: float = 300.0, backoff: Backoff = Backoff()
    ) -> None:
        self.reflectors = [
            Reflector(kind, store, watch_timeout=watch_timeout, backoff=backoff) for kind in kinds(client)
        ]

    def start(self) -> None:
        for reflector in self.reflectors:
            reflector.start()

    def stop(self) -> None:
        for reflector in self.reflectors:
            reflector._stop.set()
        for reflector in self.reflectors:
            reflector.stop()
