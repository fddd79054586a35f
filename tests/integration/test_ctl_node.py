"""`mnpctl pods/rules/explain/drops/status` on a real lab node, with mnpd not running.

A test node netns with one macvlan master (m0, 10.243.0.0/24); pods `a` and `b` are attached through the real
chain `macvlan (+ host-local) → mnp` (the plugin writes their state entries and installs its closed, pending
table); pod `c` is attached through macvlan alone (a peer without mnp). Then `a` is programmed directly with
`render_interface` + `RealNft` — no daemon: ingress isolated by two policies (allow-web: c on 8080/tcp;
allow-dns: the subnet on 5353/udp), egress open — and `b` stays pending.

The commands run in-process through `daemon.ctl.main` (and once as the installed `mnpctl` script) with the real
nsenter/nft runner, against the live tables: explain's verdicts are compared with real probes, and a real
dropped connection must raise `drops`' counter. `--listen` points at a bound but never listening socket, so
"mnpd is down" is certain, and the status file does not exist.

Network safety: only namespaces created here (`mnpt-` prefix, removed pass or fail), the macvlan master inside
the node netns, an address plan no other test uses; the root netns' tables are compared before and after.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon import ctl
from daemon.cli import drops as drops_cmd
from daemon.cli.node import Inspector
from daemon.cli.options import listen_address
from daemon.testbed.cniruntime import Attachment, CniRuntime, PodRef
from daemon.testbed.netns import (
    NetNS,
    Node,
    Probe,
    Server,
    probe_matrix,
)
from shared.nft.exec import RealNft
from shared.nft.render import DROP_LOG_GROUP, render_interface
from shared.rules import OPEN, Allow, DirectionRules, InterfaceRules, PortRange
from tests.support.host import CNI_BIN, host_untouched

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]

SUBNET = "10.243.0.0/24"
TIMEOUT = 1.0  # a denied probe costs this much; an allowed one answers at once
WEB = "ns1/allow-web ingress[0]"
DNS = "ns1/allow-dns ingress[0]"


@dataclass
class NodeLab:
    node: Node
    runtime: CniRuntime
    state: Path
    ipam: Path
    closed_listen: str  # host:port of a bound socket that never listens: connection refused, certainly
    a: NetNS
    b: NetNS
    c: NetNS
    ip_a: str = ""
    ip_b: str = ""
    ip_c: str = ""

    def conflist(self, name: str, first: int, last: int, mnp: bool) -> dict[str, Any]:
        plugins: list[dict[str, Any]] = [
            {
                "type": "macvlan",
                "master": "m0",
                "mode": "bridge",
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(self.ipam),
                    "ranges": [[{"subnet": SUBNET, "rangeStart": f"10.243.0.{first}", "rangeEnd": f"10.243.0.{last}"}]],
                },
            }
        ]
        if mnp:
            plugins.append({"type": "mnp", "stateDir": str(self.state)})
        return {"cniVersion": "1.0.0", "name": name, "plugins": plugins}

    @property
    def closed(self) -> dict[str, Any]:
        return self.conflist("mnpt-ctl-closed", 10, 49, True)

    @property
    def open(self) -> dict[str, Any]:
        return self.conflist("mnpt-ctl-open", 50, 99, False)

    def attach(self, pod: NetNS, name: str, mnp: bool) -> tuple[Attachment, str]:
        att = Attachment(f"ctr-{uuid.uuid4().hex[:12]}", pod, "net1", PodRef("ns1", name))
        result = self.runtime.add(self.closed if mnp else self.open, att)
        return att, result.ip("net1")

    def options(self) -> list[str]:
        return ["--state-dir", str(self.state), "--listen", self.closed_listen]

    def ctl(self, *argv: str) -> tuple[int, str, str]:
        """`mnpctl ARGV` in-process (real nsenter + nft), with this lab's state dir and a dead --listen."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = ctl.main([*argv, *self.options()])
        return rc, out.getvalue(), err.getvalue()

    def ctl_json(self, *argv: str) -> Any:
        rc, out, err = self.ctl(*argv, "--json")
        assert rc == 0, err
        return json.loads(out)

    def inspector(self) -> Inspector:
        return Inspector(state_dir=str(self.state), listen=listen_address(self.closed_listen))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeLab]:
    with host_untouched(("macvlan", "host-local")):
        yield from _node_lab(tmp_path_factory)


