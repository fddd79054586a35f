"""Removed access stops existing flows: delete the conntrack entries the new rules would no longer admit.

Every guarded chain starts with `ct state established,related accept` (that is what lets replies through without
a mirror rule), so a flow admitted once keeps going after a policy withdraws it (machine-notes §2: a UDP "flow"
kept getting answers after its allow was removed). After programming rules that withdraw anything, the daemon
therefore lists the pod netns' conntrack table and deletes the entries **on this interface's addresses that the
new `InterfaceRules` do not admit** — decided per entry by the same questions the rendered chain asks of a new
packet (`admits`, below), so an allowed established connection is never cut:

* an entry whose original destination is one of the interface's addresses (and whose source is not) is an
  ingress flow: the peer is its source, the port its destination port; one whose original source is ours is an
  egress flow: the peer is its destination. Anything else (loopback, the primary interface, another secondary
  interface) is not this interface's business and is kept.
* admitted = not isolated in that direction, or an ICMP / ICMPv6 flow with `--accept-icmp[v6]`, or the peer is
  in an every-port allow, or (TCP/UDP/SCTP) the peer and the protocol + destination port are in a port allow.

The table is read and entries are deleted in-process over ctnetlink, on a NETLINK_NETFILTER socket of the pod
netns (shared.nft.netlink; the daemon's nft backend keeps one per pod netns, so no process and no namespace
switch is needed): the netns' entry count (a dump walks the kernel's whole conntrack hash table, every
namespace's buckets, costly even for an empty namespace (docs/benchmarks.md) — so none is made without
entries), one dump of the
netns' conntrack table, then one IPCTNL_MSG_CT_DELETE per entry the rules no
longer admit, naming the entry by its original tuple exactly as the dump gave it. Entries that share (family,
protocol, source, destination, destination port) share the verdict — the selection `conntrack -D` with those
filters made before — and are counted and logged once per such group. An entry already gone (ENOENT) counts as
deleted. A flow that starts between the nft transaction and the dump is already subject to the new rules, so
it is admitted and survives.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from daemon.logs import fields
from shared.errors import NetnsGone, NetnsUnusable
from shared.memo import identity_memo
from shared.nft import netlink
from shared.nft.errors import NftError, NotFoundError
from shared.nft.render import RenderOptions
from shared.rules import EGRESS, INGRESS, Allow, DirectionRules, InterfaceRules, IPAddress, IPNetwork, PortRange

log = logging.getLogger(__name__)

PORT_PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class Flow:
    """The original-direction tuple of one conntrack entry."""

    family: str  # "ipv4" | "ipv6"
    protocol: str  # "tcp", "udp", "sctp", "icmp", "icmpv6", …
    src: IPAddress
    dst: IPAddress
    dport: int | None  # None for protocols without ports


def _admits(rules: DirectionRules, protocol: str, peer: IPAddress, dport: int | None, options: RenderOptions) -> bool:
    if not rules.isolated:
        return True
    if protocol == "icmp" and options.accept_icmp:
        return True
    if protocol in ("icmpv6", "ipv6-icmp") and options.accept_icmpv6:
        return True
    for allow in rules.allows:
        if not any(peer in net for net in allow.peers):
            continue
        if allow.ports is None:
            return True
        if (
            protocol in PORT_PROTOCOLS
            and dport is not None
            and any(p.protocol == protocol and p.first <= dport <= p.last for p in allow.ports)
        ):
            return True
    return False


def admits(rules: InterfaceRules, flow: Flow, local: Iterable[IPAddress], options: RenderOptions) -> bool:
    """Whether the rules admit a new flow like this one; flows not on this interface's addresses count as admitted."""
    mine = set(local)
    additions = options.additions  # the operator's allow-lists accept a flow whichever way it goes
    if any(flow.src in net for net in additions.allow_src) or any(flow.dst in net for net in additions.allow_dst):
        return True
    if flow.dst in mine and flow.src not in mine:
        return _admits(rules.direction(INGRESS), flow.protocol, flow.src, flow.dport, options)
    if flow.src in mine and flow.dst not in mine:
        return _admits(rules.direction(EGRESS), flow.protocol, flow.dst, flow.dport, options)
    return True


