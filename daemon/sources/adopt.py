"""Adoption: guard the interfaces of networks whose NetworkAttachmentDefinition does not chain mnp.

The other MultiNetworkPolicy implementations (multi-networkpolicy-iptables, -nftables, the telekom fork) need no
NAD edit: they pick pod interfaces by the CNI type of their NAD (`--network-plugins=macvlan,ipvlan,sriov`) and
find the pod's netns themselves. mnp normally learns an interface from the state entry its chained plugin writes
at ADD, which closes the interface before its first packet. For an attachment on a NAD that does not chain mnp,
no plugin ran: this module finds the interface and writes the state entry itself (`origin: "adopted"`), so the
controller, `mnpctl`, a restart and the cleanup treat it exactly like a plugin's. Such an interface is open from
its creation until mnpd programs it — like the other implementations, never better; chaining mnp in the NAD
closes that window (docs/user-guide.md, Migrating).

Which attachments: those of the pods of this node (`spec.nodeName`; every pod with the manifests source and no
node name) whose network-status lists them, on a NAD whose main plugin (the first of its conflist, as the
anchors read it) has a type in `--network-plugins`, and that no plugin entry covers: a NAD that does not chain
mnp, or one that chains it now but not when the pod started (no plugin entry in the state dir — the directory,
not the store, decides, since the plugin's entry may still be on its way through inotify). With adoption off,
nothing new is adopted; what was adopted stays until its pod or attachment goes.

Finding the pod's netns — no CRI socket: every namespace file under the netns directories (`/run/netns` holds
containerd's and CRI-O's) and, where the daemon sees the host's processes (the proc-netns overlay: hostPID),
`/proc/<pid>/ns/net`, deduplicated by namespace identity (st_dev, st_ino). In each, pyroute2 lists the links and
addresses (read-only, on a short-lived thread that entered the namespace: shared.netns.in_netns). An interface
matches when its name is the network-status `interface`, its MAC the status `mac` (when given) and it holds
every status address; a match needs a MAC or an address. Two namespaces matching is ambiguous (a pod can give
its own interface any MAC and address), and so is a match in a namespace that holds another pod's interface (its
state entry, or its match in the same pass: whoever may edit a pod's annotations can write any network-status on
it): nothing is adopted and it is reported.

Bounded work: the listing of a namespace is cached by its identity and trusted for every attachment wanted
*before* the listing was taken (Multus writes network-status after every delegate's ADD, so the interface was
there). Only attachments that cannot be found cause a scan, and only of namespaces not listed since they were
first wanted; an attachment still missing makes the sync report failure, so the runner retries with its backoff
(0.5 s doubling to 30 s) and the periodic resync retries it again. Nothing is scanned while no attachment wants
adopting. Level-triggered like the rest: `reconcile()` runs at the start of a sync, recomputes from the store
(skipped when no pod, NAD, policy or state entry changed; when only policies changed, only the attachments found
unguarded are judged again), writes or removes entries, and upserts them into the store so the same sync
programs them.

Removal: when the pod goes, or the attachment leaves its network-status, the adopted interface's chains are
removed from its netns (the namespace it was found in; a path that names another namespace now is never
touched) and the entry is deleted. Not while the pod or the attachment's NAD has parts mnpd cannot read (the
store's object problems: a garbled network-status entry, a NAD config that is no JSON): an attachment that cannot be
read is not one that left, and removing its chains would open the pod to everyone. The entry stays, with its last
rules, until the object can be read again or is deleted.

Unguarded: an attachment that a policy selects but that mnp neither chains nor adopts — adoption off, a plugin
type outside the filter, an unknown NAD, a netns not found, an ambiguous match — is listed (`unguarded`, in the
status file for `mnpctl status/pods`), counted (`mnp_unguarded_interfaces{reason}`) and gets an `Unguarded`
Warning Event on its Pod and on each policy naming the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from daemon.apply import NftFactory
from daemon.clock import Clock
from daemon.config import DEFAULT_NETNS_DIRS, DEFAULT_NETWORK_PLUGINS
from daemon.events import EventRecorder, ObjectRef, pod_ref, policy_ref
from daemon.logs import fields
from daemon.metrics import Metrics
from daemon.records import IfaceKey
from daemon.store import NAD, POD, POLICY, STATE, PodObject, Snapshot, Store
from shared.compiler import selects
from shared.errors import NetnsGone, NetnsUnusable, StateError
from shared.model import Attachment, MultiNetworkPolicy, NetworkAttachmentDefinition, Pod
from shared.netns import in_netns, is_own_netns, netns_identity
from shared.nft.backend import NftBackend, remove_interface
from shared.nft.errors import NftError
from shared.nft.transaction import TransactionError
from shared.state import ORIGIN_ADOPTED, StateEntry, StateStore, valid_name

log = logging.getLogger(__name__)

LISTERS = 4  # namespaces listed at once
CONTAINER_PREFIX = "adopted-"  # adopted entries' containerID: no sandbox ID without a CRI socket
REASON_UNGUARDED = "Unguarded"
PLUGIN_TYPE = "mnp"

# why an attachment is not guarded (the metric's `reason` label) → what the status line says
ADOPTION_OFF = "adoption-off"
NOT_ADOPTED_TYPE = "plugin-type"
NAD_UNKNOWN = "nad-unknown"
NETNS_NOT_FOUND = "netns-not-found"
AMBIGUOUS = "ambiguous"
UNGUARDED_REASONS = (ADOPTION_OFF, NOT_ADOPTED_TYPE, NAD_UNKNOWN, NETNS_NOT_FOUND, AMBIGUOUS)

Identity = tuple[int, int]  # a namespace as (st_dev, st_ino): shared.netns.netns_identity


@dataclass(frozen=True)
class Link:
    """One interface of a namespace as the scan saw it."""

    ifname: str
    mac: str  # lower case
    ips: frozenset[str]  # addresses without prefix length, normalised
    index: int = 0  # its interface index in the namespace, on which its table dispatches (0: not known)


@dataclass(frozen=True)
class _NotGuarded:
    """An attachment of a local pod that neither the plugin nor adoption guards, and why (an `Unguarded` once a
    policy selects it)."""

    pod: Pod
    attachment: Attachment
    reason: str
    nad: NetworkAttachmentDefinition | None
    chained: bool  # its NAD chains mnp now, but the pod started before


@dataclass(frozen=True)
class Want:
    """An attachment to adopt, from a local pod's network-status."""

    pod: Pod
    attachment: Attachment
    network_name: str  # the CNI network name of the NAD (the entry's `network`, as the plugin writes it)

    @property
    def key(self) -> IfaceKey:
        return (container_id(self.pod), self.attachment.interface)

    def matches(self, link: Link) -> bool:
        a = self.attachment
        if link.ifname != a.interface or not (a.mac or a.ips):
            return False
        if a.mac and link.mac != a.mac.lower():
            return False
        return all(str(ip) in link.ips for ip in a.ips)


