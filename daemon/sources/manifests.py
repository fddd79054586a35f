"""The manifests source: the cluster read from a directory of YAML files, for standalone hosts, the lab and tests.

The directory holds what `mnpctl matrix` reads (shared.manifests): Namespaces, Pods (with their network-status
annotations), NetworkAttachmentDefinitions and MultiNetworkPolicies, in any number of files and sub-directories.
Any change under it (watchdog, recursive) wakes a loader thread that waits until the directory has been quiet for
100 ms, then re-reads the *whole* directory and replaces the store's contents; the store turns that into the few
changes that matter. That is debouncing by level triggering: a burst of writes costs one reload (at most one
more if writes continue during it), and the reload always sees the latest files.

A file that cannot be read or parsed (an editor's half-written save) keeps contributing the objects of its last
good version, with a logged error, rather than vanishing: losing a policy for a moment would open the pods it
isolates. A file that is deleted takes its objects with it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from daemon.logs import fields
from daemon.sources.convert import pod_value, status_reported
from daemon.store import NAD, NAMESPACE, POD, POLICY, Store
from shared.manifests import MANIFEST_SUFFIXES, PROBES_FILE, build_cluster, manifest_files, read_documents

log = logging.getLogger(__name__)

NAME = "manifests"
SETTLE_S = 0.1
SETTLE_MAX_S = 2.0


def _flatten(docs: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for _, doc in docs:
        if not isinstance(doc, dict):
            continue
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            out.extend(_flatten([("", item) for item in doc["items"]]))
        else:
            out.append(doc)
    return out


class ManifestsSource:
    def __init__(self, store: Store, directory: str) -> None:
        self.store = store
        self.root = Path(directory).resolve()
        self._cache: dict[Path, list[tuple[str, Any]]] = {}  # file → its last good documents
        self._reported: set[str] = set()  # problems already logged
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer: Any = None
        self._thread = threading.Thread(target=self._loop, name="mnpd-manifests", daemon=True)
        self.reloads = 0
        store.register_source(NAME, [NAMESPACE, POD, NAD, POLICY])

    def start(self) -> None:
        observer = Observer()
        observer.schedule(_Handler(self), str(self.root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self.reload()
        self.store.mark_synced(NAME)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5.0)
        if self._thread.is_alive():
            self._thread.join(5.0)

    def changed(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            if self._stop.is_set():
                return
            self._settle()
            if self._stop.is_set():
                return
            try:
                self.reload()
            except Exception:
                log.exception("reloading the manifests failed", extra=fields(source=str(self.root)))

    def _settle(self) -> None:
        """Wait until the directory has been quiet for SETTLE_S (at most SETTLE_MAX_S): an editor that truncates
        and rewrites a file is then read once, after the write."""
        deadline = time.monotonic() + SETTLE_MAX_S
        self._wake.clear()
        while self._wake.wait(SETTLE_S) and time.monotonic() < deadline and not self._stop.is_set():
            self._wake.clear()

    def reload(self) -> None:
        documents: list[tuple[str, Any]] = []
        files = manifest_files(self.root) if self.root.is_dir() else []
        for path in files:
            docs, problems = read_documents(path, self.root)
            if problems:
                for problem in problems:
                    self._report(str(problem) + ("; using its last good version" if path in self._cache else ""))
                docs = self._cache.get(path, [])
            else:
                self._cache[path] = docs
            documents.extend(docs)
        for gone in set(self._cache) - set(files):
            del self._cache[gone]
        loaded = build_cluster(documents)
        for problem in loaded.problems:
            if problem.error and "MultiNetworkPolicy" not in problem.where:  # policies: the controller reports
                self._report(str(problem))
        reported = {
            f"{(d.get('metadata') or {}).get('namespace') or 'default'}/{(d.get('metadata') or {}).get('name')}"
            for d in _flatten(documents)
            if d.get("kind") == "Pod" and status_reported(d)
        }
        cluster = loaded.cluster
        pods = {}
        for pod in cluster.pods:
            value = pod_value(pod, pod.key in reported)
            if value is not None:
                pods[pod.key] = value
        self.store.replace(NAMESPACE, dict(cluster.namespaces))
        self.store.replace(POD, pods)
        self.store.replace(NAD, dict(cluster.nads))
        self.store.replace(POLICY, {p.key: p for p in cluster.policies})
        self.reloads += 1
        log.debug("manifests loaded: %d files, %d pods, %d policies", len(files), len(pods), len(cluster.policies))

    def _report(self, message: str) -> None:
        if message not in self._reported:
            self._reported.add(message)
            log.error("%s", message, extra=fields(source=str(self.root)))


class _Handler(FileSystemEventHandler):
    def __init__(self, source: ManifestsSource) -> None:
        self.source = source

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = Path(raw.decode() if isinstance(raw, bytes) else raw)
            if not raw:
                continue
            if event.is_directory or (path.suffix in MANIFEST_SUFFIXES and path.name != PROBES_FILE):
                self.source.changed()
                return
