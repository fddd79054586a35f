"""The fake API server (tests/support/fakeapi.py) driven by the real official ``kubernetes`` client over HTTP."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.support.fakeapi import FakeKubeAPI, KubeStatusError, fake_api

__all__ = ["fake_api"]  # the fixture is imported for pytest to find; this marks it as used (until a conftest does it)

GROUP = "k8s.cni.cncf.io"
NAD = (GROUP, "v1", "network-attachment-definitions", "NetworkAttachmentDefinition")
MNP = (GROUP, "v1beta1", "multi-networkpolicies", "MultiNetworkPolicy")


def pod(name: str, ns: str = "default", labels: dict[str, str] | None = None, node: str | None = None) -> Any:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "registry.invalid/app"}]}
    if node:
        spec["nodeName"] = node
    meta = {"name": name, "namespace": ns, "labels": labels or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def custom(crd: tuple[str, str, str, str], name: str, ns: str = "default", spec: Any = None) -> Any:
    meta = {"name": name, "namespace": ns}
    return {"apiVersion": f"{crd[0]}/{crd[1]}", "kind": crd[3], "metadata": meta, "spec": spec or {}}


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)  # polling interval, not synchronisation: the deadline decides


def status_of(exc: ApiException) -> Any:
    return json.loads(exc.body)


def names(items: list[Any]) -> list[str]:
    return [i.metadata.name if hasattr(i, "metadata") else i["metadata"]["name"] for i in items]


class Collector:
    """Runs ``watch.Watch().stream(...)`` in a thread and keeps what it yields and how it ended."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.watch = watch.Watch()
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, func: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            for event in self.watch.stream(func, *args, **kwargs):
                self.events.append(event)
        except BaseException as e:
            self.error = e
        finally:
            self.done.set()

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[str, str]]:
        wait_until(lambda: len(self.events) >= count or self.done.is_set(), timeout)
        return self.summary()

    def summary(self) -> list[tuple[str, str]]:
        return [(e["type"], e["raw_object"]["metadata"].get("name", "")) for e in self.events]

    def close(self) -> None:
        self.watch.stop()
        self._thread.join(5)
        assert not self._thread.is_alive()


@pytest.fixture
def api_client(fake_api: FakeKubeAPI) -> Iterator[client.ApiClient]:
    with client.ApiClient(fake_api.client_configuration()) as api_client:
        yield api_client


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def crds(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture
def collectors() -> Iterator[Callable[..., Collector]]:
    started: list[Collector] = []

    def start(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Collector:
        started.append(Collector(func, *args, **kwargs))
        return started[-1]

    yield start
    for c in started:
        c.close()


# --- CRUD --------------------------------------------------------------------------------------------------


def test_discovery(api_client: client.ApiClient) -> None:
    assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]
    groups = {g.name: [v.version for v in g.versions] for g in client.ApisApi(api_client).get_api_versions().groups}
    assert groups == {"events.k8s.io": ["v1"], GROUP: ["v1", "v1beta1"]}
    resources = client.CoreV1Api(api_client).get_api_resources().resources
    assert {r.name: r.namespaced for r in resources} == {"namespaces": False, "pods": True, "events": True}
    assert client.VersionApi(api_client).get_code().major == "1"


def test_pod_crud(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod(
        "default",
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="p1", labels={"app": "a"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="img")], node_name="n1"),
        ),
    )
    assert created.metadata.uid and created.metadata.creation_timestamp and created.metadata.namespace == "default"
    rv = int(created.metadata.resource_version)
    assert core.read_namespaced_pod("p1", "default").metadata.uid == created.metadata.uid
    assert names(core.list_namespaced_pod("default").items) == ["p1"]
    assert names(core.list_pod_for_all_namespaces().items) == ["p1"]

    patched = core.patch_namespaced_pod("p1", "default", {"metadata": {"labels": {"tier": "web"}}})  # strategic
    assert patched.metadata.labels == {"app": "a", "tier": "web"}
    assert int(patched.metadata.resource_version) == rv + 1

    patched.metadata.labels = {"only": "this"}
    replaced = core.replace_namespaced_pod("p1", "default", patched)
    assert replaced.metadata.labels == {"only": "this"} and replaced.metadata.uid == created.metadata.uid

    deleted = core.delete_namespaced_pod("p1", "default")
    assert deleted.metadata.name == "p1" and int(deleted.metadata.resource_version) == rv + 3
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod("p1", "default")
    assert exc.value.status == 404
    assert status_of(exc.value) | {"details": None} == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "p1" not found', "reason": "NotFound", "code": 404, "details": None,
    }  # fmt: skip
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_pod("p1", "default")
    assert exc.value.status == 404


