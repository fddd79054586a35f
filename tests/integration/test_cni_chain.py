"""The chain `macvlan (+ host-local IPAM) → mnp`, executed exactly as libcni does (daemon/testbed/cniruntime.py),
with the real Debian plugins and real packets, inside a test node netns.

Two variants of the `mnp` executable on CNI_PATH: a wrapper running the source with the venv's Python, and the
FROZEN one-dir build reached through a symlink, as a node installs it (built once per session with
packaging/build-plugin.sh into a tmp dir; skipped with the reason when PyInstaller is missing).

Address plan: m0 carries 10.241.0.0/24 (pods behind mnp get .10–.49, pods without it .50–.99), m1 carries
10.242.0.0/24. Every netns is created by the test support with the `mnpt-` prefix and removed pass or fail; the
macvlan masters live only in the node netns; the host's root netns never gets a table (checked per module).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from daemon.testbed.cniruntime import Attachment, CniError, CniRuntime, PodRef
from daemon.testbed.netns import (
    NetNS,
    Node,
    Probe,
    Server,
    probe_matrix,
)
from tests.support.host import CNI_BIN, host_untouched

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]

REAL_PLUGINS = ("macvlan", "host-local")
TIMEOUT = 1.0  # a denied probe costs this much; an allowed one answers at once


# ----------------------------------------------------------------------------------------------- fixtures


def nft_tables(netns: NetNS | None = None) -> str:
    argv = ["nft", "list", "tables"]
    if netns is not None:
        argv = ["nsenter", f"--net={netns.path}", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def nft_table(netns: NetNS) -> str:
    """`nft list table inet mnp` in the pod, or "" when there is no such table."""
    done = subprocess.run(
        ["nsenter", f"--net={netns.path}", "nft", "list", "table", "inet", "mnp"], capture_output=True, text=True
    )
    return done.stdout if done.returncode == 0 else ""


def nft_chain(netns: NetNS, chain: str) -> str:
    done = subprocess.run(
        ["nsenter", f"--net={netns.path}", "nft", "list", "chain", "inet", "mnp", chain], capture_output=True, text=True
    )
    return done.stdout if done.returncode == 0 else ""


def dropped(netns: NetNS, chain: str) -> int:
    """Packets counted by the chain's default `counter drop`."""
    counts = re.findall(r"counter packets (\d+) bytes \d+ drop", nft_chain(netns, chain))
    assert len(counts) == 1, counts
    return int(counts[0])


def chain_rules(netns: NetNS, chain: str) -> str:
    """The chain with its rule handles (unchanged handles: the rules were not replaced) and without counter values
    (the pod's own IPv6 MLD reports hit the default drop at any moment)."""
    done = subprocess.run(
        ["nsenter", f"--net={netns.path}", "nft", "-a", "list", "chain", "inet", "mnp", chain],
        capture_output=True,
        text=True,
        check=True,
    )
    return re.sub(r"counter packets \d+ bytes \d+", "counter", done.stdout)


@pytest.fixture(scope="module", autouse=True)
def _host_stays_untouched() -> Iterator[None]:
    with host_untouched(REAL_PLUGINS):
        yield