def withdraws(old: InterfaceRules | None, new: InterfaceRules) -> bool:
    """Whether going from `old` to `new` may withdraw access. Unknown `old` (first programming after a start,
    when a previous daemon may have left wider rules) counts as a withdrawal. A widening does not: every
    (peer prefix × port range) of `old` must be covered by `new`'s allows. Still conservative — a port range of
    `old` that `new` covers only with two adjacent ranges counts as withdrawn — which costs a conntrack listing,
    never a missed cleanup."""
    if old is None:
        return True
    return any(_withdraws(old.direction(d), new.direction(d)) for d in (INGRESS, EGRESS))


# Memoised by identity (shared.memo): the pods of one Deployment share their rules objects (the controller makes
# equal rules one object), so a policy change asks the same question for every one of them.
@identity_memo(maxsize=128)
def _withdraws(before: DirectionRules, after: DirectionRules) -> bool:
    return after.isolated and (not before.isolated or not _Coverage(after.allows).covers_all(before.allows))


class _Coverage:
    """What a set of allows admits, per port spec: the union of their peers as sorted disjoint intervals, so
    each containment test is a binary search (interfaces carry hundreds of peers)."""

    def __init__(self, allows: Sequence[Allow]) -> None:
        self.allows = allows
        self._exact: set[tuple[tuple[IPNetwork, ...], tuple[PortRange, ...] | None]] | None = None
        self._unions: dict[PortRange | None, list[tuple[int, int, int]]] = {}
        # The allows of each peers tuple, by its identity: the compiler hands an unchanged rule's peers back as
        # the very same tuple, so a port change of a rule finds its old peers here without comparing them.
        self._with_peers: dict[int, list[Allow]] = {}
        for a in allows:
            self._with_peers.setdefault(id(a.peers), []).append(a)

    def covers_all(self, allows: Iterable[Allow]) -> bool:
        return all(self._same_peers(a) or self._equal(a) or self._covers(a) for a in allows)

    def _equal(self, allow: Allow) -> bool:
        """Whether an allow with equal peers (another tuple: compared by value) and ports is among them."""
        if self._exact is None:  # hashing a peers tuple hashes every prefix in it: only when needed
            self._exact = {(a.peers, a.ports) for a in self.allows}
        return (allow.peers, allow.ports) in self._exact

    def _same_peers(self, allow: Allow) -> bool:
        """Whether allows with the very same peers tuple admit each of `allow`'s port ranges."""
        kept = [a for a in self._with_peers.get(id(allow.peers), ()) if a.peers is allow.peers]
        wanted = allow.ports if allow.ports is not None else (None,)
        return bool(kept) and all(any(_ports_cover(a.ports, p) for a in kept) for p in wanted)

    def _covers(self, allow: Allow) -> bool:
        wanted = allow.ports if allow.ports is not None else (None,)
        if allow.peers and not all(any(b.peers and _ports_cover(b.ports, p) for b in self.allows) for p in wanted):
            return False  # a port no allow admits at all (a narrowing's port): no union to build
        for ports in wanted:
            union = self._union(ports)
            for net in allow.peers:
                version, first, last = _span(net)
                i = bisect.bisect_right(union, (version, first, 2**128)) - 1
                if i < 0 or union[i][0] != version or union[i][2] < last:
                    return False
        return True

    def _union(self, ports: PortRange | None) -> list[tuple[int, int, int]]:
        """The addresses the allows admit on `ports`, as sorted disjoint (version, first, last) intervals, adjacent
        ones merged — so an address range is admitted exactly when one interval holds it."""
        if ports not in self._unions:
            spans = sorted(_span(net) for b in self.allows if _ports_cover(b.ports, ports) for net in b.peers)
            merged: list[tuple[int, int, int]] = []
            for version, first, last in spans:
                if merged and merged[-1][0] == version and first <= merged[-1][2] + 1:
                    if last > merged[-1][2]:
                        merged[-1] = (version, merged[-1][1], last)
                else:
                    merged.append((version, first, last))
            self._unions[ports] = merged
        return self._unions[ports]


