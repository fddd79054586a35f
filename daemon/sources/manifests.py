"""The manifests source: the cluster read from a directory of YAML files, for standalone hosts, the lab and tests.

The directory holds what `mnpctl matrix` reads (shared.manifests): Namespaces, Pods (with their network-status
annotations), NetworkAttachmentDefinitions and MultiNetworkPolicies, in any number of files and sub-directories.
Any change under it (watchdog, recursive) wakes a loader thread that waits until the directory has been quiet for
100 ms, then lists the directory and replaces the store's contents; the store turns that into the few changes that
matter. That is debouncing by level triggering: a burst of writes costs one reload (at most one more if writes
continue during it), and the reload always sees the latest files.

Only files that changed are read again: each file's parsed form is cached under its (path, inode, device, mtime_ns,
size, resolved path), so a change to one file in a 5 MB directory re-parses that file only (docs/benchmarks.md).

One bad file costs only that file. A file that cannot be used as it is (`ParsedFile.broken`: unreadable, not YAML,
too large or deep, a FIFO, a symlink out of the directory, an unidentifiable document, an invalid Pod/Namespace/NAD
— shared.manifests) keeps contributing the objects of its **last good version**, and is reported: losing a policy
for a moment would open the pods it isolates, and a half-read pod's labels could make a selector match. A file
that was never good contributes only its MultiNetworkPolicy-looking documents, each refused (isolating what it
selects, allowing nothing); what the rest of it would have said cannot be known, so it is not guessed (pods only
it describes stay pending, closed). A file that is deleted takes its objects with it. Problems are logged once
each, set as this source's problems in the store (the `mnp_source_problems` gauge and `mnpctl status`) and, for
invalid policies, reported by the controller (InvalidPolicy).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from daemon.logs import fields
from daemon.sources.convert import pod_value
from daemon.store import NAD, NAMESPACE, POD, POLICY, Store
from shared.manifests import (
    MANIFEST_SUFFIXES,
    PROBES_FILE,
    ManifestObject,
    ParsedFile,
    Problem,
    manifest_files,
    merge,
    read_file,
)

log = logging.getLogger(__name__)

NAME = "manifests"
SETTLE_S = 0.1
SETTLE_MAX_S = 2.0


@dataclass(frozen=True)
class _Cached:
    signature: tuple[object, ...]  # the file version this was read from
    parsed: ParsedFile
    good: ParsedFile | None  # the last version that could be used as it is


def _signature(path: Path) -> tuple[object, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size, st.st_mode, os.path.realpath(path))


def refused(parsed: ParsedFile, why: str) -> list[ManifestObject]:
    """The policies of a file that was never good, each refused: they isolate what they select, allow nothing."""
    out = []
    for item in parsed.objects:
        if item.kind == POLICY:
            policy = item.value
            out.append(dataclasses.replace(item, value=dataclasses.replace(policy, problems=(*policy.problems, why))))
    return out


class ManifestsSource:
    def __init__(self, store: Store, directory: str) -> None:
        self.store = store
        self.root = Path(directory).resolve()
        self._cache: dict[Path, _Cached] = {}
        self._reported: set[str] = set()  # the problems of the last reload, each logged once
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer: Any = None
        self._thread = threading.Thread(target=self._loop, name="mnpd-manifests", daemon=True)
        self.reloads = 0
        self.files_read = 0  # files read and parsed again, over all reloads
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
        files = manifest_files(self.root) if self.root.is_dir() else []
        parsed_files: list[ParsedFile] = []
        problems: list[Problem] = []
        read = 0
        for path in files:
            signature = _signature(path)
            cached = self._cache.get(path)
            if cached is None or signature is None or cached.signature != signature:
                parsed = read_file(path, self.root)
                read += 1
                good = cached.good if cached is not None and parsed.broken else (None if parsed.broken else parsed)
                cached = self._cache[path] = _Cached(signature or (), parsed, good)
            parsed = cached.parsed
            if not parsed.broken:
                parsed_files.append(parsed)
                continue
            label = str(path.relative_to(self.root))
            problems.extend(p for p in parsed.problems if p.error and not p.policy)
            if cached.good is not None:
                problems.append(Problem(label, "cannot be used as it is: its last good version stays in force"))
                parsed_files.append(ParsedFile(cached.good.objects, [p for p in cached.good.problems if not p.error]))
            else:
                why = "its file has errors and was never good: refused until it is"
                problems.append(Problem(label, "cannot be used and was never good: its policies are refused"))
                parsed_files.append(ParsedFile(refused(parsed, why)))
        for gone in set(self._cache) - set(files):
            del self._cache[gone]
        loaded = merge(parsed_files)
        # Invalid policies are the controller's to report (InvalidPolicy); everything else is this source's.
        problems += [p for p in loaded.problems if p.error and not p.breaks_file and not p.policy]
        messages = [str(p) for p in problems]
        for message in messages:
            if message not in self._reported:  # once per problem while it lasts
                log.error("%s", message, extra=fields(source=str(self.root)))
        self._reported = set(messages)  # only the current ones: hostile churn must not grow it
        self.store.set_problems(NAME, messages)
        by_kind: dict[str, dict[str, Any]] = {NAMESPACE: {}, POD: {}, NAD: {}, POLICY: {}}
        for item in loaded.objects:
            if item.kind == POD:
                value = pod_value(item.value, item.status_reported)
                if value is not None:
                    by_kind[POD][item.key] = value
            else:
                by_kind[item.kind][item.key] = item.value
        for kind in (NAMESPACE, POD, NAD, POLICY):
            self.store.replace(kind, by_kind[kind])
        self.reloads += 1
        self.files_read += read
        log.debug(
            "manifests loaded: %d files (%d read again), %d pods, %d policies",
            len(files),
            read,
            len(by_kind[POD]),
            len(by_kind[POLICY]),
        )


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
