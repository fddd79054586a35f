"""The state-dir source: which pod interfaces the CNI plugin has closed on this node, and in which netns.

The plugin writes one entry per attachment (shared.state) atomically: a dot-named tmp file renamed over the final
name. inotify (watchdog) reports that rename as `moved` to the final name, an entry moved in from elsewhere as
`created`, a removal as `deleted`; the tmp files produce a stream of created/modified/closed events that are
ignored (machine-notes §5). Events only cover what happens after the watch starts, and the kernel's event queue
can overflow, so the source also

* starts the watch *before* the first full scan (nothing can fall between the two), and marks itself synced
  only after that scan;
* rescans the whole directory every `rescan_period` — the store ignores a rescan that changes nothing.

Entries whose netns is gone (the pod died and no CNI DEL came, e.g. after a runtime crash) are removed, under
the plugin's state-dir lock, and logged. "Gone" must be certain: the netns file is missing *and* its directory
exists (or, for `/proc/PID/ns/net`, /proc is mounted). If the daemon cannot see the directory at all — a
deployment without the host's /run/netns mounted — it removes nothing and says so once.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from daemon.logs import fields
from daemon.store import STATE, Store
from shared.errors import StateError
from shared.state import StateEntry, StateStore, entry_name, is_entry_name

log = logging.getLogger(__name__)

NAME = "state-dir"


def netns_gone(path: str) -> bool | None:
    """True: certainly gone; False: exists; None: cannot tell (its directory is not visible here)."""
    if not path:
        return None
    if os.path.exists(path):
        return False
    if path.startswith("/proc/"):
        return True if os.path.exists("/proc/self/ns/net") else None
    return True if os.path.isdir(os.path.dirname(path)) else None


class StateDirSource:
    def __init__(self, store: Store, directory: str, rescan_period: float, *, remove_gone: bool = True) -> None:
        self.store = store
        self.directory = os.path.abspath(directory)
        self.state = StateStore(self.directory)
        self.rescan_period = rescan_period
        self.remove_gone = remove_gone
        self._lock = threading.Lock()
        self._paths: dict[str, tuple[str, str]] = {}  # file path → entry key, for `deleted` events
        self._stop = threading.Event()
        self._observer: Any = None
        self._thread = threading.Thread(target=self._rescan_loop, name="mnpd-statedir-rescan", daemon=True)
        self._warned_invisible = False
        store.register_source(NAME, [STATE])

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.state.ensure()
        observer = Observer()
        observer.schedule(_Handler(self), self.directory, recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self.scan()
        self.store.mark_synced(NAME)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5.0)
        if self._thread.is_alive():
            self._thread.join(5.0)

    def _rescan_loop(self) -> None:
        while not self._stop.wait(self.rescan_period):
            try:
                self.scan()
            except Exception:  # keep rescanning: a transient error must not end the safety net
                log.exception("state dir rescan failed", extra=fields(source=self.directory))

    # ------------------------------------------------------------------------------------------- reading

    def scan(self) -> None:
        """Read every entry and make the store hold exactly them."""
        with self._lock:
            try:
                entries, problems = self.state.entries()
            except StateError as exc:
                log.error("cannot scan the state dir: %s", exc, extra=fields(source=self.directory))
                return
            for problem in problems:
                log.warning("skipping unreadable state entry: %s", problem.reason, extra=fields(source=problem.path))
            keep = {}
            paths = {}
            for entry in entries:
                if self._drop_if_gone(entry):
                    continue
                keep[entry.key] = entry
                paths[self.state.path(*entry.key)] = entry.key
            self._paths = paths
            self.store.replace(STATE, keep)

    def on_path(self, path: str) -> None:
        """An entry file appeared or changed."""
        name = os.path.basename(path)
        if os.path.dirname(os.path.abspath(path)) != self.directory or not is_entry_name(name):
            return
        with self._lock:
            try:
                with open(path, "rb") as fh:
                    entry = StateEntry.from_json(fh.read())
            except FileNotFoundError:
                self._forget_locked(path)
                return
            except (OSError, StateError) as exc:
                log.warning("skipping unreadable state entry: %s", exc, extra=fields(source=path))
                return
            if name != entry_name(*entry.key):
                log.warning("skipping state entry whose name does not match its content", extra=fields(source=path))
                return
            if self._drop_if_gone(entry):
                return
            self._paths[os.path.abspath(path)] = entry.key
            self.store.upsert(STATE, entry.key, entry)

    def on_removed(self, path: str) -> None:
        with self._lock:
            self._forget_locked(path)

    def _forget_locked(self, path: str) -> None:
        key = self._paths.pop(os.path.abspath(path), None)
        if key is not None:
            self.store.delete(STATE, key)

    def _drop_if_gone(self, entry: StateEntry) -> bool:
        gone = netns_gone(entry.netns)
        if gone is None and entry.netns and not self._warned_invisible:
            self._warned_invisible = True
            log.warning(
                "cannot see the directory of a pod netns path; entries of dead pods will not be cleaned up "
                "(mount the host's netns directory into the daemon)",
                extra=fields(netns=entry.netns),
            )
        if not gone or not self.remove_gone:
            return False
        try:
            with self.state.lock():
                if netns_gone(entry.netns):  # re-check under the plugin's lock
                    self.state.delete(*entry.key)
        except StateError as exc:
            log.warning("cannot remove the entry of a gone netns: %s", exc, extra=fields(netns=entry.netns))
            return False
        log.info(
            "removed the state entry of a pod whose netns is gone",
            extra=fields(pod=entry.pod, ifname=entry.ifname, netns=entry.netns, container=entry.container_id),
        )
        return True


class _Handler(FileSystemEventHandler):
    def __init__(self, source: StateDirSource) -> None:
        self.source = source

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.source.on_path(_text(event.src_path))

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.source.on_path(_text(event.src_path))

    def on_moved(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.source.on_removed(_text(event.src_path))
            self.source.on_path(_text(event.dest_path))

    def on_deleted(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.source.on_removed(_text(event.src_path))


def _text(path: str | bytes) -> str:
    return path.decode() if isinstance(path, bytes) else path