@dataclass(frozen=True)
class Unguarded:
    """A local pod interface a policy selects that mnp does not enforce, and why."""

    pod: str
    ifname: str
    network: str
    reason: str  # one of UNGUARDED_REASONS
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"pod": self.pod, "ifname": self.ifname, "network": self.network, "reason": self.reason,
                "message": self.message}  # fmt: skip


def container_id(pod: Pod) -> str:
    """The adopted entry's containerID: from the pod's uid, or — a manifests pod may have none, or any string —
    from a digest, so that every reader of the state dir takes it for a container ID (shared.state.valid_name)."""
    ident = pod.uid or f"{pod.namespace}/{pod.name}"
    if not valid_name(CONTAINER_PREFIX + ident) or len(ident) > 128:
        ident = hashlib.sha256(ident.encode("utf-8", "replace")).hexdigest()[:32]
    return CONTAINER_PREFIX + ident


def chains_mnp(nad: NetworkAttachmentDefinition) -> bool:
    return PLUGIN_TYPE in nad.plugin_types


def main_type(nad: NetworkAttachmentDefinition) -> str:
    """The type the anchors filter on: the first plugin of a conflist, or a single conf's type."""
    types = nad.plugin_types
    return types[0] if types else ""


def _normal_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_interface(text).ip)
    except ValueError:
        return None


