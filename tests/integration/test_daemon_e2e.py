"""End to end: the real CNI chain (macvlan → mnp) closes pods, mnpd (manifests source, real nft and conntrack
through nsenter) opens exactly what the policies allow, and real TCP/UDP packets prove it.

Every pod is a netns created by the test support (`mnpt-` prefix) behind a macvlan whose master (a veth pair)
lives only in a test node netns; the daemon's state dir, manifests and status file are in tmp_path; everything is
removed pass or fail, and the host's root netns never gets a table (checked per module).

Address plan: network `default/mnpt-net` is 10.243.0.0/24 (host-local, .10–.99) on master m0. Pods run a probe
server (TCP 8080 and 8081, UDP 5353) and, where a test needs a long-lived flow, an echo server on TCP 7000.

Waiting is by deadline: for the daemon, on the status file's per-interface digest of the programmed rules
(`rules`, which changes exactly when a transaction changed them); for traffic, on probe outcomes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
import yaml

from daemon.app import Daemon
from daemon.config import load
from daemon.testbed.cniruntime import Attachment, CniRuntime, PodRef
from daemon.testbed.netns import (
    NetNS,
    Node,
    Probe,
    Server,
    probe_matrix,
)
from tests.support import poll
from tests.support.host import CNI_BIN, host_untouched

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]

NAD_NAME = "mnpt-net"
NETWORK = f"default/{NAD_NAME}"
TIMEOUT = 0.6  # a denied probe costs this much; an allowed one answers at once
DEADLINE_S = 15.0


@pytest.fixture(scope="module", autouse=True)
def _host_stays_untouched() -> Iterator[None]:
    with host_untouched(("macvlan", "host-local"), ("nft", "nsenter", "conntrack")):
        yield


wait_for = functools.partial(poll.wait_for, timeout=DEADLINE_S)


# ----------------------------------------------------------------------------------------------- the world


@dataclass
class PodHandle:
    name: str
    netns: NetNS
    container: str
    uid: str
    ip: str
    labels: dict[str, str]
    server: Server | None = None


def pod_manifest(p: PodHandle) -> dict[str, Any]:
    status = [
        {"name": "cbr0", "interface": "eth0", "ips": ["172.31.0.2"], "default": True},
        {"name": NETWORK, "interface": "net1", "ips": [p.ip]},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": p.name,
            "namespace": "default",
            "uid": p.uid,
            "labels": p.labels,
            "annotations": {
                "k8s.v1.cni.cncf.io/networks": f"{NAD_NAME}@net1",
                "k8s.v1.cni.cncf.io/network-status": json.dumps(status),
            },
        },
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]},
    }


def ingress_policy(name: str, select: dict[str, str], sources: dict[str, str] | None, ports: list[Any]) -> Any:
    rule: dict[str, Any] = {"ports": ports}
    if sources is not None:
        rule["from"] = [{"podSelector": {"matchLabels": sources}}]
    return {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {"name": name, "namespace": "default", "annotations": {"k8s.v1.cni.cncf.io/policy-for": NETWORK}},
        "spec": {"podSelector": {"matchLabels": select}, "policyTypes": ["Ingress"], "ingress": [rule]},
    }


WorldT = TypeVar("WorldT", bound="World")


class World:
    """One node, the CNI runtime, the daemon's directories and the pods of a test."""

    def __init__(self, node: Node, tmp: Path) -> None:
        self.node = node
        self.tmp = tmp
        self.state_dir = tmp / "run" / "state"
        self.status_file = tmp / "run" / "mnpd-status.json"
        self.manifests = tmp / "manifests"
        self.manifests.mkdir()
        bindir = tmp / "bin"
        bindir.mkdir()
        wrapper = bindir / "mnp"
        wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m cni "$@"\n')
        wrapper.chmod(0o755)
        self.runtime = CniRuntime([bindir, CNI_BIN], tmp / "cache", exec_netns=node.ns)
        self.conflist = {
            "cniVersion": "1.0.0",
            "name": NAD_NAME,
            "plugins": [
                {
                    "type": "macvlan",
                    "master": "m0",
                    "mode": "bridge",
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(tmp / "ipam"),
                        "ranges": [
                            [{"subnet": "10.243.0.0/24", "rangeStart": "10.243.0.10", "rangeEnd": "10.243.0.99"}]
                        ],
                    },
                },
                {"type": "mnp", "stateDir": str(self.state_dir)},
            ],
        }
        self.write("cluster.yaml", [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
            {
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": NAD_NAME, "namespace": "default"},
                "spec": {"config": json.dumps({k: v for k, v in self.conflist.items() if k != "plugins"})},
            },
        ])  # fmt: skip
        self.pods: dict[str, PodHandle] = {}

    def write(self, name: str, docs: list[Any]) -> None:
        path = self.manifests / name
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump_all(docs))
        os.replace(tmp, path)

    def unlink(self, name: str) -> None:
        (self.manifests / name).unlink()

    def add_pod(
        self, name: str, labels: dict[str, str], *, manifest: bool = True, echo: bool = False, uid: str = ""
    ) -> PodHandle:
        """A pod netns through the CNI ADD; `uid`: the pod's (an API server's), else a new one."""
        netns = self.node.new_pod(name)
        container = f"ctr-{uuid.uuid4().hex[:12]}"
        uid = uid or str(uuid.uuid4())
        result = self.runtime.add(self.conflist, Attachment(container, netns, "net1", PodRef("default", name, uid)))
        handle = PodHandle(name, netns, container, uid, result.ip("net1"), dict(labels))
        handle.server = Server(netns, [("tcp", 8080), ("tcp", 8081), ("udp", 5353)])
        self.pods[name] = handle
        if echo:
            EchoServer.start(netns, 7000)
        if manifest:
            self.publish(handle)
        return handle

    def publish(self, p: PodHandle) -> None:
        self.write(f"pod-{p.name}.yaml", [pod_manifest(p)])

    # the daemon's view

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_file.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def interface(self, p: PodHandle) -> dict[str, Any]:
        for item in self.status().get("interfaces", []):
            if item["containerID"] == p.container and item["ifname"] == "net1":
                return dict(item)
        return {}

    def digest(self, p: PodHandle) -> str | None:
        item = self.interface(p)
        return item.get("rules") if item.get("state") == "programmed" else None

    def wait_programmed(self, p: PodHandle, since: str | None = None) -> str:
        """Wait until `p`'s interface is programmed with rules other than `since`; returns the new digest."""
        wait_for(lambda: self.digest(p) not in (None, since), what=f"{p.name} programmed")
        digest = self.digest(p)
        assert digest is not None
        return digest


