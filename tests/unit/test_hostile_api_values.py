"""Values from the API that a real API server refuses, sent by a hostile or buggy one (red team, API objects).

Each test was failing first; the module docstring of the code each one pins says what mnpd does now:

* a peer pod whose containerPort is out of 1-65535 (70000, 0, -1): its named port resolved to a number nft refuses,
  so every pod egressing to that port name by name failed its transaction and was stuck on its previous rules,
  retried forever — one hostile pod froze other pods' enforcement. Now the entry is refused and reported
  (InvalidPod), the name resolves to nothing on that pod (no allow), the others are programmed;
* labels or annotations that are no map of string to string (a list, a number, null as a value): they were read as
  text — `{"app": ["server"]}` as app="['server']", which the policy selecting app=server no longer selected, so the
  pod was opened to everyone; a namespace's `{"env": ["untrusted"]}` matched `env NotIn (untrusted)` and its pods
  were admitted. Now a pod's unreadable labels or Multus annotations leave it no interface (closed, or its last
  rules) and no peer, a namespace's unreadable labels match no namespaceSelector with a requirement, and both are
  reported (InvalidPod / InvalidNamespace Event, log line, metric, status file);
* a watch stream sending a line without end: the reader buffered it all (the daemon's memory grew until the
  kernel killed it, every pod's enforcement with it). Now a watch event over MAX_EVENT_BYTES is a garbled answer:
  the buffer is dropped, the store keeps its last good view, the problem is reported and the watch retried;
* an exception no one foresaw while reading the API (a chunk announced at 256 TiB read whole: MemoryError) ended
  the reflector's thread silently: the kind was never updated again. Now streams are read in bounded pieces and
  any exception is logged, reported as the source's problem and retried with backoff
  (tests/integration/test_daemon_kube.py has the real-HTTP answers);
* a MultiNetworkPolicy port of Unicode digits, which the CRD accepts from any tenant: "²" made the parser raise,
  and the policies' reflector retried that event for ever — no policy change reached any node again; "٣" and "８０"
  were ports 3 and 80. Now they are no port number and no port name: the policy is invalid (isolates, allows
  nothing) and reported;
* JSON nested too deep (100 KB of "[") in a pod's network-status or networks annotation — any tenant can write it
  on its own pod — or in a NAD's config: json.loads' RecursionError escaped the parser, and the pods' (NADs')
  reflector retried that event for ever on every node. Now it is unreadable JSON: left out, reported; and an
  object any parser trips over costs only that object (daemon.sources.convert.unparsable);
* an API object without namespace (or with an empty name) was taken for one of `default`: a peer of default's
  podSelectors. Now it is unidentifiable: the answer is garbled, the last good view kept, reported;
* a pod of 60,000 labels cost every node's mnpd 4.9 MB, a policy of 12,000 rules 7.4 MB and 1.2 s per event: over
  MAX_LABELS (256) labels are unreadable, over MAX_POLICY_VALUES (20,000) a policy's rules are not read (invalid);
* a label key or value, a policy-for name or a port name ending in a newline passed for valid (`$`);
* a policy-for of 40,000 names: 40,000 problem messages (6.2 MB per node, each logged and in the status file), or a
  policy naming 40,000 networks. Now over MAX_POLICY_FOR (64) it cannot be read (every network), and a policy from
  the API keeps at most MAX_PROBLEMS messages;
* a network-status of 16,000 addresses (any pod owner can write it): 1.4 MB per node and a second or more of the
  pods' reflector per event, and a peer of them all. Over MAX_POD_ADDRESSES (256) it cannot be read;
* one policy twice in an API list: the last was kept (an allow-all after the real one opened the pod); now both
  are refused (shared.model.refuse_duplicates).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from daemon.clock import FakeClock
from daemon.records import PENDING, PROGRAMMED
from daemon.sources import convert as convert_module
from daemon.sources import kube
from daemon.sources.convert import MAX_PROBLEMS, convert
from daemon.sources.kube import Backoff, GarbledAnswer, Kind, Reflector, iter_lines
from daemon.status import status_document
from daemon.store import NAD, POD, POLICY, Store
from shared import model
from shared.model import NETWORK_STATUS
from shared.selectors import UNREADABLE_LABELS
from tests.unit.test_daemon_builders import NET_A, entry, nad, namespace, pod, policy, put
from tests.unit.test_daemon_controller import SERVER, Harness, cluster
from tests.unit.test_hostile_daemon import GOOD, Answer, Script, wait_for


@contextlib.contextmanager
def reflecting(
    script: Script, kind: str = POLICY, on_change: Callable[[Store], None] | None = None
) -> Iterator[tuple[Store, Reflector]]:
    """A store (calling `on_change` with itself) and a running reflector of `kind` reading `script`, stopped at
    the end."""
    store = Store(FakeClock())
    if on_change is not None:
        store.on_change = lambda: on_change(store)
    name = {POLICY: "multi-networkpolicies", POD: "pods"}[kind]
    reflector = Reflector(Kind(name, kind, script), store, backoff=Backoff(0.001, 0.002))
    reflector.start()
    try:
        yield store, reflector
    finally:
        script.done.set()
        reflector.stop()


def egress_to_named_port(name: str) -> dict[str, object]:
    return policy(
        "server-egress",
        select={"app": "server"},
        egress=[{"to": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": name}]}],
    )


@pytest.mark.parametrize("number", [70000, 65536, 0, -1])
def test_a_peer_with_a_container_port_out_of_range_freezes_no_one(number: int) -> None:
    h = Harness()
    cluster(h)
    put(h.store, egress_to_named_port("http"))
    put(h.store, pod("client", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.10")], node="node-b",
                     ports=[("http", 8080, "TCP")]))  # fmt: skip
    h.ready()
    h.sync()
    assert h.egress(SERVER, "10.10.0.1", "10.10.0.10", 8080) == "accept"
    hostile = pod("other", labels={"role": "other"}, nets=[(NET_A, "net1", "10.10.0.11")], node="node-b",
                  ports=[("http", number, "TCP")])  # fmt: skip
    put(h.store, hostile)
    h.sync()
    assert h.controller.records[SERVER.key].state == PROGRAMMED, h.controller.records[SERVER.key].last_error
    assert h.egress(SERVER, "10.10.0.1", "10.10.0.10", 8080) == "accept"
    assert h.egress(SERVER, "10.10.0.1", "10.10.0.11", 8080) == "drop"  # its "http" is no port: no allow
    # enforcement goes on: a policy change after it still lands
    put(h.store, egress_to_named_port("other-name"))
    h.sync()
    assert h.controller.records[SERVER.key].state == PROGRAMMED
    assert h.egress(SERVER, "10.10.0.1", "10.10.0.10", 8080) == "drop"
    # and the hostile pod is reported
    found = convert(POD, hostile).problems
    assert found is not None and f"{number} is not in 1-65535" in found.problems[0]


# ------------------------------------------------------------------------------------------- labels, annotations


def synced_node_a() -> Harness:
    """The controller tests' cluster, synced, as the mnpd of node-a (where server and db run)."""
    h = Harness()
    h.controller.node = "node-a"
    cluster(h)
    h.ready()
    h.sync()
    return h