def read_links() -> tuple[Link, ...]:
    """The links of the calling thread's namespace, with their MACs and addresses (run inside it)."""
    from pyroute2 import IPRoute  # only where adoption scans: a few MB the daemon need not hold otherwise

    with IPRoute() as ipr:
        names: dict[int, tuple[str, str]] = {}
        for link in ipr.get_links():
            names[link["index"]] = (str(link.get_attr("IFLA_IFNAME") or ""), str(link.get_attr("IFLA_ADDRESS") or ""))
        addresses: dict[int, set[str]] = {}
        for addr in ipr.get_addr():
            ip = _normal_ip(str(addr.get_attr("IFA_ADDRESS") or ""))
            if ip is not None:
                addresses.setdefault(addr["index"], set()).add(ip)
    return tuple(Link(name, mac.lower(), frozenset(addresses.get(i, ())), i) for i, (name, mac) in names.items())


@dataclass
class _Listing:
    path: str
    links: tuple[Link, ...]
    at: float


@dataclass
class NetnsScanner:
    """The node's network namespaces and their links, each listing cached by namespace identity."""

    clock: Clock
    dirs: Sequence[str] = DEFAULT_NETNS_DIRS
    proc: str | None = "/proc"  # scan /proc/<pid>/ns/net too (seen only with hostPID); None: never
    links_of: Callable[[str], tuple[Link, ...]] = field(default=lambda path: in_netns(path, read_links))
    listings: dict[Identity, _Listing] = field(default_factory=dict)
    scans: int = 0  # namespaces listed since start (tests and the benchmark read it)

    def namespaces(self) -> dict[Identity, str]:
        """Every namespace file visible now → one path to it (the netns directories before /proc)."""
        found: dict[Identity, str] = {}
        for directory in dict.fromkeys(self.dirs):
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            for name in names:
                self._add(found, os.path.join(directory, name))
        if self.proc:
            try:
                pids = sorted((p for p in os.listdir(self.proc) if p.isdigit()), key=int)
            except OSError:
                pids = []
            for pid in pids:
                self._add(found, os.path.join(self.proc, pid, "ns", "net"))
        return found

    @staticmethod
    def _add(found: dict[Identity, str], path: str) -> None:
        try:
            identity = netns_identity(path)
        except (NetnsGone, NetnsUnusable):
            return  # gone, or not one this process may enter (EACCES, another kind): no candidate
        if identity not in found and not is_own_netns(path):
            found[identity] = path

    def locate(self, wants: Iterable[tuple[Want, float]]) -> dict[IfaceKey, list[tuple[str, Identity]]]:
        """For each (want, since): the namespaces holding its interface.

        Namespaces never listed are listed first (a new pod's namespace is new); a want found in exactly one
        listing is done. Only the others cause the namespaces listed before their `since` to be listed again (a
        listing taken between a namespace's creation and its interface's arrival lacks the interface)."""
        wants = list(wants)
        if not wants:
            return {}
        present = self.namespaces()
        for identity in [i for i in self.listings if i not in present]:
            del self.listings[identity]
        self._list({i: p for i, p in present.items() if i not in self.listings})
        out = self._match(wants)
        unsure = [(want, since) for want, since in wants if len(out[want.key]) != 1]
        if unsure:
            oldest = min(since for _, since in unsure)
            self._list({i: p for i, p in present.items() if i in self.listings and self.listings[i].at < oldest})
            out.update(self._match(unsure))
        return out

    def _list(self, namespaces: Mapping[Identity, str]) -> None:
        """List `namespaces`, LISTERS at a time (each listing mostly waits for the kernel: ≈ 2–5 ms)."""
        if not namespaces:
            return
        at = self.clock.now()

        def one(path: str) -> tuple[Link, ...] | None:
            try:
                return self.links_of(path)
            except (NetnsGone, NetnsUnusable, OSError) as exc:
                log.debug("cannot list the links of %s: %s", path, exc)
                return None

        items = list(namespaces.items())
        if len(items) == 1:
            results = [one(items[0][1])]
        else:
            with ThreadPoolExecutor(min(LISTERS, len(items)), thread_name_prefix="mnpd-adopt") as pool:
                results = list(pool.map(one, [path for _, path in items]))
        for (identity, path), links in zip(items, results, strict=True):
            if links is not None:
                self.scans += 1
                self.listings[identity] = _Listing(path, links, at)

    def _match(self, wants: Sequence[tuple[Want, float]]) -> dict[IfaceKey, list[tuple[str, Identity]]]:
        return {
            want.key: [
                (listing.path, identity)
                for identity, listing in self.listings.items()
                if any(want.matches(link) for link in listing.links)
            ]
            for want, _ in wants
        }


