"""The lab's pure parts, no root needed: the plan (what a lab builds from manifests), the verdicts and the
report, and the kernel-state digest that tells the lab a pod is programmed."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path

import pytest

from daemon.cli.exitcodes import EXIT_LAB
from daemon.ctl import build_parser
from daemon.lab import cli as lab_cli
from daemon.lab import session
from daemon.lab.enforcer import describe_difference, expected_digest, interface_digest
from daemon.lab.observe import NOT_RUN, SKIPPED, Observation, render_table, summarise
from daemon.lab.plan import (
    DEFAULT_ROUTE_MASTER,
    AttachmentRequest,
    LabPaths,
    host_attachment_config,
    lab_config,
    plan,
    runtime_pod_manifest,
)
from shared.model import NETWORK_STATUS
from shared.nft.fake import FakeNft
from shared.nft.render import render_interface
from shared.predict import Record
from shared.probes import Probe
from shared.rules import InterfaceRules
from tests.e2e.conftest import REPO

PATHS = LabPaths(Path("/run/mnplab/test"))


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "all.yaml").write_text(textwrap.dedent(text))
    return tmp_path


NAD = """
    apiVersion: k8s.cni.cncf.io/v1
    kind: NetworkAttachmentDefinition
    metadata: {{name: {name}, namespace: default}}
    spec:
      config: '{config}'
    ---
"""


def pod(name: str, networks: str, extra: str = "") -> str:
    return f"""
    apiVersion: v1
    kind: Pod
    metadata:
      name: {name}
      namespace: default
      annotations:
        k8s.v1.cni.cncf.io/networks: '{networks}'
    spec:
      {extra or "containers: []"}
    ---
