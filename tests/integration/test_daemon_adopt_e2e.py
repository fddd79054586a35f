"""End to end, adoption: a NAD that does NOT chain mnp (plain macvlan), mnpd finds each pod's netns and interface
by MAC and address, programs it, and real TCP/UDP packets prove it.

The world is test_daemon_e2e's (one node, real macvlan + host-local, the manifests source, the status file),
with the mnp plugin taken out of the chain: no pod gets a table at ADD, no state entry is written by a plugin.
The pods' network-status carries the MAC the macvlan plugin reported, as Multus writes it; the daemon scans the
host's /run/netns (other test runs' namespaces included: only the MAC + address match counts).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from daemon.config import load
from daemon.testbed.cniruntime import Attachment, PodRef
from daemon.testbed.netns import Node, Server
from tests.integration.test_daemon_e2e import (
    NAD_NAME,
    NETWORK,
    PodHandle,
    World,
    can,
    daemon_args,
    ingress_policy,
    pod_manifest,
    wait_for,
    world_of,
)
from tests.support.host import host_untouched

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module", autouse=True)
def _host_stays_untouched() -> Iterator[None]:
    with host_untouched(("macvlan", "host-local"), ("nft", "nsenter", "conntrack")):
        yield


class AdoptWorld(World):
    """test_daemon_e2e's world, with a NAD whose chain is macvlan alone."""

    def __init__(self, node: Node, tmp: Path) -> None:
        super().__init__(node, tmp)
        self.conflist["plugins"] = [p for p in self.conflist["plugins"] if p["type"] != "mnp"]
        self.macs: dict[str, str] = {}
        self.write("cluster.yaml", [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
            {
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": NAD_NAME, "namespace": "default"},
                "spec": {"config": json.dumps(self.conflist)},
            },
        ])  # fmt: skip

    def add_pod(self, name: str, labels: dict[str, str], *, manifest: bool = True, echo: bool = False) -> PodHandle:
        netns = self.node.new_pod(name)
        container = f"ctr-{uuid.uuid4().hex[:12]}"
        uid = str(uuid.uuid4())
        result = self.runtime.add(self.conflist, Attachment(container, netns, "net1", PodRef("default", name, uid)))
        (mac,) = [i.mac for i in result.interfaces if i.name == "net1" and i.sandbox]
        self.macs[name] = str(mac)
        handle = PodHandle(name, netns, container, uid, result.ip("net1"), dict(labels))
        handle.server = Server(netns, [("tcp", 8080), ("tcp", 8081), ("udp", 5353)])
        self.pods[name] = handle
        if manifest:
            self.publish(handle)
        return handle

    def publish(self, p: PodHandle, *, attached: bool = True) -> None:
        doc = pod_manifest(p)
        status = json.loads(doc["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"])
        for item in status:
            if item["name"] == NETWORK:
                item["mac"] = self.macs[p.name]
        if not attached:  # the attachment left the pod's network-status (Multus dynamic networks)
            status = [item for item in status if item["name"] != NETWORK]
        doc["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] = json.dumps(status)
        self.write(f"pod-{p.name}.yaml", [doc])

    def interface(self, p: PodHandle) -> dict[str, Any]:
        for item in self.status().get("interfaces", []):
            if item["pod"] == f"default/{p.name}" and item["ifname"] == "net1":
                return dict(item)
        return {}

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(f.read_text()) for f in sorted(self.state_dir.glob("*.json"))]


def chains(p: PodHandle) -> str:
    done = subprocess.run(
        ["nsenter", f"--net={p.netns.path}", "nft", "list", "table", "inet", "mnp"], capture_output=True, text=True
    )
    return done.stdout


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AdoptWorld]:
    with world_of(AdoptWorld, "adopt", tmp_path) as w:
        yield w


def start(w: World, *extra: str) -> Daemon:
    d = Daemon(load([*daemon_args(w), "--netns-dirs", "/run/netns", *extra], {})).start()
    wait_for(lambda: d.ready()[0], what="daemon ready")
    return d


