"""The state-dir source: which pod interfaces the CNI plugin has closed on this node, and in which netns.

The plugin writes one entry per attachment (shared.state) atomically: a dot-named tmp file renamed over the final
name. inotify (watchdog) reports that rename as `moved` to the final name, an entry moved in from elsewhere as
`created`, a removal as `deleted`; the tmp files produce a stream of created/modified/closed events that are
ignored (machine-notes §5). Events only cover what happens after the watch starts, and the kernel's event queue
can overflow, so the source also

* starts the watch *before* the first full scan (nothing can fall between the two), and marks itself synced
  only after that scan;
* rescans the whole directory every `rescan_period` — the store ignores a rescan that changes nothing;
* watches the directory again when it is removed, moved away or replaced (an inotify watch stays with its
  directory: every later entry would wait for the rescan, its pod closed): a watch on its parent reports that,
  and wakes the rescan, which recreates the directory if it is missing (as the plugin's next ADD would),
  watches it, then scans it.

Entries whose netns is gone (the pod died and no CNI DEL came, e.g. after a runtime crash) are removed, under
the plugin's state-dir lock, and logged. "Gone" must be certain: the netns file is missing (ENOENT — nothing
else: EACCES, ELOOP, a path that is no namespace say nothing about the pod) *and* its directory exists (or, for
`/proc/PID/ns/net`, /proc is mounted) — shared.netns.netns_path_error decides, with gone_needs_visible_dir. If
the daemon cannot see the directory at all — a deployment without the host's /run/netns mounted — it removes
nothing and says so once.

Nothing in the directory can stop the watch: entries are read through shared.state (regular files only, opened
non-blocking, size-bounded), and this source never raises out of a watchdog callback. What it cannot use is kept
as a problem, logged once (WARNING, quoting at most a short excerpt) and counted in
`mnp_state_entry_problems{kind}`: `unreadable` (not an entry: corrupt, a FIFO or other non-regular file, too
big, permission denied — an entry that turns unreadable keeps its last good version in force until its file is
removed) and `netns_unchecked` (a readable entry whose netns path cannot be checked: it is kept and enforced as
far as mnpd can, never dropped as "gone").
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from daemon.logs import fields
from daemon.store import STATE, Store
from shared.errors import NetnsGone, NetnsInvisible, NetnsUnusable, StateError
from shared.netns import netns_identity
from shared.state import StateEntry, StateStore, excerpt, is_entry_name

if TYPE_CHECKING:
    from daemon.metrics import Metrics

log = logging.getLogger(__name__)

NAME = "state-dir"


UNREADABLE = "unreadable"
NETNS_UNCHECKED = "netns_unchecked"


def netns_gone(path: str) -> bool | None:
    """True: certainly gone; False: exists; None: cannot tell (its directory is not visible here, or the path
    cannot be checked: netns_unchecked says why)."""
    return _netns_check(path)[0]


def _netns_check(path: str) -> tuple[bool | None, str | None]:
    """netns_gone's answer, and why the path cannot be checked (permission denied, a loop …) when that is so.
    What an error means is shared.netns.netns_path_error's to say (with the directory-visibility condition)."""
    if not path:
        return None, None
    try:
        netns_identity(path, gone_needs_visible_dir=True)
    except NetnsGone:
        return True, None
    except NetnsInvisible:
        return None, None
    except NetnsUnusable as exc:
        return None, str(exc)
    return False, None