def can(items: list[tuple[PodHandle, PodHandle, str, int]]) -> list[bool]:
    """(source, destination, proto, port) → allowed?"""
    probes = [(src.netns, Probe(proto, dst.ip, port, timeout=TIMEOUT)) for src, dst, proto, port in items]  # type: ignore[arg-type]
    return [r.allowed for r in probe_matrix(probes)]


@contextlib.contextmanager
def world_of(kind: type[WorldT], label: str, tmp: Path) -> Iterator[WorldT]:
    """A world of `kind` on a new test node; the node and the echo servers are removed pass or fail."""
    node = Node(label, masters=["m0"])
    try:
        yield kind(node, tmp)
    finally:
        EchoServer.stop_all()
        node.delete()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with world_of(World, "mnpd", tmp_path) as w:
        yield w


def daemon_args(w: World) -> list[str]:
    return [
        "--manifests-dir", str(w.manifests), "--state-dir", str(w.state_dir), "--status-file", str(w.status_file),
        "--listen", "127.0.0.1:0", "--min-sync-interval", "50ms", "--resync-period", "30s",
    ]  # fmt: skip


@pytest.fixture
def daemon(world: World) -> Iterator[Daemon]:
    d = Daemon(load(daemon_args(world), {})).start()
    try:
        wait_for(lambda: d.ready()[0], what="daemon ready")
        yield d
    finally:
        d.stop()


