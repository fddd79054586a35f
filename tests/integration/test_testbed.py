"""Integration tests of the test bed itself: daemon/testbed/cniruntime.py and daemon/testbed/netns.py.

Why: every plugin, daemon and lab test trusts that the CNI runtime chains plugins exactly like
libcni and that the netns/probe helpers tell allowed from denied traffic.  These tests pin both
against the real Debian plugins (macvlan + static / host-local IPAM) inside a test "node" netns,
and pin the chaining mechanics with a tiny recording fake plugin written into a tmp dir.

Real-netns tests skip cleanly without root, ``ip`` or the plugins; nothing is created in the
host's root netns, and the module checks that no ``mnpt-`` netns or server process leaks.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.testbed.cniruntime import (
    Attachment,
    CniError,
    CniFailure,
    CniResult,
    CniRuntime,
    PodRef,
)
from daemon.testbed.netns import (
    MasterKind,
    NetNS,
    Node,
    Probe,
    Server,
    check_leftovers,
    have_netns_support,
    leftover_netns,
    probe_matrix,
    run_probes,
    sweep_stale_netns,
)

pytestmark = pytest.mark.netns

CNI_BIN = Path(os.environ.get("MNP_TEST_CNI_BIN", "/usr/lib/cni"))
REAL_PLUGINS = ("macvlan", "static", "host-local")


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module", autouse=True)
def _module_leak_guard() -> Iterator[None]:
    if have_netns_support() is None:
        sweep_stale_netns()  # debris of killed earlier runs (dead creator pid only)
    yield
    assert check_leftovers() == [], "test support leaked namespaces or processes"


@pytest.fixture
def need_netns() -> None:
    reason = have_netns_support()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def need_plugins() -> None:
    missing = [p for p in REAL_PLUGINS if not (CNI_BIN / p).exists()]
    if missing:
        pytest.skip(f"CNI plugins missing in {CNI_BIN}: {missing}")


@pytest.fixture(params=["veth", "bridge"])
def node(request: pytest.FixtureRequest, need_netns: None) -> Iterator[Node]:
    kind: MasterKind = request.param
    n = Node("node", masters=["m0"], kind=kind)
    try:
        yield n
    finally:
        n.delete()


@pytest.fixture
def veth_node(need_netns: None) -> Iterator[Node]:
    n = Node("node", masters=["m0"], kind="veth")
    try:
        yield n
    finally:
        n.delete()


FAKE_PLUGIN = r"""#!{python} -IS
# Recording fake chained plugin: logs stdin + CNI_* env, echoes prevResult on ADD.
import json, os, sys
raw = sys.stdin.read()
conf = json.loads(raw or "{{}}")
cmd = os.environ.get("CNI_COMMAND", "")
if conf.get("log"):
    env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
    with open(conf["log"], "a") as f:
        f.write(json.dumps({{"tag": conf.get("tag"), "command": cmd, "env": env, "stdin": conf}}) + "\n")
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": conf.get("cniVersion"), "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}}))
    sys.exit(0)
if cmd in conf.get("failOn", []):
    print(json.dumps({{"cniVersion": conf.get("cniVersion"), "code": 11,
                      "msg": "fake failure " + str(conf.get("tag")), "details": cmd}}))
    sys.exit(1)
if cmd == "ADD":
    prev = conf.get("prevResult")
    if prev is None:
        prev = {{"cniVersion": conf["cniVersion"],
                "interfaces": [{{"name": os.environ["CNI_IFNAME"], "sandbox": os.environ["CNI_NETNS"]}}],
                "ips": [{{"interface": 0, "address": conf.get("address", "192.0.2.10/24")}}]}}
    print(json.dumps(prev))
"""


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    d = tmp_path / "fakebin"
    d.mkdir()
    p = d / "fake-chain"
    p.write_text(FAKE_PLUGIN.format(python=sys.executable))
    p.chmod(0o755)
    return d


class Log:
    """Reads the fake plugin's JSONL log."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def take(self) -> list[dict[str, Any]]:
        recs = self.records()
        self.path.unlink(missing_ok=True)
        return recs


