"""shared.value.Value: what the records of the plugin's path keep from `@dataclass(frozen=True)`."""

from __future__ import annotations

import pickle

import pytest

from shared.nft.objects import Chain, Table
from shared.rules import PortRange
from shared.state import StateEntry


def test_equality_hash_and_repr_follow_the_fields() -> None:
    a, b = Chain("input", hook="input"), Chain("input", "input", "filter", "accept")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Chain("input") and a != "input"
    assert Table() == Table() and hash(Table()) == hash(Table())
    assert repr(PortRange("tcp", 80, 90)) == "PortRange(first=80, last=90, protocol='tcp')"


def test_records_of_other_types_are_never_equal() -> None:
    assert PortRange("tcp", 1, 2) != StateEntry("tcp", "1", "2")


def test_fields_cannot_be_changed() -> None:
    entry = StateEntry("c1", "net1", "/run/netns/x")
    with pytest.raises(AttributeError, match="immutable"):
        entry.ifname = "net2"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del entry.netns
    with pytest.raises(AttributeError):
        entry.other = 1  # type: ignore[attr-defined]  # slots: no other attribute either


def test_port_ranges_order_by_protocol_then_ports() -> None:
    ranges = [PortRange("udp", 53, 53), PortRange("tcp", 80, 90), PortRange("tcp", 80, 81)]
    assert sorted(ranges) == [PortRange("tcp", 80, 81), PortRange("tcp", 80, 90), PortRange("udp", 53, 53)]
    assert PortRange("tcp", 1, 1) <= PortRange("tcp", 1, 1) < PortRange("tcp", 1, 2)


def test_pickles() -> None:
    entry = StateEntry("c1", "net1", "/run/netns/x", ips=("10.0.0.1/24",))
    assert pickle.loads(pickle.dumps(entry)) == entry


def test_hashed_value_is_hashed_once_and_keeps_value_semantics() -> None:
    from shared.value import HashedValue

    calls = []

    class Peer:
        def __init__(self, n: int) -> None:
            self.n = n

        def __hash__(self) -> int:
            calls.append(self.n)
            return self.n

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Peer) and other.n == self.n

    class Big(HashedValue):
        __slots__ = ("name", "peers")

        def __init__(self, name: str, peers: tuple[Peer, ...]) -> None:
            self.name = name
            self.peers = peers

    a, b, c = Big("x", (Peer(1), Peer(2))), Big("x", (Peer(1), Peer(2))), Big("x", (Peer(1), Peer(3)))
    assert a == b and hash(a) == hash(b) and a != c
    calls.clear()
    assert {a: 1}[a] == 1 and hash(a) == hash(b)
    assert calls == []  # hashed once, at the first hash()
    assert repr(a) == "Big(name='x', peers=" + repr(a.peers) + ")"  # the cached hash is no field
    with pytest.raises(AttributeError):
        a.name = "y"


def test_a_hashed_value_pickles_its_fields_not_its_hash() -> None:
    from shared.rules import Allow

    allow = Allow("ns/p ingress[0]", (), None)
    hash(allow)  # computed and kept
    state = allow.__getstate__()
    assert state == (None, {"peers": (), "ports": None, "source": "ns/p ingress[0]"})
    again = pickle.loads(pickle.dumps(allow))
    assert again == allow and hash(again) == hash(allow)