# ----------------------------------------------------------------------------------------------- long-lived flows

_AGENT = r"""
import ctypes, os, socket, sys, threading, time
fd = os.open(sys.argv[1], os.O_RDONLY)
if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
    raise OSError(ctypes.get_errno(), "setns")
mode, host, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
threading.Thread(target=lambda: (sys.stdin.buffer.read(), os._exit(0)), daemon=True).start()
if mode == "echo":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    print("READY", flush=True)
    def serve(c):
        with c:
            while True:
                data = c.recv(4096)
                if not data:
                    return
                c.sendall(data)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
c = socket.create_connection((host, port), timeout=2)
print("CONNECTED", flush=True)
seq, buf = 0, b""
while True:
    seq += 1
    try:
        c.sendall(b"%d\n" % seq)
        deadline = time.monotonic() + 0.5
        got = False
        while not got:
            c.settimeout(max(deadline - time.monotonic(), 0.001))
            data = c.recv(4096)
            if not data:
                print("closed", seq, flush=True); os._exit(0)
            buf += data
            lines = buf.split(b"\n"); buf = lines.pop()
            got = str(seq).encode() in lines
        print("ok", seq, flush=True)
    except socket.timeout:
        print("timeout", seq, flush=True)
    except OSError as exc:
        print("error", seq, exc, flush=True); os._exit(0)
    time.sleep(0.05)
"""


class Agent:
    def __init__(self, netns: NetNS, mode: str, host: str, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _AGENT, netns.path, mode, host, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()

    def wait_line(self, prefix: str, timeout: float = 5.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(line.startswith(prefix) for line in self.lines[after:]):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {prefix!r} line; got {self.lines[-5:]}, stderr: {self.stderr()}")
                self._cond.wait(remaining)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None or self.proc.stderr.closed:
            return ""
        return self.proc.stderr.read()

    def outcomes(self, after: int = 0) -> list[str]:
        with self._cond:
            return [
                line.split()[0]
                for line in self.lines[after:]
                if line.split()[0] in ("ok", "timeout", "error", "closed")
            ]

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(3)
        self._reader.join(3)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class EchoServer:
    running: ClassVar[list[Agent]] = []

    @classmethod
    def start(cls, netns: NetNS, port: int) -> Agent:
        agent = Agent(netns, "echo", "", port)
        agent.wait_line("READY")
        cls.running.append(agent)
        return agent

    @classmethod
    def stop_all(cls) -> None:
        while cls.running:
            cls.running.pop().stop()


def conntrack_ids(p: PodHandle, port: int) -> set[str]:
    """The ids of the TCP conntrack entries to `port` in `p`'s netns: an entry deleted and picked up again mid-
    stream (which an allowed flow survives unnoticed) gets a new id."""
    done = subprocess.run(
        ["nsenter", f"--net={p.netns.path}", "conntrack", "-L", "-p", "tcp", "--dport", str(port), "-o", "id"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {token for token in done.stdout.split() if token.startswith("id=")}


@contextlib.contextmanager
def flow(src: PodHandle, dst: PodHandle, port: int = 7000) -> Iterator[Agent]:
    agent = Agent(src.netns, "client", dst.ip, port)
    try:
        agent.wait_line("CONNECTED")
        agent.wait_line("ok")
        yield agent
    finally:
        agent.stop()


# ----------------------------------------------------------------------------------------------- tests


def test_new_pods_are_closed_until_programmed_then_exactly_as_open_as_policy_says(world: World, daemon: Daemon) -> None:
    w = world
    client = w.add_pod("client", {"role": "client"})
    other = w.add_pod("other", {"role": "other"})
    ports = [{"protocol": "TCP", "port": 8080}, {"protocol": "UDP", "port": 5353}]
    w.write("policy.yaml", [ingress_policy("server-from-clients", {"app": "server"}, {"role": "client"}, ports)])
    w.wait_programmed(client)
    w.wait_programmed(other)
    server = w.add_pod("server", {"app": "server"}, manifest=False)
    # The plugin closed it; the daemon does not know the pod yet, so it stays closed, both ways.
    wait_for(lambda: w.interface(server).get("state") == "pending", what="server pending")
    assert can([(client, server, "tcp", 8080), (client, server, "udp", 5353), (server, client, "tcp", 8080)]) == [
        False, False, False,
    ]  # fmt: skip
    w.publish(server)
    w.wait_programmed(server)
    assert can(
        [
            (client, server, "tcp", 8080),  # allowed
            (client, server, "udp", 5353),  # allowed
            (client, server, "tcp", 8081),  # port not in the policy
            (other, server, "tcp", 8080),  # peer not in the policy
            (server, client, "tcp", 8080),  # egress is not isolated
            (other, client, "tcp", 8081),  # no policy selects the client
        ]
    ) == [True, True, False, False, True, True]


def test_a_policy_change_is_enforced(world: World, daemon: Daemon) -> None:
    w = world
    client, other = w.add_pod("client", {"role": "client"}), w.add_pod("other", {"role": "other"})
    server = w.add_pod("server", {"app": "server"})
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])
    first = w.wait_programmed(server)
    wait_for(lambda: can([(client, server, "tcp", 8080)]) == [True], what="client allowed")
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "other"}, [{"port": 8081}])])
    w.wait_programmed(server, since=first)
    assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8081), (other, server, "tcp", 8080)]) == [
        False, True, False,
    ]  # fmt: skip
    w.unlink("policy.yaml")
    w.wait_programmed(server, since=w.digest(server))
    assert can([(client, server, "tcp", 8080), (other, server, "udp", 5353)]) == [True, True]  # no policy: open


