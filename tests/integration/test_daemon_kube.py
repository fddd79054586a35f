"""The API source (reflectors) and Kubernetes Events against FakeKubeAPI over real HTTP, with the real client.

Covered: initial paginated list and the synced report, watch updates, bookmarks moving the resourceVersion,
410 Gone → relist (missed deletions are noticed), dropped watches (graceful and abrupt) → reconnect, 500s →
backoff and recovery, and a whole in-process daemon posting Events for an invalid policy and a failed pod.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from daemon.clock import SystemClock
from daemon.config import load
from daemon.events import KubeEvents, pod_ref, policy_ref
from daemon.sources.kube import PAGE_SIZE, Backoff, CoreV1, KubeSource, Reflector, core_v1, kinds
from daemon.store import NAD, NAMESPACE, POD, POLICY, Store
from shared.nft.errors import NftError
from shared.nft.fake import FakeNft, TableView
from shared.nft.transaction import Transaction
from shared.state import StateStore
from tests.support.fakeapi import FakeKubeAPI, fake_api
from tests.support.poll import wait_for
from tests.unit.test_daemon_builders import NET_A, entry, nad, namespace, pod, policy

__all__ = ["fake_api"]

FAST = Backoff(initial=0.02, maximum=0.2)


def api_objects(*objects: dict[str, object]) -> list[dict[str, object]]:
    """Builders' objects as one would create them (no uid: the server assigns it)."""
    out = []
    for obj in objects:
        meta = {k: v for k, v in obj["metadata"].items() if k != "uid"}  # type: ignore[attr-defined]
        out.append({**obj, "metadata": meta})
    return out


@pytest.fixture
def api_client(fake_api: FakeKubeAPI) -> Iterator[k8s.ApiClient]:
    with k8s.ApiClient(fake_api.client_configuration()) as c:
        yield c


def seed(api: FakeKubeAPI) -> None:
    api.create(namespace("blue", {"team": "blue"}))
    for obj in api_objects(
        pod("a", labels={"app": "a"}, nets=[(NET_A, "net1", "10.10.0.1")]),
        pod("b", "blue", nets=[(NET_A, "net1", "10.10.0.2")]),
        pod("plain"),  # no secondary network: not kept
        nad("net-a"),
        policy("p1", select={"app": "a"}, ingress=[]),
    ):
        api.create(obj)


@pytest.fixture
def source(fake_api: FakeKubeAPI, api_client: k8s.ApiClient) -> Iterator[tuple[KubeSource, Store]]:
    store = Store(SystemClock())
    src = KubeSource(store, api_client, watch_timeout=30, backoff=FAST)
    yield src, store
    src.stop()


def reflector(src: KubeSource, name: str) -> Reflector:
    return next(r for r in src.reflectors if r.kind.name == name)


def test_initial_list_then_watch(fake_api: FakeKubeAPI, source: tuple[KubeSource, Store]) -> None:
    seed(fake_api)
    src, store = source
    src.start()
    wait_for(store.synced)
    assert store.source_status() == {
        "api/multi-networkpolicies": True,
        "api/pods": True,
        "api/namespaces": True,
        "api/network-attachment-definitions": True,
    }
    assert store.get(POD, "default/a").pod.labels == {"app": "a"}
    assert store.get(POD, "default/plain") is None
    assert store.get(NAMESPACE, "blue").labels["team"] == "blue"
    assert store.get(NAD, "default/net-a") is not None
    assert store.get(POLICY, "default/p1") is not None
    assert store.uid(POD, "default/a") == fake_api.get("pod", "default", "a")["metadata"]["uid"]  # type: ignore[index]
    wait_for(lambda: fake_api.watch_count() == 4)

    fake_api.patch("pod", "default", "a", {"metadata": {"labels": {"app": "z"}}})
    fake_api.create(api_objects(policy("p2", select={"app": "z"}, ingress=[]))[0])
    fake_api.delete("pod", "blue", "b")
    wait_for(lambda: store.get(POD, "default/a").pod.labels == {"app": "z"})
    wait_for(lambda: store.get(POLICY, "default/p2") is not None)
    wait_for(lambda: store.get(POD, "blue/b") is None)
    lists = [r for r in fake_api.requests if r.method == "GET" and "watch" not in r.query]
    assert all(r.query.get("limit") == str(PAGE_SIZE) for r in lists if "namespaces" not in r.path or "pods" in r.path)
    watches = [r for r in fake_api.requests if r.query.get("watch") in ("true", "True", "1")]
    assert all(r.query.get("allowWatchBookmarks") in ("true", "True") for r in watches)
    assert all(r.query.get("timeoutSeconds") == "30" for r in watches)
    assert all(r.query.get("resourceVersion") for r in watches)