def fake(tag: str, log: Path, **extra: Any) -> dict[str, Any]:
    return {"type": "fake-chain", "tag": tag, "log": str(log), **extra}


def cni_args_str(att: Attachment) -> str:
    return ";".join(f"{k}={v}" for k, v in att.cni_args())


# --------------------------------------------------------------------------------------------
# real plugins


def test_version_and_validate_real_plugins(need_plugins: None, tmp_path: Path) -> None:
    rt = CniRuntime([CNI_BIN], tmp_path / "cache")
    info = rt.version("macvlan")
    assert "1.0.0" in info.supported_versions
    assert "1.1.0" not in info.supported_versions  # Debian's 1.1.1 plugins stop at spec 1.0.0
    conf = {"cniVersion": "1.0.0", "name": "v", "plugins": [{"type": "macvlan", "capabilities": {"ips": True}}]}
    assert rt.validate(conf) == ["ips"]
    with pytest.raises(CniFailure, match="does not support config version"):
        rt.validate({**conf, "cniVersion": "1.1.0"})
    with pytest.raises(CniFailure, match="failed to find plugin"):
        rt.version("no-such-plugin")


@pytest.mark.parametrize("ipam", ["static", "host-local"])
def test_two_pods_on_one_macvlan_master(need_plugins: None, node: Node, tmp_path: Path, ipam: str) -> None:
    data_dir = tmp_path / "ipam"
    net_name = f"mnpt-{ipam}"
    if ipam == "static":
        # Per-pod addresses through runtimeConfig.ips, the way Multus passes static IPs.
        ipam_conf: dict[str, Any] = {"type": "static"}
        caps: dict[str, Any] = {"ips": True}
    else:
        ipam_conf = {
            "type": "host-local",
            "dataDir": str(data_dir),
            "ranges": [[{"subnet": "10.231.0.0/24", "rangeStart": "10.231.0.10", "rangeEnd": "10.231.0.50"}]],
        }
        caps = {}
    conflist = {
        "cniVersion": "1.0.0",
        "name": net_name,
        "plugins": [{"type": "macvlan", "master": "m0", "mode": "bridge", "capabilities": caps, "ipam": ipam_conf}],
    }
    rt = CniRuntime([CNI_BIN], tmp_path / "cache", exec_netns=node.ns)
    pods = [node.new_pod("a"), node.new_pod("b")]
    atts = [
        Attachment(f"ctr-{i}-{uuid.uuid4().hex[:8]}", pod, "net1", PodRef("ns1", f"pod-{i}"))
        for i, pod in enumerate(pods)
    ]
    static_ips = [{"ips": [f"10.231.0.{20 + i}/24"]} for i in range(2)]

    results: list[CniResult] = []
    for i, att in enumerate(atts):
        results.append(rt.add(conflist, att, capability_args=static_ips[i] if ipam == "static" else None))
    for pod, att, res in zip(pods, atts, results, strict=True):
        assert res.interfaces[0].name == "net1" and res.interfaces[0].sandbox == pod.path
        assert pod.addresses("net1") == [res.ips[0].address]
        assert node.ns.link("net1") is None  # created in the node, moved into the pod
        assert rt.cached(conflist, att) is not None
    if ipam == "static":
        assert [r.ips[0].address for r in results] == ["10.231.0.20/24", "10.231.0.21/24"]
        add_call = rt.calls_for(command="ADD", plugin="macvlan")[0]
        assert add_call.config["runtimeConfig"] == {"ips": ["10.231.0.20/24"]}
    else:
        for r in results:
            assert (data_dir / net_name / r.ips[0].ip).exists()
    ips = [r.ips[0].ip for r in results]

    # TCP and UDP, both directions, all in parallel; plus a closed port (refused, not timeout).
    servers = [Server(pod, [("tcp", 8080), ("udp", 5353)]) for pod in pods]
    try:
        items: list[tuple[str | os.PathLike[str], Probe]] = []
        for src, dst in ((0, 1), (1, 0)):
            items += [(pods[src], Probe("tcp", ips[dst], 8080, timeout=2.0))]
            items += [(pods[src], Probe("udp", ips[dst], 5353, timeout=2.0))]
        items.append((pods[0], Probe("tcp", ips[1], 9, timeout=2.0)))
        verdicts = probe_matrix(items)
        assert [v.allowed for v in verdicts[:4]] == [True] * 4, [str(v) for v in verdicts]
        assert [v.responder for v in verdicts[:4]] == [pods[1].name] * 2 + [pods[0].name] * 2
        assert verdicts[4].outcome == "refused"
        peers = {c.peer for c in servers[1].wait_connections(2)}
        assert peers == {ips[0]}
    finally:
        for s in servers:
            s.stop()

    for att in atts:
        rt.check(conflist, att)
        assert "prevResult" in rt.calls_for(command="CHECK")[-1].config

    for pod, att, res2 in zip(pods, atts, results, strict=True):
        rt.delete(conflist, att)
        assert pod.link("net1") is None
        assert rt.cached(conflist, att) is None
        if ipam == "host-local":
            assert not (data_dir / net_name / res2.ips[0].ip).exists()
        assert rt.calls_for(command="DEL")[-1].config["prevResult"] == res2.raw
        rt.delete(conflist, att)  # second DEL: a no-op success, without prevResult
        assert "prevResult" not in rt.calls_for(command="DEL")[-1].config