def test_adding_and_removing_a_peer_updates_existing_pods(world: World, daemon: Daemon) -> None:
    w = world
    server = w.add_pod("server", {"app": "server"})
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])
    digest = w.wait_programmed(server)
    late = w.add_pod("late", {"role": "client"}, manifest=False)
    assert can([(late, server, "tcp", 8080)]) == [False]  # late is closed (pending) and not yet a peer
    w.publish(late)
    digest = w.wait_programmed(server, since=digest)  # the new peer reached the existing pod
    w.wait_programmed(late)
    assert can([(late, server, "tcp", 8080)]) == [True]
    late.labels = {"role": "visitor"}
    w.publish(late)
    digest = w.wait_programmed(server, since=digest)
    assert can([(late, server, "tcp", 8080)]) == [False]
    late.labels = {"role": "client"}
    w.publish(late)
    digest = w.wait_programmed(server, since=digest)
    assert can([(late, server, "tcp", 8080)]) == [True]
    w.unlink("pod-late.yaml")
    w.wait_programmed(server, since=digest)
    assert can([(late, server, "tcp", 8080)]) == [False]


def test_withdrawn_access_stops_established_flows(world: World, daemon: Daemon) -> None:
    w = world
    client = w.add_pod("client", {"role": "client"})
    keeper = w.add_pod("keeper", {"role": "keeper"})
    server = w.add_pod("server", {"app": "server"}, echo=True)
    both = [{"podSelector": {"matchLabels": {"role": "client"}}}, {"podSelector": {"matchLabels": {"role": "keeper"}}}]
    allow_both = ingress_policy("p", {"app": "server"}, None, [{"port": 7000}])
    allow_both["spec"]["ingress"][0]["from"] = both
    w.write("policy.yaml", [allow_both])
    digest = w.wait_programmed(server)
    with flow(client, server) as cut, flow(keeper, server) as kept:
        before = conntrack_ids(server, 7000)
        assert len(before) == 2
        w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "keeper"}, [{"port": 7000}])])
        w.wait_programmed(server, since=digest)
        mark_cut, mark_kept = cut.mark(), kept.mark()
        # The established connection no longer gets through: after the conntrack pass that follows every pod's
        # transaction (a deadline generous for a loaded machine; the periodic resync is 60 s away, so a missed
        # pass still fails).
        cut.wait_line("timeout", timeout=15.0, after=mark_cut)
        kept.wait_line("ok", after=mark_kept)
        seen = kept.mark()
        kept.wait_line("ok", after=seen)
        assert "timeout" not in kept.outcomes() and "error" not in kept.outcomes()
        assert len(conntrack_ids(server, 7000) & before) == 1  # the keeper's entry was never touched
    assert daemon.metrics.conntrack_deletions._value.get() >= 1