def test_paginated_list(fake_api: FakeKubeAPI, api_client: k8s.ApiClient) -> None:
    for i in range(7):
        fake_api.create(api_objects(pod(f"p{i}", nets=[(NET_A, "net1", f"10.10.0.{i + 1}")]))[0])
    store = Store(SystemClock())
    pods = next(k for k in kinds(api_client) if k.name == "pods")
    r = Reflector(pods, store, watch_timeout=30, backoff=FAST, page_size=3)
    try:
        r.start()
        wait_for(store.synced)
        assert store.count(POD) == 7
        pages = [q.query for q in fake_api.requests if q.path == "/api/v1/pods" and "watch" not in q.query]
        assert len(pages) == 3 and "continue" in pages[1]
    finally:
        r.stop()


def test_bookmarks_move_the_resource_version(fake_api: FakeKubeAPI, source: tuple[KubeSource, Store]) -> None:
    src, store = source
    src.start()
    wait_for(store.synced)
    pods = reflector(src, "pods")
    listed = int(pods.resource_version or 0)
    fake_api.create(namespace("elsewhere"))  # bumps the global resourceVersion, no pod changes
    target = fake_api.resource_version
    assert target > listed
    wait_for(lambda: int(pods.resource_version or 0) >= target)  # only a BOOKMARK can have told it


def test_410_gone_relists_and_notices_what_was_missed(fake_api: FakeKubeAPI, source: tuple[KubeSource, Store]) -> None:
    seed(fake_api)
    src, store = source
    src.start()
    wait_for(store.synced)
    wait_for(lambda: fake_api.watch_count("pods") == 1)
    pods = reflector(src, "pods")
    # Keep the pod watch from reconnecting for a moment, change things, then forget the history.
    fake_api.fail_next(3, 503, path_contains="/api/v1/pods?", method="GET")
    fake_api.drop_watches(abrupt=True)
    fake_api.delete("pod", "default", "a")
    fake_api.create(api_objects(pod("c", nets=[(NET_A, "net1", "10.10.0.3")]))[0])
    fake_api.compact()
    wait_for(lambda: pods.lists >= 2)  # the stale watch got 410 and the reflector listed again
    wait_for(lambda: store.get(POD, "default/a") is None and store.get(POD, "default/c") is not None)
    wait_for(lambda: fake_api.watch_count("pods") == 1)
    fake_api.patch("pod", "default", "c", {"metadata": {"labels": {"after": "relist"}}})
    wait_for(lambda: store.get(POD, "default/c").pod.labels == {"after": "relist"})


def test_dropped_watches_reconnect(fake_api: FakeKubeAPI, source: tuple[KubeSource, Store]) -> None:
    src, store = source
    src.start()
    wait_for(store.synced)
    wait_for(lambda: fake_api.watch_count() == 4)
    for abrupt in (False, True):
        before = reflector(src, "pods").watches
        fake_api.drop_watches(abrupt=abrupt)
        wait_for(lambda before=before: reflector(src, "pods").watches > before)  # type: ignore[misc]
        key = f"after-{'abrupt' if abrupt else 'graceful'}"
        fake_api.create(api_objects(pod(key, nets=[(NET_A, "net1", "10.10.0.9")]))[0])
        wait_for(lambda key=key: store.get(POD, f"default/{key}") is not None)  # type: ignore[misc]
    assert reflector(src, "pods").lists == 1  # a reconnect within the history needs no relist


