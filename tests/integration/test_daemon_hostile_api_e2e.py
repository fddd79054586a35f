"""End to end, real packets, the Kubernetes API source: a pod whose network-status annotation mnpd cannot read
stays closed and is reported — one Event on the pod, one log line, the status file — until it is fixed.

Before: daemon.sources.convert dropped shared.model's problem list. The pod stayed closed (its interface pending,
in the plugin's table), but the operator saw nothing: no Event, no log line, nothing in `mnpctl status`.

The world of tests/integration/test_daemon_e2e.py (one test node, the real macvlan → mnp chain, probes between pod
namespaces), with its objects in FakeKubeAPI (tests/support/fakeapi.py, real HTTP) instead of a manifests
directory: a pod is created first, the CNI ADD gets its uid, then its network-status is written — as Multus does.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from daemon.config import load
from daemon.testbed.netns import Node
from tests.integration.test_daemon_e2e import (
    NAD_NAME,
    PodHandle,
    World,
    _host_stays_untouched,
    can,
    ingress_policy,
    pod_manifest,
    wait_for,
    world_of,
)
from tests.support.fakeapi import FakeKubeAPI

__all__ = ["_host_stays_untouched"]

pytestmark = pytest.mark.netns

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


class ApiWorld(World):
    """The World with its objects in FakeKubeAPI: `write` creates or replaces them there."""

    def __init__(self, node: Node, tmp: Path) -> None:
        self.api = FakeKubeAPI().start()
        super().__init__(node, tmp)

    def write(self, name: str, docs: list[Any]) -> None:
        for doc in docs:
            meta = doc["metadata"]
            if self.api.get(doc["kind"], meta.get("namespace"), meta["name"]) is None:
                self.api.create(copy.deepcopy(doc))
            else:
                self.api.update(copy.deepcopy(doc))

    def add_pod(self, name: str, labels: dict[str, str], *, manifest: bool = True, echo: bool = False) -> PodHandle:
        """The pod object first (the API server gives it its uid), then the CNI ADD, then its network-status."""
        created = self.api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": "default",
                    "labels": labels,
                    "annotations": {"k8s.v1.cni.cncf.io/networks": f"{NAD_NAME}@net1"},
                },
                "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]},
            }
        )
        return super().add_pod(name, labels, manifest=manifest, echo=echo, uid=created["metadata"]["uid"])

    def publish_garbled(self, p: PodHandle) -> None:
        """`p`'s network-status with its net1 entry saying `"default": "false"` (a string: truthy, it would hide
        the secondary interface as the primary one)."""
        doc = pod_manifest(p)
        annotations = doc["metadata"]["annotations"]
        entries = json.loads(annotations[NETWORK_STATUS])
        entries[1]["default"] = "false"
        annotations[NETWORK_STATUS] = json.dumps(entries)
        self.write(f"pod-{p.name}.yaml", [doc])

    def invalid_pod_events(self) -> list[dict[str, Any]]:
        return [e for e in self.api.objects("event") if e.get("reason") == "InvalidPod"]


@pytest.fixture
def api_world(tmp_path: Path) -> Iterator[ApiWorld]:
    with world_of(ApiWorld, "mnpd", tmp_path) as w:
        try:
            yield w
        finally:
            w.api.stop()
        assert not w.api.server_errors, "fakeapi internal errors:\n" + "\n".join(w.api.server_errors)


def test_a_garbled_network_status_stays_closed_and_is_reported_once_until_fixed(
    api_world: ApiWorld, caplog: pytest.LogCaptureFixture
) -> None:
    w = api_world
    client, other = w.add_pod("client", {"role": "client"}), w.add_pod("other", {"role": "other"})
    server = w.add_pod("server", {"app": "server"}, manifest=False)
    w.publish_garbled(server)
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])
    kubeconfig = w.api.kubeconfig(w.tmp / "kubeconfig")
    args = [
        "--kubeconfig", str(kubeconfig), "--node-name", "node-a", "--state-dir", str(w.state_dir),
        "--status-file", str(w.status_file), "--listen", "127.0.0.1:0", "--min-sync-interval", "50ms",
        "--resync-period", "1s",
    ]  # fmt: skip
    caplog.set_level(logging.INFO, logger="daemon")
    d = Daemon(load(args, {})).start()
    try:
        wait_for(lambda: d.ready()[0], what="mnpd ready")
        # reported: an Event on the pod, the status file, a log line
        wait_for(lambda: len(w.invalid_pod_events()) == 1, what="the InvalidPod Event")
        (event,) = w.invalid_pod_events()
        assert event["involvedObject"]["kind"] == "Pod" and event["involvedObject"]["name"] == "server"
        assert event["involvedObject"]["uid"] == server.uid and event["type"] == "Warning"
        assert "fail closed" in event["message"]
        assert f"annotation {NETWORK_STATUS}[1]: 'default' must be true or false" in event["message"]
        wait_for(lambda: bool(w.status().get("objects")), what="the status file lists it")
        (item,) = w.status()["objects"]
        assert (item["kind"], item["object"]) == ("Pod", "default/server")
        assert w.interface(server)["state"] == "pending"
        # closed: the plugin's table, nothing programmed into it
        assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [False, False]

        # a relist (410 Gone), watch events saying the same, and periodic resyncs report nothing new
        lists = len([r for r in w.api.requests if "watch" not in r.query and r.path.endswith("/pods")])
        w.api.compact()
        w.api.drop_watches()
        wait_for(
            lambda: len([r for r in w.api.requests if "watch" not in r.query and r.path.endswith("/pods")]) > lists,
            what="pods relisted",
        )
        # a watch event for the pod that has the same problems
        w.api.patch("pod", "default", "server", {"metadata": {"labels": {"app": "server", "heartbeat": "1"}}})
        runs = d.runner.runs
        wait_for(lambda: d.runner.runs >= runs + 3, what="three more syncs, resyncs among them")
        assert len(w.invalid_pod_events()) == 1
        lines = [r for r in caplog.records if r.getMessage().startswith("InvalidPod:")]
        assert len(lines) == 1 and lines[0].mnp == {"pod": "default/server"}  # type: ignore[attr-defined]
        assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [False, False]
        assert 'mnp_object_problems{kind="Pod"} 1.0' in d.metrics.exposition().decode()

        # fixed: programmed as the policy says, the report withdrawn
        w.publish(server)
        w.wait_programmed(server)
        assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [True, False]
        wait_for(lambda: w.status().get("objects") == [], what="the status file's entry withdrawn")
        assert 'mnp_object_problems{kind="Pod"} 0.0' in d.metrics.exposition().decode()
        assert len(w.invalid_pod_events()) == 1

        # garbled again: reported again; the interface keeps its last rules, never wider
        w.publish_garbled(server)
        wait_for(lambda: len(w.invalid_pod_events()) == 2, what="a new InvalidPod Event")
        assert can([(other, server, "tcp", 8080), (other, server, "udp", 5353)]) == [False, False]
    finally:
        d.stop()