@pytest.fixture(scope="session")
def frozen_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-dir build of this checkout, made once per session in a tmp dir."""
    pyinstaller = Path(sys.executable).parent / "pyinstaller"
    if not pyinstaller.exists() and shutil.which("pyinstaller") is None:
        pytest.skip("pyinstaller is not installed (pip install -e '.[build]'): the frozen variant cannot be built")
    out = tmp_path_factory.mktemp("frozen")
    env = dict(os.environ, PYINSTALLER=str(pyinstaller) if pyinstaller.exists() else "pyinstaller")
    done = subprocess.run(
        [str(ROOT / "packaging" / "build-plugin.sh"), "--dist", str(out / "dist"), "--work", str(out / "work")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out / "dist" / "mnp"


@pytest.fixture(params=["python", "frozen"])
def plugin_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A directory holding `mnp` for CNI_PATH: the source under the venv's Python, or a symlink to the frozen
    bundle's executable (one-dir works through a symlink; this is the node's install layout)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if request.param == "python":
        wrapper = bindir / "mnp"
        wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m cni "$@"\n')
        wrapper.chmod(0o755)
    else:
        bundle: Path = request.getfixturevalue("frozen_bundle")
        (bindir / "mnp").symlink_to(bundle / "mnp")
    return bindir


@pytest.fixture
def node() -> Iterator[Node]:
    n = Node("chain", masters=["m0", "m1"])
    try:
        yield n
    finally:
        n.delete()


class Lab:
    """One node, its runtime, and the conflists of the test: `closed` (macvlan → mnp) and `open` (macvlan only)
    on m0, `closed2` (macvlan → mnp) and `open2` on m1."""

    def __init__(self, node: Node, plugin_dir: Path, scratch: Path) -> None:
        self.node = node
        self.state = scratch / "state"
        self.runtime = CniRuntime([plugin_dir, CNI_BIN], scratch / "cache", exec_netns=node.ns)
        self.ipam = scratch / "ipam"

    def conflist(
        self, name: str, master: str, subnet: str, first: int, last: int, mnp: bool, **extra: Any
    ) -> dict[str, Any]:
        base = subnet.rsplit(".", 1)[0]
        plugins: list[dict[str, Any]] = [
            {
                "type": "macvlan",
                "master": master,
                "mode": "bridge",
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(self.ipam),
                    "ranges": [[{"subnet": subnet, "rangeStart": f"{base}.{first}", "rangeEnd": f"{base}.{last}"}]],
                },
            }
        ]
        if mnp:
            plugins.append({"type": "mnp", "stateDir": str(self.state), **extra})
        return {"cniVersion": "1.0.0", "name": name, "plugins": plugins}

    @property
    def closed(self) -> dict[str, Any]:
        return self.conflist("mnpt-closed", "m0", "10.241.0.0/24", 10, 49, True)

    @property
    def open(self) -> dict[str, Any]:
        return self.conflist("mnpt-open", "m0", "10.241.0.0/24", 50, 99, False)

    @property
    def closed2(self) -> dict[str, Any]:
        return self.conflist("mnpt-closed2", "m1", "10.242.0.0/24", 10, 49, True)

    @property
    def open2(self) -> dict[str, Any]:
        return self.conflist("mnpt-open2", "m1", "10.242.0.0/24", 50, 99, False)

    def attachment(self, pod: NetNS, ifname: str = "net1", name: str = "") -> Attachment:
        container = f"ctr-{uuid.uuid4().hex[:12]}"
        return Attachment(container, pod, ifname, PodRef("ns1", name or pod.name.rsplit("-", 1)[-1]))

    def entries(self) -> list[dict[str, Any]]:
        if not self.state.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.state.glob("*.json"))]


@pytest.fixture
def lab(node: Node, plugin_dir: Path, tmp_path: Path) -> Lab:
    return Lab(node, plugin_dir, tmp_path)


def verdicts(items: list[tuple[NetNS, Probe]]) -> list[bool]:
    return [r.allowed for r in probe_matrix([(ns, probe) for ns, probe in items])]


def both_ways(src: NetNS, ip: str) -> list[tuple[NetNS, Probe]]:
    return [(src, Probe("tcp", ip, 8080, timeout=TIMEOUT)), (src, Probe("udp", ip, 5353, timeout=TIMEOUT))]


# ----------------------------------------------------------------------------------------------- the chain


def test_a_pod_is_closed_from_its_first_packet(lab: Lab) -> None:
    node, rt = lab.node, lab.runtime
    pod_a, pod_c, pod_d = node.new_pod("a"), node.new_pod("c"), node.new_pod("d")
    att_a = lab.attachment(pod_a)
    res_a = rt.add(lab.closed, att_a)
    res_c = rt.add(lab.open, lab.attachment(pod_c))
    res_d = rt.add(lab.open, lab.attachment(pod_d))
    ip_a, ip_c, ip_d = res_a.ip("net1"), res_c.ip("net1"), res_d.ip("net1")

    # mnp printed macvlan's result unchanged
    add_calls = [c for c in rt.calls_for(command="ADD") if c.env["CNI_CONTAINERID"] == att_a.container_id]
    assert [c.plugin for c in add_calls] == ["macvlan", "mnp"]
    assert json.loads(add_calls[1].stdout) == json.loads(add_calls[0].stdout) == res_a.raw

    # the pending table, and nothing anywhere else
    table = nft_table(pod_a)
    for chain in ("chain input", "chain output", "chain ingress_net1", "chain egress_net1"):
        assert chain in table, table
    assert '"net1" : jump ingress_net1' in table and '"net1" : jump egress_net1' in table
    assert nft_tables(node.ns) == "" and nft_table(pod_c) == ""

    # the state entry the daemon will read
    (entry,) = lab.entries()
    assert entry["containerID"] == att_a.container_id and entry["ifname"] == "net1"
    assert entry["netns"] == pod_a.path and entry["network"] == "mnpt-closed"
    assert (entry["podNamespace"], entry["podName"]) == ("ns1", "a")
    assert entry["ips"] == res_a.addresses("net1") and entry["mac"] == res_a.interfaces[0].mac
    net1 = pod_a.link("net1")
    assert net1 is not None and entry["ifindex"] == net1.index  # learned inside the pod netns, not the node's

    servers = [Server(pod, [("tcp", 8080), ("udp", 5353)]) for pod in (pod_a, pod_c, pod_d)]
    drops = {chain: dropped(pod_a, chain) for chain in ("ingress_net1", "egress_net1")}
    try:
        got = verdicts(
            both_ways(pod_c, ip_a)  # into the closed pod
            + both_ways(pod_a, ip_c)  # out of it
            + both_ways(pod_c, ip_d)  # two pods without mnp on the same network
            + both_ways(pod_d, ip_c)
        )
        assert got == [False] * 4 + [True] * 4
        assert servers[0].connections() == []
    finally:
        for s in servers:
            s.stop()
    # dropped by mnp's default deny, both ways (at least a TCP SYN and a UDP datagram each; the pod's own IPv6 MLD
    # reports may add to it)
    for chain, before in drops.items():
        assert dropped(pod_a, chain) >= before + 2, chain

    rt.check(lab.closed, att_a)
    rt.delete(lab.closed, att_a)
    assert nft_table(pod_a) == "" and lab.entries() == []


def test_a_second_interface_joins_without_disturbing_the_first(lab: Lab) -> None:
    node, rt = lab.node, lab.runtime
    pod_a, pod_c, pod_e = node.new_pod("a"), node.new_pod("c"), node.new_pod("e")
    att1 = lab.attachment(pod_a)
    ip1 = rt.add(lab.closed, att1).ip("net1")
    rt.add(lab.open, lab.attachment(pod_c))
    ip_e = rt.add(lab.open2, lab.attachment(pod_e)).ip("net1")
    before = {chain: chain_rules(pod_a, chain) for chain in ("ingress_net1", "egress_net1")}

    att2 = Attachment(att1.container_id, pod_a, "net2", att1.pod)
    ip2 = rt.add(lab.closed2, att2).ip("net2")
    assert {chain: chain_rules(pod_a, chain) for chain in before} == before
    assert "chain ingress_net2" in nft_table(pod_a)
    assert sorted((e["ifname"], e["network"]) for e in lab.entries()) == [
        ("net1", "mnpt-closed"),
        ("net2", "mnpt-closed2"),
    ]
    rt.check(lab.closed, att1)
    rt.check(lab.closed2, att2)

    with Server(pod_a, [("tcp", 8080), ("udp", 5353)]), Server(pod_e, [("tcp", 8080), ("udp", 5353)]):
        assert verdicts(both_ways(pod_c, ip1) + both_ways(pod_e, ip2) + both_ways(pod_a, ip_e)) == [False] * 6

        rt.delete(lab.closed2, att2)
        table = nft_table(pod_a)
        assert "net2" not in table and "chain ingress_net1" in table
        assert [e["ifname"] for e in lab.entries()] == ["net1"]
        assert verdicts(both_ways(pod_c, ip1)) == [False, False]

    rt.delete(lab.closed, att1)
    assert nft_table(pod_a) == "" and lab.entries() == []


def test_del_of_another_container_in_the_same_netns_keeps_the_interface_closed(lab: Lab) -> None:
    """Issue 11, item 1: containers A (net1) and B (net2) in one netns share its table. B's DEL removes only B's
    objects; A's net1 stays closed both ways, with real packets, and CHECK of A still passes."""
    node, rt = lab.node, lab.runtime
    pod_a, pod_c = node.new_pod("a"), node.new_pod("c")
    att_a = lab.attachment(pod_a)
    ip_a = rt.add(lab.closed, att_a).ip("net1")
    att_b = Attachment(f"ctr-{uuid.uuid4().hex[:12]}", pod_a, "net2", att_a.pod)
    rt.add(lab.closed2, att_b)
    ip_c = rt.add(lab.open, lab.attachment(pod_c)).ip("net1")

    with Server(pod_a, [("tcp", 8080), ("udp", 5353)]) as server_a, Server(pod_c, [("tcp", 8080), ("udp", 5353)]):
        assert verdicts(both_ways(pod_c, ip_a) + both_ways(pod_a, ip_c)) == [False] * 4
        rt.delete(lab.closed2, att_b)
        assert verdicts(both_ways(pod_c, ip_a) + both_ways(pod_a, ip_c)) == [False] * 4
        assert server_a.connections() == []
        table = nft_table(pod_a)
        assert "chain ingress_net1" in table and "net2" not in table
        assert [e["containerID"] for e in lab.entries()] == [att_a.container_id]
        rt.check(lab.closed, att_a)

    rt.delete(lab.closed, att_a)
    assert nft_table(pod_a) == "" and lab.entries() == []


