"""`mnpctl matrix DIR [--probes FILE] [--json]`, called as `daemon.ctl.main([...])` (no subprocess).

Address plan: the examples' own (layer2 10.100.0.0/24; localnet LAN 192.0.2.0/24, RFC 5737, with the database
outside the cluster at 192.0.2.10); the small clusters written here use default/blue 10.10.0.0/24 (RFC 1918).
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from daemon.cli.output import table, use_colour
from daemon.ctl import main

ROOT = Path(__file__).resolve().parents[2]
LAYER2 = ROOT / "deploy" / "examples" / "layer2"
LOCALNET = ROOT / "deploy" / "examples" / "localnet"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def records(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    status, out, err = run(capsys, "matrix", *argv, "--json")
    return status, json.loads(out), err


def verdicts(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], bool | None]:
    return {(r["from"], r["to"], r["port"]): r["allowed"] for r in rows}


# ------------------------------------------------------------------------------------------- the seed's use cases


def test_layer2_example_gives_the_seeds_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    status, rows, err = records(capsys, str(LAYER2))
    assert status == 0, err
    assert err == ""
    got = verdicts(rows)
    assert got[("layer2/vmc", "layer2/vma", 7000)] is True  # C → A allowed
    assert got[("layer2/vmc", "layer2/vmb", 9093)] is False  # C → B denied
    assert got[("layer2/vmc", "layer2/vmb", 9090)] is False
    assert got[("layer2/vma", "layer2/vmb", 9093)] is True  # A → B allowed
    assert got[("layer2/vma", "layer2/vmb", 9090)] is True
    assert got[("layer2/vmb", "layer2/vma", 7000)] is False
    assert all(r["allowed"] == (r["expected"] == "allow") for r in rows)


def test_layer2_example_without_its_probe_file_probes_every_pair_and_port(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shutil.copytree(LAYER2, tmp_path / "layer2", ignore=shutil.ignore_patterns("probes.yaml"))
    status, rows, _ = records(capsys, str(tmp_path / "layer2"))
    assert status == 0
    assert verdicts(rows) == {
        ("layer2/vma", "layer2/vmb", 9090): True,
        ("layer2/vma", "layer2/vmb", 9093): True,
        ("layer2/vma", "layer2/vmc", 7001): False,
        ("layer2/vmb", "layer2/vma", 7000): False,
        ("layer2/vmb", "layer2/vmc", 7001): False,
        ("layer2/vmc", "layer2/vma", 7000): True,
        ("layer2/vmc", "layer2/vmb", 9090): False,
        ("layer2/vmc", "layer2/vmb", 9093): False,
    }
    assert all("expected" not in r for r in rows)


def test_localnet_example_only_the_vm_reaches_the_database(capsys: pytest.CaptureFixture[str]) -> None:
    status, rows, err = records(capsys, str(LOCALNET))
    assert status == 0, err
    got = verdicts(rows)
    assert got[("localnet/virt-launcher-vm1", "192.0.2.10", 5432)] is True
    assert got[("localnet/web", "192.0.2.10", 5432)] is False
    assert got[("localnet/virt-launcher-vm1", "192.0.2.11", 5432)] is False
    allow = next(
        r for r in rows if r["from"] == "localnet/virt-launcher-vm1" and r["to"] == "192.0.2.10" and r["port"] == 5432
    )
    assert "allowed by localnet/vm1-to-database egress[0]" in allow["reason"]
    assert "host outside the cluster" in allow["reason"]


# ------------------------------------------------------------------------------------------- output


def test_the_table_is_aligned_with_from_to_port_verdict_reason_and_no_colour_off_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "matrix", str(LAYER2))
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["FROM", "TO", "PORT/PROTO", "VERDICT", "EXPECTED", "REASON"]
    assert not ANSI.search(out)
    start = lines[0].index("VERDICT")
    assert all(line[start:].split()[0] in ("VERDICT", "allow", "deny") for line in lines)
    assert any(line.startswith("layer2/vmc  layer2/vma  7000/TCP    allow") for line in lines)


def test_json_records_echo_the_probe_and_add_network_verdict_reason_and_expectation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, rows, _ = records(capsys, str(LAYER2))
    assert rows[0] == {
        "from": "layer2/vmc",
        "to": "layer2/vma",
        "port": 7000,
        "protocol": "TCP",
        "network": "layer2/flat-l2",
        "allowed": True,
        "reason": "egress from layer2/vmc: not isolated (no policy for layer2/flat-l2 selects it); "
        "ingress to layer2/vma: allowed by layer2/vma-data-from-producer ingress[0]",
        "expected": "allow",
    }


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert use_colour(Terminal(), {}) is True
    assert use_colour(Terminal(), {"NO_COLOR": "1"}) is False
    assert use_colour(Terminal(), {"NO_COLOR": ""}) is True  # no-color.org: set *and non-empty*
    assert use_colour(io.StringIO(), {}) is False

    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["matrix", str(LAYER2)]) == 0
    coloured = terminal.getvalue()
    assert "\x1b[32mallow" in coloured and "\x1b[31mdeny" in coloured
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    monkeypatch.setattr("sys.stdout", plain)
    assert main(["matrix", str(LAYER2)]) == 0
    assert ANSI.sub("", coloured) == plain.getvalue()  # colour never changes the alignment


def test_table_pads_on_plain_text() -> None:
    text = table(["A", "B", "C"], [["x", "yyyy", "z"], ["xxx", "y", ""]], [[None, "\x1b[31m", None]] * 2, colour=True)
    assert ANSI.sub("", text) == "A    B     C\nx    yyyy  z\nxxx  y\n"


# ------------------------------------------------------------------------------------------- probes and exit codes


BLUE_NAD = """\
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: blue, namespace: default}
spec:
  config: |
    {"cniVersion": "1.0.0", "name": "blue", "plugins": [
      {"type": "macvlan", "master": "eth1", "ipam": {"type": "host-local", "subnet": "10.10.0.0/24"}},
      {"type": "mnp"}]}