def test_kill_9_and_restart_under_traffic(world: World) -> None:
    """SIGKILL the daemon while traffic flows, restart it: no allowed connection is lost, nothing opens."""
    w = world
    client, other = w.add_pod("client", {"role": "client"}), w.add_pod("other", {"role": "other"})
    server = w.add_pod("server", {"app": "server"}, echo=True)
    w.write(
        "policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 7000}, {"port": 8080}])]
    )
    log = (w.tmp / "mnpd.log").open("w")
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "daemon.main", *daemon_args(w)], stdout=log, stderr=log, env=env)

    proc = start()
    try:
        w.wait_programmed(server)
        w.wait_programmed(client)
        denied_ok: list[bool] = []
        stop_probing = threading.Event()

        def probe_denied() -> None:  # nothing may open at any moment, the restart included
            while not stop_probing.is_set():
                denied_ok.extend(can([(other, server, "tcp", 7000), (other, server, "tcp", 8080)]))

        with flow(client, server) as established:
            prober = threading.Thread(target=probe_denied)
            prober.start()
            try:
                start_mark = established.mark()
                entries = conntrack_ids(server, 7000)
                assert len(entries) == 1
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
                established.wait_line("ok", after=established.mark())  # rules stayed: traffic goes on
                w.status_file.unlink()  # so that we see the new daemon's own report
                proc = start()
                wait_for(lambda: w.status().get("ready") is True, what="restarted daemon ready")
                w.wait_programmed(server)  # adopted: re-applied idempotently, conntrack checked
                w.wait_programmed(client)
                after = established.mark()
                established.wait_line("ok", after=after)
                assert can([(client, server, "tcp", 8080)]) == [True]  # new connections still allowed
                assert conntrack_ids(server, 7000) == entries  # the adoption's conntrack check kept the flow
            finally:
                stop_probing.set()
                prober.join()
            outcomes = established.outcomes(start_mark)
            assert outcomes.count("ok") >= 2 and set(outcomes) == {"ok"}, outcomes
        assert denied_ok and not any(denied_ok), "a denied connection got through around the restart"
        proc.send_signal(signal.SIGTERM)  # a clean stop leaves the rules in place too
        assert proc.wait(10) == 0, (w.tmp / "mnpd.log").read_text()[-3000:]
        assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [True, False]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    text = (w.tmp / "mnpd.log").read_text()
    assert "setting manifests_dir = " in text and "received SIGTERM" in text and "every pod keeps its rules" in text