def test_del_after_the_netns_is_gone(lab: Lab) -> None:
    pod = lab.node.new_pod("gone")
    att = lab.attachment(pod)
    lab.runtime.add(lab.closed, att)
    pod.delete()
    lab.runtime.delete(lab.closed, att)  # macvlan and mnp both succeed
    assert lab.entries() == []
    lab.runtime.delete(lab.closed, att)  # and again, without prevResult


def test_concurrent_add_and_del_of_many_pods(lab: Lab) -> None:
    rt = lab.runtime
    pods = [lab.node.new_pod(f"p{i}") for i in range(10)]
    atts = [lab.attachment(pod) for pod in pods]
    first, second = atts[:6], atts[6:]

    def add(att: Attachment) -> None:
        rt.add(lab.closed, att)

    def delete(att: Attachment) -> None:
        rt.delete(lab.closed, att)

    with ThreadPoolExecutor(max_workers=len(atts)) as pool:
        list(pool.map(add, first))
        assert sorted(e["containerID"] for e in lab.entries()) == sorted(a.container_id for a in first)
        # half of them go while the others come
        jobs = [pool.submit(delete, a) for a in first[:3]] + [pool.submit(add, a) for a in second]
        for job in jobs:
            job.result()
        alive = first[3:] + second
        assert sorted(e["containerID"] for e in lab.entries()) == sorted(a.container_id for a in alive)
        for att in atts:
            table = nft_table(att.netns)  # type: ignore[arg-type]
            if att in alive:
                assert "chain ingress_net1" in table and "chain egress_net1" in table
            else:
                assert table == ""
        list(pool.map(delete, alive))
    assert lab.entries() == []
    assert [p.name for p in lab.state.iterdir()] == [".lock"]  # no tmp file left behind
    assert all(nft_table(pod) == "" for pod in pods)