class StateDirSource:
    def __init__(
        self,
        store: Store,
        directory: str,
        rescan_period: float,
        *,
        remove_gone: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.directory = os.path.abspath(directory)
        self.state = StateStore(self.directory)
        self.rescan_period = rescan_period
        self.remove_gone = remove_gone
        self._lock = threading.Lock()
        self._paths: dict[str, tuple[str, str]] = {}  # file path → entry key, for `deleted` events
        self._stop = threading.Event()
        self._observer: Any = None
        self._thread = threading.Thread(target=self._rescan_loop, name="mnpd-statedir-rescan", daemon=True)
        self._wake = threading.Event()  # a rescan now: the watched directory went
        self._watched: tuple[int, int] | None = None  # (st_dev, st_ino) of the directory the watch is on
        self._rewatch = False  # the watch's directory went: watch the path again
        self._warned_invisible = False
        # What cannot be used, by kind: path (unreadable) or entry key (netns unchecked) → reason, as last seen.
        self.problems: dict[str, dict[Any, str]] = {UNREADABLE: {}, NETNS_UNCHECKED: {}}
        store.register_source(NAME, [STATE])

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.state.ensure()
        observer = Observer()
        observer.daemon = True
        observer.start()
        self._observer = observer
        self.scan()  # watches the directory first
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

    def _rescan_loop(self) -> None:
        while True:
            self._wake.wait(self.rescan_period)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.scan()
            except Exception:  # keep rescanning: a transient error must not end the safety net
                log.exception("state dir rescan failed", extra=fields(source=self.directory))

    # ------------------------------------------------------------------------------------------- reading

    def directory_gone(self) -> None:
        """The watched directory was removed or moved away: rescan now, watching it again first (whatever its
        inode: a directory made again at once often gets the old one's number)."""
        self._rewatch = True
        self._wake.set()

    def _watch(self) -> None:
        """Watch the directory if the watch is not on the one at its path now (removed, replaced, not yet
        watched), recreating it if it is missing. Before the scan, so that nothing falls between the two."""
        if self._observer is None:
            return
        try:
            self.state.ensure()
            st = os.stat(self.directory)
        except (StateError, OSError) as exc:
            log.error("cannot watch the state dir: %s", exc, extra=fields(source=self.directory))
            return
        if (st.st_dev, st.st_ino) == self._watched and not self._rewatch:
            return
        self._rewatch = False
        if self._watched is not None:
            log.warning("the state dir was removed or replaced: watching it again", extra=fields(source=self.directory))
        self._observer.unschedule_all()
        handler = _Handler(self)
        try:
            self._observer.schedule(handler, self.directory, recursive=False)
            # and its parent, for the directory itself moved away or made again (its own watch reports its
            # removal but not its move, and nothing in a new directory of its name)
            self._observer.schedule(handler, os.path.dirname(self.directory), recursive=False)
        except OSError as exc:  # say, inotify's watch limit: the rescan tries again
            self._watched = None
            log.error("cannot watch the state dir (rescanning only): %s", exc, extra=fields(source=self.directory))
            return
        self._watched = (st.st_dev, st.st_ino)

    def scan(self) -> None:
        """Read every entry and make the store hold exactly them."""
        self._watch()
        with self._lock:
            try:
                entries, problems = self.state.entries()
            except StateError as exc:
                log.error("cannot scan the state dir: %s", exc, extra=fields(source=self.directory))
                return
            unreadable = {problem.path: problem.reason for problem in problems}
            for path, reason in unreadable.items():
                self._report_unreadable(path, reason)
            self.problems[UNREADABLE] = unreadable
            keep = {}
            paths = {}
            for path in unreadable:  # an entry that turned unreadable: its last good version stays in force
                key = self._paths.get(path)
                last_good = self.store.get(STATE, key) if key is not None else None
                if key is not None and last_good is not None:
                    keep[key] = last_good
                    paths[path] = key
            for entry in entries:
                if self._drop_if_gone(entry):
                    continue
                keep[entry.key] = entry
                paths[self.state.path(*entry.key)] = entry.key
            self._paths = paths
            unchecked = self.problems[NETNS_UNCHECKED]
            self.problems[NETNS_UNCHECKED] = {key: why for key, why in unchecked.items() if key in keep}
            self.store.replace(STATE, keep)
            self._count_problems()

    def on_path(self, path: str) -> None:
        """An entry file appeared or changed. Never raises: it runs on watchdog's thread, which must go on."""
        try:
            self._on_path(path)
        except Exception:
            log.exception("cannot handle a state dir event", extra=fields(source=excerpt(path)))

    def _on_path(self, path: str) -> None:
        name = os.path.basename(path)
        if os.path.dirname(os.path.abspath(path)) != self.directory or not is_entry_name(name):
            return
        path = os.path.join(self.directory, name)
        with self._lock:
            try:
                try:
                    entry = self.state.load(path)
                except FileNotFoundError:
                    self._forget_locked(path)
                    return
                except StateError as exc:
                    self._report_unreadable(path, str(exc))
                    self.problems[UNREADABLE][path] = str(exc)
                    return
                self.problems[UNREADABLE].pop(path, None)
                if self._drop_if_gone(entry):
                    return
                self._paths[path] = entry.key
                self.store.upsert(STATE, entry.key, entry)
            finally:
                self._count_problems()

    def on_removed(self, path: str) -> None:
        try:
            with self._lock:
                self._forget_locked(path)
                self._count_problems()
        except Exception:
            log.exception("cannot handle a state dir event", extra=fields(source=excerpt(path)))

    def _forget_locked(self, path: str) -> None:
        path = os.path.abspath(path)
        self.problems[UNREADABLE].pop(path, None)
        key = self._paths.pop(path, None)
        if key is not None:
            self.problems[NETNS_UNCHECKED].pop(key, None)
            self.store.delete(STATE, key)

    def _report_unreadable(self, path: str, reason: str) -> None:
        if self.problems[UNREADABLE].get(path) != reason:  # once per file and reason, not on every rescan
            log.warning("skipping unreadable state entry: %s", reason, extra=fields(source=path))

    def _count_problems(self) -> None:
        if self.metrics is not None:
            for kind, found in self.problems.items():
                self.metrics.state_entry_problems.labels(kind).set(len(found))

    def _drop_if_gone(self, entry: StateEntry) -> bool:
        gone, unchecked = _netns_check(entry.netns)
        if unchecked is not None:
            if self.problems[NETNS_UNCHECKED].get(entry.key) != unchecked:
                log.warning(
                    "%s; keeping the entry (only a missing netns file means the pod is gone)",
                    unchecked,
                    extra=fields(pod=entry.pod, ifname=entry.ifname, netns=entry.netns, container=entry.container_id),
                )
            self.problems[NETNS_UNCHECKED][entry.key] = unchecked
            return False
        self.problems[NETNS_UNCHECKED].pop(entry.key, None)
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
    """The directory's events, and its parent's: those of the directory itself (removed, moved, made again)."""

    def __init__(self, source: StateDirSource) -> None:
        self.source = source

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.source.on_path(_text(event.src_path))
        elif self._is_the_directory(event.src_path):
            self.source.directory_gone()  # made again: watch the new one

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.source.on_path(_text(event.src_path))

    def on_moved(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.source.on_removed(_text(event.src_path))
            self.source.on_path(_text(event.dest_path))
        elif self._is_the_directory(event.src_path) or self._is_the_directory(event.dest_path):
            self.source.directory_gone()

    def on_deleted(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.source.on_removed(_text(event.src_path))
        elif self._is_the_directory(event.src_path):
            self.source.directory_gone()

    def _is_the_directory(self, path: str | bytes) -> bool:
        return os.path.abspath(_text(path)) == self.source.directory


def _text(path: str | bytes) -> str:
    return path.decode() if isinstance(path, bytes) else path