def _node_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeLab]:
    scratch = tmp_path_factory.mktemp("ctl")
    bindir = scratch / "bin"
    bindir.mkdir()
    wrapper = bindir / "mnp"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m cni "$@"\n')
    wrapper.chmod(0o755)
    dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    dead.bind(("127.0.0.1", 0))  # bound, never listening: nothing else can take the port, connects are refused
    node = Node("ctl", masters=["m0"])
    try:
        runtime = CniRuntime([bindir, CNI_BIN], scratch / "cache", exec_netns=node.ns)
        lab = NodeLab(
            node,
            runtime,
            scratch / "state",
            scratch / "ipam",
            f"127.0.0.1:{dead.getsockname()[1]}",
            node.new_pod("a"),
            node.new_pod("b"),
            node.new_pod("c"),
        )
        _, lab.ip_a = lab.attach(lab.a, "a", mnp=True)
        _, lab.ip_b = lab.attach(lab.b, "b", mnp=True)
        _, lab.ip_c = lab.attach(lab.c, "c", mnp=False)
        rules = InterfaceRules(
            "ns1/a",
            "net1",
            "ns1/mnpt-ctl-closed",
            ingress=DirectionRules(
                True,
                (
                    Allow(WEB, (ipaddress.ip_network(f"{lab.ip_c}/32"),), (PortRange("tcp", 8080, 8080),)),
                    Allow(DNS, (ipaddress.ip_network(SUBNET),), (PortRange("udp", 5353, 5353),)),
                ),
                ("ns1/allow-web", "ns1/allow-dns"),
            ),
            egress=OPEN,
            ifindex=lab.a.link("net1").index,  # type: ignore[union-attr]
        )
        RealNft(lab.a.path).run(render_interface(rules))
        servers = [
            Server(lab.a, [("tcp", 8080), ("tcp", 9090), ("udp", 5353)]),
            Server(lab.b, [("tcp", 8080)]),
            Server(lab.c, [("tcp", 8080)]),
        ]
        try:
            yield lab
        finally:
            for server in servers:
                server.stop()
    finally:
        node.delete()
        dead.close()


# ----------------------------------------------------------------------------------------------- pods


def test_pods_lists_both_guarded_pods_from_the_live_tables(lab: NodeLab) -> None:
    doc = lab.ctl_json("pods")
    assert doc["daemon"]["running"] is False and doc["problems"] == []
    rows = {row["pod"]: row for row in doc["interfaces"]}
    assert set(rows) == {"ns1/a", "ns1/b"}  # c has no mnp in its chain: not guarded, not listed
    a, b = rows["ns1/a"], rows["ns1/b"]
    assert (a["ifname"], a["network"], a["state"]) == ("net1", "mnpt-ctl-closed", "programmed")
    assert [ip.split("/")[0] for ip in a["ips"]] == [lab.ip_a]
    assert a["ingress"]["mode"] == "isolated" and a["ingress"]["policies"] == ["ns1/allow-web", "ns1/allow-dns"]
    assert a["egress"]["mode"] == "open" and a["egress"]["policies"] == []
    assert a["lastProgrammed"] is None and a["daemon"] is None  # no status file: mnpd never ran
    assert b["state"] == "pending" and b["ingress"]["mode"] == b["egress"]["mode"] == "pending"
    assert "not programmed by mnpd" in b["reason"]

    rc, out, _ = lab.ctl("pods")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("daemon: not running / status file stale")
    assert lines[1].split() == [
        "POD",
        "IFACE",
        "NETWORK",
        "IPS",
        "STATE",
        "INGRESS",
        "EGRESS",
        "LAST",
        "PROGRAMMED",
        "REASON",
    ]
    row_a = next(line for line in lines if line.startswith("ns1/a "))
    assert "programmed" in row_a and "ns1/allow-web, ns1/allow-dns" in row_a and "(open)" in row_a


# ----------------------------------------------------------------------------------------------- rules


