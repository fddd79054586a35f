"""Loading a directory of Kubernetes YAML into a Cluster: every problem named by file, object and field.

Address plan: default/blue 10.10.0.0/24 (RFC 1918).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from shared.manifests import build_cluster, load_dir
from shared.model import POLICY_FOR

NAD = """
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: blue, namespace: default}
spec:
  config: |
    {"cniVersion": "1.0.0", "name": "blue", "plugins": [
      {"type": "macvlan", "master": "eth1", "ipam": {"type": "host-local", "subnet": "10.10.0.0/24"}},
      {"type": "mnp"}]}
"""
POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: ns1
  annotations:
    k8s.v1.cni.cncf.io/networks: '[{{"name": "blue", "namespace": "default", "ips": ["{ip}/24"]}}]'
spec:
  containers: [{{name: c, ports: [{{containerPort: 80}}]}}]
"""
POLICY = """
apiVersion: k8s.cni.cncf.io/v1beta1
kind: MultiNetworkPolicy
metadata:
  name: {name}
  namespace: ns1
  annotations: {{k8s.v1.cni.cncf.io/policy-for: default/blue}}
spec:
  podSelector: {{}}
  ingress: [{rule}]
"""


def write(directory: Path, name: str, *documents: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n".join(textwrap.dedent(d).strip() + "\n" for d in documents))
    return path


def test_multi_document_files_in_nested_directories_are_all_read(tmp_path: Path) -> None:
    write(tmp_path, "net.yaml", NAD, "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns1, labels: {team: a}}")
    write(tmp_path, "pods/a.yml", POD.format(name="a", ip="10.10.0.10"), POD.format(name="b", ip="10.10.0.11"))
    write(
        tmp_path,
        "policies/p.json",
        json.dumps(
            {
                "apiVersion": "k8s.cni.cncf.io/v1beta1",
                "kind": "MultiNetworkPolicy",
                "metadata": {"name": "p", "namespace": "ns1", "annotations": {POLICY_FOR: "default/blue"}},
                "spec": {"podSelector": {}},
            }
        ),
    )
    loaded = load_dir(tmp_path)
    assert loaded.problems == []
    c = loaded.cluster
    assert set(c.namespaces) == {"ns1"} and c.namespaces["ns1"].labels["team"] == "a"
    assert [p.key for p in c.pods] == ["ns1/a", "ns1/b"]
    assert set(c.nads) == {"default/blue"} and [p.key for p in c.policies] == ["ns1/p"]
    assert loaded.sources["Pod ns1/b"] == "pods/a.yml#2"


def test_a_kubernetes_list_is_unpacked(tmp_path: Path) -> None:
    write(
        tmp_path,
        "list.yaml",
        """
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: Namespace, metadata: {name: ns1}}
        - {apiVersion: v1, kind: Pod, metadata: {name: a, namespace: ns1}}
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: ignored}}
    """,
    )
    loaded = load_dir(tmp_path)
    assert [p.key for p in loaded.cluster.pods] == ["ns1/a"]
    assert [str(p) for p in loaded.problems] == [
        "warning: list.yaml items[2] ConfigMap default/ignored: kind 'ConfigMap' is not used by mnp; ignored"
    ]


def test_probes_yaml_and_other_files_are_not_manifests(tmp_path: Path) -> None:
    write(tmp_path, "probes.yaml", "- {from: ns1/a, to: ns1/b, port: 80}")
    write(tmp_path, "README.md", "# not yaml: {")
    write(tmp_path, ".hidden.yaml", "{")
    assert load_dir(tmp_path).problems == []


def test_every_invalid_field_of_every_policy_is_reported_with_file_and_object(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.yaml",
        NAD,
        POLICY.format(
            name="bad-cidr", rule="{from: [{ipBlock: {cidr: 10.10.0.300/24}}], ports: [{port: 90, endPort: 80}]}"
        ),
        POLICY.format(name="good", rule="{}"),
        POLICY.format(name="bad-proto", rule="{ports: [{protocol: ICMP}]}"),
    )
    loaded = load_dir(tmp_path)
    messages = [str(p) for p in loaded.errors]
    assert messages == [
        "error: p.yaml#2 MultiNetworkPolicy ns1/bad-cidr: spec.ingress[0].from[0].ipBlock.cidr: '10.10.0.300/24' is "
        "not a valid CIDR ('10.10.0.300/24' does not appear to be an IPv4 or IPv6 network)",
        "error: p.yaml#2 MultiNetworkPolicy ns1/bad-cidr: spec.ingress[0].ports[0].endPort: 80 is smaller than port 90",
        "error: p.yaml#4 MultiNetworkPolicy ns1/bad-proto: spec.ingress[0].ports[0].protocol: 'ICMP' is not one of "
        "TCP, UDP, SCTP",
    ]
    # the valid policy, and the invalid ones (for the fail-closed rule), are all in the cluster
    assert sorted(p.key for p in loaded.cluster.policies) == ["ns1/bad-cidr", "ns1/bad-proto", "ns1/good"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: [unclosed", "p.yaml: not valid YAML"),
        ("- just\n- a list", "p.yaml: not a Kubernetes object (a list)"),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns1}\n---\n42",
            "p.yaml#2: not a Kubernetes object (a int)",
        ),
        ("apiVersion: v1\nkind: Pod\nmetadata: {namespace: ns1}", "Pod ns1/?: metadata.name: missing"),
        ("apiVersion: v2\nkind: Pod\nmetadata: {name: a}", "apiVersion 'v2' is not one of v1"),
        (
            "apiVersion: k8s.cni.cncf.io/v1\nkind: MultiNetworkPolicy\nmetadata: {name: a}",
            "is not one of k8s.cni.cncf.io/v1beta1",
        ),
        (
            "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: a}\n"
            "spec: {config: '{'}",
            "spec.config: not valid JSON",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, annotations: {k8s.v1.cni.cncf.io/network-status: '{'}}",
            "network-status: not valid JSON",
        ),
    ],
)
def test_unreadable_or_invalid_objects_are_errors_naming_file_object_and_field(
    tmp_path: Path, text: str, fragment: str
) -> None:
    write(tmp_path, "p.yaml", text)
    loaded = load_dir(tmp_path)
    assert loaded.errors, fragment
    assert any(fragment in str(p) for p in loaded.errors), [str(p) for p in loaded.errors]