def static_macvlan(name: str, master: str, address: str) -> dict[str, Any]:
    """A one-plugin macvlan conflist with static IPAM holding `address`."""
    plugin = {"type": "macvlan", "master": master, "ipam": {"type": "static", "addresses": [{"address": address}]}}
    return {"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}


def test_plugin_error_is_typed(need_plugins: None, veth_node: Node, tmp_path: Path) -> None:
    rt = CniRuntime([CNI_BIN], tmp_path / "cache", exec_netns=veth_node.ns)
    pod = veth_node.new_pod("p")
    conflist = static_macvlan("mnpt-err", "nosuchmaster", "10.232.0.5/24")
    att = Attachment("ctr-err", pod)
    with pytest.raises(CniError) as ei:
        rt.add(conflist, att)
    err = ei.value
    assert (err.plugin, err.command, err.rc, err.code) == ("macvlan", "ADD", 1, 999)
    assert "not found" in err.msg.lower()
    assert err.error["code"] == 999
    assert rt.cached(conflist, att) is None
    # What a kubelet does after a failed ADD.  Debian's macvlan (1.1.1) resolves the master on
    # DEL too, so with the master gone DEL fails the same way (a real runtime would retry forever).
    with pytest.raises(CniError) as ei:
        rt.delete(conflist, att)
    assert (ei.value.command, ei.value.code) == ("DEL", 999)


def test_check_detects_removed_address(need_plugins: None, veth_node: Node, tmp_path: Path) -> None:
    rt = CniRuntime([CNI_BIN], tmp_path / "cache", exec_netns=veth_node.ns)
    pod = veth_node.new_pod("p")
    conflist = static_macvlan("mnpt-check", "m0", "10.233.0.5/24")
    att = Attachment("ctr-check", pod)
    rt.add(conflist, att)
    rt.check(conflist, att)
    pod.del_address("net1", "10.233.0.5/24")
    with pytest.raises(CniError) as ei:
        rt.check(conflist, att)
    assert ei.value.code == 999 and "10.233.0.5/24" in ei.value.msg
    rt.delete(conflist, att)


def test_netns_given_as_proc_paths(need_plugins: None, veth_node: Node, tmp_path: Path) -> None:
    """CNI_NETNS and the plugins' netns may be any path (/proc/PID/ns/net): nsenter, not ip netns exec."""
    pod = veth_node.new_pod("p")
    with Server(veth_node.ns, [("tcp", 0)]) as in_node, Server(pod, [("tcp", 0)]) as in_pod:
        rt = CniRuntime([CNI_BIN], tmp_path / "cache", exec_netns=f"/proc/{in_node.pid}/ns/net")
        conf = {
            "cniVersion": "1.0.0",
            "name": "mnpt-proc",
            "type": "macvlan",
            "master": "m0",
            "ipam": {"type": "static", "addresses": [{"address": "10.236.0.5/24"}]},
        }
        att = Attachment("ctr-proc", f"/proc/{in_pod.pid}/ns/net")
        rt.add(conf, att)
        assert pod.addresses("net1") == ["10.236.0.5/24"]
        assert rt.calls[-1].env["CNI_NETNS"] == f"/proc/{in_pod.pid}/ns/net"
        rt.delete(conf, att)
        assert pod.link("net1") is None


def test_chaining_mechanics_with_real_macvlan(
    need_plugins: None, veth_node: Node, fake_bin: Path, tmp_path: Path
) -> None:
    log = Log(tmp_path / "fake.jsonl")
    conflist = {
        "cniVersion": "1.0.0",
        "name": "mnpt-chain",
        "plugins": [
            {
                "type": "macvlan",
                "master": "m0",
                "mode": "bridge",
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(tmp_path / "ipam"),
                    "ranges": [[{"subnet": "10.234.0.0/24"}]],
                },
            },
            fake("a", log.path, stateDir=str(tmp_path / "state")),
            fake("b", log.path),
        ],
    }
    rt = CniRuntime([fake_bin, CNI_BIN], tmp_path / "cache", exec_netns=veth_node.ns)
    pod = veth_node.new_pod("p")
    att = Attachment("ctr-chain-1", pod, "net1", PodRef("team-x", "web-0", "0e3c4f4a-0000-4000-8000-000000000001"))
    expected_args = (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-x;K8S_POD_NAME=web-0;"
        "K8S_POD_INFRA_CONTAINER_ID=ctr-chain-1;K8S_POD_UID=0e3c4f4a-0000-4000-8000-000000000001"
    )
    assert cni_args_str(att) == expected_args

    result = rt.add(conflist, att)
    macvlan_add = rt.calls_for(command="ADD", plugin="macvlan")[0]
    assert "prevResult" not in macvlan_add.config  # the first plugin gets none
    macvlan_result = json.loads(macvlan_add.stdout)
    assert result.raw == macvlan_result  # the fakes echo it unchanged

    recs = log.take()
    assert [(r["tag"], r["command"]) for r in recs] == [("a", "ADD"), ("b", "ADD")]
    a, b = (r["stdin"] for r in recs)
    assert a["prevResult"] == macvlan_result and b["prevResult"] == macvlan_result
    for r in recs:
        s = r["stdin"]
        assert (s["name"], s["cniVersion"], s["type"]) == ("mnpt-chain", "1.0.0", "fake-chain")
        assert "runtimeConfig" not in s
        assert r["env"] == {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "ctr-chain-1",
            "CNI_NETNS": pod.path,
            "CNI_IFNAME": "net1",
            "CNI_PATH": f"{fake_bin}:{CNI_BIN}",
            "CNI_ARGS": expected_args,
        }
    assert a["stateDir"] == str(tmp_path / "state")  # the plugin's own keys pass through

    cache = rt.cached(conflist, att)
    assert cache is not None and cache.result == macvlan_result and cache.netns == pod.path

    rt.check(conflist, att)
    recs = log.take()
    assert [(r["tag"], r["command"]) for r in recs] == [("a", "CHECK"), ("b", "CHECK")]
    assert all(r["stdin"]["prevResult"] == macvlan_result for r in recs)

    rt.delete(conflist, att)
    recs = log.take()
    assert [(r["tag"], r["command"]) for r in recs] == [("b", "DEL"), ("a", "DEL")]
    assert all(r["stdin"]["prevResult"] == macvlan_result for r in recs)
    assert [c.plugin for c in rt.calls_for(command="DEL")] == ["fake-chain", "fake-chain", "macvlan"]
    assert rt.calls_for(command="DEL", plugin="macvlan")[0].config["prevResult"] == macvlan_result
    assert rt.cached(conflist, att) is None
    assert pod.link("net1") is None

    rt.delete(conflist, att)  # cache gone: no prevResult any more
    recs = log.take()
    assert [(r["tag"], r["command"]) for r in recs] == [("b", "DEL"), ("a", "DEL")]
    assert all("prevResult" not in r["stdin"] for r in recs)


