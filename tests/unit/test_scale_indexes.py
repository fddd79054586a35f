"""The indexes that keep the daemon's work per event small at 10,000 pods / 1,000 policies give the answers of the
plain scans they replace, and the compact form the store keeps of a pod compiles like the full one.

* daemon.dependencies.PolicyIndex — the policies a pod's change can concern, found by its labels instead of by
  testing every policy — equals the scan with `policy_sees_pod`;
* ClusterIndex.peer_pods — a peer's pods by namespace and label instead of a pass over every member — equals the
  pass over every member, in order;
* the peers memo of the compiler returns the same tuple object for a rule whose inputs did not change, and a
  new, correct one when they did;
* convert.compact drops what no reader needs, and compiling from compact pods gives the same rules.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.clock import SystemClock
from daemon.dependencies import PolicyIndex, namespace_labels, policies_seeing_pod, policy_index, policy_sees_pod
from daemon.sources import convert
from daemon.sources.convert import compact, pod_value
from daemon.store import POD, POLICY, Store
from shared.compiler import ClusterIndex, compile_pod
from shared.model import Cluster, MultiNetworkPolicy, Namespace, Peer, Pod, parse_namespace, parse_pod, parse_policy
from tests.unit.test_daemon_builders import NET_A, namespace, pod, policy

NET_B = "default/net-b"
NAMESPACES = ("default", "blue", "green")
KEYS = ("app", "role", "tier")
VALUES = ("a", "b", "c")

labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)


@st.composite
def requirement(draw: st.DrawFn) -> dict[str, Any]:
    operator = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
    out: dict[str, Any] = {"key": draw(st.sampled_from(KEYS)), "operator": operator}
    if operator in ("In", "NotIn"):
        out["values"] = draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=2, unique=True))
    return out


selector = st.one_of(
    st.just({}),
    labels.map(lambda ls: {"matchLabels": ls}),
    st.builds(
        lambda ls, exprs: {"matchLabels": ls, "matchExpressions": exprs},
        labels,
        st.lists(requirement(), min_size=1, max_size=2),
    ),
)


@st.composite
def a_peer(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["pod", "ns", "both", "block"]))
    if kind == "block":
        return {"ipBlock": {"cidr": "10.10.0.0/30"}}
    out: dict[str, Any] = {}
    if kind in ("pod", "both"):
        out["podSelector"] = draw(selector)
    if kind in ("ns", "both"):
        out["namespaceSelector"] = draw(selector)
    return out


@st.composite
def a_rule(draw: st.DrawFn, direction: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    peers = draw(st.lists(a_peer(), max_size=3))
    if peers:
        out["from" if direction == "ingress" else "to"] = peers
    ports = draw(st.sampled_from([[], [{"port": 80}], [{"port": "http"}]]))
    if ports:
        out["ports"] = ports
    return out


@st.composite
def a_policy(draw: st.DrawFn, number: int) -> MultiNetworkPolicy:
    raw = policy(
        f"p{number}",
        draw(st.sampled_from(NAMESPACES)),
        policy_for=draw(st.sampled_from([NET_A, NET_B, f"{NET_A},{NET_B}"])),
        select=draw(labels),
        ingress=draw(st.lists(a_rule("ingress"), max_size=2)),
        egress=draw(st.lists(a_rule("egress"), max_size=2)),
        types=draw(st.sampled_from([None, ["Ingress", "Egress"], ["Egress"]])),
    )
    return parse_policy(raw)


@st.composite
def a_pod(draw: st.DrawFn, number: int) -> Pod:
    net = draw(st.sampled_from([NET_A, NET_B]))
    raw = pod(
        f"q{number}",
        draw(st.sampled_from(NAMESPACES)),
        draw(labels),
        [(net, "net1", f"10.10.{number // 200}.{number % 200 + 1}")],
        ports=draw(st.sampled_from([(), (("http", 8080, "TCP"),)])),
        phase=draw(st.sampled_from(["Running", "Running", "Succeeded"])),
    )
    return parse_pod(raw)[0]


@st.composite
def a_world(draw: st.DrawFn) -> tuple[list[MultiNetworkPolicy], list[Pod], dict[str, Namespace]]:
    policies = [draw(a_policy(i)) for i in range(draw(st.integers(0, 8)))]
    pods = [draw(a_pod(i)) for i in range(draw(st.integers(1, 12)))]
    namespaces = {
        name: parse_namespace(namespace(name, draw(labels)))
        for name in NAMESPACES
        if draw(st.booleans())  # an unseen namespace still has its metadata.name label
    }
    return policies, pods, namespaces


def scan(policies: list[MultiNetworkPolicy], pods: list[Pod | None], namespaces: Mapping[str, Namespace]) -> set[str]:
    """The definition: every policy tested against every version of the pod."""
    return {
        p.key
        for p in policies
        for version in pods
        if version is not None and policy_sees_pod(p, version, namespace_labels(namespaces, version.namespace))
    }


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(a_world(), st.data())
def test_policy_index_finds_exactly_the_policies_a_full_scan_finds(world: Any, data: st.DataObject) -> None:
    policies, pods, namespaces = world
    old = data.draw(st.sampled_from([None, *pods]))
    new = data.draw(st.sampled_from([None, *pods]))
    assert PolicyIndex(policies).seeing([old, new], namespaces) == scan(policies, [old, new], namespaces)
    assert policies_seeing_pod(list(policies), [old, new], namespaces) == scan(policies, [old, new], namespaces)


def test_policy_index_is_reused_while_the_policies_are_the_same_objects() -> None:
    a = parse_policy(policy("a", ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "x"}}}]}]))
    b = parse_policy(policy("b", ingress=[{"from": [{"podSelector": {}}]}]))
    first = policy_index([a, b])
    assert policy_index((a, b)) is first  # another collection of the same objects
    assert policy_index([a]) is not first
    changed = parse_policy(policy("b", ingress=[{"from": [{"podSelector": {}}]}]))  # equal, but a new object
    assert policy_index([a, changed]).policies[1] is changed


def test_policy_index_files_peers_by_required_label_and_namespace() -> None:
    by_app = parse_policy(policy("a", ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "x"}}}]}]))
    team = {"namespaceSelector": {"matchLabels": {"team": "t1"}}, "podSelector": {"matchLabels": {"app": "x"}}}
    by_team = parse_policy(policy("b", "blue", ingress=[{"from": [team]}]))
    blocks = parse_policy(policy("c", ingress=[{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]))
    named = parse_policy(
        policy("d", "green", egress=[{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": "http"}]}])
    )
    index = PolicyIndex([by_app, by_team, blocks, named])
    t1 = {"default": Namespace("default", {"team": "t1"})}

    def seeing(ns: str, app: str, namespaces: Mapping[str, Namespace]) -> set[str]:
        return index.seeing([parse_pod(pod("p", ns, {"app": app}, [(NET_A, "net1", "10.10.0.1")]))[0]], namespaces)

    assert seeing("default", "x", t1) == {"default/a", "blue/b", "green/d"}
    assert seeing("default", "x", {}) == {"default/a", "green/d"}  # default has no team=t1 label
    assert seeing("blue", "x", {}) == {"green/d"}  # `a` looks in its own namespace only
    assert seeing("default", "y", t1) == {"green/d"}  # only the named-port policy sees every pod of its network


def scan_peer_pods(index: ClusterIndex, p: MultiNetworkPolicy, peer: Peer, network: str) -> list[Any]:
    """The definition: every member of the network, in order."""
    out = []
    for member, ips in index.members.get(network, ()):
        if peer.namespace_selector is None:
            if member.namespace != p.namespace:
                continue
        elif not peer.namespace_selector.matches(index.cluster.namespace_labels(member.namespace)):
            continue
        if peer.pod_selector is None or peer.pod_selector.matches(member.labels):
            out.append((member, ips))
    return out


@SETTINGS
@given(a_world())
def test_indexed_peer_pods_equal_the_scan_of_every_member(world: Any) -> None:
    policies, pods, namespaces = world
    index = ClusterIndex.build(Cluster.of(namespaces.values(), pods, (), policies))
    for p in policies:
        for rule in (*p.ingress, *p.egress):
            for peer in rule.peers:
                if peer.ip_block is None:
                    for network in (NET_A, NET_B):
                        assert index.peer_pods(p, peer, network) == scan_peer_pods(index, p, peer, network)


@SETTINGS
@given(a_world())
def test_compact_pods_compile_like_the_parsed_ones(world: Any) -> None:
    policies, pods, namespaces = world
    full = ClusterIndex.build(Cluster.of(namespaces.values(), pods, (), policies))
    kept = [pod_value(p, True) for p in pods]
    small = ClusterIndex.build(Cluster.of(namespaces.values(), [k.pod for k in kept if k is not None], (), policies))
    for p, k in zip(pods, kept, strict=True):
        assert k is not None
        assert compile_pod(small, k.pod) == compile_pod(full, p)


def test_compact_keeps_only_what_the_daemon_reads_and_shares_equal_labels() -> None:
    one = parse_pod(pod("a", labels={"app": "x", "role": "db"}, nets=[(NET_A, "net1", "10.10.0.1")]))[0]
    two = parse_pod(pod("b", labels={"role": "db", "app": "x"}, nets=[(NET_A, "net1", "10.10.0.2")]))[0]
    a, b = compact(one), compact(two)
    assert [x.network for x in a.attachments] == [NET_A]  # the primary network's attachment is gone
    assert a.requests == () and one.requests  # the attachments already say what the requests asked for
    assert a.labels is b.labels and a.labels == one.labels
    assert a.secondary_attachments() == one.secondary_attachments()
    assert (a.key, a.uid, a.node_name, a.phase, a.container_ports) == (
        one.key,
        one.uid,
        one.node_name,
        one.phase,
        one.container_ports,
    )


def test_a_label_set_no_pod_holds_any_more_is_forgotten() -> None:
    """The sharing table holds label sets only while a pod holds them: 1,000 label changes (a `rev` label
    counting up) leave none of the old sets behind, and equal sets are still shared."""
    gc.collect()
    before = len(convert._LABEL_SETS)
    held = [compact(parse_pod(pod(f"p{i}", labels={"app": "x", "rev": str(i)}))[0]) for i in range(1000)]
    assert len(convert._LABEL_SETS) == before + 1000
    same = compact(parse_pod(pod("q", labels={"rev": "7", "app": "x"}))[0])
    assert same.labels is held[7].labels
    del held, same
    gc.collect()
    assert len(convert._LABEL_SETS) == before


def test_unchanged_peers_are_the_same_tuple_in_the_next_snapshot() -> None:
    p = parse_policy(policy("a", ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "x"}}}]}]))
    target = parse_pod(pod("t", labels={}, nets=[(NET_A, "net1", "10.10.0.9")]))[0]
    peers = [parse_pod(pod(f"x{i}", labels={"app": "x"}, nets=[(NET_A, "net1", f"10.10.0.{i}")]))[0] for i in (1, 2)]
    other = parse_pod(pod("o", labels={"app": "y"}, nets=[(NET_A, "net1", "10.10.0.5")]))[0]

    def compiled(pods: list[Pod]) -> tuple[Any, ...]:
        index = ClusterIndex.build(Cluster.of((), [target, *pods], (), [p]))
        return compile_pod(index, target)[0].ingress.allows[0].peers  # type: ignore[no-any-return]

    first = compiled(peers)
    assert [str(n) for n in first] == ["10.10.0.1/32", "10.10.0.2/32"]
    assert compiled([*peers, other]) is first  # a pod that is no peer changed: the very same tuple
    moved = parse_pod(pod("x2", labels={"app": "x"}, nets=[(NET_A, "net1", "10.10.0.3")]))[0]
    assert [str(n) for n in compiled([peers[0], moved])] == ["10.10.0.1/32", "10.10.0.3/32"]


def test_the_store_reads_a_pods_uid_from_its_value_and_keeps_no_table_of_them() -> None:
    """Pods carry their uid (10,000 of them in a second table cost 1.2 MB); a policy's is kept beside it."""
    store = Store(SystemClock())
    value = pod_value(parse_pod(pod("a", nets=[(NET_A, "net1", "10.10.0.1")]))[0], True)
    assert value is not None and value.pod.uid
    store.replace(POD, {"default/a": value}, {"default/a": value.pod.uid})
    store.upsert(POLICY, "default/p", parse_policy(policy("p")), "policy-uid")
    assert store.uid(POD, "default/a") == value.pod.uid
    assert store.uid(POLICY, "default/p") == "policy-uid"
    assert store._uids == {(POLICY, "default/p"): "policy-uid"}
    store.delete(POD, "default/a")
    assert store.uid(POD, "default/a") == ""