def test_own_netns_is_refused(lab: Lab) -> None:
    pod = lab.node.new_pod("a")
    res = lab.runtime.add(lab.open, lab.attachment(pod))
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "mnpt-closed", "type": "mnp", "stateDir": str(lab.state)}
    conf["prevResult"] = res.raw
    # the runtime runs plugins in the node netns: CNI_NETNS = the node is the plugin's own netns
    call = lab.runtime.exec_plugin(
        "mnp", "ADD", conf, container_id="ctr-own", netns=lab.node.ns.path, ifname="net1", cni_args="IgnoreUnknown=1"
    )
    error = call.error()
    assert error is not None and error.code == 8
    assert nft_tables(lab.node.ns) == "" and lab.entries() == []


def test_a_path_that_is_no_network_namespace_is_refused(lab: Lab, tmp_path: Path) -> None:
    """Issue 11, item 13: the real plugin, given a mount namespace or a plain file with content as CNI_NETNS,
    answers code 8 on ADD, CHECK and DEL — before nft, so no table appears anywhere (the module checks the
    host) — and DEL leaves the entry of an earlier ADD alone."""
    pod = lab.node.new_pod("a")
    att = lab.attachment(pod)
    res = lab.runtime.add(lab.closed, att)
    before = lab.entries()
    plain = tmp_path / "plain"
    plain.write_text("not a namespace")
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "mnpt-closed", "type": "mnp", "stateDir": str(lab.state)}
    conf["prevResult"] = res.raw
    for netns in ("/proc/self/ns/mnt", str(plain)):
        for command in ("ADD", "CHECK", "DEL"):
            call = lab.runtime.exec_plugin(
                "mnp", command, conf, container_id=att.container_id, netns=netns, ifname="net1", cni_args=""
            )
            error = call.error()
            assert error is not None and error.code == 8, (netns, command, call.stdout, call.stderr)
            assert len(call.stdout.splitlines()) == 1 and "Traceback" not in call.stderr
    assert lab.entries() == before and "chain ingress_net1" in nft_table(pod)
    assert nft_tables(lab.node.ns) == ""
    lab.runtime.delete(lab.closed, att)