GARBLED_LABELS: list[Any] = [{"app": ["server"]}, {"app": None}, {"app": 1}, ["app=server"], "app=server"]


@pytest.mark.parametrize("labels", GARBLED_LABELS)
def test_a_pod_whose_labels_cannot_be_read_is_not_opened(labels: Any) -> None:
    h = synced_node_a()
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    garbled = pod("server", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.1")])
    garbled["metadata"]["labels"] = labels
    put(h.store, garbled)
    h.sync()
    # before: read as app="['server']" (or no labels), no policy selected it: open to everyone
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"  # its last rules
    assert h.controller.records[SERVER.key].state == PENDING
    assert "labels cannot be read" in h.controller.records[SERVER.key].reason  # not "not in its network-status"
    # a new pod with such labels stays in the plugin's closed table
    fresh = entry("c-fresh", "fresh", ip="10.10.0.5")
    new = pod("fresh", nets=[(NET_A, "net1", "10.10.0.5")])
    new["metadata"]["labels"] = labels
    put(h.store, new)
    h.attach(fresh)
    h.sync()
    assert h.controller.records[fresh.key].state == PENDING
    assert h.ingress(fresh, "10.10.0.11", "10.10.0.5", 80) == "drop"
    # reported: an Event on each pod, the status file
    reasons = {(ref.name, reason) for ref, reason, _ in h.events.posted}
    assert reasons == {("server", "InvalidPod"), ("fresh", "InvalidPod")}
    objects = status_document(h.controller, h.store.source_status(), "node-a")["objects"]
    assert [o["object"] for o in objects] == ["default/fresh", "default/server"]
    assert all("metadata.labels" in o["problems"][0] for o in objects)


@pytest.mark.parametrize("labels", GARBLED_LABELS)
def test_a_peer_whose_labels_cannot_be_read_is_admitted_by_no_selector(labels: Any) -> None:
    h = Harness()
    cluster(h)
    put(h.store, policy("server-from-all", select={"app": "server"}, ingress=[{"from": [{"podSelector": {}}]}]))
    h.ready()
    h.sync()
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"
    garbled = pod("client", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.10")], node="node-b")
    garbled["metadata"]["labels"] = labels
    put(h.store, garbled)
    h.sync()
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "drop"
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "accept"


NOT_UNTRUSTED = {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["untrusted"]}]}