@pytest.mark.parametrize(
    ("call", "code", "reason"),
    [
        (lambda core: core.create_namespaced_pod("default", pod("dup")), 409, "AlreadyExists"),
        (lambda core: core.create_namespaced_pod("nowhere", pod("x", ns="nowhere")), 404, "NotFound"),
        (lambda core: core.create_namespaced_pod("default", pod("Bad_Name")), 422, "Invalid"),
        (lambda core: core.create_namespaced_pod("default", pod("x", ns="other")), 400, "BadRequest"),
        (lambda core: core.replace_namespaced_pod("dup", "default", pod("other")), 400, "BadRequest"),
        (
            lambda core: core.patch_namespaced_pod("dup", "default", [{"op": "test", "path": "/x", "value": 1}]),
            422,
            None,
        ),
        (lambda core: core.read_namespace("nope"), 404, "NotFound"),
    ],
    ids=["duplicate", "missing-namespace", "bad-name", "namespace-mismatch", "name-mismatch", "json-patch", "ns"],
)
def test_errors_are_status_objects(
    fake_api: FakeKubeAPI, core: client.CoreV1Api, call: Callable[[Any], Any], code: int, reason: str | None
) -> None:
    fake_api.create(pod("dup"))
    with pytest.raises(ApiException) as exc:
        call(core)
    assert exc.value.status == code
    body = status_of(exc.value)
    assert body["kind"] == "Status" and body["code"] == code and body["message"]
    assert reason is None or body["reason"] == reason


def test_optimistic_concurrency(core: client.CoreV1Api) -> None:
    p = core.create_namespaced_pod("default", pod("p1"))
    core.patch_namespaced_pod("p1", "default", {"metadata": {"labels": {"a": "1"}}})
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_pod("p1", "default", p)  # carries the old resourceVersion
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "Conflict"
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_pod("p1", "default", {"metadata": {"resourceVersion": p.metadata.resource_version}})
    assert exc.value.status == 409
    stale = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=p.metadata.resource_version))
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_pod("p1", "default", body=stale)
    assert exc.value.status == 409


