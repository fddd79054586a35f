"""Pods and NetworkAttachmentDefinitions from the API with parts mnpd cannot read: fail closed, and reported.

Before: daemon.sources.convert threw shared.model's problem lists away. A pod whose network-status annotation was
garbled stayed closed, but nothing said so — no log line, no Event, nothing in `mnpctl status` — and a NAD whose
config could not be read was taken as empty without a word. Now convert carries the problems, the store holds them
beside the objects (only for objects that have some), and the controller reports them once while they last: an
Event on the object, a log line, `mnp_object_problems`, the status file's `objects`.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from daemon.clock import FakeClock
from daemon.records import PENDING, PROGRAMMED
from daemon.sources.convert import MAX_PROBLEMS, convert
from daemon.sources.kube import Backoff, Kind, Reflector
from daemon.status import status_document
from daemon.store import NAD, POD, ObjectProblems, Store
from shared.model import NETWORK_STATUS
from tests.unit.test_daemon_adopt import Node as AdoptNode
from tests.unit.test_daemon_adopt import h, net1
from tests.unit.test_daemon_adopt import web as adopt_web
from tests.unit.test_daemon_builders import NET_A, nad, pod, put, remove
from tests.unit.test_daemon_controller import SERVER, Harness, cluster
from tests.unit.test_hostile_daemon import Answer, Script, wait_for

__all__ = ["h"]  # test_daemon_adopt's harness, for the adopted-interface test

JSON = dict[str, Any]
HUGE = "x" * 100_000


def garble(obj: JSON, **entry: Any) -> JSON:
    """`obj` (a builders pod) with its net1 network-status entry changed by `entry`."""
    out = copy.deepcopy(obj)
    annotations = out["metadata"]["annotations"]
    entries = json.loads(annotations[NETWORK_STATUS])
    entries[1].update(entry)
    annotations[NETWORK_STATUS] = json.dumps(entries)
    return out


SERVER_POD = pod("server", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.1")])


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"interface": 7}, "'interface' and 'mac' must be strings"),
        ({"default": "false"}, "'default' must be true or false"),
        ({"ips": "10.10.0.1"}, "ips: must be a list"),
        ({"ips": ["10.10.0.1", "not-an-ip"]}, "'not-an-ip' is not an IP address"),
        ({"name": ["net-a"]}, "needs a string 'name'"),
    ],
)
def test_convert_carries_a_garbled_network_status(entry: JSON, says: str) -> None:
    converted = convert(POD, garble(SERVER_POD, **entry))
    assert converted.key == "default/server"
    assert converted.problems is not None
    (message,) = converted.problems.problems
    assert NETWORK_STATUS in message and says in message
    assert converted.problems.uid == "uid-default-server" and converted.problems.node == "node-a"
    # what could not be read is left out: net1 keeps only what was readable, or is no interface at all
    attachments = converted.value.pod.attachments if converted.value is not None else ()
    assert all(a.ips == (ipaddress.ip_address("10.10.0.1"),) for a in attachments)


def test_a_good_pod_and_a_pod_mnp_does_not_read_carry_no_problems() -> None:
    assert convert(POD, SERVER_POD).problems is None
    plain = pod("plain", status=False)
    plain["spec"]["containers"][0]["ports"] = ["nonsense"]  # no Multus annotation: nothing mnp reads of it
    assert convert(POD, plain) == (("default/plain", None, "uid-default-plain", None))


def test_a_pod_whose_only_secondary_entry_is_unreadable_is_not_kept_but_reported() -> None:
    converted = convert(POD, garble(pod("only", nets=[(NET_A, "net1", "10.10.0.5")]), interface=["net1"]))
    assert converted.value is not None and converted.value.pod.attachments == ()  # kept (it requests a network)...
    gone = garble(pod("gone", nets=[(NET_A, "net1", "10.10.0.5")]), interface=["net1"])
    del gone["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
    converted = convert(POD, gone)
    assert converted.value is None  # ... and without them it is no pod mnp keeps: it still has problems to report
    assert converted.problems is not None and "must be strings" in converted.problems.problems[0]


def test_hostile_values_are_quoted_as_short_excerpts_and_few() -> None:
    converted = convert(POD, garble(SERVER_POD, ips=[HUGE]))
    assert converted.problems is not None and len(converted.problems.problems[0]) < 200
    many = garble(SERVER_POD, ips=[f"bad-{i}" for i in range(200)])  # under MAX_POD_ADDRESSES
    converted = convert(POD, many)
    assert converted.problems is not None
    assert len(converted.problems.problems) == MAX_PROBLEMS + 1
    assert converted.problems.problems[-1] == f"… and {200 - MAX_PROBLEMS} more"


def test_convert_carries_an_unreadable_nad_config() -> None:
    broken = nad("net-a")
    broken["spec"]["config"] = "{not json"
    converted = convert(NAD, broken)
    assert converted.value.config == {}
    assert converted.problems is not None and "spec.config: not valid JSON" in converted.problems.problems[0]
    broken["spec"]["config"] = "[1, 2]"
    assert convert(NAD, broken).problems == ObjectProblems(("spec.config: must be a JSON object",))
    assert convert(NAD, nad("net-a")).problems is None


def test_the_store_holds_problems_only_while_they_last() -> None:
    calls: list[int] = []
    store = Store(FakeClock(), on_change=lambda: calls.append(1))
    found = ObjectProblems(("a: b",), "uid-1")
    store.set_object_problems(POD, "default/a", found)
    store.set_object_problems(POD, "default/a", ObjectProblems(("a: b",), "uid-1"))  # the same again: no change
    generation, current = store.object_problems()
    assert current == {(POD, "default/a"): found} and len(calls) == 1
    store.replace_object_problems(POD, {"default/a": found})  # a relist finding the same
    assert store.object_problems() == (generation, current) and len(calls) == 1
    store.set_object_problems(NAD, "default/n", found)
    store.replace_object_problems(POD, {})  # a relist: fixed or deleted meanwhile; the NAD's stay
    assert store.object_problems()[1] == {(NAD, "default/n"): found}
    assert store.has_object_problems(NAD, "default/n") and not store.has_object_problems(POD, "default/a")
    store.set_object_problems(NAD, "default/n", None)
    assert store.object_problems()[1] == {} and len(calls) == 4


def test_the_reflector_carries_problems_from_list_and_watch() -> None:
    store = Store(FakeClock())
    bad = garble(SERVER_POD, default="false")
    listed = Answer({"items": [bad], "metadata": {"resourceVersion": "1"}})
    events = [
        {"type": "MODIFIED", "object": bad},  # the same again: nothing new
        {"type": "MODIFIED", "object": SERVER_POD},  # fixed
        {"type": "MODIFIED", "object": bad},
        {"type": "DELETED", "object": bad},
    ]
    script = Script([listed], [Answer(lines=events[:1]), Answer(lines=events[1:2]), Answer(lines=events[2:])])
    reflector = Reflector(Kind("pods", POD, script), store, backoff=Backoff(0.001, 0.002))
    seen: dict[int, dict[Any, ObjectProblems]] = {}  # by generation: every change of the problems, in order

    def record() -> None:
        generation, current = store.object_problems()
        seen[generation] = current

    store.on_change = record
    reflector.start()
    try:
        wait_for(lambda: script.calls.count("watch") >= 4, "every watch answer read")
        wait_for(lambda: store.get(POD, "default/server") is None, "the pod deleted")
    finally:
        script.done.set()
        reflector.stop()
    assert [bool(seen[g]) for g in sorted(seen) if g] == [True, False, True, False]
    (message,) = seen[1][(POD, "default/server")].problems
    assert "'default' must be true or false" in message


def test_the_controller_reports_a_garbled_pod_once_and_withdraws_it_when_fixed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    h.controller.node = "node-a"
    cluster(h)
    put(h.store, garble(SERVER_POD, default="false"))  # server's net1 is hidden as a primary interface
    h.ready()
    with caplog.at_level(logging.WARNING, logger="daemon"):
        h.sync()
        for _ in range(3):
            h.sync(periodic=True)
            put(h.store, garble(SERVER_POD, default="false"))  # a relist or watch event saying the same
    # closed: the interface stays in the plugin's pending table
    assert h.controller.records[SERVER.key].state == PENDING
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "drop"
    ((ref, reason, message),) = h.events.posted
    assert (ref.kind, ref.namespace, ref.name, ref.uid) == ("Pod", "default", "server", "uid-default-server")
    assert reason == "InvalidPod"
    assert message.startswith("mnpd leaves out what it cannot read, fail closed")
    assert "network-status[1]: 'default' must be true or false" in message
    lines = [r for r in caplog.records if "InvalidPod" in r.getMessage()]
    assert len(lines) == 1 and lines[0].mnp == {"pod": "default/server"}  # type: ignore[attr-defined]
    doc = status_document(h.controller, h.store.source_status(), "node-a")
    (item,) = doc["objects"]
    assert (item["kind"], item["object"]) == ("Pod", "default/server") and "'default'" in item["problems"][0]
    assert h.metrics.object_problems.labels("Pod")._value.get() == 1

    put(h.store, SERVER_POD)  # fixed
    h.sync()
    assert h.controller.records[SERVER.key].state == PROGRAMMED
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    assert status_document(h.controller, h.store.source_status(), "node-a")["objects"] == []
    assert h.metrics.object_problems.labels("Pod")._value.get() == 0
    put(h.store, garble(SERVER_POD, default="false"))  # garbled again: reported again
    h.sync()
    assert len(h.events.posted) == 2
    remove(h.store, SERVER_POD)  # deleted: withdrawn
    h.sync()
    assert status_document(h.controller, h.store.source_status(), "node-a")["objects"] == []


def test_a_garbled_peer_admits_no_one_and_only_its_own_node_posts_the_event(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.controller.node = "node-a"
    cluster(h)
    h.ready()
    h.sync()
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"
    client = pod("client", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.10")], node="node-b")
    with caplog.at_level(logging.WARNING, logger="daemon"):
        put(h.store, garble(client, ips=["10.10.0.10/24/garbage"]))
        h.sync()
        h.sync(periodic=True)
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "drop"  # its address cannot be read: no peer
    assert h.events.posted == []  # node-b's mnpd posts it
    (line,) = [r for r in caplog.records if "InvalidPod" in r.getMessage()]
    assert "'10.10.0.10/24/garbage' is not an IP address" in line.getMessage()


def test_a_garbled_pod_not_scheduled_yet_is_logged_by_every_node_and_posted_by_its_node_once_scheduled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, a pod with no node yet had its Event posted by the mnpd of every node (a hundred for one pod)."""
    h = Harness()
    h.controller.node = "node-a"
    cluster(h)
    h.ready()
    h.sync()
    unscheduled = garble(pod("late", nets=[(NET_A, "net1", "10.10.0.20")], node=""), default="false")
    with caplog.at_level(logging.WARNING, logger="daemon"):
        put(h.store, unscheduled)
        h.sync()
    assert h.events.posted == []
    assert [r for r in caplog.records if "InvalidPod" in r.getMessage()]
    put(h.store, garble(pod("late", nets=[(NET_A, "net1", "10.10.0.20")]), default="false"))  # on node-a now
    h.sync()
    ((ref, reason, _),) = h.events.posted
    assert (ref.name, reason) == ("late", "InvalidPod")