@pytest.mark.parametrize(
    "tamper",
    [
        ["nft", "delete", "table", "inet", "mnp"],
        ["nft", "flush", "chain", "inet", "mnp", "ingress_net1"],
        ["nft", "flush", "chain", "inet", "mnp", "input"],
        ["nft", "delete", "element", "inet", "mnp", "ingress_ifindex", '{ "net1" }'],
        ["nft", "flush chain inet mnp input; delete chain inet mnp input; add chain inet mnp input"],
        ["nft", "insert rule inet mnp ingress_net1 meta mark != 1 accept"],  # a shape the reader does not know
        [
            "nft",
            "add set inet mnp x { type ether_addr; elements = { 02:00:00:00:00:01 } }; add counter inet mnp c; "
            "insert rule inet mnp ingress_net1 meta mark != 1 accept",
        ],  # and objects of types and kinds the reader does not know
    ],
    ids=[
        "table deleted",
        "chain flushed",
        "base chain flushed",
        "dispatch element deleted",
        "base chain replaced",
        "rule of unknown shape inserted",
        "unknown set, object and rule added",
    ],
)
def test_a_table_removed_or_edited_in_the_pod_is_restored_by_the_resync(world: World, tamper: list[str]) -> None:
    """A pod with NET_ADMIN edits mnp's table in its own netns, which opens it; the periodic resync reads the
    table back, restores it atomically and reports it; the flows the tamper let in are dropped again."""
    w = world
    client, other = w.add_pod("client", {"role": "client"}), w.add_pod("other", {"role": "other"})
    server = w.add_pod("server", {"app": "server"})
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])
    args = [*daemon_args(w)[:-1], "1s"]  # --resync-period 1s
    d = Daemon(load(args, {})).start()
    try:
        w.wait_programmed(server)
        assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [True, False]
        server.netns.run(*tamper)
        # open until the resync restores it; the deadline is a few resync periods
        wait_for(lambda: can([(other, server, "tcp", 8080)]) == [False], what="enforced again")
        assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [True, False]
        assert d.metrics.tamper_repairs._value.get() >= 1
    finally:
        d.stop()


def test_a_table_the_pod_owns_is_reported_failed_and_restored_when_its_owner_goes(world: World) -> None:
    """A pod with NET_ADMIN deletes mnp's table and creates one of the same name with the `owner` flag from a
    process it keeps running: only that process may change or delete the table, so the repair cannot restore it
    and the pod is open while the process lives. mnpd must say so — the interface failed in the status file with
    the reason, an apply error counted — not keep showing it programmed; once the process exits (the kernel drops
    its table) the retry restores the rules."""
    w = world
    client, other = w.add_pod("client", {"role": "client"}), w.add_pod("other", {"role": "other"})
    server = w.add_pod("server", {"app": "server"})
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])
    d = Daemon(load([*daemon_args(w)[:-1], "1s"], {})).start()  # --resync-period 1s
    owner: subprocess.Popen[str] | None = None
    try:
        w.wait_programmed(server)
        assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [True, False]
        owner = subprocess.Popen(
            [*server.netns.exec_prefix(), "nft", "-i"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert owner.stdin is not None
        owner.stdin.write("delete table inet mnp\nadd table inet mnp { flags owner; }\n")
        owner.stdin.flush()
        wait_for(
            lambda: (
                w.interface(server).get("state") == "failed"
                and "could not be restored" in w.interface(server).get("reason", "")
            ),
            what="the interface reported failed",
        )
        assert can([(other, server, "tcp", 8080)]) == [True]  # open, as reported
        assert d.metrics.apply_errors._value.get() >= 1
        owner.stdin.close()
        owner.wait(10)
        wait_for(lambda: w.interface(server).get("state") == "programmed", what="restored once the owner went")
        assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [True, False]
    finally:
        if owner is not None and owner.poll() is None:
            owner.kill()
            owner.wait()
        d.stop()


def test_a_second_entry_naming_a_pods_interface_for_another_pod_closes_it(world: World, daemon: Daemon) -> None:
    """A state entry of another pod (here `other`, which no policy selects: open) names the server's netns and
    interface — a stale `/proc/PID/ns/net` entry a new sandbox's PID reuses, an entry written by hand. The server's
    interface must not take the other pod's rules: closed both ways while both entries are there, reported as a
    conflict in the status file; the server's own rules once the stray entry goes. Real packets throughout."""
    from shared.state import StateEntry, StateStore

    w = world
    client, other = w.add_pod("client", {"role": "client"}), w.add_pod("other", {"role": "other"})
    server = w.add_pod("server", {"app": "server"})
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])
    w.wait_programmed(server)
    assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [True, False]
    store = StateStore(str(w.state_dir))
    own = store.read(server.container, "net1")
    assert own is not None
    stray = json.loads(own.to_json()) | {"containerID": "ctr-mnpt-stray", "podName": "other", "podUID": other.uid}
    store.write(StateEntry.from_json(json.dumps(stray)))
    wait_for(lambda: "same interface" in w.interface(server).get("reason", ""), what="the conflict reported")
    assert w.interface(server)["state"] == "pending"
    assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [False, False]
    assert store.delete("ctr-mnpt-stray", "net1")
    wait_for(lambda: w.interface(server).get("state") == "programmed", what="the server's own rules again")
    assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [True, False]