# --------------------------------------------------------------------------------------------
# mechanics with fake plugins only (no netns, no root needed)


def fake_att(cid: str = "ctr-1", ifname: str = "net1") -> Attachment:
    return Attachment(cid, "/var/run/netns/mnpt-fake-does-not-exist", ifname, PodRef("ns", "p"))


def test_runtime_config_only_for_declared_capabilities(fake_bin: Path, tmp_path: Path) -> None:
    log = Log(tmp_path / "fake.jsonl")
    conflist = {
        "cniVersion": "1.0.0",
        "name": "caps",
        "plugins": [
            fake("a", log.path, capabilities={"ips": True, "mac": True}),
            fake("b", log.path, capabilities={"ips": False, "portMappings": True}),
            fake("c", log.path),
        ],
    }
    rt = CniRuntime([fake_bin], tmp_path / "cache")
    caps = {"ips": ["10.1.0.5/24"], "mac": "0a:58:0a:01:00:05", "portMappings": [{"hostPort": 80}]}
    rt.add(conflist, fake_att(), capability_args=caps)
    got = {r["tag"]: r["stdin"].get("runtimeConfig") for r in log.take()}
    assert got == {
        "a": {"ips": ["10.1.0.5/24"], "mac": "0a:58:0a:01:00:05"},
        "b": {"portMappings": [{"hostPort": 80}]},
        "c": None,
    }
    rt.delete(conflist, fake_att())  # no capability_args: the cached ones are passed again
    got = {r["tag"]: r["stdin"].get("runtimeConfig") for r in log.take()}
    assert got["a"] == {"ips": ["10.1.0.5/24"], "mac": "0a:58:0a:01:00:05"}

    rt.add(conflist, fake_att("ctr-2"))  # the caller provides none: no runtimeConfig at all
    assert all("runtimeConfig" not in r["stdin"] for r in log.take())
    rt.delete(conflist, fake_att("ctr-2"))