def test_noop_write_keeps_resource_version(fake_api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    p = core.create_namespaced_pod("default", pod("p1", labels={"a": "1"}))
    again = core.patch_namespaced_pod("p1", "default", {"metadata": {"labels": {"a": "1"}}})
    assert again.metadata.resource_version == p.metadata.resource_version
    assert fake_api.resource_version == int(p.metadata.resource_version)


def test_json_patch(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("p1", labels={"a": "1"}))
    ops = [
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/a"},
        {"op": "add", "path": "/spec/containers/-", "value": {"name": "d", "image": "img"}},
        {"op": "test", "path": "/spec/containers/1/name", "value": "d"},
        {"op": "copy", "from": "/metadata/labels/b", "path": "/metadata/labels/c"},
    ]
    patched = core.patch_namespaced_pod("p1", "default", ops)
    assert patched.metadata.labels == {"b": "2", "c": "2"}
    assert [c.name for c in patched.spec.containers] == ["c", "d"]


@pytest.mark.parametrize("crd", [NAD, MNP], ids=["nad-v1", "mnp-v1beta1"])
def test_custom_object_crud(crds: client.CustomObjectsApi, crd: tuple[str, str, str, str]) -> None:
    group, version, plural, _ = crd
    created = crds.create_namespaced_custom_object(group, version, "default", plural, custom(crd, "o1", spec={"a": 1}))
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    assert crds.get_namespaced_custom_object(group, version, "default", plural, "o1")["spec"] == {"a": 1}
    listed = crds.list_namespaced_custom_object(group, version, "default", plural)
    assert listed["kind"] == f"{crd[3]}List" and names(listed["items"]) == ["o1"]
    assert listed["items"][0]["kind"] == crd[3]  # custom resource list items keep kind/apiVersion
    assert names(crds.list_cluster_custom_object(group, version, plural)["items"]) == ["o1"]

    patched = crds.patch_namespaced_custom_object(group, version, "default", plural, "o1", {"spec": {"b": 2}})
    assert patched["spec"] == {"a": 1, "b": 2} and patched["metadata"]["generation"] == 2
    labelled = crds.patch_namespaced_custom_object(
        group, version, "default", plural, "o1", {"metadata": {"labels": {"x": "y"}}}
    )
    assert labelled["metadata"]["generation"] == 2  # only spec changes bump the generation

    with pytest.raises(ApiException) as exc:  # stale resourceVersion
        crds.replace_namespaced_custom_object(group, version, "default", plural, "o1", created)
    assert exc.value.status == 409
    with pytest.raises(ApiException) as exc:  # a real server wants a resourceVersion on custom resource updates
        crds.replace_namespaced_custom_object(group, version, "default", plural, "o1", custom(crd, "o1"))
    assert exc.value.status == 422
    with pytest.raises(ApiException) as exc:
        crds.patch_namespaced_custom_object(
            group,
            version,
            "default",
            plural,
            "o1",
            {"spec": {}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert exc.value.status == 415  # as on a real server: no strategic merge patch for custom resources
    labelled["spec"] = {"c": 3}
    assert crds.replace_namespaced_custom_object(group, version, "default", plural, "o1", labelled)["spec"] == {"c": 3}

    assert crds.delete_namespaced_custom_object(group, version, "default", plural, "o1")["metadata"]["name"] == "o1"
    with pytest.raises(ApiException) as exc:
        crds.get_namespaced_custom_object(group, version, "default", plural, "o1")
    assert exc.value.status == 404 and status_of(exc.value)["message"] == f'{plural}.{GROUP} "o1" not found'


def test_events_both_apis(api_client: client.ApiClient) -> None:
    involved = client.V1ObjectReference(kind="Pod", namespace="default", name="p1")
    event = client.CoreV1Event(metadata=client.V1ObjectMeta(name="e1"), involved_object=involved, reason="Applied")
    client.CoreV1Api(api_client).create_namespaced_event("default", event)
    listed = client.CoreV1Api(api_client).list_namespaced_event("default", field_selector="involvedObject.name=p1")
    assert names(listed.items) == ["e1"]
    new_api = client.EventsV1Api(api_client)
    new_api.create_namespaced_event(
        "default", client.EventsV1Event(metadata=client.V1ObjectMeta(name="e2"), event_time=datetime.now(UTC))
    )
    assert names(new_api.list_event_for_all_namespaces().items) == ["e2"]


def test_direct_helpers(fake_api: FakeKubeAPI) -> None:
    created = fake_api.create(custom(MNP, "m1", spec={"podSelector": {}}))
    assert fake_api.get("MultiNetworkPolicy", "default", "m1") == created
    updated = fake_api.update(custom(MNP, "m1", spec={"x": 1}))  # unconditional without a resourceVersion
    assert updated["spec"] == {"x": 1} and updated["metadata"]["uid"] == created["metadata"]["uid"]
    fake_api.patch("multi-networkpolicies", "default", "m1", [{"op": "replace", "path": "/spec/x", "value": 2}], "json")
    assert [o["spec"] for o in fake_api.objects("multi-networkpolicies.k8s.cni.cncf.io")] == [{"x": 2}]
    assert fake_api.delete("MultiNetworkPolicy", "default", "m1")["metadata"]["name"] == "m1"
    assert fake_api.get("MultiNetworkPolicy", "default", "m1") is None
    with pytest.raises(KubeStatusError) as exc:
        fake_api.delete("MultiNetworkPolicy", "default", "m1")
    assert exc.value.code == 404
    assert [o["metadata"]["name"] for o in fake_api.objects("Namespace")] == ["default"]


# --- watch -------------------------------------------------------------------------------------------------


def test_watch_from_list_rv_sees_changes_in_order(fake_api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    fake_api.create(pod("p1"))
    rv = core.list_namespaced_pod("default").metadata.resource_version
    fake_api.create(pod("p2"))
    core.patch_namespaced_pod("p1", "default", {"metadata": {"labels": {"a": "b"}}})
    fake_api.delete("Pod", "default", "p2")
    fake_api.create(pod("q"))
    w = watch.Watch()
    seen = []
    for event in w.stream(core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name, int(event["object"].metadata.resource_version)))
        if len(seen) == 4:
            w.stop()
    base = int(rv)
    assert seen == [
        ("ADDED", "p2", base + 1),
        ("MODIFIED", "p1", base + 2),
        ("DELETED", "p2", base + 3),
        ("ADDED", "q", base + 4),
    ]


def test_live_watch(fake_api: FakeKubeAPI, core: client.CoreV1Api, collectors: Callable[..., Collector]) -> None:
    rv = core.list_namespaced_pod("default").metadata.resource_version
    c = collectors(core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=10)
    assert fake_api.wait_for_watches(1, "Pod")
    core.create_namespaced_pod("default", pod("p1"))
    core.patch_namespaced_pod("p1", "default", {"metadata": {"labels": {"a": "b"}}})
    core.delete_namespaced_pod("p1", "default")
    assert c.wait(3) == [("ADDED", "p1"), ("MODIFIED", "p1"), ("DELETED", "p1")]
    rvs = [int(e["object"].metadata.resource_version) for e in c.events]
    assert rvs == sorted(rvs) and rvs[-1] == fake_api.resource_version


def test_watch_without_rv_sends_synthetic_added(
    fake_api: FakeKubeAPI, crds: client.CustomObjectsApi, collectors: Callable[..., Collector]
) -> None:
    fake_api.create(custom(MNP, "b"))
    fake_api.create(custom(MNP, "a"))
    c = collectors(
        crds.list_namespaced_custom_object, GROUP, "v1beta1", "default", "multi-networkpolicies", timeout_seconds=10
    )
    assert c.wait(2) == [("ADDED", "a"), ("ADDED", "b")]
    fake_api.create(custom(MNP, "c"))
    assert c.wait(3)[2:] == [("ADDED", "c")]


def test_bookmarks(fake_api: FakeKubeAPI, core: client.CoreV1Api, collectors: Callable[..., Collector]) -> None:
    fake_api.bookmark_interval = 0.05
    rv = core.list_namespaced_pod("default").metadata.resource_version
    c = collectors(
        core.list_namespaced_pod, "default", resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=10
    )
    assert fake_api.wait_for_watches(1)
    fake_api.create(pod("p1"))
    wait_until(
        lambda: any(
            e["type"] == "BOOKMARK" and e["raw_object"]["metadata"]["resourceVersion"] == str(fake_api.resource_version)
            for e in c.events
        )
    )
    assert c.watch.resource_version == str(fake_api.resource_version)  # the client tracks bookmark rvs


def test_timeout_seconds_ends_the_stream(core: client.CoreV1Api) -> None:
    start = time.monotonic()
    assert list(watch.Watch().stream(core.list_namespaced_pod, "default", timeout_seconds=1)) == []
    assert 0.9 < time.monotonic() - start < 3


def test_compacted_rv_raises_410(fake_api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    rv = core.list_namespaced_pod("default").metadata.resource_version
    fake_api.create(pod("p1"))
    fake_api.compact()
    before = len(fake_api.requests)
    with pytest.raises(ApiException) as exc:
        list(watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=5))
    assert exc.value.status == 410 and "too old resource version" in exc.value.reason
    assert len(fake_api.requests) == before + 1
    with pytest.raises(ApiException) as exc:  # without a timeout the client retries once, then gives up
        list(watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=rv))
    assert exc.value.status == 410 and len(fake_api.requests) == before + 3
    # the recovery path: re-list, watch from the new rv
    relist = core.list_namespaced_pod("default")
    assert names(relist.items) == ["p1"] and int(relist.metadata.resource_version) == fake_api.resource_version


def test_history_overflow_raises_410() -> None:
    with FakeKubeAPI(history_size=3) as api, client.ApiClient(api.client_configuration()) as ac:
        core = client.CoreV1Api(ac)
        rv = core.list_namespaced_pod("default").metadata.resource_version
        for i in range(2):
            api.create(pod(f"p{i}"))
        w = watch.Watch()
        kept = [
            e["type"] for e in itertools.islice(w.stream(core.list_namespaced_pod, "default", resource_version=rv), 2)
        ]
        assert kept == ["ADDED", "ADDED"]
        w.stop()
        for i in range(2, 5):
            api.create(pod(f"p{i}"))
        with pytest.raises(ApiException) as exc:
            list(watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=1))
        assert exc.value.status == 410


# --- selectors and pagination ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a", "b"]),
        ("app==web", ["a", "b"]),
        ("app!=web", ["c", "d"]),
        ("app in (web, db)", ["a", "b", "c"]),
        ("app notin (web,db)", ["d"]),
        ("tier", ["a", "c"]),
        ("!tier", ["b", "d"]),
        ("app=web,tier=front", ["a"]),
        ("app in (web,db),!tier", ["b"]),
        ("", ["a", "b", "c", "d"]),
    ],
)
def test_label_selectors_on_list(
    fake_api: FakeKubeAPI, core: client.CoreV1Api, selector: str, expected: list[str]
) -> None:
    fake_api.create(pod("a", labels={"app": "web", "tier": "front"}))
    fake_api.create(pod("b", labels={"app": "web"}))
    fake_api.create(pod("c", labels={"app": "db", "tier": "back"}))
    fake_api.create(pod("d"))
    assert names(core.list_namespaced_pod("default", label_selector=selector).items) == expected


