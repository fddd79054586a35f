"""Which conntrack entries a policy change kills: parsing, the admission test (checked against the packet tracer
on the rendered rules), the withdrawal test, and the exact ctnetlink requests sent (a stand-in socket)."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.conntrack import (
    AF_INET,
    AF_INET6,
    CTA_IP_V4_DST,
    CTA_IP_V4_SRC,
    CTA_IP_V6_DST,
    CTA_IP_V6_SRC,
    CTA_PROTO_DST_PORT,
    CTA_PROTO_NUM,
    CTA_TUPLE_IP,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO,
    ConntrackCleaner,
    Flow,
    _Coverage,
    _ports_cover,
    admits,
    parse_entry,
    stale_flows,
    withdraws,
)
from daemon.store import NAMESPACE, POD, POLICY
from shared.compiler import ClusterIndex, compile_pod
from shared.model import Cluster
from shared.nft import netlink
from shared.nft.errors import NftError, NotFoundError
from shared.nft.fake import FakeNft
from shared.nft.render import RenderOptions, render_interface
from shared.nft.trace import Packet, trace
from shared.rules import Allow, DirectionRules, InterfaceRules, PortRange
from tests.unit.test_daemon_builders import NET_A, from_pods, namespace, pod, policy, put


def ct(family: int, proto: int, src: str, dst: str, sport: int | None = None, dport: int | None = None) -> bytes:
    """An IPCTNL_MSG_CT_NEW payload as the kernel dumps it: nfgenmsg, then the original tuple (addresses, then
    protocol and ports or the ICMP id/type/code), the reply tuple, status and id."""
    v4 = family == AF_INET

    def tuple_(a: str, b: str, p1: int | None, p2: int | None) -> bytes:
        addrs = netlink.nested(
            CTA_TUPLE_IP,
            netlink.attr(CTA_IP_V4_SRC if v4 else CTA_IP_V6_SRC, ipaddress.ip_address(a).packed),
            netlink.attr(CTA_IP_V4_DST if v4 else CTA_IP_V6_DST, ipaddress.ip_address(b).packed),
        )
        proto_attrs = netlink.attr(CTA_PROTO_NUM, bytes([proto]))
        if p1 is not None and p2 is not None:
            proto_attrs += netlink.attr(2, p1.to_bytes(2, "big"))
            proto_attrs += netlink.attr(CTA_PROTO_DST_PORT, p2.to_bytes(2, "big"))
        else:  # ICMP: id, type, code
            proto_attrs += (
                netlink.attr(4, (1243).to_bytes(2, "big")) + netlink.attr(5, b"\x08") + netlink.attr(6, b"\0")
            )
        return addrs + netlink.nested(CTA_TUPLE_PROTO, proto_attrs)

    return (
        bytes([family, 0]) + b"\0\0"
        + netlink.nested(CTA_TUPLE_ORIG, tuple_(src, dst, sport, dport))
        + netlink.nested(2, tuple_(dst, src, dport, sport))  # CTA_TUPLE_REPLY
        + netlink.be32(3, 0x8)  # CTA_STATUS
        + netlink.be32(12, 77)  # CTA_ID
    )  # fmt: skip


TABLE = [
    ct(AF_INET, 6, "10.10.0.10", "10.10.0.1", 40000, 80),
    ct(AF_INET, 17, "10.10.0.1", "10.10.0.11", 5353, 53),
    ct(AF_INET, 1, "10.10.0.11", "10.10.0.1"),
    ct(AF_INET6, 58, "fd00::1", "fd00::2"),
    ct(AF_INET, 6, "172.16.0.5", "172.16.0.9", 1, 2),
    ct(AF_INET, 6, "10.10.0.11", "10.10.0.1", 40001, 22),
    ct(AF_INET, 6, "10.10.0.11", "10.10.0.1", 40002, 22),  # the same flow but for the source port
    b"\x07\0\0\0",  # another family: skipped
]


def parse_flows(payloads: Sequence[bytes]) -> list[Flow]:
    return [e.flow for e in map(parse_entry, payloads) if e is not None]


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_dumped_entries_are_read_in_their_original_direction() -> None:
    flows = parse_flows(TABLE)
    assert flows[0] == Flow("ipv4", "tcp", ip("10.10.0.10"), ip("10.10.0.1"), 80)
    assert flows[1] == Flow("ipv4", "udp", ip("10.10.0.1"), ip("10.10.0.11"), 53)
    assert flows[2] == Flow("ipv4", "icmp", ip("10.10.0.11"), ip("10.10.0.1"), None)
    assert flows[3].family == "ipv6" and flows[3].protocol == "icmpv6"
    assert len(flows) == 7
    entry = parse_entry(TABLE[0])
    assert entry is not None and entry.family == AF_INET
    assert netlink.attributes(entry.names)[CTA_TUPLE_ORIG] == netlink.attributes(TABLE[0], 4)[CTA_TUPLE_ORIG]


def server_rules(*objects: dict[str, object]) -> InterfaceRules:
    from daemon.clock import FakeClock
    from daemon.store import Store

    store = Store(FakeClock())
    put(
        store,
        namespace("default"),
        pod("server", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.1")]),
        pod("client", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.10")]),
        pod("other", labels={"role": "other"}, nets=[(NET_A, "net1", "10.10.0.11")]),
        *objects,
    )
    snap = store.snapshot()
    cluster = Cluster.of(snap.namespaces.values(), (p.pod for p in snap.pods.values()), (), snap.policies.values())
    server = store.get(POD, "default/server").pod
    assert store.count(NAMESPACE) == 1 and store.count(POLICY) == len(objects)
    return compile_pod(ClusterIndex.build(cluster), server)[0]


CLIENTS_ON_80 = policy(
    "p", select={"app": "server"}, ingress=[from_pods({"role": "client"}, [("TCP", 80)])], egress=[], types=None
)
EGRESS_DNS = policy(
    "e",
    select={"app": "server"},
    egress=[{"to": [{"ipBlock": {"cidr": "10.10.0.0/28"}}], "ports": [{"protocol": "UDP", "port": 53}]}],
    types=["Egress"],
)
LOCAL = [ip("10.10.0.1")]
OPTIONS = RenderOptions()


def test_stale_flows_are_the_ones_the_rules_no_longer_admit() -> None:
    rules = server_rules(CLIENTS_ON_80)
    stale = stale_flows(parse_flows(TABLE), rules, LOCAL, OPTIONS)
    # kept: the client's TCP/80 (allowed), the egress UDP (egress not isolated), the flows not on 10.10.0.1
    assert stale == [
        Flow("ipv4", "icmp", ip("10.10.0.11"), ip("10.10.0.1"), None),
        Flow("ipv4", "tcp", ip("10.10.0.11"), ip("10.10.0.1"), 22),  # once for its two entries
    ]
    assert stale_flows(parse_flows(TABLE), rules, LOCAL, RenderOptions(accept_icmp=True)) == stale[1:]
    isolated_both = server_rules(CLIENTS_ON_80, EGRESS_DNS)
    assert Flow("ipv4", "udp", ip("10.10.0.1"), ip("10.10.0.11"), 53) not in stale_flows(
        parse_flows(TABLE), isolated_both, LOCAL, OPTIONS
    )
    nothing = server_rules(policy("deny", select={"app": "server"}, ingress=[]))
    assert Flow("ipv4", "tcp", ip("10.10.0.10"), ip("10.10.0.1"), 80) in stale_flows(
        parse_flows(TABLE), nothing, LOCAL, OPTIONS
    )


addresses = st.sampled_from(["10.10.0.10", "10.10.0.11", "10.10.0.12", "192.0.2.7"])
protocols = st.sampled_from(["tcp", "udp", "sctp", "icmp"])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["ingress", "egress"]),
    addresses,
    protocols,
    st.sampled_from([53, 80, 81, 443]),
    st.sampled_from([CLIENTS_ON_80, EGRESS_DNS, policy("all", select={}, ingress=[{}])]),
    st.booleans(),
)
def test_admits_agrees_with_the_packet_tracer_on_the_rendered_rules(
    direction: str, peer: str, protocol: str, port: int, pol: dict[str, object], icmp: bool
) -> None:
    rules = server_rules(pol)
    options = RenderOptions(accept_icmp=icmp)
    fake = FakeNft.from_transaction(render_interface(rules.at(2), options))
    dport = None if protocol == "icmp" else port
    if direction == "ingress":
        flow, packet = (
            Flow("ipv4", protocol, ip(peer), LOCAL[0], dport),
            Packet("input", "net1", peer, "10.10.0.1", protocol, dport),
        )
    else:
        flow, packet = (
            Flow("ipv4", protocol, LOCAL[0], ip(peer), dport),
            Packet("output", "net1", "10.10.0.1", peer, protocol, dport),
        )
    assert admits(rules, flow, LOCAL, options) == (trace(fake.list_table(), packet).verdict == "accept")


def test_withdraws() -> None:
    open_, clients = server_rules(), server_rules(CLIENTS_ON_80)
    assert withdraws(None, clients)  # unknown before: a previous daemon may have left wider rules
    assert withdraws(open_, clients)
    assert not withdraws(clients, open_)
    assert not withdraws(clients, clients)
    wider = server_rules(
        policy("p", select={"app": "server"}, ingress=[from_pods({"role": "client"}), from_pods({"role": "other"})])
    )
    assert withdraws(wider, clients)
    assert withdraws(clients, server_rules(policy("p", select={"app": "server"}, ingress=[])))


class Socket:
    """A stand-in NETLINK_NETFILTER socket: answers the dump from `table`, records each delete request."""

    def __init__(self, table: Sequence[bytes], fail: NftError | None = None, gone: int = 0) -> None:
        self.table = table
        self.fail = fail
        self.gone = gone  # this many deletions answer ENOENT (the flow ended meanwhile)
        self.deleted: list[bytes] = []
        self.dumps: list[int] = []  # the ctnetlink message types asked for

    def dump(self, request: Callable[[int], bytes], what: str) -> list[tuple[int, bytes]]:
        if self.fail is not None:
            raise self.fail
        ((kind, _, _, _),) = netlink.messages(request(1))
        self.dumps.append(kind & 0xFF)
        if kind & 0xFF == 5:  # IPCTNL_MSG_CT_GET_STATS: the namespace's entry count
            return [(0x105, b"\0\0\0\0" + netlink.be32(1, len(self.table)))]
        return [(0x100, payload) for payload in self.table]

    def request(self, build: Callable[[int], bytes], what: str) -> None:
        self.deleted.append(build(1))
        if self.gone:
            self.gone -= 1
            raise NotFoundError("conntrack delete: No such file or directory")

    @contextlib.contextmanager
    def lend(self, netns: str) -> Iterator[Socket]:
        assert netns == "/run/netns/pod"
        yield self


def test_the_cleaner_dumps_once_and_deletes_each_entry_no_longer_admitted() -> None:
    sock = Socket(TABLE, gone=1)
    cleaner = ConntrackCleaner(OPTIONS, sock.lend)  # type: ignore[arg-type]
    # stale: the ICMP flow, and both entries of 10.10.0.11 → :22 (one group); the first delete finds it gone
    assert cleaner.clean("/run/netns/pod", server_rules(CLIENTS_ON_80), LOCAL) == 2
    assert sock.dumps == [5, 1]  # the entry count, then the table
    assert len(sock.deleted) == 3
    for request, payload in zip(sock.deleted, (TABLE[2], TABLE[5], TABLE[6]), strict=True):
        ((kind, flags, _, body),) = netlink.messages(request)
        assert kind == (netlink.NFNL_SUBSYS_CTNETLINK << 8) | 2 and flags & netlink.NLM_F_ACK
        assert body[0] == AF_INET
        sent = netlink.attributes(body, 4)[CTA_TUPLE_ORIG]
        assert sent == netlink.attributes(payload, 4)[CTA_TUPLE_ORIG]  # the entry named by its own tuple


def test_an_empty_table_is_not_dumped() -> None:
    """A dump walks the kernel's whole conntrack hash table (every namespace's buckets: ≈ 45 ms on the benchmark
    machine), so a namespace without entries is answered by its count alone."""
    sock = Socket([])
    assert ConntrackCleaner(OPTIONS, sock.lend).clean("/run/netns/pod", server_rules(CLIENTS_ON_80), LOCAL) == 0  # type: ignore[arg-type]
    assert sock.dumps == [5] and sock.deleted == []


def test_the_cleaner_reports_failures() -> None:
    import pytest

    failing = Socket(TABLE, fail=NftError("conntrack dump: Operation not permitted"))
    cleaner = ConntrackCleaner(OPTIONS, failing.lend)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="not permitted"):
        cleaner.clean("/run/netns/pod", server_rules(CLIENTS_ON_80), LOCAL)
    assert cleaner.clean("/run/netns/pod", server_rules(CLIENTS_ON_80), []) == 0  # no address: nothing to match
    gone = ConntrackCleaner(OPTIONS)  # its own socket, opened in a namespace that does not exist
    with pytest.raises(OSError, match="mnpt-does-not-exist"):
        gone.clean("/run/netns/mnpt-does-not-exist", server_rules(CLIENTS_ON_80), LOCAL)


def test_a_widening_is_not_a_withdrawal() -> None:
    # A new peer or a wider port range keeps every old allowance: no conntrack listing is needed.
    clients = server_rules(CLIENTS_ON_80)
    wider = server_rules(
        policy("p", select={"app": "server"}, ingress=[from_pods({"role": "client"}), from_pods({"role": "other"})])
    )
    assert not withdraws(clients, wider)
    assert withdraws(wider, clients)


def test_a_namespace_path_that_cannot_be_used_is_an_oserror_the_controller_retries(tmp_path: Path) -> None:
    """A path that exists but is no usable namespace (here a symlink loop: ELOOP, as EACCES would be) raises
    NetnsUnusable, not NetnsGone; the controller catches OSError only, so anything else escaped its sync."""
    import pytest

    loop = tmp_path / "mnpt-loop"
    loop.symlink_to(loop)
    with pytest.raises(OSError, match="mnpt-loop"):
        ConntrackCleaner(OPTIONS).clean(str(loop), server_rules(CLIENTS_ON_80), LOCAL)


PORT_SPECS = st.one_of(
    st.none(),
    st.lists(
        st.builds(
            lambda proto, first, width: PortRange(proto, first, first + width),
            st.sampled_from(["tcp", "udp"]),
            st.integers(79, 83),
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=3,
    ).map(lambda ranges: tuple(sorted(set(ranges)))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(PORT_SPECS, min_size=1, max_size=3), st.lists(PORT_SPECS, min_size=1, max_size=3), st.booleans())
def test_a_port_change_of_the_same_peers_tuple_is_judged_like_any_other(
    before_ports: list[tuple[PortRange, ...] | None], after_ports: list[tuple[PortRange, ...] | None], shared: bool
) -> None:
    """The shortcut for allows that keep the very same peers tuple (a rule whose ports changed) answers exactly
    as the interval test does for an equal tuple that is another object."""
    peers = (ipaddress.ip_network("10.0.0.0/30"), ipaddress.ip_network("10.0.1.7/32"))
    other = tuple(ipaddress.ip_network(str(n)) for n in peers)  # equal, another object: no shortcut
    before = DirectionRules(True, tuple(Allow("p", peers, ports) for ports in before_ports))
    after = DirectionRules(True, tuple(Allow("p", peers if shared else other, ports) for ports in after_ports))
    by_intervals = _Coverage(after.allows)
    assert other is not peers and (after.allows[0].peers is peers) == shared
    assert _Coverage(after.allows).covers_all(before.allows) == all(by_intervals._covers(a) for a in before.allows)


def test_the_withdrawal_memo_answers_equal_rules_of_other_objects_alike_and_stays_bounded() -> None:
    from daemon import conntrack

    peers = (ipaddress.ip_network("10.0.0.0/30"),)

    def direction(port: int) -> DirectionRules:
        return DirectionRules(True, (Allow("p", peers, (PortRange("tcp", port, port),)),))

    for first in range(80, 300):
        narrow, wide = direction(first), DirectionRules(True, (*direction(first).allows, *direction(first + 1).allows))
        assert not conntrack._withdraws(narrow, wide) and conntrack._withdraws(wide, narrow)
        assert not conntrack._withdraws(direction(first), wide)  # equal to `narrow`, another object
        assert conntrack._withdraws.cache_len() <= 128  # type: ignore[attr-defined]


NETS = st.sampled_from(
    [
        *(ipaddress.ip_network(n) for n in ("10.0.0.0/30", "10.0.0.4/30", "10.0.0.0/29", "10.0.0.8/32", "10.0.0.9/32")),
        *(ipaddress.ip_network(n) for n in ("10.0.0.10/31", "0.0.0.0/0", "fd00::/127", "fd00::2/128", "::/0")),
    ]
)
ALLOWS = st.lists(
    st.builds(lambda peers, ports: Allow("p", tuple(peers), ports), st.lists(NETS, max_size=4), PORT_SPECS),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(ALLOWS, ALLOWS)
def test_coverage_equals_the_definition_by_collapsed_prefixes(before: list[Allow], after: list[Allow]) -> None:
    """An allow is covered when, for each of its port ranges, every peer prefix lies inside the union of the
    peers of the allows admitting that range (the union as collapsed prefixes: the plain definition)."""
    from shared.rules import collapse

    def covered(allow: Allow) -> bool:
        for ports in allow.ports if allow.ports is not None else (None,):
            union = collapse(n for b in after if _ports_cover(b.ports, ports) for n in b.peers)
            if not all(any(n.version == u.version and n.subnet_of(u) for u in union) for n in allow.peers):  # type: ignore[arg-type]
                return False
        return True

    assert _Coverage(after).covers_all(before) == all(covered(a) for a in before)
