"""The daemon's single cache of what its sources have seen, and the log of what changed since the last sync.

Sources (API reflectors, the manifests directory, the state dir) write here and nowhere else; the controller
reads a snapshot and drains the change log, both on the runner's thread. That split is the whole of the
level-triggered design: an event is never "handled", it only updates the current state and pokes the runner, and
whatever the runner finds changed when it runs is what gets recomputed. A burst of 1,000 events is one sync.

Values are already parsed (shared.model objects, shared.state entries): parsing happens once per event, on the
source's thread, and the sync never touches raw JSON. An update that leaves the parsed value equal (a pod status
heartbeat, a resourceVersion bump) records no change at all, so it costs no recompute.

Change coalescing: per object, the log keeps the value *before the first* change since the last drain and the
time that change was seen; the "after" value is read at drain time. A pod added and deleted between two syncs
drains as nothing.

Object problems: what a parser could not read in an object from the API (a garbled network-status annotation, a
NetworkAttachmentDefinition config that is no JSON object) is held beside the objects, per (kind, key), and only for
objects that have some — they are rare, and 10,000 healthy pods cost nothing here. The parsed value keeps what
could be read (fail closed: a network-status entry that cannot be read is no interface, an address that cannot be
read is no peer); the controller reports the problems (Event, log line, metric, status file) while they last.

Readiness: every source registers the kinds it owns and reports `mark_synced` after its first complete list;
`synced()` is true only when all have. Until then the controller programs nothing (a pod stays closed rather
than be opened by half a picture of the cluster).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.clock import Clock
from shared.model import MultiNetworkPolicy, Namespace, NetworkAttachmentDefinition, Pod
from shared.state import StateEntry

NAMESPACE = "Namespace"
POD = "Pod"
NAD = "NetworkAttachmentDefinition"
POLICY = "MultiNetworkPolicy"
STATE = "StateEntry"
KINDS = (NAMESPACE, POD, NAD, POLICY, STATE)


@dataclass(frozen=True, slots=True)
class PodObject:
    """A pod as the daemon keeps it. `status_reported`: Multus wrote the network-status annotation, so the
    attachments are the real interfaces (otherwise they were guessed from the request and a local interface
    must stay pending)."""

    pod: Pod
    status_reported: bool = True


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    key: Any  # "ns/name", a namespace name, or a state entry's (containerID, ifname)
    old: Any  # the value before the first change since the last drain (None: it did not exist)
    new: Any  # the value now (None: it no longer exists)
    at: float  # clock time the first of these changes was recorded


@dataclass(frozen=True)
class Snapshot:
    namespaces: Mapping[str, Namespace]
    pods: Mapping[str, PodObject]
    nads: Mapping[str, NetworkAttachmentDefinition]
    policies: Mapping[str, MultiNetworkPolicy]
    entries: Mapping[tuple[str, str], StateEntry]
    pods_generation: int = 0  # the pods' generation when taken: an equal one means the very same pods, in order


@dataclass(frozen=True, slots=True)
class ObjectProblems:
    """What could not be read in one object, as short messages (hostile values only as excerpts), with what
    reporting them needs: the object's uid (an Event's involvedObject) and, for a pod, its node ("" unknown)."""

    problems: tuple[str, ...]
    uid: str = ""
    node: str = ""


@dataclass
class _Source:
    kinds: tuple[str, ...]
    synced: bool = False
    problems: tuple[str, ...] = ()  # what the source could not use (a broken manifest file, a garbled API answer)


@dataclass
class Store:
    clock: Clock
    on_change: Callable[[], None] = lambda: None  # the runner's request(); called outside the lock
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _objects: dict[str, dict[Any, Any]] = field(default_factory=lambda: {k: {} for k in KINDS}, init=False)
    _uids: dict[tuple[str, Any], str] = field(default_factory=dict, init=False)
    _pending: dict[tuple[str, Any], tuple[Any, float]] = field(default_factory=dict, init=False)
    _sources: dict[str, _Source] = field(default_factory=dict, init=False)
    _generations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0), init=False)
    _problems: dict[tuple[str, Any], ObjectProblems] = field(default_factory=dict, init=False)
    _problems_generation: int = field(default=0, init=False)

    # ------------------------------------------------------------------------------------------- sources

    def register_source(self, name: str, kinds: Iterable[str]) -> None:
        with self._lock:
            self._sources[name] = _Source(tuple(kinds))

    def mark_synced(self, name: str) -> None:
        with self._lock:
            source = self._sources[name]
            changed = not source.synced
            source.synced = True
        if changed:
            self.on_change()

    def synced(self) -> bool:
        with self._lock:
            return all(s.synced for s in self._sources.values())

    def source_status(self) -> dict[str, bool]:
        with self._lock:
            return {name: s.synced for name, s in self._sources.items()}

    def set_problems(self, name: str, problems: Iterable[str]) -> None:
        """What source `name` currently cannot use (replacing what it said before); shown by metrics and status."""
        with self._lock:
            source = self._sources[name]
            new = tuple(problems)
            changed, source.problems = source.problems != new, new
        if changed:
            self.on_change()

    def source_problems(self) -> dict[str, tuple[str, ...]]:
        with self._lock:
            return {name: s.problems for name, s in self._sources.items()}

    # ------------------------------------------------------------------------------------------- object problems

    def set_object_problems(self, kind: str, key: Any, found: ObjectProblems | None) -> None:
        """What could not be read in one object now (None: nothing, or the object is gone)."""
        with self._lock:
            changed = self._set_problems(kind, key, found)
        if changed:
            self.on_change()

    def replace_object_problems(self, kind: str, found: Mapping[Any, ObjectProblems]) -> None:
        """Make `kind`'s object problems exactly `found` (a relist: objects fixed or deleted meanwhile drop out)."""
        with self._lock:
            changed = False
            for gone in [k for (of, k) in self._problems if of == kind and k not in found]:
                changed |= self._set_problems(kind, gone, None)
            for key, problems in found.items():
                changed |= self._set_problems(kind, key, problems)
        if changed:
            self.on_change()

    def _set_problems(self, kind: str, key: Any, found: ObjectProblems | None) -> bool:
        if self._problems.get((kind, key)) == found:
            return False
        if found is None:
            del self._problems[(kind, key)]
        else:
            self._problems[(kind, key)] = found
        self._problems_generation += 1
        return True

    def object_problems_generation(self) -> int:
        """The counter `object_problems` returns, without copying the problems (a sync that finds it unchanged
        reads nothing more: a cluster of 10,000 garbled pods must not cost each sync a copy of 10,000 entries)."""
        with self._lock:
            return self._problems_generation

    def has_object_problems(self, kind: str, key: Any) -> bool:
        """Whether mnpd cannot read some part of one object now (without copying the others')."""
        with self._lock:
            return (kind, key) in self._problems

    def object_problems(self) -> tuple[int, dict[tuple[str, Any], ObjectProblems]]:
        """(a counter that grows with every change of them, the objects that have problems now)."""
        with self._lock:
            return self._problems_generation, dict(self._problems)

    # ------------------------------------------------------------------------------------------- writes

    def upsert(self, kind: str, key: Any, value: Any, uid: str = "") -> None:
        with self._lock:
            changed = self._set(kind, key, value)
            if uid and kind != POD:
                self._uids[(kind, key)] = uid
        if changed:
            self.on_change()

    def delete(self, kind: str, key: Any) -> None:
        with self._lock:
            changed = self._set(kind, key, None)
            self._uids.pop((kind, key), None)
        if changed:
            self.on_change()

    def replace(self, kind: str, items: Mapping[Any, Any], uids: Mapping[Any, str] | None = None) -> None:
        """Make `kind` hold exactly `items` (a relist, a manifests reload, a state-dir rescan)."""
        with self._lock:
            changed = False
            for key in [k for k in self._objects[kind] if k not in items]:
                changed |= self._set(kind, key, None)
                self._uids.pop((kind, key), None)
            for key, value in items.items():
                changed |= self._set(kind, key, value)
            if kind != POD:
                for key, uid in (uids or {}).items():
                    self._uids[(kind, key)] = uid
        if changed:
            self.on_change()

    def _set(self, kind: str, key: Any, value: Any) -> bool:
        objects = self._objects[kind]
        old = objects.get(key)
        if old == value:
            return False
        if value is None:
            del objects[key]
        else:
            objects[key] = value
        self._pending.setdefault((kind, key), (old, self.clock.now()))
        self._generations[kind] += 1
        return True

    # ------------------------------------------------------------------------------------------- reads

    def drain(self) -> list[Change]:
        """What changed since the last drain, net of changes that cancelled out."""
        with self._lock:
            pending, self._pending = self._pending, {}
            out = []
            for (kind, key), (old, at) in pending.items():
                new = self._objects[kind].get(key)
                if old != new:
                    out.append(Change(kind, key, old, new, at))
            return out

    def snapshot(self) -> Snapshot:
        """Shallow copies: the values are immutable, so the controller can read them without the lock."""
        with self._lock:
            o = self._objects
            return Snapshot(
                dict(o[NAMESPACE]),
                dict(o[POD]),
                dict(o[NAD]),
                dict(o[POLICY]),
                dict(o[STATE]),
                self._generations[POD],
            )

    def generation(self, *kinds: str) -> tuple[int, ...]:
        """A counter per kind that grows with every real change: lets a reader that does not drain the change
        log (daemon.sources.adopt) skip its work when nothing it reads has changed."""
        with self._lock:
            return tuple(self._generations[k] for k in kinds)

    def get(self, kind: str, key: Any) -> Any:
        with self._lock:
            return self._objects[kind].get(key)

    def uid(self, kind: str, key: Any) -> str:
        """The object's metadata.uid ("" if unknown). A pod's is the one its value carries: 10,000 pods do not need
        a second table of them (1.2 MB)."""
        with self._lock:
            if kind == POD:
                value = self._objects[POD].get(key)
                return value.pod.uid if isinstance(value, PodObject) else ""
            return self._uids.get((kind, key), "")

    def count(self, kind: str) -> int:
        with self._lock:
            return len(self._objects[kind])