def test_an_interface_missing_in_the_pod_answers_code_101(lab: Lab) -> None:
    """CNI_IFNAME that no plugin before mnp created (a real netns, no such interface): ADD answers code 101
    (INTERFACE_MISSING) with one error JSON, opens nothing and records nothing — in a pod whose other interface mnp
    closed, and in a pod with no table at all; CHECK of an interface removed after ADD answers 101 as well."""
    pod, empty = lab.node.new_pod("a"), lab.node.new_pod("b")
    att = lab.attachment(pod)
    res = lab.runtime.add(lab.closed, att)

    def rules(netns: NetNS) -> str:  # the table without its counters: the pod's own packets may hit a drop
        return re.sub(r"counter packets \d+ bytes \d+", "counter", nft_table(netns))

    before, table = lab.entries(), rules(pod)
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "mnpt-closed", "type": "mnp", "stateDir": str(lab.state)}
    conf["prevResult"] = res.raw

    def call(command: str, netns: NetNS, ifname: str, container_id: str) -> None:
        done = lab.runtime.exec_plugin(
            "mnp", command, conf, container_id=container_id, netns=netns.path, ifname=ifname, cni_args=""
        )
        error = done.error()
        assert error is not None and error.code == 101, (command, done.stdout, done.stderr)
        assert f"no interface {ifname} (CNI_IFNAME) in the pod network namespace" in error.msg
        assert len(done.stdout.splitlines()) == 1 and "Traceback" not in done.stderr

    call("ADD", pod, "net2", att.container_id)
    call("ADD", empty, "net1", "ctr-empty")
    assert lab.entries() == before and rules(pod) == table and nft_table(empty) == ""
    pod.run("ip", "link", "del", "net1")  # gone after ADD: CHECK says so, and keeps the table and the entry
    call("CHECK", pod, "net1", att.container_id)
    kept = nft_table(pod)  # nft prints the key as a number now: no interface has that index any more
    assert lab.entries() == before and 'comment "net1" : jump ingress_net1' in kept and "chain egress_net1" in kept
    lab.runtime.delete(lab.closed, att)
    assert lab.entries() == [] and nft_table(pod) == ""