@st.composite
def a_history(draw: st.DrawFn) -> list[tuple[list[MultiNetworkPolicy], list[Pod], dict[str, Namespace]]]:
    """Snapshots one after another, each one change away from the one before: a policy, a pod or a namespace
    added, replaced or removed — often none of the pods (what lets an index share its pod side)."""
    policies, pods, namespaces = draw(a_world())
    out = [(policies, pods, namespaces)]
    for _ in range(draw(st.integers(1, 6))):
        policies, pods, namespaces = list(policies), list(pods), dict(namespaces)
        what = draw(st.sampled_from(["policy", "policy", "pod", "namespace", "nothing"]))
        if what == "policy":
            number = draw(st.integers(0, 8))
            policies = [p for p in policies if p.name != f"p{number}"]
            if draw(st.booleans()):
                policies.append(draw(a_policy(number)))
        elif what == "pod" and pods:
            at = draw(st.integers(0, len(pods) - 1))
            pods[at] = draw(a_pod(at))
        elif what == "namespace":
            name = draw(st.sampled_from(NAMESPACES))
            namespaces[name] = parse_namespace(namespace(name, draw(labels)))
        out.append((policies, pods, namespaces))
    return out


@SETTINGS
@given(a_history())
def test_an_index_sharing_the_last_ones_pod_side_compiles_like_a_fresh_one(history: Any) -> None:
    """ClusterIndex.build(cluster, previous): whatever changed between two snapshots, every pod compiles exactly
    as through an index built from nothing — a change is never missed by the reuse."""
    previous = None
    for policies, pods, namespaces in history:
        cluster = Cluster.of(namespaces.values(), pods, (), policies)
        reused = ClusterIndex.build(cluster, previous)
        fresh = ClusterIndex.build(cluster)
        for p in pods:
            assert compile_pod(reused, p) == compile_pod(fresh, p)
        if previous is not None:
            assert (reused.members is previous.members) == (previous.cluster.pods == cluster.pods)
        previous = reused


def test_an_index_shares_the_pod_side_only_while_the_pods_are_equal() -> None:
    a = parse_pod(pod("a", labels={"app": "x"}, nets=[(NET_A, "net1", "10.10.0.1")]))[0]
    b = parse_pod(pod("b", labels={"app": "y"}, nets=[(NET_A, "net1", "10.10.0.2")]))[0]
    first = ClusterIndex.build(Cluster.of((), [a, b], (), []))
    first.peer_pods(parse_policy(policy("p", ingress=[{}])), Peer(None, None, None), NET_A)  # fills the groups
    p = parse_policy(policy("p", ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "x"}}}]}]))
    same_pods = ClusterIndex.build(Cluster.of((), [a, b], (), [p]), first)
    assert same_pods.members is first.members and same_pods.policies_in("default") == (p,)
    relabelled = parse_pod(pod("b", labels={"app": "x"}, nets=[(NET_A, "net1", "10.10.0.2")]))[0]
    other_pods = ClusterIndex.build(Cluster.of((), [a, relabelled], (), [p]), same_pods)
    assert other_pods.members is not first.members
    assert [m[0].name for m in other_pods.peer_pods(p, p.ingress[0].peers[0], NET_A)] == ["a", "b"]