def test_an_unreadable_nad_is_reported_on_the_nad() -> None:
    h = Harness()
    cluster(h)
    broken = nad("net-a")
    broken["spec"]["config"] = "{not json"
    put(h.store, broken)
    h.ready()
    h.sync()
    ((ref, reason, message),) = h.events.posted
    assert (ref.kind, ref.api_version, ref.namespace, ref.name) == (
        "NetworkAttachmentDefinition",
        "k8s.cni.cncf.io/v1",
        "default",
        "net-a",
    )
    assert reason == "InvalidNetworkAttachmentDefinition" and "spec.config: not valid JSON" in message
    assert h.metrics.object_problems.labels("NetworkAttachmentDefinition")._value.get() == 1
    put(h.store, nad("net-a"))
    h.sync()
    assert h.metrics.object_problems.labels("NetworkAttachmentDefinition")._value.get() == 0


def test_a_sync_that_finds_the_problems_unchanged_copies_none_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many garbled pods (a hostile cluster) cost each sync one counter read, not a copy of all their problems;
    a change is still reported at the next sync."""
    h = Harness()
    cluster(h)
    for i in range(50):
        put(h.store, garble(pod(f"bad-{i}", nets=[(NET_A, "net1", f"10.10.1.{i}")]), default="false"))
    h.ready()
    h.sync()
    copies: list[int] = []
    original = h.store.object_problems

    def counted() -> Any:
        copies.append(1)
        return original()

    monkeypatch.setattr(h.store, "object_problems", counted)
    for periodic in (False, True, False):
        h.sync(periodic)
    assert copies == [] and h.metrics.object_problems.labels("Pod")._value.get() == 50
    put(h.store, pod("bad-0", nets=[(NET_A, "net1", "10.10.1.0")]))  # fixed
    h.sync()
    assert copies == [1] and h.metrics.object_problems.labels("Pod")._value.get() == 49


# ------------------------------------------------------------------------------------------- adopted interfaces


@pytest.mark.parametrize("breakage", ["pod", "nad"])
def test_an_adopted_interface_keeps_its_rules_while_its_pod_or_nad_cannot_be_read(
    breakage: str, h: Harness, tmp_path: Path
) -> None:
    """Before: the adopter took an attachment it could no longer read (a garbled network-status entry, a NAD config
    that is no JSON) for one that had left, removed the interface's chains — and the pod was open to everyone."""
    node = AdoptNode(tmp_path, h)
    path = node.netns("cni-web", net1("10.10.0.1"))
    put(h.store, adopt_web())
    h.sync()
    (entry,) = node.entries().values()
    assert h.ingress(entry, "10.10.0.10", "10.10.0.1", 80) == "accept"
    assert h.ingress(entry, "10.10.0.11", "10.10.0.1", 80) == "drop"
    if breakage == "pod":
        put(h.store, garble(adopt_web(), default="false"))
    else:
        broken = nad("net-a")
        broken["spec"]["config"] = "{not json"
        put(h.store, broken)
    for periodic in (False, True):
        h.sync(periodic)
        assert list(node.entries()) == [entry.key]
        assert "ingress_net1" in h.nfts[path].list_table().chains
        assert h.ingress(entry, "10.10.0.11", "10.10.0.1", 80) == "drop"  # never wider
    put(h.store, adopt_web(), nad("net-a"))  # fixed
    h.sync()
    assert h.ingress(entry, "10.10.0.10", "10.10.0.1", 80) == "accept"
    assert h.ingress(entry, "10.10.0.11", "10.10.0.1", 80) == "drop"
    remove(h.store, adopt_web())  # gone: its chains and entry go as before
    h.sync()
    assert node.entries() == {} and "ingress_net1" not in h.nfts[path].list_table().chains