def _unreadable(entry: StateEntry, snap: Snapshot, store: Store) -> bool:
    """Whether `entry` may be unwanted only because mnpd cannot read its pod or its attachment's NAD (fail
    closed: it is kept, with its last rules)."""
    if store.has_object_problems(POD, entry.pod):
        return True
    record = snap.pods.get(entry.pod)
    attachments = record.pod.secondary_attachments() if record is not None else ()
    return any(a.interface == entry.ifname and store.has_object_problems(NAD, a.network) for a in attachments)


class Adopter:
    """Keeps the adopted state entries equal to what the local pods' network-status asks for (module docstring)."""

    def __init__(
        self,
        store: Store,
        state_dir: str,
        clock: Clock,
        *,
        enabled: bool = True,
        plugins: Sequence[str] = DEFAULT_NETWORK_PLUGINS,
        node_name: str = "",
        scanner: NetnsScanner | None = None,
        nft_for: NftFactory | None = None,
        events: EventRecorder | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.state = StateStore(state_dir)
        self.clock = clock
        self.enabled = enabled
        self.plugins = frozenset(plugins)
        self.node_name = node_name
        self.scanner = scanner or NetnsScanner(clock)
        self.nft_for = nft_for
        self.events = events
        self.metrics = metrics
        self.unguarded: list[Unguarded] = []
        self._seen: tuple[int, ...] | None = None  # the pods', NADs' and state entries' generations at the last pass
        self._seen_policies: tuple[int, ...] | None = None
        self._settled = False  # the last pass left nothing to retry
        self._not_guarded: list[_NotGuarded] = []  # the last pass's attachments that nothing guards, unjudged
        self._wanted_since: dict[IfaceKey, float] = {}  # attachments not found yet → when first wanted
        self._found: dict[IfaceKey, tuple[Want, str, Identity]] = {}  # located by this process, still wanted
        self._index: dict[IfaceKey, int] = {}  # the interface index of each located attachment
        self._where: dict[IfaceKey, tuple[str, Identity]] = {}  # the namespace each entry was written for
        self._reported: set[ObjectRef] = set()

    # ------------------------------------------------------------------------------------------- the pass

    def reconcile(self, periodic: bool = False) -> bool:
        """One pass; False when an attachment could not be found or an entry not changed (retry).

        Which attachments are wanted, found and written depends on the pods, NADs and state entries, not on the
        policies: when only policies changed since a pass that left nothing to retry, the pass is not run again
        (it walks every pod of the cluster) — only the attachments it found unguarded are judged again (whether a
        policy selects them), and reported."""
        inputs = self.store.generation(POD, NAD, STATE)
        policies = self.store.generation(POLICY)
        settled = not periodic and not self._wanted_since and self._settled
        if settled and inputs == self._seen and policies == self._seen_policies:
            return True
        snap = self.store.snapshot()
        if settled and inputs == self._seen:
            selecting = list(snap.policies.values())
            unguarded = [u for c in self._not_guarded if (u := self._judged(c, selecting)) is not None]
            self._report(unguarded, snap)
            self._seen_policies = policies
            return True
        self._not_guarded = []
        wants, unguarded = self._wants(snap)
        ok = self._adopt(wants, snap, unguarded, periodic)
        self._report(unguarded, snap)
        self._seen = self.store.generation(POD, NAD, STATE)
        self._seen_policies = policies
        self._settled = ok
        return ok

    def _local_pods(self, pods: Mapping[str, PodObject]) -> Iterable[Pod]:
        for record in pods.values():
            pod = record.pod
            if record.status_reported and pod.is_active and (not self.node_name or pod.node_name == self.node_name):
                yield pod

    def _wants(self, snap: Snapshot) -> tuple[dict[IfaceKey, Want], list[Unguarded]]:
        covered = {(e.pod, e.ifname) for e in snap.entries.values() if not e.adopted}
        adopted = {key for key, e in snap.entries.items() if e.adopted}
        policies = list(snap.policies.values())
        wants: dict[IfaceKey, Want] = {}
        unguarded: list[Unguarded] = []
        late: list[tuple[Pod, Attachment, NetworkAttachmentDefinition]] = []
        for pod in self._local_pods(snap.pods):
            for attachment in pod.secondary_attachments():
                if (pod.key, attachment.interface) in covered:
                    continue
                nad = snap.nads.get(attachment.network)
                if nad is not None and chains_mnp(nad) and (container_id(pod), attachment.interface) not in adopted:
                    late.append((pod, attachment, nad))  # the plugin's, unless the pod predates the NAD's edit
                    continue
                kept = (container_id(pod), attachment.interface) in adopted
                self._want(pod, attachment, nad, wants, unguarded, policies, kept=kept)
        if late:
            # A chained NAD's attachment without a plugin entry: the entry may be on its way (inotify), so the
            # directory decides; one without any started before the NAD chained mnp and is adopted like the rest.
            owned = self._plugin_owned()
            for pod, attachment, nad in late:
                if (pod.key, attachment.interface) not in owned:
                    self._want(pod, attachment, nad, wants, unguarded, policies, chained=True)
        return wants, unguarded

    def _want(
        self,
        pod: Pod,
        attachment: Attachment,
        nad: NetworkAttachmentDefinition | None,
        wants: dict[IfaceKey, Want],
        unguarded: list[Unguarded],
        policies: Sequence[MultiNetworkPolicy],
        *,
        chained: bool = False,
        kept: bool = False,
    ) -> None:
        """Want `attachment` adopted, or say why it is not guarded. With adoption off, what was adopted before
        stays adopted until its pod or attachment goes (`kept`); nothing new is."""
        reason = ""
        if nad is None:
            reason = NAD_UNKNOWN
        elif not self.enabled and not kept:
            reason = ADOPTION_OFF
        elif main_type(nad) not in self.plugins:
            reason = NOT_ADOPTED_TYPE
        else:
            want = Want(pod, attachment, str(nad.config.get("name") or nad.name))
            wants[want.key] = want
            return
        candidate = _NotGuarded(pod, attachment, reason, nad, chained)
        self._not_guarded.append(candidate)
        found = self._judged(candidate, policies)
        if found is not None:
            unguarded.append(found)

    def _judged(self, candidate: _NotGuarded, policies: Sequence[MultiNetworkPolicy]) -> Unguarded | None:
        """An attachment nothing guards, as reported: only when a policy selects it (else it is open by policy)."""
        pod, attachment = candidate.pod, candidate.attachment
        if not selected(pod, attachment.network, policies):
            return None
        found = self._unguarded(pod, attachment, candidate.reason, candidate.nad)
        if candidate.chained:  # the NAD chains mnp now, but this pod started before: no plugin closed it
            found = dataclasses.replace(
                found, message=found.message.replace("NAD does not chain mnp", "started before its NAD chained mnp")
            )
        return found

    def _unguarded(
        self, pod: Pod, attachment: Attachment, reason: str, nad: NetworkAttachmentDefinition | None, extra: str = ""
    ) -> Unguarded:
        message = {
            ADOPTION_OFF: "NAD does not chain mnp and adoption is off",
            NOT_ADOPTED_TYPE: f"NAD does not chain mnp and its type {main_type(nad) if nad else ''!r} is not in "
            f"--network-plugins ({', '.join(sorted(self.plugins))})",
            NAD_UNKNOWN: f"NetworkAttachmentDefinition {attachment.network} is not known",
            NETNS_NOT_FOUND: "netns not found",
            AMBIGUOUS: "ambiguous",
        }[reason]
        if extra:
            message = f"{message}: {extra}"
        return Unguarded(pod.key, attachment.interface, attachment.network, reason, message)

    def _adopt(self, wants: dict[IfaceKey, Want], snap: Snapshot, unguarded: list[Unguarded], periodic: bool) -> bool:
        ok = True
        adopted = {key: e for key, e in snap.entries.items() if e.adopted}
        now = self.clock.now()
        # forget what no longer is wanted
        for key in [k for k in self._found if k not in wants or self._found[k][0] != wants[k]]:
            del self._found[key]
        self._wanted_since = {k: v for k, v in self._wanted_since.items() if k in wants}
        missing: list[tuple[Want, float]] = []
        for key, want in wants.items():
            if key in self._found:
                continue
            entry = adopted.get(key)
            if entry is not None and self._still_there(want, entry):
                continue
            since = self._wanted_since.setdefault(key, now)
            if periodic:
                since = self._wanted_since[key] = now  # a fresh look at every namespace, once per resync
            missing.append((want, since))
        policies = list(snap.policies.values())
        located = self.scanner.locate(missing)
        claims = _claims(snap, located, wants) if located else {}
        for key, places in located.items():
            want = wants[key]
            foreign = [path for path, identity in places if claims.get(identity, set()) - {want.pod.key}]
            if len(places) == 1 and not foreign:
                path, identity = places[0]
                self._found[key] = (want, path, identity)
                listing = self.scanner.listings.get(identity)
                self._index[key] = _index_of(want, listing.links if listing else ())
                self._wanted_since.pop(key, None)
                continue
            ok = False
            reason = NETNS_NOT_FOUND if not places else AMBIGUOUS
            detail = (
                f"no network namespace on this node has an interface {want.attachment.interface} with MAC "
                f"{want.attachment.mac or '-'} and addresses {', '.join(map(str, want.attachment.ips)) or '-'}"
                if not places
                else f"the network namespace of another pod has a matching {want.attachment.interface}: "
                + ", ".join(sorted(foreign))
                if foreign
                else f"{len(places)} network namespaces have a matching {want.attachment.interface}: "
                + ", ".join(sorted(p for p, _ in places))
            )
            pod, attachment = want.pod, want.attachment
            if selected(pod, attachment.network, policies):
                unguarded.append(self._unguarded(pod, attachment, reason, None, detail))
            else:
                log.info("cannot adopt an interface: %s", detail, extra=fields(pod=pod.key, ifname=key[1]))
        plugin_owned: set[tuple[str, str]] | None = None  # read from the directory once, when first needed
        for key, (want, path, identity) in self._found.items():
            self._where[key] = (path, identity)
            entry = self._entry(want, path, self._index.get(key, 0))
            old = adopted.get(key)
            if old is not None and _same(old, entry):
                continue
            if old is None:
                # The plugin's entry may be on its way through inotify while the network-status came first:
                # the directory, not the store, says whether the plugin already guards this interface.
                plugin_owned = self._plugin_owned() if plugin_owned is None else plugin_owned
                if (entry.pod, entry.ifname) in plugin_owned:
                    continue
            ok &= self._write(entry, old)
        owned = {(e.netns, e.ifname) for e in snap.entries.values() if not e.adopted}
        owned |= {(e.pod, e.ifname) for e in snap.entries.values() if not e.adopted}
        for key, entry in adopted.items():
            if key not in wants and not self._keep_terminated(entry, snap) and not _unreadable(entry, snap, self.store):
                # the plugin's chains for this interface (a NAD chained meanwhile) are not ours to remove
                mine = (entry.netns, entry.ifname) not in owned and (entry.pod, entry.ifname) not in owned
                ok &= self._remove(entry, rules=mine)
        return ok

    def _plugin_owned(self) -> set[tuple[str, str]]:
        try:
            entries, _ = self.state.entries()
        except StateError:
            return set()
        return {(e.pod, e.ifname) for e in entries if not e.adopted}

    def _still_there(self, want: Want, entry: StateEntry) -> bool:
        """An entry written before (by this process or a previous one): its namespace still has the interface."""
        expected = self._entry(want, entry.netns, entry.ifindex)
        if not _same(entry, expected):
            return False
        try:
            identity = netns_identity(entry.netns)
            links = self.scanner.links_of(entry.netns)
        except (NetnsGone, NetnsUnusable, OSError):
            return False
        if not any(want.matches(link) for link in links) or _index_of(want, links) != entry.ifindex:
            return False  # gone, or another interface of that name now (a new index)
        self._found[want.key] = (want, entry.netns, identity)
        self._index[want.key] = entry.ifindex
        return True

    @staticmethod
    def _keep_terminated(entry: StateEntry, snap: Snapshot) -> bool:
        """A pod that ended keeps its last rules (as the controller does for the plugin's entries)."""
        record = snap.pods.get(entry.pod)
        return record is not None and not record.pod.is_active

    def _entry(self, want: Want, netns: str, ifindex: int) -> StateEntry:
        pod, attachment = want.pod, want.attachment
        return StateEntry(
            container_id=want.key[0],
            ifname=attachment.interface,
            netns=netns,
            pod_namespace=pod.namespace,
            pod_name=pod.name,
            pod_uid=pod.uid,
            network=want.network_name,
            ips=tuple(str(ip) for ip in attachment.ips),
            mac=attachment.mac,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock.wall())),
            plugin="mnpd",
            origin=ORIGIN_ADOPTED,
            ifindex=ifindex,
        )

    def _write(self, entry: StateEntry, old: StateEntry | None) -> bool:
        extra = fields(pod=entry.pod, ifname=entry.ifname, netns=entry.netns, container=entry.container_id)
        try:
            self.state.write(entry)
        except StateError as exc:
            log.warning("cannot record an adopted interface: %s", exc, extra=extra)
            return False
        self.store.upsert(STATE, entry.key, entry)
        log.info("adopted interface (open until programmed)" if old is None else "adopted interface moved", extra=extra)
        return True

    def _remove(self, entry: StateEntry, *, rules: bool = True) -> bool:
        """The attachment or its pod went: remove the interface's chains where they are, then the entry."""
        extra = fields(pod=entry.pod, ifname=entry.ifname, netns=entry.netns, container=entry.container_id)
        if rules and not self._remove_rules(entry, extra):
            return False
        try:
            self.state.delete(*entry.key)
        except StateError as exc:
            log.warning("cannot remove an adopted interface's entry: %s", exc, extra=extra)
            return False
        self.store.delete(STATE, entry.key)
        self._where.pop(entry.key, None)
        log.info("released adopted interface", extra=extra)
        return True

    def _remove_rules(self, entry: StateEntry, extra: dict[str, object]) -> bool:
        if self.nft_for is None:
            return True
        try:
            current = netns_identity(entry.netns)
        except NetnsGone:
            return True  # the namespace is gone, and its table with it
        except NetnsUnusable as exc:
            log.warning("cannot check an adopted interface's namespace (retrying): %s", exc, extra=extra)
            return False
        where = self._where.get(entry.key)
        known = where[1] if where is not None and where[0] == entry.netns else None
        if (known is not None and known != current) or (known is None and entry.netns.startswith("/proc/")):
            # The path names another namespace (or may: a reused /proc/PID): not ours to change.
            return True
        nft: NftBackend | None = None
        try:
            nft = self.nft_for(entry.netns)
            remove_interface(nft, entry.ifname, entry.ifindex)
        except NetnsGone:
            return True
        except (NftError, TransactionError, NetnsUnusable, OSError) as exc:
            log.warning("cannot remove an adopted interface's rules (retrying): %s", exc, extra=extra)
            return False
        finally:
            close = getattr(nft, "close", None)
            if close is not None:
                close()
        return True

    # ------------------------------------------------------------------------------------------- reporting

    def _report(self, unguarded: list[Unguarded], snap: Snapshot) -> None:
        self.unguarded = sorted(unguarded, key=lambda u: (u.pod, u.ifname))
        if self.metrics is not None:
            counts = Counter(u.reason for u in unguarded)
            for reason in UNGUARDED_REASONS:
                self.metrics.unguarded.labels(reason).set(counts.get(reason, 0))
        if self.events is None:
            return
        current: dict[ObjectRef, str] = {}
        by_network: dict[str, list[Unguarded]] = {}
        for u in self.unguarded:
            record = snap.pods.get(u.pod)
            ref = pod_ref(u.pod, record.pod.uid if record else "")
            current[ref] = f"interface {u.ifname} (network {u.network}) is not enforced: {u.message}"
            by_network.setdefault(u.network, []).append(u)
        for key, policy in snap.policies.items():
            hits = [u for network in policy.policy_for if network in by_network for u in by_network[network]]
            if hits:
                names = ", ".join(sorted({f"{u.pod} {u.ifname}" for u in hits}))
                current[policy_ref(key, self.store.uid(POLICY, key))] = (
                    f"{len(hits)} selected interface(s) on node {self.node_name or '(this node)'} are not enforced "
                    f"({hits[0].message}): {names}"
                )
        for ref, message in current.items():
            self.events.warn(ref, REASON_UNGUARDED, message)
        for ref in self._reported - set(current):
            self.events.clear(ref, REASON_UNGUARDED)
        self._reported = set(current)


