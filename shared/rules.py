"""The compiler's output, the renderer's input: what one pod interface admits, per direction.

Kept apart from the compiler so that the CNI plugin, which renders the *pending* form of these rules on every
ADD, imports only this small module and not the policy model (its start-up time is part of every pod start).
"""

from __future__ import annotations

from shared.value import HashedValue, Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Iterable

    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def __getattr__(name: str) -> object:
    """IPAddress and IPNetwork, made on first use: `ipaddress` (→ functools, collections) is not on the CNI
    plugin's ADD path, which renders the pending form without addresses (its start-up time)."""
    if name not in ("IPAddress", "IPNetwork"):  # the import system asks for __path__ & co: not a reason to load
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import ipaddress

    if name == "IPAddress":
        return ipaddress.IPv4Address | ipaddress.IPv6Address
    return ipaddress.IPv4Network | ipaddress.IPv6Network


INGRESS, EGRESS = "Ingress", "Egress"


class PortRange(Value):
    """Destination ports `first`..`last` (inclusive) of one transport protocol, in nft's spelling. Ordered by
    (protocol, first, last)."""

    __slots__ = ("first", "last", "protocol")

    def __init__(self, protocol: str, first: int, last: int) -> None:
        self.protocol = protocol  # "tcp" | "udp" | "sctp"
        self.first = first
        self.last = last

    def _key(self) -> tuple[str, int, int]:
        return (self.protocol, self.first, self.last)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, PortRange):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, PortRange):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, PortRange):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, PortRange):
            return NotImplemented
        return self._key() >= other._key()


class Allow(HashedValue):
    """Traffic to/from `peers` on `ports` (None: every protocol and port), granted by one rule of one policy."""

    __slots__ = ("peers", "ports", "source")

    def __init__(self, source: str, peers: tuple[IPNetwork, ...], ports: tuple[PortRange, ...] | None) -> None:
        self.source = source  # provenance, e.g. "ns1/allow-db ingress[0]"
        self.peers = peers
        self.ports = ports


class DirectionRules(HashedValue):
    __slots__ = ("allows", "isolated", "policies")

    def __init__(self, isolated: bool, allows: tuple[Allow, ...] = (), policies: tuple[str, ...] = ()) -> None:
        self.isolated = isolated
        self.allows = allows
        self.policies = policies  # the policies that isolate this direction


OPEN = DirectionRules(isolated=False)
CLOSED = DirectionRules(isolated=True)


class InterfaceRules(Value):
    """What one pod interface admits. `pending()` is the form the CNI plugin installs at ADD: closed both ways.

    `ifindex` is the interface's index inside its netns, on which the table dispatches (`iif`/`oif`: a rename
    inside the pod does not change it); 0 when unknown, which the renderer refuses."""

    __slots__ = ("egress", "ifindex", "ifname", "ingress", "network", "pod")

    def __init__(
        self,
        pod: str,
        ifname: str,
        network: str,
        ingress: DirectionRules = OPEN,
        egress: DirectionRules = OPEN,
        ifindex: int = 0,
    ) -> None:
        self.pod = pod
        self.ifname = ifname
        self.network = network
        self.ingress = ingress
        self.egress = egress
        self.ifindex = ifindex

    @staticmethod
    def pending(ifname: str, pod: str = "", network: str = "", ifindex: int = 0) -> InterfaceRules:
        return InterfaceRules(pod, ifname, network, CLOSED, CLOSED, ifindex)

    def at(self, ifindex: int) -> InterfaceRules:
        """These rules for the interface at index `ifindex`."""
        return InterfaceRules(self.pod, self.ifname, self.network, self.ingress, self.egress, ifindex)

    def direction(self, direction: str) -> DirectionRules:
        return self.ingress if direction == INGRESS else self.egress


def collapse(networks: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """Sorted, merged, v4 before v6."""
    networks = list(networks)
    if not networks:  # the plugin's pending form: no addresses, no `ipaddress` to import
        return ()
    v4 = [n for n in networks if n.version == 4]
    v6 = [n for n in networks if n.version == 6]
    import ipaddress

    return tuple(ipaddress.collapse_addresses(v4)) + tuple(ipaddress.collapse_addresses(v6))