def test_a_failed_add_leaves_nothing(lab: Lab, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    pod = lab.node.new_pod("a")
    att = lab.attachment(pod)
    broken = lab.conflist("mnpt-closed", "m0", "10.241.0.0/24", 10, 49, True)
    broken["plugins"][1]["stateDir"] = str(blocker / "state")
    with pytest.raises(CniError) as failure:
        lab.runtime.add(broken, att)
    assert (failure.value.plugin, failure.value.code) == ("mnp", 5)
    assert nft_table(pod) == ""
    with pytest.raises(CniError):  # what the runtime does next; mnp cannot use its state dir for DEL either
        lab.runtime.delete(broken, att)
    assert pod.link("net1") is None  # but macvlan cleaned up after it


def test_version_status_and_gc_through_the_runtime(lab: Lab) -> None:
    rt = lab.runtime
    info = rt.version("mnp")
    assert info.supported_versions == ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
    mnp_conf = {"type": "mnp", "stateDir": str(lab.state)}
    rt.status({"cniVersion": "1.1.0", "name": "mnpt-closed", "plugins": [mnp_conf]})

    keep, drop = lab.node.new_pod("keep"), lab.node.new_pod("drop")
    att_keep, att_drop = lab.attachment(keep), lab.attachment(drop)
    rt.add(lab.closed, att_keep)
    rt.add(lab.closed, att_drop)
    conf: dict[str, Any] = {**mnp_conf, "name": "mnpt-closed", "cniVersion": "1.1.0"}
    conf["cni.dev/valid-attachments"] = [{"containerID": att_keep.container_id, "ifname": "net1"}]
    call = rt.exec_plugin("mnp", "GC", conf)
    assert call.rc == 0, call.stdout + call.stderr
    assert [e["containerID"] for e in lab.entries()] == [att_keep.container_id]
    assert nft_table(drop) == "" and "chain ingress_net1" in nft_table(keep)
    rt.delete(lab.closed, att_keep)
    rt.delete(lab.closed, att_drop)


def test_frozen_plugin_starts_nft_with_the_hosts_libraries(frozen_bundle: Path, tmp_path: Path) -> None:
    """PyInstaller puts its bundle first in LD_LIBRARY_PATH; the children (nsenter, nft) must not inherit that."""
    seen = tmp_path / "env.txt"
    nft = tmp_path / "nft-spy"
    nft.write_text(f'#!/bin/sh\nenv > {seen}\nexec nft "$@"\n')
    nft.chmod(0o755)
    conf: dict[str, Any] = {
        "cniVersion": "1.1.0",
        "name": "mnpt-spy",
        "type": "mnp",
        "stateDir": str(tmp_path / "state"),
    }
    conf["nftPath"] = str(nft)
    for library_path in ("", "/opt/elsewhere"):
        env = {"CNI_COMMAND": "STATUS", "CNI_PATH": "/x", "PATH": os.environ["PATH"]}
        if library_path:
            env["LD_LIBRARY_PATH"] = library_path
        done = subprocess.run(
            [str(frozen_bundle / "mnp")], input=json.dumps(conf).encode(), env=env, capture_output=True, check=False
        )
        assert done.returncode == 0, done
        lines = seen.read_text().splitlines()
        assert not any(str(frozen_bundle) in line or line.startswith("_PYI_") for line in lines), lines
        assert [line for line in lines if line.startswith("LD_LIBRARY_PATH")] == (
            [f"LD_LIBRARY_PATH={library_path}"] if library_path else []
        )


def test_frozen_plugin_closes_an_interface_with_a_hashed_name(frozen_bundle: Path, tmp_path: Path) -> None:
    """`eth0.100` is not a plain nft identifier: its chains are named by a sha256 (built-in hashlib, no OpenSSL)."""
    from shared.nft.render import chain_name

    pod = NetNS.create("hashed")
    try:
        pod.add_veth("eth0.100", "peer0")  # the interface ADD closes
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "mnpt-hashed",
            "type": "mnp",
            "stateDir": str(tmp_path / "state"),
        }
        conf["prevResult"] = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0.100", "sandbox": pod.path}]}
        env = {"CNI_CONTAINERID": "ctr-hashed", "CNI_NETNS": pod.path, "CNI_IFNAME": "eth0.100", "CNI_PATH": "/x"}
        env["PATH"] = os.environ["PATH"]
        for command in ("ADD", "CHECK"):
            done = subprocess.run(
                [str(frozen_bundle / "mnp")],
                input=json.dumps(conf).encode(),
                env=env | {"CNI_COMMAND": command},
                capture_output=True,
                check=False,
            )
            assert done.returncode == 0, done
        assert f"chain {chain_name('Ingress', 'eth0.100')}" in nft_table(pod)
        done = subprocess.run(
            [str(frozen_bundle / "mnp")],
            input=json.dumps(conf).encode(),
            env=env | {"CNI_COMMAND": "DEL"},
            capture_output=True,
            check=False,
        )
        assert done.returncode == 0, done
        assert nft_table(pod) == ""
    finally:
        pod.delete()