def test_del_continues_past_failures_and_keeps_cache(fake_bin: Path, tmp_path: Path) -> None:
    log = Log(tmp_path / "fake.jsonl")

    def conflist(fail: bool) -> dict[str, Any]:
        b = fake("b", log.path, failOn=["DEL"]) if fail else fake("b", log.path)
        return {"cniVersion": "1.0.0", "name": "delfail", "plugins": [fake("a", log.path), b, fake("c", log.path)]}

    rt = CniRuntime([fake_bin], tmp_path / "cache")
    att = fake_att()
    result = rt.add(conflist(True), att)
    log.take()
    with pytest.raises(CniError) as ei:
        rt.delete(conflist(True), att)
    assert (ei.value.plugin, ei.value.code, ei.value.msg, ei.value.details) == (
        "fake-chain",
        11,
        "fake failure b",
        "DEL",
    )
    assert [r["tag"] for r in log.take()] == ["c", "b", "a"]  # a still cleaned up
    assert rt.cached(conflist(True), att) is not None  # kept for the retry

    strict = CniRuntime([fake_bin], tmp_path / "cache", continue_del_on_error=False)  # libcni: stop at first
    with pytest.raises(CniError):
        strict.delete(conflist(True), att)
    assert [r["tag"] for r in log.take()] == ["c", "b"]

    rt.delete(conflist(False), att)  # the retry still gets prevResult, then the cache goes
    recs = log.take()
    assert all(r["stdin"]["prevResult"] == result.raw for r in recs)
    assert rt.cached(conflist(False), att) is None