def test_rules_shows_the_live_table_with_policy_names(lab: NodeLab) -> None:
    rc, out, _ = lab.ctl("rules", "ns1/a")
    assert rc == 0
    assert out.startswith("# pod ns1/a ")
    assert "# daemon: not running / status file stale" in out
    assert "table inet mnp {" in out and "chain input {" in out and "chain ingress_net1 {" in out
    assert f'{lab.ip_c} comment "{DNS}, {WEB}" : jump g_ingress_net1_' in out  # the peer map → its port group
    assert f'tcp . 8080 comment "{WEB}"' in out and f'udp . 5353 comment "{DNS}"' in out  # the groups' ports
    assert 'drop comment "default deny (ns1/allow-web, ns1/allow-dns)"' in out

    rc, out, _ = lab.ctl("rules", "b", "--iface", "net1", "--handles")  # a pod name unique on the node
    assert rc == 0
    assert "chain input" not in out and "map ingress_ifaces" not in out
    assert "chain ingress_net1 { # handle" in out and "chain egress_net1 { # handle" in out
    assert "\tset " not in out and "_peers" not in out  # pending: no map, no set
    assert "default deny (pending: not yet programmed)" in out

    doc = lab.ctl_json("rules", "ns1/a", "--iface", "net1")
    kinds = {(next(iter(i)), i[next(iter(i))].get("name") or i[next(iter(i))].get("chain")) for i in doc["nftables"]}
    assert ("chain", "ingress_net1") in kinds and ("chain", "input") not in kinds
    rules_in = {name for kind, name in kinds if kind == "rule"}  # its chains and its port groups' chains
    assert {"ingress_net1", "egress_net1"} < rules_in and all(
        n.startswith("g_ingress_net1_") for n in rules_in - {"ingress_net1", "egress_net1"}
    )

    rc, _, err = lab.ctl("rules", "ns1/nobody")
    assert rc == 2 and "no guarded pod 'ns1/nobody'" in err and "ns1/a" in err


# ----------------------------------------------------------------------------------------------- explain


def test_explain_agrees_with_real_packets(lab: NodeLab) -> None:
    cases = [
        # (prober netns, probe, mnpctl explain arguments, verdict, decision must contain)
        (lab.c, Probe("tcp", lab.ip_a, 8080, timeout=TIMEOUT), ["a", "--from", lab.ip_c, "--port", "8080/tcp"],
         "accept", f"_ports ← tcp . 8080 ({WEB})"),
        (lab.c, Probe("tcp", lab.ip_a, 9090, timeout=TIMEOUT), ["a", "--from", lab.ip_c, "--port", "9090/tcp"],
         "drop", "counter drop (default deny (ns1/allow-web, ns1/allow-dns))"),
        (lab.c, Probe("udp", lab.ip_a, 5353, timeout=TIMEOUT), ["a", "--from", lab.ip_c, "--port", "5353/udp"],
         "accept", f"_ports ← udp . 5353 ({DNS})"),
        (lab.a, Probe("tcp", lab.ip_c, 8080, timeout=TIMEOUT), ["a", "--to", lab.ip_c, "--port", "8080"],
         "accept", "egress_net1 rule 3 accept (not isolated for egress)"),
        (lab.c, Probe("tcp", lab.ip_b, 8080, timeout=TIMEOUT), ["ns1/b", "--from", lab.ip_c, "--port", "8080/tcp"],
         "drop", "default deny (pending: not yet programmed)"),
        (lab.b, Probe("tcp", lab.ip_c, 8080, timeout=TIMEOUT), ["ns1/b", "--to", lab.ip_c, "--port", "8080/tcp"],
         "drop", "egress_net1 rule 4 counter drop"),  # after the drop log, rule 3
    ]  # fmt: skip
    observed = probe_matrix([(ns, probe) for ns, probe, *_ in cases])
    for (_, _, argv, verdict, decision), result in zip(cases, observed, strict=True):
        doc = lab.ctl_json("explain", *argv)
        assert doc["verdict"] == verdict, (argv, doc)
        assert (doc["verdict"] == "accept") == result.allowed, (argv, str(result))
        assert decision in doc["decision"], doc["decision"]

    rc, out, _ = lab.ctl("explain", "ns1/a", "--from", lab.ip_c, "--port", "8080/tcp", "--expect", "allow")
    assert rc == 0
    lines = out.splitlines()
    assert (
        lines[0]
        == f"ns1/a net1 (network mnpt-ctl-closed), ingress: {lab.ip_c} → {lab.ip_a} tcp dport 8080, a new connection"
    )
    index = lab.a.link("net1").index  # type: ignore[union-attr]
    assert lines[1].startswith("  input rule 0 (handle ") and lines[1].endswith(f"← {index} : jump ingress_net1 (net1)")
    assert lines[2].startswith("  ingress_net1 rule 3 (handle ") and f"← {lab.ip_c} : jump g_ingress_net1_" in lines[2]
    assert lines[4].startswith("accept: g_ingress_net1_") and lines[4].endswith(f"_ports ← tcp . 8080 ({WEB})")
    assert lines[-1].startswith("# daemon: not running / status file stale")
    # an established flow is admitted whatever the policies; --expect makes the answer an exit status
    rc, out, _ = lab.ctl(
        "explain", "b", "--from", lab.ip_c, "--port", "22", "--ct-state", "established", "--expect", "deny"
    )
    assert rc == 1 and "accept: ingress_net1 rule 0 ct state established,related accept" in out