"""


def test_layer2_plan_rewrites_only_what_touches_the_host() -> None:
    p = plan(REPO / "deploy" / "examples" / "layer2", PATHS)
    assert p.errors == [] and p.invalid == []
    assert [(m.name, m.kind, m.default_route) for m in p.masters] == [("eth1", "veth", False)]
    assert sorted(pp.key for pp in p.pods) == ["layer2/vma", "layer2/vmb", "layer2/vmc"]
    (network,) = p.networks.values()
    assert network.chains_mnp
    plugins = network.conflist["plugins"]
    mnp = next(x for x in plugins if x["type"] == "mnp")
    assert mnp["stateDir"] == str(PATHS.state) and mnp["logFile"] == str(PATHS.plugin_log)
    # the NAD itself is untouched
    assert "stateDir" not in next(x for x in network.nad.plugins if x["type"] == "mnp")
    assert plugins[0]["master"] == network.nad.plugins[0]["master"]


def test_host_local_data_dir_moves_into_the_lab() -> None:
    config = {
        "cniVersion": "1.0.0",
        "name": "n",
        "type": "macvlan",
        "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"},
    }
    out = lab_config(config, PATHS)
    assert out["ipam"]["dataDir"] == str(PATHS.ipam)
    assert "dataDir" not in config["ipam"]  # a copy


def test_masters_default_route_long_names_and_errors(tmp_path: Path) -> None:
    masterless = '{"cniVersion": "1.0.0", "name": "a", "type": "macvlan", "ipam": {"type": "static"}}'
    long = (
        '{"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "macvlan", "master": "abcdefghijklmno",'
        ' "mode": "private", "ipam": {"type": "static"}}]}'
    )
    text = NAD.format(name="a", config=masterless) + NAD.format(name="b", config=long)
    text += pod("p1", "a, b@eth9")
    text += pod("p2", '[{"name": "missing"}]')
    text += pod("p3", "a", "hostNetwork: true")
    text += pod("p4", "a, a")
    p = plan(write(tmp_path, text), PATHS)
    masters = {m.name: m for m in p.masters}
    assert masters[DEFAULT_ROUTE_MASTER].default_route and masters[DEFAULT_ROUTE_MASTER].networks == ("default/a",)
    assert masters["abcdefghijklmno"].kind == "bridge"  # no room for a veth peer's name
    plans = {pp.key: pp for pp in p.pods}
    assert [(a.network, a.ifname) for a in plans["default/p1"].attachments] == [
        ("default/a", "net1"),
        ("default/b", "eth9"),
    ]
    assert [a.ifname for a in plans["default/p4"].attachments] == ["net1", "net2"]
    assert "default/p3" not in plans
    assert any("requests network default/missing" in e for e in p.errors)
    assert any("hostNetwork" in w for w in p.warnings)
    assert any("mode private" in w for w in p.warnings)
    assert not p.networks["default/a"].chains_mnp and any("has no" in w for w in p.warnings)


def test_interface_and_master_names_the_plugin_would_refuse_are_plan_errors(tmp_path: Path) -> None:
    """The lab's names follow shared.ifname's one rule: `..`, a trailing newline (which a `$`-anchored pattern let
    through) and a `"` are errors of the plan, and the pod or network is not built."""
    bad_master = (
        '{"cniVersion": "1.0.0", "name": "m", "type": "macvlan", "master": "eth1\\n", "ipam": {"type": "static"}}'
    )
    good = '{"cniVersion": "1.0.0", "name": "a", "type": "macvlan", "ipam": {"type": "static"}}'
    text = NAD.format(name="a", config=good) + NAD.format(name="m", config=bad_master)
    text += pod("dots", '[{"name": "a", "interface": ".."}]')
    text += pod("newline", '[{"name": "a", "interface": "net1\\n"}]')
    text += pod("quote", '[{"name": "a", "interface": "x\\"y"}]')
    text += pod("master", "m")
    p = plan(write(tmp_path, text), PATHS)
    plans = {pp.key: pp for pp in p.pods}
    for name, ifname in (("dots", ".."), ("newline", "net1\n"), ("quote", 'x"y')):
        assert plans[f"default/{name}"].attachments == ()
        assert f"Pod default/{name}: interface name {ifname!r} is invalid or used twice" in p.errors
    assert "NetworkAttachmentDefinition default/m: master 'eth1\\n' is not a link name" in p.errors
    assert "eth1\n" not in {m.name for m in p.masters}


def test_invalid_policies_do_not_stop_the_lab(tmp_path: Path) -> None:
    text = (
        pod("p", "[]")
        + """
    apiVersion: k8s.cni.cncf.io/v1beta1
    kind: MultiNetworkPolicy
    metadata:
      name: bad
      namespace: default
      annotations: {k8s.v1.cni.cncf.io/policy-for: net}
    spec:
      podSelector: {}
      policyTypes: [Sideways]
    """
    )
    p = plan(write(tmp_path, text), PATHS)
    assert p.errors == [] and len(p.invalid) == 1 and "Sideways" in p.invalid[0]


def test_capabilities_and_deprecated_cni_args() -> None:
    request = AttachmentRequest("default/n", "net1", ("10.0.0.5/24", "fd00::5/64"), "0a:58:00:00:00:01")
    assert request.capability_args() == {"ips": ["10.0.0.5/24", "fd00::5/64"], "mac": "0a:58:00:00:00:01"}
    # Multus' deprecated CNI_ARGS only for what no plugin takes as a capability
    assert request.cni_args({"ips", "mac"}) == ()
    assert request.cni_args({"ips"}) == (("MAC", "0a:58:00:00:00:01"),)
    assert request.cni_args() == (("MAC", "0a:58:00:00:00:01"), ("IP", "10.0.0.5/24,fd00::5/64"))
    assert AttachmentRequest("default/n", "net1").capability_args() == {}


def test_outside_host_config_is_the_interface_plugin_with_static_ipam() -> None:
    p = plan(REPO / "deploy" / "examples" / "localnet", PATHS)
    network = next(iter(p.networks.values()))
    conf = host_attachment_config(network, "192.0.2.10/24", "h")
    assert conf is not None
    (plugin,) = conf["plugins"]
    assert plugin["type"] == "macvlan" and plugin["ipam"] == {
        "type": "static",
        "addresses": [{"address": "192.0.2.10/24"}],
    }
    assert "capabilities" not in plugin


def test_runtime_pod_manifest_is_scheduled_with_status() -> None:
    p = plan(REPO / "deploy" / "examples" / "layer2", PATHS)
    pp = p.pods[0]
    status = [{"name": "layer2/flat-l2", "interface": "net1", "ips": ["10.0.0.1"], "dns": {}}]
    obj = runtime_pod_manifest(pp, "mnplab", status, "Running")
    assert obj["spec"]["nodeName"] == "mnplab" and obj["status"]["phase"] == "Running"
    assert obj["metadata"]["uid"] == pp.uid
    assert json.loads(obj["metadata"]["annotations"][NETWORK_STATUS]) == status
    assert NETWORK_STATUS not in (pp.manifest.get("metadata") or {}).get("annotations", {})  # DIR's object untouched
    pending = runtime_pod_manifest(pp, "mnplab", None, "Pending")
    assert NETWORK_STATUS not in pending["metadata"]["annotations"]


def _obs(allowed: bool | None, outcome: str, expect: bool | None = None, protocol: str = "TCP") -> Observation:
    probe = Probe("a/x", "a/y", 80, protocol, None, expect)
    return Observation(Record(probe, "a/n", allowed, "because"), None, outcome)


def test_verdicts_summary_and_table() -> None:
    rows = [
        _obs(True, "ok", True),
        _obs(False, "timeout", False),
        _obs(False, "eperm"),
        _obs(False, "ok"),  # a hole
        _obs(True, "timeout", True),
        _obs(True, "ok", False),  # as predicted, but not as expected
        _obs(True, "bad-reply"),
        _obs(True, SKIPPED, protocol="SCTP"),
        _obs(None, NOT_RUN),
    ]
    assert [o.verdict() for o in rows[:4]] == ["allow", "deny", "deny", "allow"]
    assert [o.passed for o in rows] == [True, True, True, False, False, False, False, False, False]
    assert rows[7].skipped and not rows[7].failed
    s = summarise(rows)
    assert (s.total, s.passed, s.mismatched, s.unmet, s.errors, s.skipped) == (9, 3, 2, 1, 2, 1)
    assert not s.ok and "MISMATCHED" in str(s) and "skipped" in str(s)
    text = render_table(rows, colour=False)
    assert "PREDICTED" in text and "OBSERVED" in text and "EXPECTED" in text and "\033[" not in text
    assert "allow (MISMATCH)" in text and "(NOT MET)" in text
    assert "\033[" in render_table(rows, colour=True)
    record = rows[0].to_json()
    assert record["observed"] is True and record["allowed"] is True and record["outcome"] == "ok"


def test_programmed_digest_tells_pending_from_programmed() -> None:
    pending = InterfaceRules.pending("net1", "a/x", "a/n", ifindex=2)
    fake = FakeNft()
    fake.run(render_interface(pending))
    assert interface_digest(fake.list_table(), "net1") == expected_digest(pending)
    assert interface_digest(fake.list_table(), "net2") is None
    assert interface_digest(None, "net1") is None
    open_rules = InterfaceRules("a/x", "net1", "a/n")
    assert expected_digest(open_rules) != expected_digest(pending)
    why = describe_difference(expected_digest(open_rules), expected_digest(pending))
    assert "rules" in why


def test_lab_is_an_mnpctl_subcommand_and_needs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    args = build_parser().parse_args(["lab", "somewhere", "--json", "--keep"])
    assert args.run is lab_cli.run and args.json and args.keep
    monkeypatch.setattr(session.os, "geteuid", lambda: 1000)
    assert "root" in (session.preflight() or "")
    err = io.StringIO()
    assert session.run_lab(tmp_path, err=err).status == lab_cli.EXIT_LAB
    assert "root" in err.getvalue()


def test_lab_without_its_machinery_says_it_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The image leaves daemon/lab's machinery and daemon/testbed out; `mnpctl lab` must say so, not crash.
    monkeypatch.setitem(sys.modules, "daemon.lab.session", None)
    args = build_parser().parse_args(["lab", str(tmp_path)])
    assert args.run(args) == EXIT_LAB
    assert "not installed here" in capsys.readouterr().err