def test_gc_and_status(fake_bin: Path, tmp_path: Path) -> None:
    log = Log(tmp_path / "fake.jsonl")
    conflist = {"cniVersion": "1.1.0", "name": "gcnet", "plugins": [fake("a", log.path), fake("b", log.path)]}
    other = {"cniVersion": "1.1.0", "name": "othernet", "plugins": [fake("o", log.path)]}
    rt = CniRuntime([fake_bin], tmp_path / "cache")
    keep, stale = fake_att("ctr-keep"), Attachment("ctr-stale", "/proc/1/ns/net", "net2", PodRef("ns2", "old"))
    rt.add(conflist, keep)
    stale_result = rt.add(conflist, stale)
    rt.add(other, fake_att("ctr-other"))
    log.take()

    rt.gc(conflist, [keep])
    recs = log.take()
    assert [(r["tag"], r["command"]) for r in recs] == [("b", "DEL"), ("a", "DEL"), ("a", "GC"), ("b", "GC")]
    for r in recs[:2]:  # the stale attachment, deleted with what the cache remembered
        assert r["env"]["CNI_CONTAINERID"] == "ctr-stale" and r["env"]["CNI_IFNAME"] == "net2"
        assert r["env"]["CNI_NETNS"] == "/proc/1/ns/net"
        assert r["env"]["CNI_ARGS"] == cni_args_str(stale)
        assert r["stdin"]["prevResult"] == stale_result.raw
    for r in recs[2:]:
        assert r["stdin"]["cni.dev/valid-attachments"] == [{"containerID": "ctr-keep", "ifname": "net1"}]
        assert (r["stdin"]["name"], r["stdin"]["cniVersion"]) == ("gcnet", "1.1.0")
        assert "prevResult" not in r["stdin"]
        assert {k: r["env"][k] for k in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS")} == dict.fromkeys(
            ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"), ""
        )
    assert [c.container_id for c in rt.cached_attachments()] == ["ctr-keep", "ctr-other"]

    rt.status(conflist)
    assert [(r["tag"], r["command"]) for r in log.take()] == [("a", "STATUS"), ("b", "STATUS")]
    failing = {**conflist, "plugins": [fake("a", log.path, failOn=["STATUS"]), fake("b", log.path)]}
    with pytest.raises(CniError, match="fake failure a"):
        rt.status(failing)
    assert [r["tag"] for r in log.take()] == ["a"]  # stops at the first error

    old = {**conflist, "cniVersion": "1.0.0"}
    rt.status(old)  # STATUS and GC are 1.1.0 commands: nothing sent to the plugins
    rt.gc(old, [keep])
    assert log.take() == []


def test_check_needs_0_4_0_and_old_del_gets_no_prev_result(fake_bin: Path, tmp_path: Path) -> None:
    log = Log(tmp_path / "fake.jsonl")
    conflist = {"cniVersion": "0.3.1", "name": "oldnet", "plugins": [fake("a", log.path)]}
    rt = CniRuntime([fake_bin], tmp_path / "cache")
    rt.add(conflist, fake_att())
    with pytest.raises(CniFailure, match="does not support the CHECK command"):
        rt.check(conflist, fake_att())
    rt.delete(conflist, fake_att())
    assert "prevResult" not in log.records()[-1]["stdin"]
    rt.check({**conflist, "cniVersion": "1.0.0", "disableCheck": True}, fake_att())  # disabled: no call
    assert log.records()[-1]["command"] == "DEL"