def test_field_selectors_on_list(fake_api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    fake_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    fake_api.create(pod("a", node="n1"))
    fake_api.create(pod("b", node="n2"))
    fake_api.create(pod("c", ns="other", node="n1"))
    fake_api.create(pod("d"))
    assert names(core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items) == ["a", "c"]
    assert names(core.list_pod_for_all_namespaces(field_selector="spec.nodeName=").items) == ["d"]
    assert names(core.list_namespaced_pod("default", field_selector="spec.nodeName!=n1").items) == ["b", "d"]
    assert names(core.list_pod_for_all_namespaces(field_selector="metadata.namespace=other").items) == ["c"]
    assert names(core.list_pod_for_all_namespaces(field_selector="metadata.name==b,spec.nodeName=n2").items) == ["b"]
    assert names(core.list_namespace(field_selector="metadata.name!=default").items) == ["other"]


@pytest.mark.parametrize(
    ("label_selector", "field_selector"),
    [("app in (a", ""), ("a=b=c", ""), ("", "spec.containers=x"), ("", "nonsense")],
)
def test_invalid_selectors_are_400(core: client.CoreV1Api, label_selector: str, field_selector: str) -> None:
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod("default", label_selector=label_selector, field_selector=field_selector)
    assert exc.value.status == 400 and status_of(exc.value)["reason"] == "BadRequest"


def test_watch_selector_transitions(
    fake_api: FakeKubeAPI, core: client.CoreV1Api, collectors: Callable[..., Collector]
) -> None:
    fake_api.create(pod("p1", labels={"app": "web"}))
    c = collectors(core.list_namespaced_pod, "default", label_selector="app=web", timeout_seconds=10)
    assert c.wait(1) == [("ADDED", "p1")]
    fake_api.create(pod("p2", labels={"app": "db"}))  # never matches: not seen
    fake_api.patch("Pod", "default", "p1", {"metadata": {"labels": {"app": "db"}}})  # stops matching
    fake_api.patch("Pod", "default", "p2", {"metadata": {"labels": {"app": "web"}}})  # starts matching
    fake_api.patch("Pod", "default", "p2", {"metadata": {"annotations": {"x": "y"}}})
    fake_api.delete("Pod", "default", "p2")
    assert c.wait(5) == [("ADDED", "p1"), ("DELETED", "p1"), ("ADDED", "p2"), ("MODIFIED", "p2"), ("DELETED", "p2")]
    gone = c.events[1]["object"]
    assert gone.metadata.labels == {"app": "web"}  # the last matching state, at the rv of the change
    assert int(gone.metadata.resource_version) == int(c.events[2]["object"].metadata.resource_version) - 1


def test_watch_field_selector_node_name(
    fake_api: FakeKubeAPI, core: client.CoreV1Api, collectors: Callable[..., Collector]
) -> None:
    fake_api.create(pod("unscheduled"))
    c = collectors(core.list_pod_for_all_namespaces, field_selector="spec.nodeName=n1", timeout_seconds=10)
    assert fake_api.wait_for_watches(1)
    fake_api.create(pod("elsewhere", node="n2"))
    fake_api.update(pod("unscheduled", node="n1"))  # scheduled onto our node
    assert c.wait(1) == [("ADDED", "unscheduled")]


def test_pagination_is_a_consistent_snapshot(fake_api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    for i in range(7):
        fake_api.create(pod(f"p{i}"))
    first = core.list_namespaced_pod("default", limit=3)
    assert names(first.items) == ["p0", "p1", "p2"] and first.metadata.remaining_item_count == 4
    fake_api.delete("Pod", "default", "p4")  # changes after the first page do not show in later pages
    fake_api.create(pod("p5a"))
    second = core.list_namespaced_pod("default", limit=3, _continue=first.metadata._continue)
    third = core.list_namespaced_pod("default", limit=3, _continue=second.metadata._continue)
    assert names(second.items) == ["p3", "p4", "p5"] and names(third.items) == ["p6"]
    assert third.metadata._continue is None
    assert first.metadata.resource_version == second.metadata.resource_version == third.metadata.resource_version
    assert names(core.list_namespaced_pod("default", limit=10, label_selector="").items)[4:6] == ["p5", "p5a"]


def test_continue_token_expires_after_compaction(fake_api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    for i in range(3):
        fake_api.create(pod(f"p{i}"))
    first = core.list_namespaced_pod("default", limit=1)
    fake_api.compact()
    assert names(core.list_namespaced_pod("default", limit=1, _continue=first.metadata._continue).items) == ["p1"]
    fake_api.create(pod("p3"))
    fake_api.compact()
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod("default", limit=1, _continue=first.metadata._continue)
    assert exc.value.status == 410 and status_of(exc.value)["reason"] == "Expired"


# --- faults and lifecycle ----------------------------------------------------------------------------------


def test_injected_failures(fake_api: FakeKubeAPI, core: client.CoreV1Api, crds: client.CustomObjectsApi) -> None:
    fake_api.fail_next(2)
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            core.list_namespaced_pod("default")
        assert exc.value.status == 500 and status_of(exc.value)["reason"] == "InternalError"
    assert core.list_namespaced_pod("default").items == []
    fake_api.fail_next(1, 503, path_contains="multi-networkpolicies")
    fake_api.fail_next(1, 429, method="POST")
    assert core.list_namespaced_pod("default").items == []
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("default", pod("p1"))
    assert exc.value.status == 429
    with pytest.raises(ApiException) as exc:
        crds.list_namespaced_custom_object(GROUP, "v1beta1", "default", "multi-networkpolicies")
    assert exc.value.status == 503
    fake_api.fail_next(1, 500, path_contains="watch=true")
    with pytest.raises(ApiException) as exc:
        list(watch.Watch().stream(core.list_namespaced_pod, "default", timeout_seconds=1))
    assert exc.value.status == 500


def test_dropped_watch_ends_the_client_stream(
    fake_api: FakeKubeAPI, core: client.CoreV1Api, collectors: Callable[..., Collector]
) -> None:
    c = collectors(core.list_namespaced_pod, "default", timeout_seconds=60)
    assert fake_api.wait_for_watches(1)
    assert fake_api.drop_watches() == 1
    assert c.done.wait(2) and c.error is None
    wait_until(lambda: fake_api.watch_count() == 0)


def test_dropped_watch_without_timeout_resumes_from_last_rv(
    fake_api: FakeKubeAPI, core: client.CoreV1Api, collectors: Callable[..., Collector]
) -> None:
    c = collectors(core.list_namespaced_pod, "default")  # no timeout: the client re-watches from its last rv
    fake_api.create(pod("p1"))
    assert c.wait(1) == [("ADDED", "p1")]
    fake_api.drop_watches()
    fake_api.create(pod("p2"))  # happens while no watch is open
    assert c.wait(2) == [("ADDED", "p1"), ("ADDED", "p2")]
    watches = [r.query.get("resourceVersion") for r in fake_api.requests if r.query.get("watch")]
    assert watches == [None, c.events[0]["object"].metadata.resource_version]


def test_abrupt_drop_breaks_the_client_stream(
    fake_api: FakeKubeAPI, core: client.CoreV1Api, collectors: Callable[..., Collector]
) -> None:
    c = collectors(core.list_namespaced_pod, "default", timeout_seconds=60)
    assert fake_api.wait_for_watches(1)
    fake_api.drop_watches(abrupt=True)
    assert c.done.wait(2) and isinstance(c.error, urllib3.exceptions.ProtocolError)


def test_slow_answers(fake_api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    """The delay applies to the matching paths only. It is long against a local answer (milliseconds), so that a
    loaded CI machine cannot blur the two."""
    fake_api.set_delay(1.0, path_contains="/pods")
    start = time.monotonic()
    core.list_namespace()
    assert time.monotonic() - start < 0.9
    start = time.monotonic()
    core.list_namespaced_pod("default")
    assert time.monotonic() - start >= 1.0
    with pytest.raises(urllib3.exceptions.HTTPError):
        core.list_namespaced_pod("default", _request_timeout=0.2)
    fake_api.set_delay(0)
    start = time.monotonic()
    core.list_namespaced_pod("default")
    assert time.monotonic() - start < 0.9


def test_namespace_delete_cascades(
    fake_api: FakeKubeAPI, core: client.CoreV1Api, collectors: Callable[..., Collector]
) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team", labels={"x": "y"})))
    assert core.read_namespace("team").status.phase == "Active"
    fake_api.create(pod("p1", ns="team"))
    fake_api.create(custom(MNP, "m1", ns="team"))
    c = collectors(core.list_pod_for_all_namespaces, timeout_seconds=10)
    assert c.wait(1) == [("ADDED", "p1")]
    core.delete_namespace("team")
    assert c.wait(2) == [("ADDED", "p1"), ("DELETED", "p1")]
    assert fake_api.objects("MultiNetworkPolicy") == [] and fake_api.get("Namespace", None, "team") is None


def test_concurrent_writers_are_seen_in_rv_order(
    fake_api: FakeKubeAPI, api_client: client.ApiClient, collectors: Callable[..., Collector]
) -> None:
    core = client.CoreV1Api(api_client)
    c = collectors(core.list_namespaced_pod, "default", timeout_seconds=20)
    assert fake_api.wait_for_watches(1)

    def writer(n: int) -> None:
        for i in range(20):
            core.create_namespaced_pod("default", pod(f"w{n}-{i}"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(c.wait(80)) == 80
    rvs = [int(e["object"].metadata.resource_version) for e in c.events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 80


def test_stop_with_open_watch_is_clean() -> None:
    api = FakeKubeAPI().start()
    with client.ApiClient(api.client_configuration()) as ac:
        core = client.CoreV1Api(ac)
        core.list_namespace()  # leaves an idle keep-alive connection behind
        c = Collector(core.list_namespaced_pod, "default", timeout_seconds=60)
        assert api.wait_for_watches(1)
        start = time.monotonic()
        api.stop()
        assert time.monotonic() - start < 2
        assert c.done.wait(2)
        c.close()
    assert not [t for t in threading.enumerate() if t.name == "fakeapi" or "process_request_thread" in t.name]
    assert not api.server_errors