def test_server_errors_back_off_and_recover(fake_api: FakeKubeAPI, source: tuple[KubeSource, Store]) -> None:
    seed(fake_api)
    fake_api.fail_next(4, 500, path_contains="/api/v1/pods")
    src, store = source
    start = time.monotonic()
    src.start()
    wait_for(store.synced)
    pod_lists = [r for r in fake_api.requests if r.path == "/api/v1/pods"]
    assert len(pod_lists) >= 5  # four failures, then the list that worked
    assert store.get(POD, "default/a") is not None
    assert time.monotonic() - start < 5.0  # capped backoff (0.2 s here)


@pytest.mark.parametrize(
    "answer",
    [
        # a chunk announced at 256 TiB: read whole, the allocation raised MemoryError and ended the reflector
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"FFFFFFFFFFFF\r\n" + b'{"type": "ADDED", ' * 100,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # no chunk size at all
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n\xff\xfe\x00{[",  # no JSON
        b"garbage, no HTTP\r\n\r\n",
    ],
    ids=["huge-chunk", "bad-chunk-size", "not-json", "not-http"],
)
def test_a_broken_watch_answer_ends_no_reflector(
    fake_api: FakeKubeAPI, source: tuple[KubeSource, Store], answer: bytes
) -> None:
    """Whatever a hostile or broken server answers a watch with, the reflector goes on: it watches again and sees
    the next change (before: the huge chunk's MemoryError ended the pods' reflector, silently — no new pod was
    ever programmed again and deleted peers stayed admitted)."""
    src, store = source
    src.start()
    wait_for(store.synced)
    wait_for(lambda: fake_api.watch_count("pods") == 1)
    fake_api.answer_raw_next(answer, path_contains="/api/v1/pods?")
    fake_api.drop_watches(abrupt=True)
    fake_api.create(api_objects(pod("after", nets=[(NET_A, "net1", "10.10.0.9")]))[0])
    wait_for(lambda: store.get(POD, "default/after") is not None)
    assert reflector(src, "pods")._thread.is_alive()


def test_slow_answers_do_not_lose_events(fake_api: FakeKubeAPI, source: tuple[KubeSource, Store]) -> None:
    fake_api.set_delay(0.3, path_contains="/api/v1/pods")
    src, store = source
    src.start()
    wait_for(store.synced)
    fake_api.create(api_objects(pod("slow", nets=[(NET_A, "net1", "10.10.0.7")]))[0])
    wait_for(lambda: store.get(POD, "default/slow") is not None)


def test_core_v1_answers_like_the_generated_core_v1_api(fake_api: FakeKubeAPI, api_client: k8s.ApiClient) -> None:
    """CoreV1 (without the 21 MB module of the generated CoreV1Api) sends the same requests and gets the same raw
    answers and errors."""
    seed(fake_api)
    light, generated = core_v1(api_client), k8s.CoreV1Api(api_client)
    assert isinstance(light, CoreV1)
    for call in ("list_pod_for_all_namespaces", "list_namespace"):
        a = getattr(light, call)(limit=2, _preload_content=False, _request_timeout=(5, 5))
        b = getattr(generated, call)(limit=2, _preload_content=False, _request_timeout=(5, 5))
        assert a.data == b.data
    a_query, b_query = [r.query for r in fake_api.requests if r.path == "/api/v1/pods"][-2:]
    assert a_query == b_query == {"limit": "2"}
    watch = light.list_namespace(watch=True, resource_version="1", allow_watch_bookmarks=True, timeout_seconds=1)
    watch.close()  # mid-stream: never hand this connection back to the pool
    assert fake_api.requests[-1].query == {
        "watch": "true", "resourceVersion": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "1"
    }  # fmt: skip
    body = {"metadata": {"generateName": "x-"}, "reason": "R", "message": "m", "involvedObject": {"kind": "Pod"}}
    posted = light.create_namespaced_event("default", body)
    assert b'"reason": "R"' in posted.data  # read the answer before the connection goes back to the pool
    posted.release_conn()
    assert [e["reason"] for e in fake_api.objects("event")] == ["R"]
    for client in (light, generated):
        with pytest.raises(k8s.ApiException) as raised:
            client.create_namespaced_event("no-such-namespace", body, _preload_content=False)
        assert raised.value.status == 404


def test_custom_objects_answer_like_the_generated_custom_objects_api(
    fake_api: FakeKubeAPI, api_client: k8s.ApiClient
) -> None:
    """The cluster-wide list/watch of a custom resource through CoreV1 (without the generated CustomObjectsApi's
    module) sends the same requests and gets the same raw answers and errors."""
    seed(fake_api)
    light, generated = core_v1(api_client), k8s.CustomObjectsApi(api_client)
    args = ("k8s.cni.cncf.io", "v1beta1", "multi-networkpolicies")
    a = light.list_cluster_custom_object(*args, limit=1, _preload_content=False, _request_timeout=(5, 5))
    b = generated.list_cluster_custom_object(*args, limit=1, _preload_content=False, _request_timeout=(5, 5))
    assert a.data == b.data and b'"p1"' in a.data
    lists = [r for r in fake_api.requests if r.path == "/apis/k8s.cni.cncf.io/v1beta1/multi-networkpolicies"]
    assert [r.query for r in lists[-2:]] == [{"limit": "1"}, {"limit": "1"}]
    watch = light.list_cluster_custom_object(*args, watch=True, resource_version="1", timeout_seconds=1)
    watch.close()
    assert fake_api.requests[-1].query == {"watch": "true", "resourceVersion": "1", "timeoutSeconds": "1"}
    for client in (light, generated):
        with pytest.raises(k8s.ApiException) as raised:
            client.list_cluster_custom_object("k8s.cni.cncf.io", "v1beta1", "no-such-things", _preload_content=False)
        assert raised.value.status == 404


def test_events_are_posted_once(fake_api: FakeKubeAPI, api_client: k8s.ApiClient) -> None:
    fake_api.create(api_objects(policy("bad"))[0])
    uid = fake_api.get("multinetworkpolicy", "default", "bad")["metadata"]["uid"]  # type: ignore[index]
    events = KubeEvents(core_v1(api_client), "node-a").start()
    try:
        ref = policy_ref("default/bad", uid)
        for _ in range(3):
            events.warn(ref, "InvalidPolicy", "spec.ingress[0]: bad")
        events.warn(pod_ref("default/a"), "RulesNotApplied", "nft: boom")
        wait_for(lambda: len(fake_api.objects("event")) == 2)
        events.clear(ref, "InvalidPolicy")
        events.warn(ref, "InvalidPolicy", "spec.ingress[0]: bad")
        wait_for(lambda: len(fake_api.objects("event")) == 3)
    finally:
        events.stop()
    posted = fake_api.objects("event")
    invalid = next(e for e in posted if e["reason"] == "InvalidPolicy")
    assert invalid["involvedObject"] == {
        "kind": "MultiNetworkPolicy",
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "namespace": "default",
        "name": "bad",
        "uid": uid,
    }
    assert invalid["type"] == "Warning" and invalid["source"] == {"component": "mnpd", "host": "node-a"}


# ------------------------------------------------------------------------------------------- whole daemon


def test_daemon_with_the_api_source(fake_api: FakeKubeAPI, tmp_path: Path) -> None:
    from daemon.app import Daemon

    state = StateStore(str(tmp_path / "state"))
    netns = tmp_path / "netns"
    netns.mkdir()
    fakes: dict[str, FakeNft] = {}
    failing = {str(netns / "c-bad")}

    class Nft:
        def __init__(self, path: str) -> None:
            self.path = path

        def run(self, tx: Transaction) -> None:
            if self.path in failing:
                raise NftError("Error: Could not process rule: Operation not supported")
            fakes.setdefault(self.path, FakeNft()).run(tx)

        apply_delta = run

        def list_table(self) -> TableView:
            return fakes[self.path].list_table()

        def close(self) -> None:
            pass

    for obj in api_objects(
        pod("a", labels={"app": "a"}, nets=[(NET_A, "net1", "10.10.0.1")]),
        pod("bad", labels={"app": "x"}, nets=[(NET_A, "net1", "10.10.0.2")]),
        policy("broken", select={"app": "a"}, ingress=[{"from": [{"ipBlock": {"cidr": "nonsense"}}]}]),
    ):
        fake_api.create(obj)
    uids = {n: fake_api.get("pod", "default", n)["metadata"]["uid"] for n in ("a", "bad")}  # type: ignore[index]
    for name in ("a", "bad"):
        (netns / f"c-{name}").touch()
        e = entry(f"c-{name}", name, uid=uids[name])
        state.write(e.replace(netns=str(netns / f"c-{name}")))
    kubeconfig = fake_api.kubeconfig(tmp_path / "kubeconfig")
    args = ["--kubeconfig", str(kubeconfig), "--node-name", "node-a", "--state-dir", state.directory]
    # the "netns" here are plain files: there is no conntrack table to clean
    config = load([*args, "--listen", "127.0.0.1:0", "--min-sync-interval", "0", "--flush-conntrack", "false"], {})
    daemon = Daemon(config, nft_for=Nft, backoff=FAST, retry=(0.05, 0.2))
    with daemon:
        wait_for(lambda: daemon.ready()[0])
        wait_for(lambda: str(netns / "c-a") in fakes)
        assert "default deny (default/broken)" in fakes[str(netns / "c-a")].dump()
        wait_for(lambda: {e["reason"] for e in fake_api.objects("event")} == {"InvalidPolicy", "RulesNotApplied"})
        failed = next(e for e in fake_api.objects("event") if e["reason"] == "RulesNotApplied")
        assert failed["involvedObject"]["name"] == "bad" and failed["involvedObject"]["uid"] == uids["bad"]
        assert "Operation not supported" in failed["message"]
        count = len(fake_api.objects("event"))
        wait_for(lambda: daemon.runner.failures >= 3)  # retried with backoff …
        assert len(fake_api.objects("event")) == count  # … without posting again
        assert daemon.healthy() == (True, "ok")


BARE_CLIENT = """
import json, pathlib, sys, time
import daemon.app  # mnpd's imports, in a fresh interpreter: the official client's packages registered bare
from daemon.sources.kubeclient import api_client
import kubernetes.config.incluster_config  # what api_client(None) imports in a pod: not the kubeconfig loader
eager = sorted(m for m in sys.modules if m.split(".")[0] in ("requests", "oauthlib", "websocket", "jsonschema")
               or m.startswith(("kubernetes.config.kube_config", "kubernetes.dynamic", "kubernetes.watch",
                                "kubernetes.stream", "kubernetes.informer", "kubernetes.leaderelection")))
from daemon.clock import SystemClock
from daemon.sources.kube import KubeSource
from daemon.store import POD, POLICY, Store
from tests.support.fakeapi import FakeKubeAPI
from tests.unit.test_daemon_builders import NET_A, pod, policy
with FakeKubeAPI() as api:
    for obj in (pod("a", nets=[(NET_A, "net1", "10.10.0.1")]), policy("p1", select={"app": "a"}, ingress=[])):
        obj["metadata"].pop("uid", None)  # the server assigns it
        api.create(obj)
    api.kubeconfig(pathlib.Path(sys.argv[1]))
    store = Store(SystemClock())
    source = KubeSource(store, api_client(sys.argv[1]), watch_timeout=30)
    source.start()
    deadline = time.monotonic() + 20
    while not store.synced() and time.monotonic() < deadline:
        time.sleep(0.01)
    api.patch("pod", "default", "a", {"metadata": {"labels": {"app": "z"}}})
    while store.get(POD, "default/a").pod.labels.get("app") != "z" and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    eager += sorted(m for m in sys.modules if m.startswith("kubernetes.client.api."))  # CoreV1Api, CustomObjectsApi
    print(json.dumps({"eager": eager, "synced": store.synced(), "labels": dict(store.get(POD, "default/a").pod.labels),
                      "policy": store.get(POLICY, "default/p1") is not None}))
"""


def test_mnpd_imports_only_the_client_parts_it_uses_and_they_work(tmp_path: Path) -> None:
    """In mnpd's own process (a fresh interpreter importing daemon.app first) the official client's packages are
    registered bare (daemon.sources.kubeclient): none of the modules their `__init__`s would import eagerly is
    loaded, and listing, watching and the kubeconfig loader work all the same."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", BARE_CLIENT, str(tmp_path / "kubeconfig")],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {
        "eager": [],
        "synced": True,
        "labels": {"app": "z"},
        "policy": True,
    }