def _span(net: IPNetwork) -> tuple[int, int, int]:
    """(version, first address, last address) of a prefix, as integers (without building address objects)."""
    first = int(net.network_address)
    return (net.version, first, first | ((1 << (net.max_prefixlen - net.prefixlen)) - 1))


def _ports_cover(ports: tuple[PortRange, ...] | None, wanted: PortRange | None) -> bool:
    if ports is None:
        return True
    if wanted is None:
        return False
    return any(p.protocol == wanted.protocol and p.first <= wanted.first and p.last >= wanted.last for p in ports)


def stale_flows(
    flows: Iterable[Flow], rules: InterfaceRules, local: Sequence[IPAddress], options: RenderOptions
) -> list[Flow]:
    """One representative per group of flows the rules no longer admit, in a stable order."""
    out: dict[Flow, None] = {}
    for flow in flows:
        if not admits(rules, flow, local, options):
            out.setdefault(flow, None)
    return list(out)


# ctnetlink (linux/netfilter/nfnetlink_conntrack.h)
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET_STATS = 0, 1, 2, 5
CTA_STATS_GLOBAL_ENTRIES = 1
CTA_TUPLE_ORIG, CTA_ZONE = 1, 18
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_DST_PORT = 1, 3
AF_INET, AF_INET6 = 2, 10
# Protocol numbers as `conntrack -L` names them; the others keep their number.
PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 33: "dccp", 136: "udplite"}
PORTED = {6, 17, 132, 33, 136}  # protocols whose tuple has ports


class Entry(NamedTuple):
    """One dumped conntrack entry: its flow, and what names it in a delete (original tuple, zone)."""

    flow: Flow
    family: int
    names: bytes  # the CTA_TUPLE_ORIG attribute (and CTA_ZONE) as the kernel sent them


