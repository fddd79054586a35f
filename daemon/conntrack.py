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

Entries that share (family, protocol, source, destination, destination port) share the verdict, so each such
group is deleted with one `conntrack -D` filtered on exactly those fields (a port-less protocol filters on the
addresses only — its verdict never depends on a port). Listing and deleting run under `nsenter --net=PATH`,
like nft. A flow that starts between the nft transaction and the listing is already subject to the new rules,
so it is admitted and survives.
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from daemon.logs import fields
from shared.netns import netns_command
from shared.nft.exec import Runner, subprocess_runner
from shared.nft.render import RenderOptions
from shared.rules import EGRESS, INGRESS, Allow, DirectionRules, InterfaceRules, IPAddress, PortRange, collapse

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

    def delete_argv(self) -> list[str]:
        argv = ["conntrack", "-D", "-f", self.family, "-p", self.protocol, "-s", str(self.src), "-d", str(self.dst)]
        if self.dport is not None:
            argv += ["--dport", str(self.dport)]
        return argv


def parse_flows(text: str) -> list[Flow]:
    """`conntrack -L -o extended` output → flows (lines it cannot read are skipped)."""
    flows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] not in ("ipv4", "ipv6"):
            continue
        fields: dict[str, str] = {}
        for token in parts[4:]:
            key, sep, value = token.partition("=")
            if sep and key not in fields:  # the first occurrence is the original direction
                fields[key] = value
        try:
            src, dst = ipaddress.ip_address(fields["src"]), ipaddress.ip_address(fields["dst"])
            dport = int(fields["dport"]) if "dport" in fields else None
        except (KeyError, ValueError):
            continue
        flows.append(Flow(parts[0], parts[2], src, dst, dport))
    return flows


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


@lru_cache(maxsize=128)
def _withdraws(before: DirectionRules, after: DirectionRules) -> bool:
    # Memoised: the pods of one Deployment share their rules objects, so a policy change asks the same question
    # for every one of them.
    if not after.isolated:
        return False
    return not before.isolated or not _Coverage(after.allows).covers_all(before.allows)


class _Coverage:
    """What a set of allows admits, per port spec: the union of their peers as sorted disjoint intervals, so
    each containment test is a binary search (interfaces carry hundreds of peers)."""

    def __init__(self, allows: Sequence[Allow]) -> None:
        self.allows = allows
        self.exact = {(a.peers, a.ports) for a in allows}
        self._unions: dict[PortRange | None, list[tuple[int, int, int]]] = {}

    def covers_all(self, allows: Iterable[Allow]) -> bool:
        return all((a.peers, a.ports) in self.exact or self._covers(a) for a in allows)

    def _covers(self, allow: Allow) -> bool:
        for ports in allow.ports if allow.ports is not None else (None,):
            union = self._union(ports)
            for net in allow.peers:
                key = (net.version, int(net.network_address), int(net.broadcast_address))
                i = bisect.bisect_right(union, (key[0], key[1], 2**128)) - 1
                if i < 0 or union[i][0] != key[0] or union[i][2] < key[2]:
                    return False
        return True

    def _union(self, ports: PortRange | None) -> list[tuple[int, int, int]]:
        if ports not in self._unions:
            nets = collapse(net for b in self.allows if _ports_cover(b.ports, ports) for net in b.peers)
            self._unions[ports] = sorted((n.version, int(n.network_address), int(n.broadcast_address)) for n in nets)
        return self._unions[ports]


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


class ConntrackCleaner:
    """Runs conntrack in pod namespaces. `runner` is the same seam as RealNft's (argv, stdin) → (rc, out, err)."""

    def __init__(self, options: RenderOptions, runner: Runner = subprocess_runner, binary: str = "conntrack") -> None:
        self.options = options
        self.runner = runner
        self.binary = binary

    def _run(self, netns: str, argv: list[str]) -> tuple[int, str, str]:
        return self.runner(netns_command(netns, [self.binary, *argv[1:]]), "")

    def clean(self, netns: str, rules: InterfaceRules, local: Sequence[IPAddress]) -> int:
        """Delete the flows `rules` do not admit; returns how many groups were deleted. Raises OSError when
        conntrack cannot be listed or a deletion fails (the controller retries)."""
        if not local:
            return 0
        rc, out, err = self._run(netns, ["conntrack", "-L", "-o", "extended"])
        if rc != 0:
            raise OSError(f"conntrack -L in {netns} failed (rc {rc}): {err.strip()}")
        deleted = 0
        for flow in stale_flows(parse_flows(out), rules, local, self.options):
            rc, _, err = self._run(netns, flow.delete_argv())
            # rc 1 with "0 flow entries have been deleted": the flow ended by itself meanwhile
            if rc != 0 and "0 flow entries" not in err:
                raise OSError(f"{' '.join(flow.delete_argv())} in {netns} failed (rc {rc}): {err.strip()}")
            deleted += 1
            log.info(
                "deleted conntrack entries no longer admitted",
                extra=fields(netns=netns, ifname=rules.ifname, pod=rules.pod, flow=_describe(flow)),
            )
        return deleted


def _describe(flow: Flow) -> str:
    port = f":{flow.dport}" if flow.dport is not None else ""
    return f"{flow.protocol} {flow.src} -> {flow.dst}{port}"