# ----------------------------------------------------------------------------------------------- drops


def _counter(doc: dict[str, Any], pod: str, direction: str) -> int:
    (row,) = [r for r in doc["drops"] if r["pod"] == pod and r["direction"] == direction and r["ifname"] == "net1"]
    return int(row["packets"])


def test_drops_count_a_real_dropped_connection(lab: NodeLab) -> None:
    before = lab.ctl_json("drops")
    assert {(r["pod"], r["direction"], r["mode"]) for r in before["drops"]} == {
        ("ns1/a", "ingress", "isolated"),  # a's egress is open: no drop rule
        ("ns1/b", "ingress", "pending"),
        ("ns1/b", "egress", "pending"),
    }
    (result,) = probe_matrix([(lab.c, Probe("tcp", lab.ip_a, 9090, timeout=TIMEOUT))])
    assert not result.allowed
    after = lab.ctl_json("drops")
    assert _counter(after, "ns1/a", "ingress") > _counter(before, "ns1/a", "ingress")

    rc, out, _ = lab.ctl("drops")
    assert rc == 0 and out.startswith("daemon: not running / status file stale")
    assert out.splitlines()[1].split() == ["POD", "IFACE", "DIRECTION", "PACKETS", "BYTES", "DEFAULT", "DENY", "OF"]