def _claims(
    snap: Snapshot, located: Mapping[IfaceKey, Sequence[tuple[str, Identity]]], wants: Mapping[IfaceKey, Want]
) -> dict[Identity, set[str]]:
    """Namespace → the pods whose interfaces are in it: by their state entries, and by this pass's matches. A
    network-status is written on the pod, so whoever may edit its annotations can claim any MAC and address: a
    namespace another pod holds is never adopted for this one (its interface would get this pod's rules)."""
    out: dict[Identity, set[str]] = {}
    for entry in snap.entries.values():
        try:
            identity = netns_identity(entry.netns) if entry.netns else None
        except (NetnsGone, NetnsUnusable):
            continue
        if identity is not None:
            out.setdefault(identity, set()).add(entry.pod)
    for key, places in located.items():
        for _, identity in places:
            out.setdefault(identity, set()).add(wants[key].pod.key)
    return out


def _index_of(want: Want, links: Iterable[Link]) -> int:
    """The index of the link that is `want`'s interface (0: none)."""
    return next((link.index for link in links if want.matches(link)), 0)


def _same(a: StateEntry, b: StateEntry) -> bool:
    """Equal but for the time it was written."""
    return all(getattr(a, name) == getattr(b, name) for name in StateEntry.__slots__ if name != "created")


def selected(pod: Pod, network: str, policies: Iterable[MultiNetworkPolicy]) -> bool:
    """Whether a policy selects the pod's interface on `network` (an unselected one is open by policy anyway)."""
    return any(selects(p, pod, network) for p in policies)