"""


def pod_yaml(name: str, ip: str, port: int = 80) -> str:
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: ns1
  labels: {{app: {name}}}
  annotations:
    k8s.v1.cni.cncf.io/networks: '[{{"name": "blue", "namespace": "default", "ips": ["{ip}/24"]}}]'
spec:
  containers: [{{name: c, ports: [{{containerPort: {port}}}]}}]
"""


def policy_yaml(name: str, ingress: str) -> str:
    return f"""\
apiVersion: k8s.cni.cncf.io/v1beta1
kind: MultiNetworkPolicy
metadata:
  name: {name}
  namespace: ns1
  annotations: {{k8s.v1.cni.cncf.io/policy-for: default/blue}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  ingress: {ingress}
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    directory = tmp_path / "small"
    directory.mkdir()
    (directory / "cluster.yaml").write_text(
        "---\n".join(
            [
                BLUE_NAD,
                pod_yaml("server", "10.10.0.10"),
                pod_yaml("client", "10.10.0.11"),
                policy_yaml("from-client", "[{from: [{podSelector: {matchLabels: {app: client}}}]}]"),
            ]
        )
    )
    return directory


def test_a_probe_file_overrides_dir_probes_yaml(capsys: pytest.CaptureFixture[str], small: Path) -> None:
    (small / "probes.yaml").write_text("- {from: ns1/server, to: ns1/client, port: 80, expect: allow}\n")
    other = small.parent / "other.yaml"  # outside DIR: every YAML file in DIR is a manifest
    other.write_text("- {from: ns1/client, to: ns1/server, port: 80, protocol: UDP}\n")
    status, rows, _ = records(capsys, str(small), "--probes", str(other))
    assert status == 0
    assert [(r["from"], r["protocol"], r["allowed"]) for r in rows] == [("ns1/client", "UDP", True)]
    assert "expected" not in rows[0]


def test_an_unmet_expectation_exits_1_with_a_summary(capsys: pytest.CaptureFixture[str], small: Path) -> None:
    (small / "probes.yaml").write_text(
        "- {from: ns1/client, to: ns1/server, port: 80, expect: allow}\n"
        "- {from: ns1/server, to: ns1/client, port: 80, expect: deny}\n"
    )
    status, out, err = run(capsys, "matrix", str(small))
    assert status == 1
    assert "deny (MISMATCH)" in out
    assert err.splitlines() == [
        "1 of 2 expectations not met:",
        "  ns1/server -> ns1/client 80/TCP: expected deny, got allow (egress from ns1/server: not isolated (no policy "
        "for default/blue selects it); ingress to ns1/client: not isolated (no policy for default/blue selects it))",
    ]


def test_an_invalid_policy_exits_2_naming_object_and_field_and_is_still_evaluated_fail_closed(
    capsys: pytest.CaptureFixture[str], small: Path
) -> None:
    (small / "bad.yaml").write_text(
        policy_yaml("bad", "[{ports: [{port: 9000, endPort: 8000}, {protocol: ICMP}]}]").replace("server}}", "client}}")
    )
    (small / "probes.yaml").write_text(
        "- {from: ns1/client, to: ns1/server, port: 80, expect: allow}\n"
        "- {from: ns1/server, to: ns1/client, port: 80, expect: deny}\n"
    )
    status, out, err = run(capsys, "matrix", str(small))
    assert status == 2
    assert (
        "error: bad.yaml MultiNetworkPolicy ns1/bad: spec.ingress[0].ports[0].endPort: 8000 is smaller than port 9000"
        in err
    )
    assert "error: bad.yaml MultiNetworkPolicy ns1/bad: spec.ingress[0].ports[1].protocol: 'ICMP' is not one of" in err
    assert "invalid input: 2 error(s); valid objects were still evaluated" in err
    assert "isolated by ns1/bad (invalid: no allows)" in out  # the client is closed by the invalid policy


def test_probes_that_cannot_be_answered_exit_2_and_show_as_errors(
    capsys: pytest.CaptureFixture[str], small: Path
) -> None:
    (small / "probes.yaml").write_text(
        "- {from: ns1/ghost, to: ns1/server, port: 80}\n- {from: ns1/client, to: ns1/server, port: 80}\n"
    )
    status, rows, err = records(capsys, str(small))
    assert status == 2
    assert rows[0]["allowed"] is None and "'ns1/ghost' is neither an IP address nor a known pod" in rows[0]["reason"]
    assert rows[1]["allowed"] is True  # the answerable probe is still answered
    assert "error: probe ns1/ghost -> ns1/server 80/TCP" in err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("- [unclosed", "not valid YAML"),
        ("{from: a}", "must be a YAML list"),
        ("- {from: ns1/client, to: ns1/server, port: 99999}", "[0].port: 99999 is not a port number"),
        (b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_a_bad_probe_file_exits_2_naming_the_file_and_entry(
    capsys: pytest.CaptureFixture[str], small: Path, content: str | bytes, fragment: str
) -> None:
    path = small / "probes.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    status, _, err = run(capsys, "matrix", str(small))
    assert status == 2
    assert str(path) in err and fragment in err


def test_a_missing_probe_file_or_directory_exits_2(capsys: pytest.CaptureFixture[str], small: Path) -> None:
    status, _, err = run(capsys, "matrix", str(small), "--probes", str(small / "nope.yaml"))
    assert status == 2 and "nope.yaml: cannot read: No such file or directory" in err
    status, out, err = run(capsys, "matrix", str(small / "nope"))
    assert status == 2 and out == "" and "not a directory" in err


def test_warnings_are_printed_but_do_not_fail(capsys: pytest.CaptureFixture[str], small: Path) -> None:
    (small / "extra.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    status, _, err = run(capsys, "matrix", str(small))
    assert status == 0
    assert "warning: extra.yaml ConfigMap default/x: kind 'ConfigMap' is not used by mnp; ignored" in err


# ------------------------------------------------------------------------------------------- the command line


def test_usage_errors_exit_2_and_help_exits_0_without_leaving_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err
    assert main(["matrix"]) == 2
    assert main(["nosuch"]) == 2
    assert main(["--help"]) == 0
    assert "matrix" in capsys.readouterr().out
    assert main(["matrix", "--help"]) == 0
    assert "--probes FILE" in capsys.readouterr().out


# ------------------------------------------------------------------------------- static IPAM: no NAD subnet

STATIC_IPAM = ROOT / "tests" / "scenarios" / "static-ipam-outside-host"


def test_outside_hosts_on_a_static_ipam_network_are_placed_by_the_pods_requested_prefix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bug fixed: with `"ipam": {"type": "static"}` and per-pod `ips`, every outside address was refused."""
    status, rows, err = records(capsys, str(STATIC_IPAM))
    assert status == 0, err
    outside = [r for r in rows if r["from"].startswith("198.51.100.")]
    assert outside and all(r["network"] == "store/lan" for r in outside)
    assert verdicts(outside) == {
        ("198.51.100.200", "store/db", 5432): True,
        ("198.51.100.201", "store/db", 5432): False,
        ("198.51.100.201", "store/app", 8080): True,
    }


def test_an_outside_address_on_no_known_prefix_goes_to_the_pods_only_network_or_the_named_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    probes = tmp_path / "probes.yaml"
    probes.write_text(
        "- {from: 192.0.2.7, to: store/db, port: 5432}\n"
        "- {from: 192.0.2.7, to: store/app, port: 8080, network: store/lan}\n"
    )
    status, rows, err = records(capsys, str(STATIC_IPAM), "--probes", str(probes))
    assert status == 0, err
    assert [(r["network"], r["allowed"]) for r in rows] == [("store/lan", False), ("store/lan", True)]
    probes.write_text("- {from: 192.0.2.7, to: store/db, port: 5432, network: store/wan}\n")
    status, rows, err = records(capsys, str(STATIC_IPAM), "--probes", str(probes))
    assert status == 2 and "network store/wan does not connect 192.0.2.7 and store/db" in err