def test_a_duplicate_object_is_reported_and_the_first_kept(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", POD.format(name="a", ip="10.10.0.10"))
    write(tmp_path, "b.yaml", POD.format(name="a", ip="10.10.0.99"))
    loaded = load_dir(tmp_path)
    assert [str(p) for p in loaded.errors] == [
        "error: b.yaml Pod ns1/a: defined again (first in a.yaml); this one is ignored"
    ]
    assert str(loaded.cluster.pods[0].attachments[0].ips[0]) == "10.10.0.10"


def test_a_policy_for_a_network_no_nad_defines_is_a_warning(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", NAD, POLICY.format(name="p", rule="{}").replace("default/blue", "'default/blue, green'"))
    loaded = load_dir(tmp_path)
    assert loaded.errors == []
    assert [str(p) for p in loaded.problems] == [
        "warning: a.yaml#2 MultiNetworkPolicy ns1/p: policy-for names ns1/green, which no "
        "NetworkAttachmentDefinition here defines"
    ]


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    loaded = load_dir(tmp_path / "nope")
    assert [p.message for p in loaded.errors] == ["not a directory"]


def test_an_unreadable_file_is_an_error_and_the_rest_is_still_loaded(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", POD.format(name="a", ip="10.10.0.10"))
    (tmp_path / "broken.yaml").symlink_to(tmp_path / "missing-target.yaml")
    loaded = load_dir(tmp_path)
    assert any("broken.yaml: cannot read" in str(p) for p in loaded.errors)
    assert [p.key for p in loaded.cluster.pods] == ["ns1/a"]


def test_a_binary_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """Bug fixed: a file that is not UTF-8 raised UnicodeDecodeError out of load_dir (and `mnpctl matrix`)."""
    (tmp_path / "blob.yaml").write_bytes(b"apiVersion: v1\nkind: Namespace\nmetadata: {name: \xff}\n")
    loaded = load_dir(tmp_path)
    assert [str(p) for p in loaded.errors] == [
        "error: blob.yaml: cannot read: not UTF-8 text (invalid start byte at byte 48)"
    ]


def test_build_cluster_takes_api_dicts_directly() -> None:
    loaded = build_cluster([("api", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}})])
    assert loaded.problems == [] and set(loaded.cluster.namespaces) == {"ns1"}
