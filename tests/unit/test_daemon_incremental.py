"""Incremental sync == full recompute, for random sequences of changes (hypothesis).

The dependency index (daemon.dependencies) decides which interfaces a change can affect; if it ever missed one,
that interface would keep stale rules until the next periodic resync. This test applies random changes to pods,
namespaces and policies, runs an *incremental* sync after each, and checks that every local interface holds
exactly what compiling the whole cluster from scratch gives.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from daemon.records import PROGRAMMED
from daemon.store import POD
from shared.compiler import ClusterIndex, compile_pod
from shared.model import Cluster
from shared.rules import InterfaceRules
from tests.unit.test_daemon_builders import JSON, NET_A, entry, namespace, pod, policy, put, remove
from tests.unit.test_daemon_controller import Harness

NAMESPACES = ("default", "blue")
LABELS = st.sampled_from([{}, {"app": "a"}, {"app": "b"}, {"app": "a", "tier": "x"}])
TARGETS = st.sampled_from([{}, {}, {"app": "a"}])  # what policies select: mostly the (unlabelled) local pods
NS_LABELS = st.sampled_from([{}, {"team": "t1"}, {"team": "t2"}])
PODS = [("default", f"p{i}", f"10.10.0.{i + 1}") for i in range(4)] + [("blue", "q0", "10.10.0.50")]
LOCAL = PODS[:2]
REMOTE = PODS[2:]

selector = st.one_of(st.none(), LABELS.map(lambda labels: {"matchLabels": labels}))


@st.composite
def peer(draw: st.DrawFn) -> JSON:
    kind = draw(st.sampled_from(["pod", "ns", "both", "block"]))
    if kind == "block":
        return {"ipBlock": {"cidr": draw(st.sampled_from(["10.10.0.0/30", "10.10.0.48/28", "0.0.0.0/0"]))}}
    out: JSON = {}
    if kind in ("pod", "both"):
        out["podSelector"] = draw(selector) or {}
    if kind in ("ns", "both"):
        out["namespaceSelector"] = {"matchLabels": draw(NS_LABELS)}
    return out


@st.composite
def rule(draw: st.DrawFn, direction: str) -> JSON:
    out: JSON = {}
    peers = draw(st.lists(peer(), max_size=2))
    if peers:
        out["from" if direction == "ingress" else "to"] = peers
    ports = draw(st.sampled_from([[], [{"port": 80}], [{"port": "http"}], [{"protocol": "UDP", "port": 53}]]))
    if ports:
        out["ports"] = ports
    return out


@st.composite
def a_policy(draw: st.DrawFn) -> JSON:
    name = draw(st.sampled_from(["pa", "pb", "pc"]))
    ns = draw(st.sampled_from(NAMESPACES))
    select = draw(TARGETS)
    ingress = draw(st.lists(rule("ingress"), max_size=2))
    egress = draw(st.lists(rule("egress"), max_size=2))
    types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    return policy(name, ns, select=select, ingress=ingress, egress=egress, types=types)


@st.composite
def a_pod(draw: st.DrawFn) -> JSON:
    ns, name, ip = draw(st.sampled_from(REMOTE) if draw(st.integers(0, 3)) else st.sampled_from(LOCAL))
    ports = draw(st.sampled_from([(), (("http", 8080, "TCP"),), (("http", 9090, "TCP"),)]))
    return pod(name, ns, draw(LABELS), [(NET_A, "net1", ip)], ports=ports)


change = st.one_of(
    a_policy().map(lambda obj: ("put", obj)),
    a_policy().map(lambda obj: ("remove", obj)),
    a_pod().map(lambda obj: ("put", obj)),
    a_pod().map(lambda obj: ("remove", obj)),
    st.tuples(st.sampled_from(NAMESPACES), NS_LABELS).map(lambda t: ("put", namespace(*t))),
)


def expected(h: Harness) -> dict[tuple[str, str], InterfaceRules]:
    snap = h.store.snapshot()
    cluster = Cluster.of(snap.namespaces.values(), (p.pod for p in snap.pods.values()), (), snap.policies.values())
    index = ClusterIndex.build(cluster)
    out = {}
    for key, record in h.controller.records.items():
        found = h.store.get(POD, record.entry.pod)
        if found is not None:
            out[key] = next(r for r in compile_pod(index, found.pod) if r.ifname == "net1").at(record.ifindex)
    return out


ALL_FROM_APP_A = policy("pa", select={}, ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}])
ALL_FROM_TEAM_T1 = policy("pa", select={}, ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "t1"}}}]}])
ALL_TO_HTTP_IN_BLOCK = policy(
    "pa", select={}, egress=[{"to": [{"ipBlock": {"cidr": "10.10.0.0/30"}}], "ports": [{"port": "http"}]}]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(change, min_size=1, max_size=12))
@example([("put", ALL_FROM_APP_A), ("put", pod("p3", labels={"app": "a"}, nets=[(NET_A, "net1", "10.10.0.4")]))])
@example([("put", ALL_FROM_TEAM_T1), ("put", namespace("blue", {"team": "t1"}))])
@example(
    [
        ("put", ALL_TO_HTTP_IN_BLOCK),
        ("put", pod("p2", nets=[(NET_A, "net1", "10.10.0.3")], ports=[("http", 8080, "TCP")])),
        ("put", pod("p2", nets=[(NET_A, "net1", "10.10.0.3")], ports=[("http", 9090, "TCP")])),
    ]
)
def test_incremental_syncs_equal_a_full_recompute(changes: list[tuple[str, JSON]]) -> None:
    h = Harness()
    put(h.store, *(namespace(ns) for ns in NAMESPACES))
    put(h.store, *(pod(name, ns, {}, [(NET_A, "net1", ip)]) for ns, name, ip in PODS))
    h.attach(*(entry(f"c-{name}", name, ns, ip=ip) for ns, name, ip in LOCAL))
    h.ready()
    h.sync()
    for action, obj in changes:
        (put if action == "put" else remove)(h.store, obj)
        h.clock.advance(1)
        h.sync()  # incremental
        want = expected(h)
        for key, record in h.controller.records.items():
            if key in want:
                assert record.state == PROGRAMMED
                assert record.applied == want[key], f"{key} is stale after {action} {obj['kind']}"


def test_a_snapshots_pods_generation_is_equal_only_while_the_pods_are_unchanged() -> None:
    """The controller keeps its tuple of pods while the snapshot's pods generation is unchanged: a pod written
    with an equal value keeps it, any real change, deletion or relist that changes a pod moves it."""
    h = Harness()
    store = h.store
    put(store, namespace("default"), pod("p0", nets=[(NET_A, "net1", "10.10.0.1")]), policy("deny", select={}))
    first = store.snapshot()
    put(
        store, pod("p0", nets=[(NET_A, "net1", "10.10.0.1")]), policy("deny", select={"app": "a"})
    )  # an equal pod, another policy
    assert store.snapshot().pods_generation == first.pods_generation
    for change in (
        lambda: put(store, pod("p0", labels={"app": "a"}, nets=[(NET_A, "net1", "10.10.0.1")])),
        lambda: put(store, pod("p1", nets=[(NET_A, "net1", "10.10.0.2")])),
        lambda: remove(store, pod("p1", nets=[(NET_A, "net1", "10.10.0.2")])),
        lambda: store.replace(POD, {}),
    ):
        before = store.snapshot()
        change()
        after = store.snapshot()
        assert after.pods_generation != before.pods_generation and after.pods != before.pods
