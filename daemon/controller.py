"""The sync: from what changed in the store to one nft transaction per local interface whose rules changed.

The runner calls `sync(periodic)`; nothing else programs a pod. One sync:

1. drains the store's change log and reports policy validity (Event + gauge) for the policies that changed, and
   what could not be read in pods, NADs and namespaces from the API (Event, log line, gauge, status file) when
   that changed;
2. does nothing more until every source has completed its first list — a new pod stays in the pending
   (closed) table the CNI plugin gave it, and a restarted daemon leaves every pod as it found it;
3. decides which local interfaces are dirty: all of them on the first sync after start and on the periodic
   resync, else those the changes can affect (daemon.dependencies), plus those whose last attempt failed;
4. builds one `ClusterIndex` (sharing the last one's pod side when the pods did not change) and compiles only
   the dirty interfaces' pods (shared.compiler);
5. for each dirty interface whose `InterfaceRules` differ from what this daemon last programmed, runs one
   transaction (daemon.apply), started as soon as that interface is compiled, while the next one is; an
   unchanged interface gets none, so a no-op resync runs 0 transactions;
6. after a transaction that withdraws access, deletes the conntrack entries the new rules do not admit
   (daemon.conntrack); then updates metrics, Events and the status file.

A local interface is a state-dir entry (the CNI plugin closed it). It is matched to its pod by namespace/name
(and UID when both sides have one) and to an attachment of the pod's network-status by interface name. Until
that works it stays *pending*: the daemon does not touch it, and the plugin's table keeps it closed. Pods that
have terminated keep their last rules (the compiler treats terminated pods as unselected, which would open
them). A failed transaction changes nothing (nft is atomic): the interface keeps its previous rules, is marked
*failed*, gets an Event, and is retried with the runner's backoff.

"What this daemon last programmed" starts empty, so after a (re)start every interface gets one transaction that
replaces its chains atomically: the existing rules are adopted without a flush and without an open window.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.apply import Applier, TamperUnrestored, Work
from daemon.clock import Clock
from daemon.conntrack import ConntrackCleaner, withdraws
from daemon.dependencies import namespace_labels, policies_seeing_namespace, policies_seeing_pod
from daemon.events import EventRecorder, LogEvents, ObjectRef, log_fields, object_ref, pod_ref, policy_ref
from daemon.logs import fields
from daemon.metrics import Metrics
from daemon.records import FAILED, GONE, PENDING, PROGRAMMED, TERMINATED, IfaceKey, InterfaceRecord
from daemon.sources.adopt import Adopter
from daemon.status import StatusWriter
from daemon.store import NAD, NAMESPACE, POD, POLICY, STATE, Change, ObjectProblems, PodObject, Snapshot, Store
from shared.compiler import DIRECTIONS, ClusterIndex, compile_direction, selects
from shared.errors import NetnsGone, NetnsUnusable
from shared.model import Attachment, Cluster, MultiNetworkPolicy, Namespace, Pod
from shared.netns import identity_if_usable, interface_index
from shared.nft.errors import NftError
from shared.nft.transaction import TransactionError
from shared.rules import EGRESS, INGRESS, DirectionRules, InterfaceRules, IPAddress
from shared.selectors import UnreadableLabels
from shared.state import StateEntry

log = logging.getLogger(__name__)

REASON_NOT_APPLIED = "RulesNotApplied"
REASON_INVALID = "InvalidPolicy"
REASON_TAMPERED = "RulesTampered"
# What could not be read in an object from the API (daemon.sources.convert), and what mnpd does about it: the
# start of the Event message and of the status file's entry.
REASON_UNREADABLE = {POD: "InvalidPod", NAD: "InvalidNetworkAttachmentDefinition", NAMESPACE: "InvalidNamespace"}
UNREADABLE_EFFECT = {
    POD: "mnpd leaves out what it cannot read, fail closed: an interface whose network-status entry cannot be read "
    "(every interface, when the pod's labels or annotations cannot be) is not programmed (it stays closed, or keeps "
    "its last rules) and is no peer a podSelector can match; a container port that cannot be read names no port",
    NAMESPACE: "mnpd cannot read its labels, fail closed: it matches no namespaceSelector that has a requirement "
    "(only an empty one, which selects every namespace), so no other selector admits its pods",
    NAD: "mnpd reads no plugin from a config it cannot read: it adopts no new interface on this network (one a "
    "policy selects is reported unguarded), and the interfaces it adopted keep their last rules",
}


@dataclass(frozen=True)
class Resolved:
    pod: Pod
    attachment: Attachment


# How often an entry whose netns path could not be checked is checked again: after 1 s, 2 s, 4 s … then every
# 64 s (and at once before its table is touched), so that its namespace is pinned soon after the path turns usable.
IDENTITY_RECHECK_FIRST = 1.0
IDENTITY_RECHECK_MAX = 64.0


@dataclass
class IdentityRecheck:
    """When an entry's netns path is checked next (the controller's clock), and the delay after that."""

    at: float
    delay: float


@dataclass
class SyncReport:
    """What one sync did (returned for tests and logs)."""

    ran: bool = False
    dirty: int = 0
    transactions: int = 0
    failed: int = 0
    conntrack_deleted: int = 0
    repaired: int = 0  # interfaces whose table was not what mnpd programmed, restored (Applier.repair)
    keys: list[IfaceKey] = field(default_factory=list)  # interfaces that got a successful transaction


def resolve(entry: StateEntry, pods: Mapping[str, PodObject]) -> Resolved | str:
    """The pod and attachment of a state entry, or why the interface must stay pending."""
    if not entry.pod:
        return "the runtime gave no pod namespace/name (K8S_POD_*) for this attachment"
    record = pods.get(entry.pod)
    if record is None:
        return f"pod {entry.pod} is not known (yet)"
    pod = record.pod
    if entry.pod_uid and pod.uid and entry.pod_uid != pod.uid:
        return f"pod {entry.pod} has UID {pod.uid}, the attachment belongs to UID {entry.pod_uid}"
    if not record.status_reported:
        return f"pod {entry.pod} has no network-status annotation yet"
    if isinstance(pod.labels, UnreadableLabels):
        return f"pod {entry.pod}'s labels cannot be read (InvalidPod): not programmed, closed or its last rules"
    for attachment in pod.secondary_attachments():
        if attachment.interface == entry.ifname:
            return Resolved(pod, attachment)
    return f"interface {entry.ifname} is not in pod {entry.pod}'s network-status (yet)"


def find_conflicts(records: Mapping[IfaceKey, InterfaceRecord]) -> dict[IfaceKey, str]:
    """The records whose interface a record of another pod names too — the same interface name or index in the
    same namespace (the same path, unless both were pinned to different namespaces: a reused path; or two paths
    pinned to one namespace) — each with a reason naming one other. Both pods' full forms write the one chain:
    the interface would flip between their rules, open to what only the other pod is allowed. Linear in the
    records (a state dir may hold thousands of entries naming one path): per claim and pinned namespace, the
    first two distinct pods are enough to tell whether another one claims it."""
    Identity = tuple[int, int] | None
    members: dict[tuple[object, ...], dict[Identity, list[IfaceKey]]] = defaultdict(dict)
    firsts: dict[tuple[tuple[object, ...], Identity], list[IfaceKey]] = defaultdict(list)
    for key, record in records.items():
        entry = record.entry
        if not entry.netns or record.state == GONE:
            continue
        places: list[tuple[object, ...]] = [("path", entry.netns)]
        if record.identity is not None:
            places.append(("netns", record.identity))
        for place in places:
            for claim in [(*place, entry.ifname), *([(*place, record.ifindex)] if record.ifindex else [])]:
                members[claim].setdefault(record.identity, []).append(key)
                two = firsts[(claim, record.identity)]
                if len(two) < 2 and all(_owner(records[k]) != _owner(record) for k in two):
                    two.append(key)
    out: dict[IfaceKey, str] = {}
    for claim, by_identity in members.items():
        if sum(map(len, by_identity.values())) < 2:
            continue
        for identity, keys in by_identity.items():
            # records pinned to another namespace never share this interface; unpinned ones may
            near = list(by_identity) if identity is None else [identity, None]
            others = [k for i in near for k in firsts.get((claim, i), ())]
            for key in keys:
                other = next((records[k] for k in others if _owner(records[k]) != _owner(records[key])), None)
                if other is not None and key not in out:
                    out[key] = (
                        f"the state entry of container {other.entry.container_id} (pod {other.entry.pod or '?'}) "
                        f"names the same interface in {records[key].entry.netns}: closed until one of them goes"
                    )
    return out


def _owner(record: InterfaceRecord) -> tuple[str, str]:
    """The pod an entry belongs to: one pod's entries (other container IDs of its sandbox) get the same rules."""
    return record.entry.pod, record.entry.pod_uid