@pytest.mark.parametrize("labels", [{"env": ["untrusted"]}, {"env": None}, ["env=untrusted"], "env=untrusted"])
def test_a_namespace_whose_labels_cannot_be_read_matches_no_label_selector(labels: Any) -> None:
    h = Harness()
    cluster(h)
    evil = namespace("evil")
    evil["metadata"]["labels"] = labels
    put(
        h.store,
        evil,
        pod("intruder", ns="evil", nets=[(NET_A, "net1", "10.10.0.30")], node="node-b"),
        policy(
            "server-from-trusted", select={"app": "server"}, ingress=[{"from": [{"namespaceSelector": NOT_UNTRUSTED}]}]
        ),
    )
    h.ready()
    h.sync()
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"  # default is not untrusted
    assert h.ingress(SERVER, "10.10.0.30", "10.10.0.1", 80) == "drop"  # before: accept
    ((ref, reason, message),) = h.events.posted
    assert (ref.kind, ref.name, reason) == ("Namespace", "evil", "InvalidNamespace")
    assert "metadata.labels" in message
    assert h.metrics.object_problems.labels("Namespace")._value.get() == 1
    # an empty namespaceSelector selects every namespace, whatever its labels
    put(
        h.store,
        policy("server-from-trusted", select={"app": "server"}, ingress=[{"from": [{"namespaceSelector": {}}]}]),
    )
    h.sync()
    assert h.ingress(SERVER, "10.10.0.30", "10.10.0.1", 80) == "accept"
    put(h.store, namespace("evil", {"env": "untrusted"}))  # fixed: withdrawn
    h.sync()
    assert h.metrics.object_problems.labels("Namespace")._value.get() == 0