def test_a_restart_with_changed_rules_leaves_no_stale_port_group(world: World) -> None:
    """mnpd restarts with other rules for a pod: its first full form cannot know the old port group (the group's
    name hashes the rules that made it), which stays in the kernel's table referenced by nothing; the periodic
    resync, which lists the table, removes it in the same transaction as the full form, without reporting a
    tamper. Polled on the pod's own `nft -j list table` (the one reader), with a deadline."""
    from shared.nft.trace import NftListing

    w = world
    client, other = w.add_pod("client", {"role": "client"}), w.add_pod("other", {"role": "other"})
    server = w.add_pod("server", {"app": "server"})
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])

    def groups() -> set[str]:
        listed = server.netns.run("nft", "-j", "list", "table", "inet", "mnp")
        return {n for n in NftListing.parse(listed.stdout).names() if n.startswith("g_")}

    first = Daemon(load(daemon_args(w), {})).start()
    try:
        w.wait_programmed(server)
    finally:
        first.stop()
    old = groups()
    assert len(old) == 2  # the group's chain and its port set
    w.write("policy.yaml", [ingress_policy("q", {"app": "server"}, {"role": "other"}, [{"port": 8081}])])
    w.status_file.unlink()
    d = Daemon(load([*daemon_args(w)[:-1], "1s"], {})).start()  # --resync-period 1s
    try:
        wait_for(lambda: can([(other, server, "tcp", 8081)]) == [True], what="the new rules enforced")
        wait_for(lambda: bool(groups()) and not groups() & old, what="the old port group removed")
        assert len(groups()) == 2
        assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8081)]) == [False, True]
        assert d.metrics.tamper_repairs._value.get() == 0
    finally:
        d.stop()


def test_renaming_the_interface_inside_the_pod_keeps_it_guarded(world: World, daemon: Daemon) -> None:
    """A pod with NET_ADMIN renames its guarded interface (`ip link set net1 name x`): the table dispatches on the
    interface index, which a rename keeps, so exactly the same is enforced, both ways, and nothing needs repair."""
    w = world
    client, other = w.add_pod("client", {"role": "client"}), w.add_pod("other", {"role": "other"})
    server = w.add_pod("server", {"app": "server"})
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])
    w.wait_programmed(server)
    matrix = [(client, server, "tcp", 8080), (client, server, "tcp", 8081), (other, server, "tcp", 8080)]
    assert can(matrix) == [True, False, False]
    index = server.netns.link("net1").index  # type: ignore[union-attr]
    server.netns.run("ip", "link", "set", "net1", "down")
    server.netns.run("ip", "link", "set", "net1", "name", "x")
    server.netns.run("ip", "link", "set", "x", "up")
    renamed = server.netns.link("x")
    assert renamed is not None and renamed.index == index
    wait_for(lambda: can([(client, server, "tcp", 8080)]) == [True], what="x up again")
    assert can(matrix) == [True, False, False]
    assert w.interface(server).get("state") == "programmed"