def test_bad_inputs_fail_before_any_plugin_runs(fake_bin: Path, tmp_path: Path) -> None:
    rt = CniRuntime([fake_bin], tmp_path / "cache")
    good = {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "fake-chain"}]}
    with pytest.raises(CniFailure, match="invalid interface name"):
        rt.add(good, fake_att(ifname="x" * 16))
    with pytest.raises(CniFailure, match="invalid container id"):
        rt.add(good, fake_att(cid="-bad"))
    with pytest.raises(CniFailure, match="invalid container id"):
        rt.add(good, fake_att(cid="abc\n"))  # libcni's Go `$` ends the text: no trailing newline
    with pytest.raises(CniFailure, match="invalid network name"):
        rt.add({**good, "name": "n\n"}, fake_att())
    with pytest.raises(CniFailure, match="no plugins"):
        rt.add({**good, "plugins": []}, fake_att())
    with pytest.raises(CniFailure, match="failed to find plugin"):
        rt.add({**good, "plugins": [{"type": "missing"}]}, fake_att())
    assert rt.calls == []
    # a single plugin conf (no "plugins" list) is run as a one-plugin list
    res = rt.add({"cniVersion": "1.0.0", "name": "single", "type": "fake-chain", "address": "192.0.2.9/24"}, fake_att())
    assert res.ip("net1") == "192.0.2.9"


# --------------------------------------------------------------------------------------------
# the probe helpers' verdicts


def test_probe_outcomes(need_plugins: None, veth_node: Node, tmp_path: Path) -> None:
    """ok / refused / timeout / eperm, as policy tests will rely on them."""
    if shutil.which("nft") is None:
        pytest.skip("nft not installed")
    rt = CniRuntime([CNI_BIN], tmp_path / "cache", exec_netns=veth_node.ns)
    a, b = veth_node.new_pod("a"), veth_node.new_pod("b")
    for i, pod in enumerate((a, b)):
        conf = {
            "cniVersion": "1.0.0",
            "name": "mnpt-probe",
            "type": "macvlan",
            "master": "m0",
            "ipam": {"type": "static", "addresses": [{"address": f"10.235.0.{i + 1}/24"}]},
        }
        rt.add(conf, Attachment(f"ctr-probe-{i}", pod))
    with Server(b, [("tcp", 8080), ("udp", 5353)], label="b-server") as srv:
        ok = run_probes(a, [Probe("tcp", "10.235.0.2", srv.ports[0][1]), Probe("udp", "10.235.0.2", 5353)])
        assert [(r.outcome, r.responder) for r in ok] == [("ok", "b-server")] * 2
        assert ok[0].probe.source is None and ok[0].elapsed < 0.5
        closed = run_probes(a, [Probe("tcp", "10.235.0.2", 9999), Probe("udp", "10.235.0.2", 9999)])
        assert [r.outcome for r in closed] == ["refused", "refused"]
        nobody = run_probes(
            a, [Probe("tcp", "10.235.0.99", 80, timeout=0.3), Probe("udp", "10.235.0.99", 80, timeout=0.3)]
        )
        assert [r.outcome for r in nobody] == ["timeout", "timeout"] and all(r.denied for r in nobody)
        a.run("nft", "add table inet t; add chain inet t o { type filter hook output priority 0; policy drop; }")
        dropped = run_probes(
            a, [Probe("tcp", "10.235.0.2", 8080, timeout=0.3), Probe("udp", "10.235.0.2", 5353, timeout=0.3)]
        )
        # the prober's own output chain drops: TCP just retransmits its SYN, UDP's send() gets EPERM
        assert [r.outcome for r in dropped] == ["timeout", "eperm"], [str(r) for r in dropped]
        assert not any(r.allowed for r in dropped)
    assert not srv.running()


def test_netns_objects_are_named_and_removed(need_netns: None) -> None:
    ns = NetNS.create("Odd Label!")
    try:
        assert ns.name.startswith(f"mnpt-{os.getpid()}-") and ns.name.endswith("-odd-label")
        assert ns.exists() and os.fspath(ns) == f"/run/netns/{ns.name}"
        lo = ns.link("lo")
        assert lo is not None and lo.up
        assert ns.name in leftover_netns()
    finally:
        ns.delete()
    ns.delete()  # idempotent
    assert not ns.exists() and ns.name not in leftover_netns()


def test_zz_no_leftovers_after_module() -> None:
    """Runs last in this module: every netns and server of this process is gone."""
    assert leftover_netns() == []
    assert check_leftovers() == []