@pytest.mark.parametrize(
    "annotations",
    [
        "k8s.v1.cni.cncf.io/networks: net-a",
        ["k8s.v1.cni.cncf.io/networks=net-a"],
        {"k8s.v1.cni.cncf.io/networks": "net-a@net1", NETWORK_STATUS: [{"name": NET_A, "interface": "net1"}]},
        {"k8s.v1.cni.cncf.io/networks": "net-a@net1", "other": 7},
    ],
)
def test_a_pod_whose_annotations_cannot_be_read_is_closed_and_reported(annotations: Any) -> None:
    """A real API server holds annotations as a map of string to string: anything else is not what Multus wrote."""
    h = synced_node_a()
    garbled = pod("server", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.1")])
    if isinstance(annotations, dict) and NETWORK_STATUS in annotations:
        annotations = {**annotations, NETWORK_STATUS: json.loads(garbled["metadata"]["annotations"][NETWORK_STATUS])}
    garbled["metadata"]["annotations"] = annotations
    put(h.store, garbled)
    h.sync()
    assert h.controller.records[SERVER.key].state == PENDING
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    ((ref, reason, message),) = h.events.posted
    assert (ref.name, reason) == ("server", "InvalidPod") and "metadata.annotations" in message


# ------------------------------------------------------------------------------------------- watch streams

GIVE_UP = 64 << 20  # what the endless stream sends at most: a reader with no bound fails the test, not the machine


class Endless(Answer):
    """A watch answer whose one line never ends (until GIVE_UP bytes were sent)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def stream(self, amt: Any = None, decode_content: bool = True) -> Iterator[bytes]:
        chunk = b"x" * 65536
        yield b'{"type": "ADDED", "object": {"metadata": {"name": "'
        while self.sent < GIVE_UP:
            self.sent += len(chunk)
            yield chunk


def test_a_watch_line_without_end_is_a_garbled_answer_not_unbounded_memory() -> None:
    endless = Endless()
    with pytest.raises(GarbledAnswer, match="over"):
        for _ in iter_lines(endless):
            pass
    assert endless.sent <= kube.MAX_EVENT_BYTES + 65536


def test_many_events_in_one_chunk_and_events_split_over_chunks_are_read_whole() -> None:
    events = [json.dumps({"type": "ADDED", "n": i}).encode() for i in range(2000)]
    stream = b"\n".join(events) + b"\n\n"
    pieces = [stream[:7], stream[7:100_000], stream[100_000:100_001], stream[100_001:]]
    answer = Answer()
    answer.lines = pieces
    assert list(iter_lines(answer)) == events
    answer.lines = [b'{"type": "ADDED"}']  # the last event without its newline
    assert list(iter_lines(answer)) == [b'{"type": "ADDED"}']


class Exploding(Answer):
    """A watch answer whose reading raises what no one foresaw."""

    def stream(self, amt: Any = None, decode_content: bool = True) -> Iterator[bytes]:
        raise MemoryError("cannot allocate 281474976710655 bytes")
        yield b""


@pytest.mark.parametrize(
    ("answer", "says"),
    [(Endless, f"a watch event over {kube.MAX_EVENT_BYTES} bytes"), (Exploding, "MemoryError: cannot allocate")],
)
def test_the_reflector_keeps_its_view_through_a_broken_watch_and_reports_it(answer: type[Answer], says: str) -> None:
    """Exploding: before, any exception outside the reflector's list (MemoryError, a client bug) ended its thread
    silently — the store still said synced, and no change of that kind was ever seen again."""
    good_list = Answer({"items": [GOOD], "metadata": {"resourceVersion": "1"}})
    script = Script([good_list], [answer()])
    with reflecting(script) as (store, reflector):
        wait_for(lambda: script.calls.count("watch") >= 2, "the reflector watches again after the broken answer")
        assert reflector._thread.is_alive()
        assert set(store.snapshot().policies) == {"default/p"}
        (problem,) = store.source_problems()["api/multi-networkpolicies"]
        assert says in problem and "keeping the last good view" in problem


class NotJson(Answer):
    """A watch answer whose one line is no JSON."""

    def stream(self, amt: Any = None, decode_content: bool = True) -> Iterator[bytes]:
        yield b"\xff\xfe{not json\n"


def test_a_garbled_watch_is_reported_while_it_lasts_and_withdrawn_when_the_watch_goes_on() -> None:
    """Before: a watch line that is no JSON was only logged (no `mnp_source_problems`, nothing in `mnpctl status`),
    and a garbled answer's problem stayed reported until the next relist — which only a 410 brings, hours later
    — though the watch after it had long gone on."""
    good_list = Answer({"items": [GOOD], "metadata": {"resourceVersion": "1"}})
    gone = {**GOOD, "metadata": {**GOOD["metadata"], "resourceVersion": "2"}}
    script = Script([good_list], [NotJson(), Answer(lines=[{"type": "DELETED", "object": gone}])])
    seen: list[tuple[str, ...]] = []
    with reflecting(
        script, on_change=lambda store: seen.append(store.source_problems()["api/multi-networkpolicies"])
    ) as (store, _):
        wait_for(lambda: script.calls.count("watch") >= 3, "the reflector watches on after the garbled line")
        assert set(store.snapshot().policies) == set()
        assert any("no JSON" in problem for problems in seen for problem in problems)
        assert store.source_problems()["api/multi-networkpolicies"] == ()


# ------------------------------------------------------------------------------------------- policy ports

UNICODE_DIGITS = ["²", "٣", "８０", "߀"]  # str.isdigit() is true for each; int() takes "٣" and "８０", refuses "²"


def port_policy(port: object) -> dict[str, Any]:
    return policy(
        "server-odd-port",
        select={"app": "server"},
        ingress=[{"from": [{"podSelector": {}}], "ports": [{"port": port}]}],
    )


@pytest.mark.parametrize("port", UNICODE_DIGITS)
def test_a_port_of_unicode_digits_is_no_number(port: str) -> None:
    """The CRD takes any string as a port (x-kubernetes-int-or-string, no pattern), so any tenant can write these.
    Before: "²" made parse_policy raise (int("²")), and the policies' reflector retried the same event for ever —
    no policy change reached any node again; "٣" and "８０" were read as ports 3 and 80, allowing them."""
    h = Harness()
    cluster(h)
    put(h.store, port_policy(port))
    h.ready()
    h.sync()
    parsed = h.store.get(POLICY, "default/server-odd-port")
    assert not parsed.valid and "is not a valid port name" in parsed.problems[0]
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 3) == "drop"
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"  # server-from-clients still allows


def test_a_policy_the_parser_trips_on_stops_no_other_policy() -> None:
    good_list = Answer({"items": [GOOD], "metadata": {"resourceVersion": "1"}})
    other = {**GOOD, "metadata": {**GOOD["metadata"], "name": "other", "resourceVersion": "3"}}
    hostile = {**port_policy("²"), "metadata": {**port_policy("²")["metadata"], "resourceVersion": "2"}}
    lines = [{"type": "ADDED", "object": hostile}, {"type": "ADDED", "object": other}]
    script = Script([good_list], [Answer(lines=lines), Answer(lines=lines)])
    with reflecting(script) as (store, _):
        wait_for(lambda: "default/other" in store.snapshot().policies, "the policy after the hostile one is seen")
        assert not store.snapshot().policies["default/server-odd-port"].valid


@pytest.mark.parametrize("parser", ["parse_policy", "parse_pod", "parse_namespace", "parse_nad"])
def test_an_object_a_parser_trips_over_costs_that_object_fail_closed(
    parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever shape a parser did not foresee (the Unicode digits above were one), convert does not raise: the
    object stands for what mnpd cannot read, fail closed, reported; the reflector goes on."""

    def trips(obj: object) -> None:
        raise TypeError("a shape no one foresaw")

    monkeypatch.setattr(convert_module, parser, trips)
    h = Harness()
    h.controller.node = "node-a"
    cluster(h)
    put(h.store, namespace("default", {"team": "a"}), nad("net-a"), policy("odd", select={"app": "nothing"}))
    h.ready()
    h.sync()
    assert h.controller.records[SERVER.key].state in (PROGRAMMED, PENDING)
    if parser == "parse_policy":  # every policy isolates every pod of its namespace, allows nothing
        assert all(not p.valid and p.every_network for p in h.store.snapshot().policies.values())
        assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "drop"
        assert {reason for _, reason, _ in h.events.posted} == {"InvalidPolicy"}
    else:
        assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
        kind = {"parse_pod": "Pod", "parse_namespace": "Namespace", "parse_nad": "NetworkAttachmentDefinition"}
        reported = {o["kind"] for o in status_document(h.controller, h.store.source_status(), "node-a")["objects"]}
        assert reported == {kind[parser]}
    (message,) = {m for _, _, m in h.events.posted if "cannot be parsed" in m} or {""}
    assert "cannot be parsed (TypeError: a shape no one foresaw)" in message


# ------------------------------------------------------------------------------------------- JSON nested too deep

DEEP = "[" * 100_000  # 100 KB: under the API server's 256 KiB for all of an object's annotations


@pytest.mark.parametrize("annotation", [NETWORK_STATUS, "k8s.v1.cni.cncf.io/networks"])
def test_a_pod_annotation_nested_too_deep_is_unreadable_not_a_stuck_reflector(annotation: str) -> None:
    """Any tenant can write this on its own pod. Before: json.loads' RecursionError escaped the parser, and the
    pods' reflector retried that event for ever on every node — no new pod was programmed again, deleted peers
    stayed admitted. Now the annotation is unreadable JSON like any other: left out, reported."""
    deep = pod("deep", nets=[(NET_A, "net1", "10.10.0.5")])
    deep["metadata"]["annotations"][annotation] = DEEP
    after = pod("after", nets=[(NET_A, "net1", "10.10.0.6")])
    lines = [{"type": "ADDED", "object": deep}, {"type": "ADDED", "object": after}]
    script = Script([Answer({"items": [], "metadata": {"resourceVersion": "1"}})], [Answer(lines=lines)])
    with reflecting(script, POD) as (store, _):
        wait_for(lambda: store.get(POD, "default/after") is not None, "the pod after the deep one is seen")
        (found,) = store.object_problems()[1].values()
        assert f"annotation {annotation}: not valid JSON" in found.problems[0]
        kept = store.get(POD, "default/deep")
        if annotation == NETWORK_STATUS:  # its interfaces cannot be read: none, so no peer address
            assert kept is None or not kept.pod.attachments
        else:  # the request cannot be read; the network-status Multus wrote still says what the pod has
            assert [a.interface for a in kept.pod.attachments] == ["net1"]


def test_a_nad_config_nested_too_deep_is_unreadable() -> None:
    broken = nad("net-a")
    broken["spec"]["config"] = DEEP
    converted = convert(NAD, broken)
    assert converted.value.config == {}
    assert converted.problems is not None and "spec.config: not valid JSON" in converted.problems.problems[0]


# ------------------------------------------------------------------------------------------- identity

NO_NAMESPACE = pod("stray", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.50")])
del NO_NAMESPACE["metadata"]["namespace"]
EMPTY_NAME = pod("", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.51")])


@pytest.mark.parametrize("stray", [NO_NAMESPACE, EMPTY_NAME], ids=["no-namespace", "empty-name"])
def test_an_api_pod_without_namespace_or_name_is_unidentifiable(stray: dict[str, Any]) -> None:
    """A real API server always sends both. Before: a pod without namespace was taken for one of `default` (a
    manifest's convention) — admitted by default's podSelector peers (here role=client: server-from-clients) — and
    one named "" was kept as `default/`."""
    script = Script([Answer({"items": [stray], "metadata": {"resourceVersion": "1"}})], [])
    with reflecting(script, POD) as (store, _):
        wait_for(lambda: store.source_problems()["api/pods"] != (), "the list is reported garbled")
        assert store.snapshot().pods == {} and not store.synced()
        (problem,) = store.source_problems()["api/pods"]
        assert "metadata." in problem and "keeping the last good view" in problem


# ------------------------------------------------------------------------------------------- sizes


def test_a_pod_with_more_labels_than_mnpd_reads_is_closed_and_reported() -> None:
    """A pod of 60,000 labels (1.4 MB of JSON, under etcd's 1.5 MiB) cost every node's mnpd 4.9 MB and 114 ms per
    event (docs/benchmarks.md, "Large objects from the API"). Any tenant can write it on its own pods: now over
    MAX_LABELS its labels are unreadable (no interface programmed, no peer), reported."""
    h = synced_node_a()
    many = pod("server", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.1")])
    many["metadata"]["labels"] |= {f"k{i}": "v" for i in range(model.MAX_LABELS)}
    converted = convert(POD, many)
    assert converted.value.pod.labels == UNREADABLE_LABELS
    assert converted.problems is not None
    assert f"{model.MAX_LABELS + 1} labels, more than mnpd reads" in converted.problems.problems[0]
    put(h.store, many)
    h.sync()
    assert h.controller.records[SERVER.key].state == PENDING
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    ((ref, reason, _),) = h.events.posted
    assert (ref.name, reason) == ("server", "InvalidPod")
    del many["metadata"]["labels"]["k0"]  # MAX_LABELS: read
    assert convert(POD, many).problems is None


def test_a_policy_larger_than_mnpd_reads_isolates_and_allows_nothing() -> None:
    """A MultiNetworkPolicy of 12,000 rules (1.1 MB of JSON) — any tenant can create it in its namespace — cost
    every node's mnpd 7.4 MB and 1.2 s per event (docs/benchmarks.md, "Large objects from the API"). Over
    MAX_POLICY_VALUES values its rules are not read: invalid, fail closed (isolates what it selects, allows
    nothing), reported."""
    h = Harness()
    cluster(h)
    rules = [{"from": [{"podSelector": {"matchLabels": {"role": "other"}}}], "ports": [{"port": 80}]}]
    rules += [{"from": [{"ipBlock": {"cidr": f"192.0.2.{i % 256}/32"}}]} for i in range(model.MAX_POLICY_VALUES)]
    put(h.store, policy("huge", select={"app": "server"}, ingress=rules))
    h.ready()
    h.sync()
    parsed = h.store.get(POLICY, "default/huge")
    assert not parsed.valid and "more than mnpd reads" in parsed.problems[0]
    assert parsed.ingress == ()  # not read
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"  # its first rule is not allowed
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"  # server-from-clients still is
    ((_, reason, _),) = h.events.posted
    assert reason == "InvalidPolicy"


def test_watch_events_for_objects_never_added_or_unknown_keep_the_view_whole() -> None:
    """Held before and after: MODIFIED for an object never ADDED adds it, DELETED for one never seen changes
    nothing, a BOOKMARK changes nothing; none is reported as a problem."""
    other = {**GOOD, "metadata": {**GOOD["metadata"], "name": "never-added"}}
    unknown = {**GOOD, "metadata": {**GOOD["metadata"], "name": "unknown"}}
    lines = [
        {"type": "MODIFIED", "object": other},
        {"type": "DELETED", "object": unknown},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
    ]
    script = Script([Answer({"items": [GOOD], "metadata": {"resourceVersion": "1"}})], [Answer(lines=lines)])
    with reflecting(script) as (store, reflector):
        wait_for(lambda: script.calls.count("watch") >= 2, "the watch ends and starts again")
        assert set(store.snapshot().policies) == {"default/p", "default/never-added"}
        assert reflector.resource_version == "9"
        assert store.source_problems()["api/multi-networkpolicies"] == ()


# ------------------------------------------------------------------------------------------- trailing newlines


@pytest.mark.parametrize(
    "spec",
    [
        {"podSelector": {"matchLabels": {"app": "server\n"}}},
        {"podSelector": {"matchLabels": {"app\n": "server"}}},
        {"podSelector": {"matchLabels": {"example.com\n/app": "server"}}},
        {"podSelector": {}, "ingress": [{"ports": [{"port": "http\n"}]}]},
    ],
)
def test_a_trailing_newline_makes_no_valid_label_or_port_name(spec: dict[str, Any]) -> None:
    """The CRD checks no syntax, so any tenant can write these. Before: `$` matched before a final newline, so each
    passed for a valid name and the policy for a valid one."""
    parsed = convert(POLICY, {**policy("nl"), "spec": spec}).value
    assert not parsed.valid
    assert convert(POLICY, policy("nl", select={"app": "server"}, ingress=[{"ports": [{"port": "http"}]}])).value.valid


@pytest.mark.parametrize("name", ["N{}", "n{}"], ids=["invalid-names", "valid-names"])
def test_a_policy_for_of_thousands_of_names_is_bounded_and_fails_closed(name: str) -> None:
    """Any tenant can write 340 KB of policy-for. Before: 40,000 invalid names made 40,000 problem messages (6.2 MB
    kept by every node's mnpd, every one logged and written to the status file), 40,000 valid ones a policy
    naming 40,000 networks (a 629 KB "applies to no known network (…)" line). Now over MAX_POLICY_FOR names the
    annotation is unreadable — isolating on every network — and at most MAX_PROBLEMS messages are kept."""
    h = Harness()
    cluster(h)
    huge = policy("huge", select={"app": "server"}, ingress=[{"from": [{"podSelector": {}}]}])
    huge["metadata"]["annotations"][model.POLICY_FOR] = ",".join(name.format(i) for i in range(40000))
    put(h.store, huge)
    h.ready()
    h.sync()
    parsed = h.store.get(POLICY, "default/huge")
    assert not parsed.valid and parsed.every_network and parsed.policy_for == ()
    assert len(parsed.problems) <= MAX_PROBLEMS + 1
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"  # its allow-all is not used
    ((_, reason, message),) = h.events.posted
    assert reason == "InvalidPolicy" and "on every network" in message
    assert len(json.dumps(h.controller.policy_notes())) < 4096


def test_a_network_status_of_thousands_of_addresses_is_unreadable() -> None:
    """Any pod owner can write 225 KB of network-status: 16,000 addresses cost every node's mnpd 1.4 MB and 1.8 s
    per event of that pod (the pods' reflector stalls for every other pod meanwhile), and made the pod a peer of
    16,000 addresses. Over MAX_POD_ADDRESSES the annotation is unreadable: no interface, no peer, reported."""
    h = Harness()
    cluster(h)
    put(h.store, policy("server-from-all", select={"app": "server"}, ingress=[{"from": [{"podSelector": {}}]}]))
    h.ready()
    h.sync()
    client = pod("client", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.10")], node="node-b")
    entries = json.loads(client["metadata"]["annotations"][NETWORK_STATUS])
    entries[1]["ips"] += [f"10.10.{j // 256}.{j % 256}" for j in range(model.MAX_POD_ADDRESSES)]
    client["metadata"]["annotations"][NETWORK_STATUS] = json.dumps(entries)
    converted = convert(POD, client)
    assert converted.problems is not None and "more than mnpd reads" in converted.problems.problems[0]
    put(h.store, client)
    h.sync()
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "drop"
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "accept"
    requested = pod("req", nets=[(NET_A, "net1", "10.10.0.12")], status=False)
    requested["metadata"]["annotations"][model.NETWORKS] = json.dumps(
        [{"name": "net-a", "ips": [f"10.10.{j // 256}.{j % 256}/24" for j in range(model.MAX_POD_ADDRESSES + 1)]}]
    )
    converted = convert(POD, requested)
    assert converted.problems is not None and "more than mnpd reads" in converted.problems.problems[0]


def test_one_policy_twice_in_an_api_list_is_refused_both_ways() -> None:
    """A real API server lists each object once. Before: a list holding two definitions of one policy kept the
    last (whichever the server put there: an allow-all after the real one opened the pod). Now both are refused,
    as two manifest files defining it are (shared.model.refuse_duplicates): isolating, allowing nothing."""
    allow_all = policy("server-from-clients", select={"app": "server"}, ingress=[{}])
    real = policy("server-from-clients", select={"app": "server"}, ingress=[{"from": [{"podSelector": {}}]}])
    script = Script([Answer({"items": [real, allow_all], "metadata": {"resourceVersion": "1"}})], [])
    with reflecting(script) as (store, _):
        wait_for(lambda: store.synced(), "listed")
        (parsed,) = store.snapshot().policies.values()
        assert not parsed.valid and "defined more than once" in parsed.problems[0]
        assert parsed.rules("Ingress") == ()


def test_a_410_with_a_huge_message_logs_an_excerpt(caplog: pytest.LogCaptureFixture) -> None:
    """Before: the server's message went whole into the log line (up to MAX_EVENT_BYTES)."""
    gone = Answer(lines=[{"type": "ERROR", "object": {"code": 410, "message": "x" * 1_000_000}}])
    empty = Answer({"items": [], "metadata": {"resourceVersion": "2"}})
    script = Script([Answer({"items": [], "metadata": {"resourceVersion": "1"}}), empty], [gone])
    with caplog.at_level(logging.INFO, logger="daemon"), reflecting(script) as (_, reflector):
        wait_for(lambda: reflector.lists >= 2, "relisted after the 410")
    (line,) = [r.getMessage() for r in caplog.records if "expired" in r.getMessage()]
    assert len(line) < 200
