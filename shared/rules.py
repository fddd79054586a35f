"""The compiler's output, the renderer's input: what one pod interface admits, per direction.

Kept apart from the compiler so that the CNI plugin, which renders the *pending* form of these rules on every
ADD, imports only this small module and not the policy model (its start-up time is part of every pod start).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
INGRESS, EGRESS = "Ingress", "Egress"


@dataclass(frozen=True, order=True, slots=True)
class PortRange:
    """Destination ports `first`..`last` (inclusive) of one transport protocol, in nft's spelling."""

    protocol: str  # "tcp" | "udp" | "sctp"
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Allow:
    """Traffic to/from `peers` on `ports` (None: every protocol and port), granted by one rule of one policy."""

    source: str  # provenance, e.g. "ns1/allow-db ingress[0]"
    peers: tuple[IPNetwork, ...]
    ports: tuple[PortRange, ...] | None


@dataclass(frozen=True, slots=True)
class DirectionRules:
    isolated: bool
    allows: tuple[Allow, ...] = ()
    policies: tuple[str, ...] = ()  # the policies that isolate this direction


OPEN = DirectionRules(isolated=False)
CLOSED = DirectionRules(isolated=True)


@dataclass(frozen=True, slots=True)
class InterfaceRules:
    """What one pod interface admits. `pending()` is the form the CNI plugin installs at ADD: closed both ways."""

    pod: str
    ifname: str
    network: str
    ingress: DirectionRules = OPEN
    egress: DirectionRules = OPEN

    @staticmethod
    def pending(ifname: str, pod: str = "", network: str = "") -> InterfaceRules:
        return InterfaceRules(pod, ifname, network, CLOSED, CLOSED)

    def direction(self, direction: str) -> DirectionRules:
        return self.ingress if direction == INGRESS else self.egress


def collapse(networks: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """Sorted, merged, v4 before v6."""
    networks = list(networks)
    v4 = [n for n in networks if n.version == 4]
    v6 = [n for n in networks if n.version == 6]
    return tuple(ipaddress.collapse_addresses(v4)) + tuple(ipaddress.collapse_addresses(v6))