@pytest.mark.parametrize("via", ["libnftables", "nft"])
def test_in_process_add_check_del_in_a_real_netns(via: str, tmp_path: Path) -> None:
    """The plugin's real dependencies in this very process (no exec of mnp): ADD closes the interface with its
    prebuilt netlink batch, CHECK finds it and DEL removes it through libnftables — or, when it cannot be loaded,
    through `nsenter nft` — and no thread of this process is left in the pod's namespace."""
    import io
    import threading

    from cni.plugin import real_deps, release_kept
    from cni.skel import Dispatcher
    from shared.nft.libnft import LibnftUnavailable, available

    if via == "libnftables" and not available():
        pytest.skip("no libnftables.so.1 on this host")

    def load() -> None:
        if via == "nft":
            raise LibnftUnavailable("cannot load libnftables.so.1 (test)")

    def own_netns() -> tuple[int, int]:
        st = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net")
        return st.st_dev, st.st_ino

    home = own_netns()
    pod = NetNS.create("inproc")
    try:
        pod.add_veth("net1", "peer0")  # the interface ADD closes
        conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "mnpt-inproc", "type": "mnp"}
        conf["stateDir"] = str(tmp_path / "state")
        conf["prevResult"] = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": pod.path}]}
        env = {"CNI_CONTAINERID": "ctr-inproc", "CNI_NETNS": pod.path, "CNI_IFNAME": "net1", "CNI_PATH": "/x"}
        for command in ("ADD", "CHECK", "DEL"):
            out, err = io.StringIO(), io.StringIO()
            rc = Dispatcher(
                env | {"CNI_COMMAND": command},
                json.dumps(conf).encode(),
                out,
                err,
                deps=lambda c: real_deps(c, load=load),
            ).run()
            assert rc == 0, (command, out.getvalue(), err.getvalue())
            if command == "ADD":
                assert "nft=netlink" in err.getvalue()
                assert "chain ingress_net1" in nft_table(pod) and "counter packets 0 bytes 0 drop" in nft_table(pod)
        assert nft_table(pod) == ""
        assert own_netns() == home  # and the host's ruleset is unchanged: the module's host_untouched checks it
    finally:
        release_kept()  # the sockets ADD kept for an exit this process does not make
        pod.delete()