def dump_request(seq: int) -> bytes:
    """IPCTNL_MSG_CT_GET with NLM_F_DUMP for every family: the whole conntrack table of the socket's netns."""
    kind = (netlink.NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
    return netlink.message(kind, netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP, seq, 0, 0, b"")


def parse_entry(payload: bytes) -> Entry | None:
    """A dumped IPCTNL_MSG_CT_NEW message → Entry (None: not an IPv4/IPv6 entry this module reads)."""
    if len(payload) < 4:
        return None
    family = payload[0]
    top = netlink.attributes(payload, 4)
    orig = top.get(CTA_TUPLE_ORIG)
    if orig is None or family not in (AF_INET, AF_INET6):
        return None
    tuple_ = netlink.attributes(orig)
    ip = netlink.attributes(tuple_.get(CTA_TUPLE_IP, b""))
    proto = netlink.attributes(tuple_.get(CTA_TUPLE_PROTO, b""))
    src_attr, dst_attr = (CTA_IP_V4_SRC, CTA_IP_V4_DST) if family == AF_INET else (CTA_IP_V6_SRC, CTA_IP_V6_DST)
    if src_attr not in ip or dst_attr not in ip or CTA_PROTO_NUM not in proto:
        return None
    number = proto[CTA_PROTO_NUM][0]
    port = proto.get(CTA_PROTO_DST_PORT)
    dport = int.from_bytes(port[:2], "big") if number in PORTED and port is not None and len(port) >= 2 else None
    try:
        src, dst = ipaddress.ip_address(ip[src_attr]), ipaddress.ip_address(ip[dst_attr])
    except ValueError:
        return None
    flow = Flow("ipv4" if family == AF_INET else "ipv6", PROTOCOL_NAMES.get(number, str(number)), src, dst, dport)
    names = netlink.nested(CTA_TUPLE_ORIG, orig)
    if CTA_ZONE in top:
        names += netlink.attr(CTA_ZONE, top[CTA_ZONE])
    return Entry(flow, family, names)


def count_request(seq: int) -> bytes:
    """IPCTNL_MSG_CT_GET_STATS: how many entries the socket's netns has (answered, then acknowledged)."""
    kind = (netlink.NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS
    return netlink.message(kind, netlink.NLM_F_REQUEST | netlink.NLM_F_ACK, seq, 0, 0, b"")


def entry_count(sock: netlink.NfnetlinkSocket) -> int | None:
    """The number of conntrack entries of the socket's netns (None: the kernel did not say)."""
    for _, payload in sock.dump(count_request, "conntrack count"):
        value = netlink.attributes(payload, 4).get(CTA_STATS_GLOBAL_ENTRIES)
        if value is not None and len(value) >= 4:
            return int.from_bytes(value[:4], "big")
    return None


def delete_request(entry: Entry) -> Callable[[int], bytes]:
    kind = (netlink.NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
    flags = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK
    return lambda seq: netlink.message(kind, flags, seq, entry.family, 0, entry.names)


SocketFor = Callable[[str], contextlib.AbstractContextManager[netlink.NfnetlinkSocket]]


class ConntrackCleaner:
    """Reads and deletes conntrack entries of pod namespaces over ctnetlink. `socket_for(netns)` lends a
    NETLINK_NETFILTER socket of that netns (the daemon: the one its nft backend keeps; tests: a stand-in)."""

    def __init__(self, options: RenderOptions, socket_for: SocketFor | None = None) -> None:
        self.options = options
        self.socket_for: SocketFor = socket_for or netlink.opened

    def clean(self, netns: str, rules: InterfaceRules, local: Sequence[IPAddress]) -> int:
        """Delete the entries `rules` do not admit; returns how many groups (flows alike but for the source
        port) were deleted. Raises OSError when the table cannot be read or a deletion fails (the controller
        retries)."""
        if not local:
            return 0
        try:
            deleted = self._clean(netns, rules, local)
        except (NetnsGone, NetnsUnusable) as exc:  # the controller retries; the interface goes with its entry
            raise OSError(f"conntrack in {netns}: {exc}") from exc
        for flow in deleted:
            log.info(
                "deleted conntrack entries no longer admitted",
                extra=fields(netns=netns, ifname=rules.ifname, pod=rules.pod, flow=_describe(flow)),
            )
        return len(deleted)

    def _clean(self, netns: str, rules: InterfaceRules, local: Sequence[IPAddress]) -> list[Flow]:
        with self.socket_for(netns) as sock:
            try:
                if entry_count(sock) == 0:
                    return []  # a dump walks the kernel's whole conntrack hash table, every namespace's buckets
                entries = [e for e in map(parse_entry, (p for _, p in sock.dump(dump_request, "conntrack dump"))) if e]
            except NftError as exc:
                raise OSError(f"listing conntrack in {netns} failed: {exc}") from exc
            stale = set(stale_flows((e.flow for e in entries), rules, local, self.options))
            deleted: dict[Flow, None] = {}
            for entry in entries:
                if entry.flow not in stale:
                    continue
                try:
                    sock.request(delete_request(entry), "conntrack delete")
                except NotFoundError:
                    pass  # the flow ended by itself meanwhile
                except NftError as exc:
                    raise OSError(f"deleting {_describe(entry.flow)} in {netns} failed: {exc}") from exc
                deleted.setdefault(entry.flow, None)
        return list(deleted)


def _describe(flow: Flow) -> str:
    port = f":{flow.dport}" if flow.dport is not None else ""
    return f"{flow.protocol} {flow.src} -> {flow.dst}{port}"