def test_pods_before_and_after_start_are_adopted_follow_relabels_and_survive_a_restart(world: AdoptWorld) -> None:
    w = world
    client = w.add_pod("client", {"role": "client"})
    other = w.add_pod("other", {"role": "other"})
    early = w.add_pod("early", {"app": "server"})  # exists before mnpd starts
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])
    assert can([(other, early, "tcp", 8080)]) == [True]  # no plugin closed it: open
    d = start(w)
    try:
        w.wait_programmed(early)
        assert w.interface(early)["origin"] == "adopted"
        assert can([(client, early, "tcp", 8080), (other, early, "tcp", 8080), (client, early, "tcp", 8081)]) == [
            True, False, False,
        ]  # fmt: skip
        late = w.add_pod("late", {"app": "server"}, manifest=False)
        assert can([(other, late, "tcp", 8080)]) == [True]  # open until mnpd knows it: the window chaining closes
        w.publish(late)
        digest = w.wait_programmed(late)
        assert can([(client, late, "tcp", 8080), (other, late, "tcp", 8080)]) == [True, False]
        other.labels = {"role": "client"}  # a relabelled peer reaches the adopted pods
        w.publish(other)
        digest = w.wait_programmed(late, since=digest)
        assert can([(other, late, "tcp", 8080), (other, early, "tcp", 8080)]) == [True, True]
        entries = w.entries()
        assert {e["origin"] for e in entries} == {"adopted"} and len(entries) == 4
    finally:
        d.stop()
    other.labels = {"role": "other"}
    w.publish(other)  # changed while no daemon runs: enforced after the restart
    w.status_file.unlink()
    d = start(w)
    try:
        w.wait_programmed(late)
        w.wait_programmed(early)
        assert can([(other, late, "tcp", 8080), (client, early, "tcp", 8080)]) == [False, True]
        assert [e["containerID"] for e in w.entries()] == [e["containerID"] for e in entries]
    finally:
        d.stop()


def client_and_server(w: AdoptWorld) -> tuple[PodHandle, PodHandle]:
    """A client and a server whose ingress admits the client on 8080 only."""
    client = w.add_pod("client", {"role": "client"})
    server = w.add_pod("server", {"app": "server"})
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])
    return client, server


def test_an_attachment_that_goes_and_a_deleted_pod_release_their_interfaces(world: AdoptWorld) -> None:
    w = world
    client, server = client_and_server(w)
    gone = w.add_pod("gone", {"app": "server"})
    d = start(w)
    try:
        w.wait_programmed(server)
        w.wait_programmed(gone)
        assert "ingress_net1" in chains(server)
        w.publish(server, attached=False)
        wait_for(lambda: not w.interface(server), what="server's interface released")
        wait_for(lambda: "ingress_net1" not in chains(server), what="server's chains removed")
        assert {e["podName"] for e in w.entries()} == {"client", "gone"}
        w.unlink("pod-gone.yaml")
        wait_for(lambda: {e["podName"] for e in w.entries()} == {"client"}, what="deleted pod's entry removed")
        assert "ingress_net1" not in chains(gone)
        assert can([(client, gone, "tcp", 8081)]) == [True]  # no longer guarded (the pod is deleted)
    finally:
        d.stop()


def test_adoption_off_says_what_is_unguarded(world: AdoptWorld) -> None:
    w = world
    client, server = client_and_server(w)
    d = start(w, "--no-adopt")
    try:
        wait_for(lambda: bool(w.status().get("unguarded")), what="unguarded reported")
        (line,) = w.status()["unguarded"]
        assert line == {
            "pod": "default/server", "ifname": "net1", "network": NETWORK, "reason": "adoption-off",
            "message": "NAD does not chain mnp and adoption is off",
        }  # fmt: skip
        assert w.entries() == [] and w.status()["interfaces"] == []
        assert d.metrics.unguarded.labels("adoption-off")._value.get() == 1
        assert can([(client, server, "tcp", 8081)]) == [True]  # and indeed nothing guards it
        out = subprocess.run(
            [*_ctl(), "status", "--status-file", str(w.status_file), "--state-dir", str(w.state_dir)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert "unguarded: NAD does not chain mnp and adoption is off" in out.stdout, out.stdout + out.stderr
    finally:
        d.stop()


def _ctl() -> list[str]:
    import sys

    return [sys.executable, "-m", "daemon.ctl"]


def test_a_forged_network_status_does_not_move_another_pods_interface_under_its_rules(world: AdoptWorld) -> None:
    """A pod's network-status is an annotation its owner can edit: `mallory` claims the server's MAC and address.
    The server's namespace holds the server's adopted interface, so it is no candidate for mallory (ambiguous,
    reported); before, mallory's entry pointed at the server's namespace and its rules (isolated: nothing allowed)
    replaced the server's, and real packets the server's policy admits were dropped."""
    w = world
    client, server = client_and_server(w)
    d = start(w)
    try:
        w.wait_programmed(server)
        assert can([(client, server, "tcp", 8080)]) == [True]
        w.write("mallory.yaml", [ingress_policy("m", {"app": "mallory"}, {"role": "nobody"}, [{"port": 8080}])])
        mallory = PodHandle("mallory", server.netns, "ctr-mallory", str(uuid.uuid4()), server.ip, {"app": "mallory"})
        w.macs["mallory"] = w.macs["server"]
        w.publish(mallory)
        wait_for(
            lambda: any(u["pod"] == "default/mallory" for u in w.status().get("unguarded", [])),
            what="mallory's claim reported",
        )
        (claim,) = [u for u in w.status()["unguarded"] if u["pod"] == "default/mallory"]
        assert claim["reason"] == "ambiguous" and "another pod" in claim["message"]
        assert {e["podName"] for e in w.entries()} == {"client", "server"}
        assert can([(client, server, "tcp", 8080)]) == [True]
    finally:
        d.stop()