def rules_for(
    index: ClusterIndex,
    pod: Pod,
    attachment: Attachment,
    shared: dict[tuple[object, ...], Any],
    ifindex: int = 0,
    canonical: Callable[[DirectionRules], DirectionRules] | None = None,
) -> InterfaceRules:
    """`compile_pod(index, pod)`'s rules for one attachment, sharing work between the pods of one sync.

    A direction's rules depend on the pod only through the policies that select it there and, for ingress, its
    containerPorts ("a named port is resolved against the destination pod": for ingress the selected pod
    itself). So the pods of a Deployment — same labels, same ports — share one computation, and a full resync
    of N local interfaces costs one compile per distinct policy set, not N. `shared` lives for one sync (one
    ClusterIndex). tests/unit/test_daemon_incremental.py checks the result against `compile_pod`. `canonical`
    maps each direction computed to the object it is to be (the controller's equal older one), once per sync."""
    # The policies selecting the pod depend on its namespace, labels and network alone: tested once per distinct
    # (namespace, labels, network) — the pods of a Deployment — in the sync.
    looks = ("selecting", pod.namespace, attachment.network, frozenset(pod.labels.items()), pod.is_active)
    found = shared.get(looks)
    if found is None:
        chosen = [p for p in index.policies_in(pod.namespace) if selects(p, pod, attachment.network)]
        found = shared[looks] = tuple(tuple(sorted(p.key for p in chosen if d in p.policy_types)) for d in DIRECTIONS)
    out: dict[str, DirectionRules] = {}
    for direction, selecting in zip(DIRECTIONS, found, strict=True):
        ports = pod.container_ports if direction == INGRESS else ()
        key = ("rules", direction, attachment.network, selecting, ports)
        if key not in shared:
            computed = compile_direction(index, pod, attachment.network, direction)
            shared[key] = canonical(computed) if canonical is not None else computed
        out[direction] = shared[key]
    return InterfaceRules(pod.key, attachment.interface, attachment.network, out[INGRESS], out[EGRESS], ifindex)