@pytest.mark.parametrize("via", ["libnftables", "nft"])
def test_del_of_one_of_two_programmed_interfaces_removes_its_port_groups(via: str, tmp_path: Path) -> None:
    """Two interfaces in one netns, both programmed with port groups (whose names the plugin cannot know): the
    DEL of one lists the table and removes all of that interface's objects — chains, peer maps, the groups'
    chains and port sets — and nothing of the other, which keeps enforcing; the last DEL removes the table."""
    import io
    import ipaddress

    from cni.plugin import real_deps
    from cni.skel import Dispatcher
    from shared.netns import interface_index
    from shared.nft.libnft import LibnftUnavailable, available
    from shared.nft.render import interface_names, owned_view, render_interface
    from shared.nft.trace import Packet, table_from_nft_json, trace
    from shared.rules import Allow, DirectionRules, InterfaceRules, PortRange, collapse

    if via == "libnftables" and not available():
        pytest.skip("no libnftables.so.1 on this host")

    def load() -> None:
        if via == "nft":
            raise LibnftUnavailable("cannot load libnftables.so.1 (test)")

    def index(ifname: str) -> int:
        return interface_index(pod.path, ifname)

    def view() -> Any:
        done = subprocess.run(
            ["nsenter", f"--net={pod.path}", "nft", "-j", "list", "table", "inet", "mnp"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return table_from_nft_json(done.stdout, ifindex_of=lambda name: index(name))

    def cni(command: str, ifname: str) -> None:
        conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "mnpt-groups", "type": "mnp"}
        conf["stateDir"] = str(tmp_path / "state")
        conf["prevResult"] = {"cniVersion": "1.0.0", "interfaces": [{"name": ifname, "sandbox": pod.path}]}
        env = {"CNI_CONTAINERID": "ctr-groups", "CNI_NETNS": pod.path, "CNI_IFNAME": ifname, "CNI_PATH": "/x"}
        out, err = io.StringIO(), io.StringIO()
        rc = Dispatcher(
            env | {"CNI_COMMAND": command}, json.dumps(conf).encode(), out, err, deps=lambda c: real_deps(c, load=load)
        ).run()
        assert rc == 0, (command, ifname, out.getvalue(), err.getvalue())

    def rules(ifname: str) -> InterfaceRules:
        peers = collapse([ipaddress.ip_network("192.0.2.0/28"), ipaddress.ip_network("2001:db8:1::/120")])
        web = Allow("ns/web ingress[0]", peers, (PortRange("tcp", 80, 80), PortRange("sctp", 9, 9)))
        admin = Allow(
            "ns/admin ingress[0]", collapse([ipaddress.ip_network("192.0.2.8/29")]), (PortRange("udp", 53, 53),)
        )
        every = Allow("ns/all egress[0]", collapse([ipaddress.ip_network("198.51.100.0/24")]), None)
        return InterfaceRules(
            "ns/pod",
            ifname,
            "ns/net",
            DirectionRules(True, (web, admin), ("ns/web", "ns/admin")),
            DirectionRules(True, (every, web), ("ns/all",)),
            index(ifname),
        )

    pod = NetNS.create("groups")
    try:
        pod.add_veth("net1", "peer1")
        pod.add_veth("net2", "peer2")
        cni("ADD", "net1")
        cni("ADD", "net2")
        for ifname in ("net1", "net2"):  # as mnpd programs them
            done = subprocess.run(
                ["nsenter", f"--net={pod.path}", "nft", "-f", "-"],
                input=str(render_interface(rules(ifname))),
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, done.stderr
        before = view()
        names = [*before.chains, *before.sets]
        net2 = interface_names("net2", names) & set(names)
        assert len([n for n in net2 if n.startswith("g_")]) == 6  # two groups each way: chain and port set each
        web = Packet("input", "net1", "192.0.2.9", "192.0.2.1", "tcp", 80, ifindex=index("net1"))
        assert trace(before, web).verdict == "accept"

        cni("DEL", "net2")
        after = view()
        left = [*after.chains, *after.sets]
        assert not [n for n in left if "net2" in n], left
        assert owned_view(after, "net1", index("net1")) == owned_view(before, "net1", index("net1"))
        assert set(after.chains) == set(before.chains) - net2
        assert trace(after, web).verdict == "accept"
        assert (
            trace(after, Packet("input", "net1", "192.0.2.9", "192.0.2.1", "tcp", 81, ifindex=index("net1"))).verdict
            == "drop"
        )

        cni("DEL", "net1")
        assert nft_table(pod) == ""
    finally:
        pod.delete()