def test_drops_follow_reports_the_growth_between_samples(lab: NodeLab) -> None:
    sent: list[bool] = []

    def send_a_dropped_connection(_: float) -> None:  # the "interval": one real connection the policies refuse
        (result,) = probe_matrix([(lab.c, Probe("tcp", lab.ip_a, 9090, timeout=TIMEOUT))])
        sent.append(result.allowed)

    out, err = io.StringIO(), io.StringIO()
    rc = drops_cmd.drops(
        lab.inspector(), follow=True, interval=1.0, count=3, as_json=True, out=out, err=err,
        sleep=send_a_dropped_connection,
    )  # fmt: skip
    assert rc == 0 and sent == [False, False]
    samples = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(samples) == 3 and samples[0]["daemon"]["running"] is False
    for sample in samples[1:]:
        (row,) = [r for r in sample["drops"] if r["pod"] == "ns1/a"]
        assert row["deltaPackets"] >= 1 and row["deltaBytes"] >= 40  # at least one SYN
        # (b's counters may grow too: its pending table also drops the kernel's own IPv6 chatter, e.g. MLD)

    # the script itself, bounded by --count (the interval is the only wait)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mnpctl"), "drops", "--follow", "--count", "2", "--interval", "0.05",
         *lab.options()],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("daemon: not running / status file stale") and "ns1/a" in done.stdout


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`, with their command lines."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
    return out


class _Lines:
    """The lines a process prints, collected by a thread; `drain` waits for more, `has` looks for one."""

    def __init__(self, stream: Any) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.queue.put(line.rstrip("\n"))

    def drain(self, wait: float = 0.0) -> None:
        end = time.monotonic() + wait
        while True:
            try:
                self.seen.append(self.queue.get(timeout=max(0.0, end - time.monotonic())))
            except queue.Empty:
                return

    def has(self, *parts: str) -> bool:
        return any(all(part in line for part in parts) for line in self.seen)


def test_drops_log_prints_real_dropped_connections(lab: NodeLab) -> None:
    """`mnpctl drops --follow --log` (the installed script): one tcpdump on the drop log's nflog group per pod
    netns, and a line per dropped packet naming the pod, interface and direction (read from the nflog prefix) —
    for a's policies and for b's pending table, which the plugin renders with the log too. Ctrl-C ends it and
    every tcpdump with it."""
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (apt-get install tcpdump)")
    argv = [str(Path(sys.executable).parent / "mnpctl"), "drops", "--follow", "--log", "--interval", "0.5",
            "--duration", "120", *lab.options()]  # fmt: skip
    to_a = (f"ns1/a net1 ingress: dropped tcp {lab.ip_c}:", f" → {lab.ip_a}:9090 [S] (60 bytes)")
    to_b = (f"ns1/b net1 ingress: dropped tcp {lab.ip_c}:", f" → {lab.ip_b}:8080 [S] (60 bytes)")
    tcpdumps: dict[int, str] = {}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        out = _Lines(proc.stdout)
        try:
            deadline = time.monotonic() + 30
            while not out.has(f"drop log: nflog group {DROP_LOG_GROUP} in "):
                assert time.monotonic() < deadline and proc.poll() is None, out.seen
                out.drain(0.2)
            assert out.has(f"drop log: nflog group {DROP_LOG_GROUP} in 2 of 2 pod netns"), out.seen
            tcpdumps = _children(proc.pid)
            capture = f"tcpdump -U -w - -s 512 -i nflog:{DROP_LOG_GROUP}"
            assert len(tcpdumps) == 2 and all(capture in cmd for cmd in tcpdumps.values()), tcpdumps

            deadline = time.monotonic() + 30
            while not (out.has(*to_a) and out.has(*to_b)):
                assert time.monotonic() < deadline, out.seen
                refused = probe_matrix([
                    (lab.c, Probe("tcp", lab.ip_a, 9090, timeout=TIMEOUT)),  # a: not allowed by its policies
                    (lab.c, Probe("tcp", lab.ip_b, 8080, timeout=TIMEOUT)),  # b: the plugin's pending table
                ])  # fmt: skip
                assert not any(r.allowed for r in refused)
                out.drain(0.5)
            assert out.has("ns1/a net1 ingress: +")  # the counters are followed between the log lines
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                rc = proc.wait(timeout=15)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                out.thread.join(timeout=15)
        errors = proc.stderr.read() if proc.stderr else ""
    assert rc == 0, errors
    for pid, cmd in tcpdumps.items():
        with contextlib.suppress(OSError):  # gone: as it should be
            alive = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            assert cmd != alive, f"tcpdump {pid} outlived mnpctl"


# ----------------------------------------------------------------------------------------------- status


def test_status_says_the_daemon_is_down(lab: NodeLab) -> None:
    rc, out, _ = lab.ctl("status")
    assert rc == 1
    assert out.startswith("daemon: not running / status file stale")
    assert "connection refused" in out and "state dir:" in out and "2 entries" in out
    doc = json.loads(lab.ctl("status", "--json")[1])
    assert doc["ok"] is False and doc["daemon"]["running"] is False and doc["stateDir"]["entries"] == 2


# ----------------------------------------------------------------------------------------------- netns gone


def test_a_pod_whose_netns_is_gone(lab: NodeLab) -> None:
    pod = lab.node.new_pod("gone")
    att, _ = lab.attach(pod, "gone", mnp=True)
    try:
        pod.delete()  # the pod died without a CNI DEL: its state entry stays behind
        rows = {row["pod"]: row for row in lab.ctl_json("pods")["interfaces"]}
        assert rows["ns1/gone"]["state"] == "netns gone"
        assert rows["ns1/a"]["state"] == "programmed"  # the others are still read
        rc, _, err = lab.ctl("rules", "ns1/gone")
        assert rc == 1 and "netns gone" in err
        rc, _, err = lab.ctl("explain", "ns1/gone", "--from", lab.ip_c, "--port", "80")
        assert rc == 1 and "netns gone" in err
        doc = lab.ctl_json("drops")
        assert [e["pod"] for e in doc["errors"]] == ["ns1/gone"]
    finally:
        lab.runtime.delete(lab.closed, att)
    assert "ns1/gone" not in {row["pod"] for row in lab.ctl_json("pods")["interfaces"]}