def _ifindex(entry: StateEntry) -> int:
    """The index the plugin recorded, or — for an entry from before it did — the one the interface has in its
    netns now (0: not found)."""
    if entry.ifindex:
        return entry.ifindex
    try:
        return interface_index(entry.netns, entry.ifname) if entry.netns else 0
    except (OSError, NetnsGone, NetnsUnusable):
        return 0


def local_addresses(entry: StateEntry, attachment: Attachment | None) -> tuple[IPAddress, ...]:
    out: list[IPAddress] = list(attachment.ips) if attachment else []
    for text in entry.ips:
        try:
            ip = ipaddress.ip_interface(text).ip
        except ValueError:
            continue
        if ip not in out:
            out.append(ip)
    return tuple(out)


class Controller:
    def __init__(
        self,
        store: Store,
        applier: Applier,
        clock: Clock,
        *,
        conntrack: ConntrackCleaner | None = None,
        events: EventRecorder | None = None,
        metrics: Metrics | None = None,
        status: StatusWriter | None = None,
        adopter: Adopter | None = None,
        node: str = "",
    ) -> None:
        self.store = store
        self.node = node  # this node's name: a pod's InvalidPod Event is posted by its own node's mnpd
        self.adopter = adopter  # adopted interfaces' state entries, refreshed at the start of each sync
        self.applier = applier
        self.clock = clock
        self.conntrack = conntrack
        self.events: EventRecorder = events or LogEvents()
        self.metrics = metrics or Metrics()
        self.status = status
        self.records: dict[IfaceKey, InterfaceRecord] = {}
        self.last_report = SyncReport()
        self.synced_once = False  # a sync ran after every source had synced
        self._need_full = True
        self._retry: set[IfaceKey] = set()
        self._policy_notes: dict[str, dict[str, Any]] = {}  # policy key → what it actually does, and why
        self._unreadable: dict[tuple[str, Any], ObjectProblems] = {}  # what is reported now, per (kind, key)
        self._unreadable_generation = -1  # the store's object-problems generation when last reported
        self._canonical_rules: dict[DirectionRules, DirectionRules] = {}
        self._pods_of: tuple[int, tuple[Pod, ...]] | None = None  # the store's pods generation → its pods
        self._index: ClusterIndex | None = None  # the last sync's, for its pod-side lookups (ClusterIndex.build)
        self._identity_checks: dict[IfaceKey, IdentityRecheck] = {}  # records whose netns identity is not pinned
        self._conflicts: dict[IfaceKey, str] = {}  # records whose interface another pod's entry names too → why
        self._conflict_inputs: list[tuple[object, ...]] | None = None  # what `_conflicts` was found from

    # ------------------------------------------------------------------------------------------- sync

    def unguarded_report(self) -> list[dict[str, Any]]:
        return [u.to_dict() for u in self.adopter.unguarded] if self.adopter else []

    def sync(self, periodic: bool = False) -> bool:
        """One level-triggered sync; returns False when something must be retried."""
        started = self.clock.now()
        # Adoption first: the entries it writes or removes are in this sync's changes (daemon.sources.adopt).
        adopted_ok = self.adopter.reconcile(periodic) if self.adopter and self.store.synced() else True
        changes = self.store.drain()
        snap = self.store.snapshot()
        self._report_policies(changes, snap)
        self._report_unreadable()
        self.metrics.set_sources(self.store.source_status(), self.store.source_problems())
        self._reconcile_entries(snap, started)
        if not self.store.synced():
            self._need_full = True
            self.last_report = SyncReport()
            waiting = ", ".join(sorted(n for n, ok in self.store.source_status().items() if not ok))
            for record in self.records.values():
                if record.state == PENDING:
                    record.reason = f"waiting for the first list of: {waiting}"
            self._publish(self.last_report, False)
            return True
        full = periodic or self._need_full
        self._need_full = False
        if periodic:
            self.applier.release_missing()
        dirty = self._all_dirty(changes) if full else self._dirty(changes, snap)
        for key in self._retry:
            dirty.setdefault(key, started)
        self._retry = set()
        report = SyncReport(ran=True, dirty=len(dirty))
        if dirty:
            self._sync_interfaces(dirty, snap, report)
        if periodic:
            self._repair_drift(report)
        self.synced_once = True
        self.last_report = report
        elapsed = self.clock.now() - started
        self.metrics.sync_duration.labels("full" if full else "incremental").observe(elapsed)
        self._publish(report, full)
        if report.transactions or report.failed:
            log.info(
                "sync: %d dirty, %d transactions, %d failed, %.1f ms",
                report.dirty,
                report.transactions,
                report.failed,
                elapsed * 1000,
                extra=fields(kind="full" if full else "incremental"),
            )
        return report.failed == 0 and adopted_ok

    def _report_policies(self, changes: Iterable[Change], snap: Snapshot) -> None:
        """Invalid policies (InvalidPolicy Event, log, gauge, status file) and policies that apply to no known
        network, each with what it actually does (`MultiNetworkPolicy.effect`). Re-judged when a policy or a
        NetworkAttachmentDefinition changed (the networks known)."""
        changed = [c for c in changes if c.kind in (POLICY, NAD)]
        if not changed:
            return
        known = set(snap.nads) or None  # no NADs at all: a source without them, every network counts as known
        keys = {c.key for c in changed if c.kind == POLICY} if not any(c.kind == NAD for c in changed) else None
        for key in sorted(keys if keys is not None else set(snap.policies) | set(self._policy_notes)):
            policy = snap.policies.get(key)
            ref = policy_ref(key, self.store.uid(POLICY, key))
            note = self._policy_note(policy, known)
            if note == self._policy_notes.get(key):
                continue
            if note is None:
                self._policy_notes.pop(key, None)
                if policy is not None:
                    log.info("policy is valid again and applies to a known network", extra=fields(policy=key))
                self.events.clear(ref, REASON_INVALID)
                continue
            self._policy_notes[key] = note
            if policy is not None and not policy.valid:
                self.events.warn(ref, REASON_INVALID, f"{note['effect']}: " + "; ".join(note["problems"]))
            else:
                log.warning("policy %s", note["effect"], extra=fields(policy=key))
        self.metrics.invalid_policies.set(sum(1 for n in self._policy_notes.values() if n["problems"]))

    @staticmethod
    def _policy_note(policy: MultiNetworkPolicy | None, known: set[str] | None) -> dict[str, Any] | None:
        if policy is None:
            return None
        if policy.valid and (known is None or any(n in known for n in policy.policy_for)):
            return None
        return {"policy": policy.key, "effect": policy.effect(known), "problems": list(policy.problems)}

    def _report_unreadable(self) -> None:
        """What could not be read in pods, NADs and namespaces from the API: reported once per change while it
        lasts (a resync or relist that finds the same problems says nothing), withdrawn when the object is fixed or
        deleted. The log line comes with the Event (EventRecorder.warn); a pod's Event is posted by the mnpd of its
        node (every node's mnpd has it as a peer: a hundred Events for one pod would bury it), the others only log
        it — all of them, for a pod not scheduled yet, until it is."""
        if self.store.object_problems_generation() == self._unreadable_generation:
            return
        generation, current = self.store.object_problems()
        self._unreadable_generation = generation
        for kind, key in sorted(set(self._unreadable) - set(current)):
            gone = self._unreadable.pop((kind, key))
            log.info("%s can be read again, or is gone", kind, extra=log_fields(object_ref(kind, key)))
            self.events.clear(object_ref(kind, key, gone.uid), REASON_UNREADABLE[kind])
        for (kind, key), found in sorted(current.items()):
            if self._unreadable.get((kind, key)) == found or kind not in REASON_UNREADABLE:
                continue
            self._unreadable[(kind, key)] = found
            ref = object_ref(kind, key, found.uid)
            message = f"{UNREADABLE_EFFECT[kind]}: " + "; ".join(found.problems)
            if kind == POD and self.node and found.node != self.node:
                log.warning("%s: %s", REASON_UNREADABLE[kind], message, extra=log_fields(ref))
            else:
                self.events.warn(ref, REASON_UNREADABLE[kind], message)
        counts = Counter(kind for kind, _ in self._unreadable)
        for kind in REASON_UNREADABLE:
            self.metrics.object_problems.labels(kind).set(counts[kind])

    def unreadable_notes(self) -> list[dict[str, Any]]:
        """The objects from the API with parts mnpd cannot read, with what it does (for the status file)."""
        return [
            {"kind": kind, "object": key, "effect": UNREADABLE_EFFECT[kind], "problems": list(found.problems)}
            for (kind, key), found in sorted(self._unreadable.items())
        ]

    def source_problems(self) -> Mapping[str, tuple[str, ...]]:
        return self.store.source_problems()

    def policy_notes(self) -> list[dict[str, Any]]:
        """The policies mnpd cannot use as written, or that apply to no known network (for the status file)."""
        return [self._policy_notes[k] for k in sorted(self._policy_notes)]

    def _reconcile_entries(self, snap: Snapshot, now: float) -> None:
        released = set()
        for key in [k for k in self.records if k not in snap.entries]:
            gone = self.records.pop(key)
            self._identity_checks.pop(key, None)
            released.add(gone.entry.netns)
            log.info("interface released", extra=fields(pod=gone.entry.pod, ifname=key[1], container=key[0]))
        for key, entry in snap.entries.items():
            record = self.records.get(key)
            if record is None:
                # An entry that appears while this process runs and has synced was just written by the plugin's
                # ADD: its table is the pending one (closed both ways), so the first programming withdraws
                # nothing and needs no conntrack pass. Entries found at start may hold a previous daemon's rules.
                # An adopted interface had no table at all (open): its first programming is a withdrawal.
                pending = InterfaceRules.pending(entry.ifname, ifindex=entry.ifindex)
                known = pending if self.synced_once and not entry.adopted else None
                record = self.records[key] = InterfaceRecord(entry, applied=known)
                record.ifindex = _ifindex(entry)
            elif record.entry != entry:
                record.ifindex = _ifindex(entry)
                old_netns, record.entry = record.entry.netns, entry
                if old_netns != entry.netns:
                    record.applied = None  # another namespace: what we programmed is not there
                    released.add(old_netns)
                    record.identity = None
                    self._identity_checks.pop(key, None)  # a new path: checked at once
            if record.identity is None and entry.netns:
                # The namespace the path names when first seen or, when it cannot be checked then (gone,
                # NetnsUnusable: EACCES, a loop), from the first check that can tell, so that a reused path never
                # gets these rules later.
                self._pin_identity(key, record, now)
        for netns in released - {record.entry.netns for record in self.records.values()}:
            self.applier.release(netns)  # its libnftables context would keep the namespace alive
        self._reconcile_conflicts()

    def _reconcile_conflicts(self) -> None:
        """Find the entries of different pods that name one interface (`_conflicts`); those whose conflict came
        or went are synced again (`_retry`), and a new conflict is reported (log, Event on each pod). Found again
        only when what `find_conflicts` reads changed: a sync is not to walk every entry's claims for nothing."""
        inputs: list[tuple[object, ...]] = [
            (key, r.entry, r.identity, r.ifindex, r.state == GONE) for key, r in self.records.items()
        ]
        if inputs == self._conflict_inputs:
            return
        self._conflict_inputs = inputs
        conflicts = find_conflicts(self.records)
        self._retry.update(key for key in conflicts.keys() ^ self._conflicts.keys() if key in self.records)
        for key, reason in conflicts.items():
            if self._conflicts.get(key) != reason:
                entry = self.records[key].entry
                log.warning("%s", reason, extra=fields(pod=entry.pod, ifname=entry.ifname, netns=entry.netns))
                ref = pod_ref(entry.pod, self.records[key].pod_uid)
                self.events.warn(ref, REASON_NOT_APPLIED, f"interface {entry.ifname}: {reason}")
        self._conflicts = conflicts

    def _pin_identity(self, key: IfaceKey, record: InterfaceRecord, now: float | None) -> None:
        """Record the namespace the entry's path names (`record.identity`) if it can be checked now.

        A path that cannot be (gone, EACCES, a loop) is checked again on a per-entry schedule whose delay doubles
        from IDENTITY_RECHECK_FIRST to IDENTITY_RECHECK_MAX (`now` given: the sync's reconciliation), not on
        every sync: whoever can write the state dir could otherwise make every sync pay for thousands of such
        entries. Before the interface's table is touched (programmed, repaired: `now` None) it is checked at
        once, whatever the schedule, so that no rules go to a namespace whose identity could have been pinned."""
        due = self._identity_checks.get(key)
        if due is None:  # first sight, or a new path: checked at once
            due = self._identity_checks[key] = IdentityRecheck(float("-inf"), IDENTITY_RECHECK_FIRST)
        if now is not None and now < due.at:
            return
        record.identity = identity_if_usable(record.entry.netns)
        if record.identity is not None:
            del self._identity_checks[key]
        elif now is not None:
            due.at = now + due.delay
            due.delay = min(due.delay * 2, IDENTITY_RECHECK_MAX)

    def _all_dirty(self, changes: Iterable[Change]) -> dict[IfaceKey, float]:
        first = {}
        for change in changes:
            if change.kind == STATE:
                first[change.key] = change.at
        now = self.clock.now()
        return {key: first.get(key, now) for key in self.records}

    def _dirty(self, changes: list[Change], snap: Snapshot) -> dict[IfaceKey, float]:
        """Local interfaces the changes can affect, each with the time of the earliest such change."""
        dirty: dict[IfaceKey, float] = {}
        by_pod: dict[str, set[IfaceKey]] = defaultdict(set)
        by_policy: dict[str, set[IfaceKey]] = defaultdict(set)
        # The policies of each distinct rules pair, once: the pods of a Deployment share their rules objects.
        policies_of: dict[tuple[int, int], set[str]] = {}
        for key, record in self.records.items():
            by_pod[record.entry.pod].add(key)
            desired = record.desired
            if desired is None:
                continue
            pair = (id(desired.ingress), id(desired.egress))  # held by the record while this loop runs
            names = policies_of.get(pair)
            if names is None:
                names = policies_of[pair] = record.policies()
            for name in names:
                by_policy[name].add(key)

        def mark(keys: Iterable[IfaceKey], at: float) -> None:
            for key in keys:
                if key in self.records:
                    dirty[key] = min(dirty.get(key, at), at)

        policies = list(snap.policies.values())
        for change in changes:
            if change.kind == STATE:
                mark([change.key], change.at)
            elif change.kind == POD:
                mark(by_pod.get(change.key, ()), change.at)
                pod_versions = [v.pod if v is not None else None for v in (change.old, change.new)]
                for policy in policies_seeing_pod(policies, pod_versions, snap.namespaces):
                    mark(by_policy.get(policy, ()), change.at)
            elif change.kind == NAMESPACE:
                label_sets = [
                    v.labels if isinstance(v, Namespace) else namespace_labels({}, change.key)
                    for v in (change.old, change.new)
                ]
                for policy in policies_seeing_namespace(policies, label_sets):
                    mark(by_policy.get(policy, ()), change.at)
            elif change.kind == POLICY:
                mark(by_policy.get(change.key, ()), change.at)
                policy_versions = [v for v in (change.old, change.new) if isinstance(v, MultiNetworkPolicy)]
                mark(self._selected_by(policy_versions, snap), change.at)
            # NetworkAttachmentDefinitions: the compiler does not read them
        return dirty

    def _selected_by(self, policies: list[MultiNetworkPolicy], snap: Snapshot) -> list[IfaceKey]:
        namespaces = {p.namespace for p in policies}
        out = []
        # Whether the policies select a pod depends on its namespace, labels, network and phase alone (`selects`):
        # once per distinct such look — the pods of a Deployment.
        judged: dict[tuple[str, str, frozenset[tuple[str, str]], bool], bool] = {}
        for key, record in self.records.items():
            if record.entry.pod_namespace not in namespaces:
                continue
            resolved = resolve(record.entry, snap.pods)
            if isinstance(resolved, str):
                out.append(key)  # pending anyway: recomputing it is cheap and keeps its reason current
                continue
            pod, network = resolved.pod, resolved.attachment.network
            looks = (pod.namespace, network, frozenset(pod.labels.items()), pod.is_active)
            selected = judged.get(looks)
            if selected is None:
                selected = judged[looks] = any(selects(p, pod, network) for p in policies)
            if selected:
                out.append(key)
        return out

    # ------------------------------------------------------------------------------------------- apply

    def _sync_interfaces(self, dirty: dict[IfaceKey, float], snap: Snapshot, report: SyncReport) -> None:
        pods = snap.pods
        ready: list[tuple[IfaceKey, InterfaceRecord, Resolved]] = []
        for key in sorted(dirty):
            record = self.records[key]
            resolved = resolve(record.entry, pods)
            if isinstance(resolved, str):
                self._set_state(record, PENDING, self._conflicts.get(key, resolved))
            elif not resolved.pod.is_active:
                self._set_state(record, TERMINATED, f"pod phase {resolved.pod.phase}: keeping its last rules")
            else:
                ready.append((key, record, resolved))
        if not ready:  # e.g. a new pod's state entry, before its network-status: nothing to compile
            return
        # The pods as one tuple, kept while the store says they did not change (a policy change): the index
        # built next then sees the very same tuple (`ClusterIndex.build`), without walking 5,000 pods twice.
        if self._pods_of is None or self._pods_of[0] != snap.pods_generation:
            self._pods_of = (snap.pods_generation, tuple(p.pod for p in pods.values()))
        cluster = Cluster.of(snap.namespaces.values(), self._pods_of[1], (), snap.policies.values())
        # A policy change leaves the pods as they were: the pod-side lookups of the last sync's index serve again.
        index = self._index = ClusterIndex.build(cluster, self._index)
        shared_rules: dict[tuple[object, ...], Any] = {}  # rules_for's memo for this sync
        todo: list[tuple[IfaceKey, InterfaceRecord, InterfaceRules, Resolved]] = []
        changed: list[IfaceKey] = []  # the interfaces handed to the applier, in its order
        broke: list[BaseException] = []

        def work() -> Iterator[Work]:
            """Each interface's rules, compiled as the applier asks for the next one: the workers program an
            interface while this thread compiles the next (daemon.apply.Applier.apply_all)."""
            try:
                for key, record, resolved in ready:
                    pod = resolved.pod
                    if not record.ifindex:
                        record.ifindex = _ifindex(record.entry)
                    if key in self._conflicts:  # whose interface it is is not known: closed, neither pod's rules
                        network = resolved.attachment.network
                        rules = InterfaceRules.pending(record.entry.ifname, pod.key, network, record.ifindex)
                    else:
                        rules = rules_for(
                            index, pod, resolved.attachment, shared_rules, record.ifindex, self._canonical
                        )
                    record.desired = rules
                    record.pod_uid = pod.uid
                    if rules == record.applied and not record.conntrack_due:
                        if record.state != PROGRAMMED:
                            self._set_state(record, PROGRAMMED, "")
                        continue
                    todo.append((key, record, rules, resolved))
                    if rules != record.applied:  # else only its conntrack pass is due
                        if record.identity is None and record.entry.netns:
                            self._pin_identity(key, record, None)
                        changed.append(key)
                        yield Work(record.entry.netns, rules, record.applied, record.identity)
            except Exception as exc:  # raised once the interfaces already handed over are booked below
                broke.append(exc)

        # One transaction per interface whose rules changed, the namespaces concurrently (daemon.apply).
        try:
            outcome_of = dict(zip(changed, self.applier.apply_all(work()), strict=True))
        except BaseException:
            for key in changed:  # whether their transactions landed is not known: the full form next time
                self.records[key].applied = None
            self._retry.update(key for key, _, _ in ready)
            raise
        withdrawn: list[tuple[IfaceKey, InterfaceRecord, Resolved]] = []
        for key, record, rules, resolved in todo:
            ran = key in outcome_of
            if self._programmed_or_failed(key, record, rules, outcome_of.get(key), ran, dirty[key], report):
                withdrawn.append((key, record, resolved))
        self._keep_canonical_live()
        # Every pod's new rules first, then the flows they no longer admit: a withdrawal is in force for new
        # packets as soon as its transaction lands, and no pod waits for another pod's conntrack cleanup.
        for key, record, resolved in withdrawn:
            self._clean_conntrack(key, record, resolved, report)
        for key, record, _ in ready:  # closed, waiting for one of the entries to go
            if key in self._conflicts and record.state == PROGRAMMED:
                self._set_state(record, PENDING, self._conflicts[key])
        if broke:  # an unexpected error compiling: the runner logs it, the next sync retries what was left
            self._retry.update(key for key, _, _ in ready if key not in outcome_of)
            raise broke[0]

    def _repair_drift(self, report: SyncReport) -> None:
        """On the periodic resync: every interface whose table content this process knows (what it programmed,
        or the plugin's pending table) is read back and compared with its full form; a table or chain removed or
        edited inside the pod netns, or an element that survived deltas, is restored atomically (Applier.repair)
        and reported: a warning Event on the pod, the repairs counter, a log line. Interfaces whose content is
        unknown (found at start and not programmed yet, or failed) get the full form from the sync anyway."""
        for key, record in self.records.items():
            if record.applied is None or record.state == GONE:
                continue
            entry = record.entry
            extra = fields(pod=entry.pod, ifname=entry.ifname, netns=entry.netns)
            if record.identity is None and entry.netns:
                self._pin_identity(key, record, None)
            try:
                repaired = self.applier.repair(Work(entry.netns, record.applied, None, record.identity))
            except TamperUnrestored as exc:
                # Open while it lasts (a table of mnp's name that only a process in the pod may change): not
                # `programmed` with a log line, but failed — Event, counter, status — and retried with the full form.
                record.applied = None
                ref = pod_ref(entry.pod, record.pod_uid)
                self._failed(key, record, ref, f"{exc}; open until it can be", report, "the interface is open")
                continue
            except (NftError, TransactionError, OSError, NetnsGone, NetnsUnusable) as exc:
                log.warning("could not check the interface's table against its rules: %s", exc, extra=extra)
                continue
            if repaired:
                report.repaired += 1
                report.transactions += 1
                self.metrics.tamper_repairs.inc()
                log.warning("tampered, restored: the interface's table was not what mnpd programmed", extra=extra)
                self.events.warn(
                    pod_ref(entry.pod, record.pod_uid),
                    REASON_TAMPERED,
                    f"interface {entry.ifname}: its nft table in the pod netns was removed or edited; tampered, "
                    "restored",
                )
                self._forget_flows_of_tamper(record, report)

    def _forget_flows_of_tamper(self, record: InterfaceRecord, report: SyncReport) -> None:
        """Delete the conntrack entries of flows the restored rules do not admit: while the table was open, a
        connection it should have refused may have been set up, and `ct state established` would keep it."""
        if self.conntrack is None or record.applied is None:
            return
        entry = record.entry
        try:
            deleted = self.conntrack.clean(entry.netns, record.applied, local_addresses(entry, None))
        except OSError as exc:
            log.warning(
                "could not delete the flows set up while the table was tampered with: %s",
                exc,
                extra=fields(pod=entry.pod, ifname=entry.ifname, netns=entry.netns),
            )
            return
        report.conntrack_deleted += deleted
        self.metrics.conntrack_deletions.inc(deleted)

    def _keep_canonical_live(self) -> None:
        """Forget the canonical objects no interface holds any more (each holds hundreds of peers)."""
        live = [r for record in self.records.values() for r in (record.applied, record.desired) if r is not None]
        self._canonical_rules = {d: d for rules in live for d in (rules.ingress, rules.egress)}

    def _canonical(self, rules: DirectionRules) -> DirectionRules:
        """The equal object an earlier sync computed for `rules`, if any, else `rules` (kept for the next).

        Every sync compiles new objects; comparing them with what is programmed (and looking them up in the
        renderer's and the conntrack check's memos, keyed by identity) would compare hundreds of peers per pod.
        Made canonical — once per direction computed in a sync, by `rules_for` — equal rules are the same object,
        and those comparisons are identity checks."""
        return self._canonical_rules.setdefault(rules, rules)

    def _programmed_or_failed(
        self,
        key: IfaceKey,
        record: InterfaceRecord,
        rules: InterfaceRules,
        error: BaseException | None,
        ran: bool,
        since: float,
        report: SyncReport,
    ) -> bool:
        """Bookkeeping after the transaction for `rules` ran (`ran`) with `error`; True when conntrack must be
        cleaned."""
        entry = record.entry
        extra = fields(pod=entry.pod, ifname=entry.ifname, netns=entry.netns, container=entry.container_id)
        ref = pod_ref(entry.pod, record.pod_uid)
        previous = record.applied
        if ran:
            if error is not None:
                # Whatever went wrong, what the table holds is no longer known for sure (a delta refused and the
                # full form after it failed too, a timeout after the commit): program the full form next time.
                record.applied = None
            if isinstance(error, NetnsUnusable):
                # Not a gone pod: the entry names something that is no network namespace this process can use.
                # Nothing is programmed there; it is reported as failed (Event, metric, `mnpctl status`) with what
                # it is, and checked again with backoff.
                self._failed(key, record, ref, f"not a usable network namespace, nothing programmed: {error}", report)
                return False
            if isinstance(error, NetnsGone):
                self._set_state(record, GONE, str(error))
                log.info("pod netns is gone; waiting for its state entry to go", extra=extra)
                return False
            if error is not None:
                if not isinstance(error, NftError | TransactionError | OSError | NetnsUnusable):
                    log.error("unexpected error programming an interface", exc_info=error, extra=extra)
                self._failed(key, record, ref, f"nft: {error}", report)
                self.metrics.transactions.labels("error").inc()
                return False
            self.metrics.transactions.labels("ok").inc()
            report.transactions += 1
            report.keys.append(key)
            record.applied = rules
            record.last_programmed = self.clock.wall()
            self.metrics.programming_latency.observe(max(self.clock.now() - since, 0.0))
            log.info("programmed", extra=extra)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("transaction:\n%s", self.applier.render(rules), extra=extra)
            record.conntrack_due = record.conntrack_due or withdraws(previous, rules)
        if record.conntrack_due and self.conntrack is not None:
            return True
        self._programmed(record, ref)
        return False

    def _clean_conntrack(self, key: IfaceKey, record: InterfaceRecord, resolved: Resolved, report: SyncReport) -> None:
        entry = record.entry
        ref = pod_ref(entry.pod, record.pod_uid)
        assert self.conntrack is not None and record.applied is not None
        try:
            deleted = self.conntrack.clean(entry.netns, record.applied, local_addresses(entry, resolved.attachment))
        except OSError as exc:
            self._failed(key, record, ref, f"conntrack: {exc}", report)
            return
        report.conntrack_deleted += deleted
        self.metrics.conntrack_deletions.inc(deleted)
        self._programmed(record, ref)

    def _programmed(self, record: InterfaceRecord, ref: ObjectRef) -> None:
        record.conntrack_due = False
        record.failures = 0
        record.last_error = ""
        self._set_state(record, PROGRAMMED, "")
        self.events.clear(ref, REASON_NOT_APPLIED)

    def _failed(
        self,
        key: IfaceKey,
        record: InterfaceRecord,
        ref: ObjectRef,
        message: str,
        report: SyncReport,
        consequence: str | None = None,
    ) -> None:
        """Book a failure on the interface: its state, an Event, the counter, a log line saying `consequence` (by
        default what a refused transaction leaves: the previous rules); retried with backoff."""
        entry = record.entry
        record.failures += 1
        record.last_error = message
        report.failed += 1
        self._retry.add(key)
        self.metrics.apply_errors.inc()
        self._set_state(record, FAILED, message)
        log.warning(
            "%s (retrying): %s",
            consequence
            or (
                "deleting withdrawn flows failed; the new rules are in place"
                if record.conntrack_due
                else "could not program interface; it keeps its previous rules"
            ),
            message,
            extra=fields(pod=entry.pod, ifname=entry.ifname, netns=entry.netns),
        )
        self.events.warn(ref, REASON_NOT_APPLIED, f"interface {entry.ifname}: {message}")

    def _set_state(self, record: InterfaceRecord, state: str, reason: str) -> None:
        if record.entry.adopted and record.last_programmed is None and state != PROGRAMMED:
            reason = f"adopted: open until programmed ({reason})"
        if (record.state, record.reason) != (state, reason) and state in (PENDING, TERMINATED):
            log.info(
                "interface %s: %s",
                state,
                reason,
                extra=fields(pod=record.entry.pod, ifname=record.entry.ifname, container=record.entry.container_id),
            )
        record.state, record.reason = state, reason

    # ------------------------------------------------------------------------------------------- outputs

    def state_counts(self) -> Counter[str]:
        return Counter(r.state for r in self.records.values())

    def _publish(self, report: SyncReport, full: bool) -> None:
        self.metrics.set_interface_states(self.state_counts())
        self.metrics.pods.set(len({r.entry.pod for r in self.records.values() if r.state == PROGRAMMED}))
        if self.status is not None:
            self.status.write(self, self.store.source_status(), force=full)
