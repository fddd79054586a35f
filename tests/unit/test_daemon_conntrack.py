"""Which conntrack entries a policy change kills: parsing, the admission test (checked against the packet tracer
on the rendered rules), the withdrawal test, and the exact conntrack commands run (scripted runner)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.conntrack import ConntrackCleaner, Flow, admits, parse_flows, stale_flows, withdraws
from daemon.store import NAMESPACE, POD, POLICY
from shared.compiler import ClusterIndex, compile_pod
from shared.model import Cluster
from shared.nft.fake import FakeNft
from shared.nft.render import RenderOptions, render_interface
from shared.nft.trace import Packet, trace
from shared.rules import InterfaceRules
from tests.unit.test_daemon_builders import NET_A, from_pods, namespace, pod, policy, put

LISTING = "\n".join(
    " ".join(line.split())
    for line in """
ipv4 2 tcp 6 431999 ESTABLISHED src=10.10.0.10 dst=10.10.0.1 sport=40000 dport=80
     src=10.10.0.1 dst=10.10.0.10 sport=80 dport=40000 [ASSURED] mark=0 use=1
ipv4 2 udp 17 29 src=10.10.0.1 dst=10.10.0.11 sport=5353 dport=53 [UNREPLIED]
     src=10.10.0.11 dst=10.10.0.1 sport=53 dport=5353 mark=0 use=1
ipv4 2 icmp 1 29 src=10.10.0.11 dst=10.10.0.1 type=8 code=0 id=1243
     src=10.10.0.1 dst=10.10.0.11 type=0 code=0 id=1243 mark=0 use=1
ipv6 10 icmpv6 58 29 src=fd00::1 dst=fd00::2 type=128 code=0 id=1244
     src=fd00::2 dst=fd00::1 type=129 code=0 id=1244 mark=0 use=1
ipv4 2 tcp 6 20 TIME_WAIT src=172.16.0.5 dst=172.16.0.9 sport=1 dport=2
     src=172.16.0.9 dst=172.16.0.5 sport=2 dport=1 mark=0 use=1
garbage line
""".replace("\n     ", " ")
    .strip()
    .splitlines()
)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_parse_flows_reads_the_original_direction() -> None:
    flows = parse_flows(LISTING)
    assert flows[0] == Flow("ipv4", "tcp", ip("10.10.0.10"), ip("10.10.0.1"), 80)
    assert flows[1] == Flow("ipv4", "udp", ip("10.10.0.1"), ip("10.10.0.11"), 53)
    assert flows[2] == Flow("ipv4", "icmp", ip("10.10.0.11"), ip("10.10.0.1"), None)
    assert flows[3].family == "ipv6" and flows[3].protocol == "icmpv6"
    assert len(flows) == 5
    assert flows[0].delete_argv() == [
        *("conntrack", "-D", "-f", "ipv4", "-p", "tcp", "-s", "10.10.0.10", "-d", "10.10.0.1", "--dport", "80")
    ]
    assert "--dport" not in flows[2].delete_argv()


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
    stale = stale_flows(parse_flows(LISTING), rules, LOCAL, OPTIONS)
    # kept: the client's TCP/80 (allowed), the egress UDP (egress not isolated), the flows not on 10.10.0.1
    assert stale == [Flow("ipv4", "icmp", ip("10.10.0.11"), ip("10.10.0.1"), None)]
    assert stale_flows(parse_flows(LISTING), rules, LOCAL, RenderOptions(accept_icmp=True)) == []
    isolated_both = server_rules(CLIENTS_ON_80, EGRESS_DNS)
    assert Flow("ipv4", "udp", ip("10.10.0.1"), ip("10.10.0.11"), 53) not in stale_flows(
        parse_flows(LISTING), isolated_both, LOCAL, OPTIONS
    )
    nothing = server_rules(policy("deny", select={"app": "server"}, ingress=[]))
    assert Flow("ipv4", "tcp", ip("10.10.0.10"), ip("10.10.0.1"), 80) in stale_flows(
        parse_flows(LISTING), nothing, LOCAL, OPTIONS
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
    fake = FakeNft.from_transaction(render_interface(rules, options))
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


class Script:
    """A scripted command runner: records argv, answers from a table."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str], stdin: str) -> tuple[int, str, str]:
        argv = list(args)
        self.calls.append(argv)
        verb = argv[argv.index("conntrack") + 1]  # -L or -D
        return self.answers.get(verb, (0, "", ""))


def test_the_cleaner_lists_once_and_deletes_each_stale_group_inside_the_netns() -> None:
    script = Script(
        {"-L": (0, LISTING, "3 flow entries have been shown."), "-D": (1, "", "0 flow entries have been deleted.")}
    )
    cleaner = ConntrackCleaner(OPTIONS, runner=script)
    assert cleaner.clean("/run/netns/pod", server_rules(CLIENTS_ON_80), LOCAL) == 1
    assert script.calls == [
        ["nsenter", "--net=/run/netns/pod", "--", "conntrack", "-L", "-o", "extended"],
        [
            "nsenter",
            "--net=/run/netns/pod",
            "--",
            "conntrack",
            "-D",
            "-f",
            "ipv4",
            "-p",
            "icmp",
            "-s",
            "10.10.0.11",
            "-d",
            "10.10.0.1",
        ],
    ]


def test_the_cleaner_reports_failures() -> None:
    import pytest

    cleaner = ConntrackCleaner(OPTIONS, runner=Script({"-L": (1, "", "conntrack: Operation not permitted")}))
    with pytest.raises(OSError, match="not permitted"):
        cleaner.clean("/run/netns/pod", server_rules(CLIENTS_ON_80), LOCAL)
    assert cleaner.clean("/run/netns/pod", server_rules(CLIENTS_ON_80), []) == 0  # no address: nothing to match


def test_a_widening_is_not_a_withdrawal() -> None:
    # A new peer or a wider port range keeps every old allowance: no conntrack listing is needed.
    clients = server_rules(CLIENTS_ON_80)
    wider = server_rules(
        policy("p", select={"app": "server"}, ingress=[from_pods({"role": "client"}), from_pods({"role": "other"})])
    )
    assert not withdraws(clients, wider)
    assert withdraws(wider, clients)
