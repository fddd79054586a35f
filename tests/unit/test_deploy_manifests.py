"""Offline validation of everything under deploy/: what `kubectl apply` would get must be accepted by the API server.

Why: a typo in a DaemonSet field is silently dropped by a lenient client or rejected at install time on a user's
cluster; neither is caught by looking at YAML. So:

* every built-in object (the CRD as apiextensions.k8s.io/v1, RBAC, ConfigMap, DaemonSet …) is validated against the
  Kubernetes OpenAPI schemas with `kubernetes-validate` (bundled schemas, no network), in strict mode (unknown
  fields are errors, like `kubectl apply --validate=strict`), for the oldest and the newest Kubernetes we target;
* the CRD's own schema is checked: structural, v1beta1 served+storage, v1beta2 as upstream (not served), `endPort`,
  and the same field tree and types as networking.k8s.io/v1 NetworkPolicySpec;
* the example MultiNetworkPolicies (deploy/examples/**) are validated against that CRD schema with `jsonschema`,
  unknown fields rejected;
* every NAD's conflist is parsed by the plugin's own parser (cni.config.parse_config) exactly as the runtime hands
  it to the `mnp` entry;
* the kustomizations list every file (no orphans), the overlay patch applies to a valid DaemonSet, and — when
  `kubectl` is installed — `kubectl kustomize` renders base and overlay to the same valid objects;
* the pieces agree with each other and with the daemon: ServiceAccount/RBAC names, ConfigMap keys = `mnpd`
  options accepted by daemon.config, probe ports = the listen port, state dir under a mounted hostPath,
  capabilities exactly NET_ADMIN + SYS_ADMIN.
"""

from __future__ import annotations

import copy
import importlib
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kustomize" / "base"
OVERLAYS = DEPLOY / "kustomize" / "overlays"
NADS = DEPLOY / "nads"
EXAMPLES = DEPLOY / "examples"
CONTAINERFILE = ROOT / "packaging" / "Containerfile"

# The oldest Kubernetes minor we support and the newest one kubernetes-validate knows.
K8S_VERSIONS = ("1.28", kubernetes_validate.utils.latest_version())

CRD_NAME = "multi-networkpolicies.k8s.cni.cncf.io"
MNP_GROUP = "k8s.cni.cncf.io"
KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"
NAD_API = "k8s.cni.cncf.io/v1"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


# ------------------------------------------------------------------------------------------------ loading


def yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_docs(path: Path, only_mappings: bool = False) -> list[dict[str, Any]]:
    """The YAML documents of a file. Under deploy/ (except examples) every document must be a mapping; examples
    also hold other YAML (`mnpctl matrix` probe lists), which `only_mappings` skips."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    if only_mappings:
        return [doc for doc in docs if isinstance(doc, dict)]
    assert all(isinstance(doc, dict) for doc in docs), f"{path}: every YAML document must be a mapping"
    return docs


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def is_kustomization(doc: dict[str, Any]) -> bool:
    return doc.get("apiVersion") == KUSTOMIZE_API


def deploy_manifest_files() -> list[Path]:
    """Every YAML file under deploy/ that this suite owns (deploy/examples/ has its own tests below)."""
    return [p for p in yaml_files(DEPLOY) if EXAMPLES not in p.parents]


def patch_files() -> set[Path]:
    """Files used as `patches:` by some kustomization: partial objects, validated after merging."""
    out: set[Path] = set()
    for path in deploy_manifest_files():
        for doc in load_docs(path):
            if is_kustomization(doc):
                out.update((path.parent / p["path"]).resolve() for p in doc.get("patches", []) if "path" in p)
    return out


@cache
def object_docs() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(id, object) for every complete Kubernetes object under deploy/ (not kustomizations, not patches).
    Cached: tests must not mutate what it returns (they deep-copy before changing anything)."""
    patches = patch_files()
    out = []
    for path in deploy_manifest_files():
        if path.resolve() in patches:
            continue
        for index, doc in enumerate(load_docs(path)):
            if not is_kustomization(doc):
                name = doc.get("metadata", {}).get("name")
                out.append((f"{rel(path)}#{index}:{doc.get('kind')}/{name}", doc))
    return tuple(out)


def builtin_docs() -> list[tuple[str, dict[str, Any]]]:
    """Objects whose schema ships with Kubernetes (everything but the k8s.cni.cncf.io kinds)."""
    return [(i, d) for i, d in object_docs() if not str(d.get("apiVersion", "")).startswith(MNP_GROUP + "/")]


def find(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for _, d in object_docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected exactly one {kind} {name or ''} under deploy/, found {len(matches)}"
    return matches[0]


@cache
def k8s_defs() -> dict[str, Any]:
    """The `$defs` of Kubernetes' OpenAPI definitions as bundled by kubernetes-validate (newest version, strict)."""
    version = kubernetes_validate.utils.latest_version()
    ref = resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json"
    )
    defs: dict[str, Any] = json.loads(ref.read_text())["$defs"]
    return defs


def crd() -> dict[str, Any]:
    return find("CustomResourceDefinition", CRD_NAME)


def crd_version(name: str) -> dict[str, Any]:
    versions: dict[str, dict[str, Any]] = {v["name"]: v for v in crd()["spec"]["versions"]}
    return versions[name]


def daemonset() -> dict[str, Any]:
    return find("DaemonSet")


def container(pod_spec: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    items = pod_spec.get("initContainers" if init else "containers", [])
    matches: list[dict[str, Any]] = [c for c in items if c["name"] == name]
    assert len(matches) == 1, f"no {'init ' if init else ''}container {name}"
    return matches[0]


# ------------------------------------------------------------------------------------------------ Kubernetes schemas


def test_deploy_has_the_expected_objects() -> None:
    kinds = sorted(d["kind"] for _, d in object_docs())
    for kind in (
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "DaemonSet",
        "ServiceAccount",
    ):
        assert kind in kinds, f"deploy/ has no {kind}"
    nad_types = {plugin_chain(d)[0]["type"] for d in nad_docs()}
    assert {"macvlan", "ipvlan", "sriov"} <= nad_types


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("ident", "doc"), builtin_docs(), ids=[i for i, _ in builtin_docs()])
def test_builtin_object_validates_against_kubernetes_openapi(ident: str, doc: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{ident} is invalid for Kubernetes {version} at {path or '<root>'}: {exc.message}")


def test_strict_validation_catches_a_misspelt_field() -> None:
    """Control: the validator really is strict, so the test above means something."""
    doc = copy.deepcopy(daemonset())
    doc["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_every_object_has_the_recommended_labels() -> None:
    for ident, doc in object_docs():
        labels = doc["metadata"].get("labels", {})
        if doc["kind"] == "NetworkAttachmentDefinition":
            assert labels.get("app.kubernetes.io/part-of") == "mnp-examples", ident
            continue
        assert labels.get("app.kubernetes.io/name") == "mnp", ident
        assert labels.get("app.kubernetes.io/part-of") == "mnp", ident
        assert labels.get("app.kubernetes.io/component"), ident


def test_namespaced_objects_live_in_kube_system() -> None:
    for ident, doc in builtin_docs():
        if doc["kind"] in ("ServiceAccount", "ConfigMap", "DaemonSet"):
            assert doc["metadata"].get("namespace") == "kube-system", ident


# ------------------------------------------------------------------------------------------------ the CRD


def walk_schema(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk_schema(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk_schema(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk_schema(node["additionalProperties"], f"{path}{{}}")


def test_crd_identity_matches_upstream() -> None:
    spec = crd()["spec"]
    assert spec["group"] == MNP_GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["plural"] == "multi-networkpolicies"
    assert spec["names"]["singular"] == "multi-networkpolicy"
    assert spec["names"]["kind"] == "MultiNetworkPolicy"
    assert spec["names"]["shortNames"] == ["multi-policy"]


def test_crd_versions_are_upstreams() -> None:
    """v1beta1 served and stored; v1beta2 defined but, as in upstream scheme.yml, neither served nor stored."""
    versions = {v["name"]: (v["served"], v["storage"]) for v in crd()["spec"]["versions"]}
    assert versions == {"v1beta1": (True, True), "v1beta2": (False, False)}
    assert crd_version("v1beta1")["schema"] == crd_version("v1beta2")["schema"], "upstream: identical schemas"


def test_crd_schema_is_structural() -> None:
    """What the API server requires of a v1 CRD: a type on every node (int-or-string nodes excepted), no
    `x-kubernetes-preserve-unknown-fields` (so unknown fields are pruned, like upstream)."""
    for version in ("v1beta1", "v1beta2"):
        schema = crd_version(version)["schema"]["openAPIV3Schema"]
        for path, node in walk_schema(schema):
            assert "x-kubernetes-preserve-unknown-fields" not in node, f"{version}{path}"
            if node.get("x-kubernetes-int-or-string"):
                assert node.get("anyOf") == [{"type": "integer"}, {"type": "string"}], f"{version}{path}"
                assert "type" not in node, f"{version}{path}"
            else:
                assert node.get("type") in ("object", "array", "string", "integer", "boolean"), f"{version}{path}"


def test_crd_has_endport_in_both_directions() -> None:
    for version in ("v1beta1", "v1beta2"):
        spec = crd_version(version)["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        for direction in ("ingress", "egress"):
            port = spec[direction]["items"]["properties"]["ports"]["items"]["properties"]
            assert port["endPort"] == {**port["endPort"], "type": "integer", "format": "int32"}, (version, direction)


def k8s_tree(ref_or_node: dict[str, Any], path: str = "") -> dict[str, str]:
    """NetworkPolicySpec as {field path: type}, $refs resolved, nullable types reduced to the real one."""
    node = ref_or_node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name == "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
            return {path: "int-or-string"}
        node = k8s_defs()[name]
    types = node.get("type", [])
    kind = next(t for t in (types if isinstance(types, list) else [types]) if t != "null")
    out = {path: kind}
    for name, child in node.get("properties", {}).items():
        out.update(k8s_tree(child, f"{path}.{name}"))
    if kind == "array":
        out.update(k8s_tree(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        out.update(k8s_tree(node["additionalProperties"], f"{path}{{}}"))
    return out


def crd_tree(node: dict[str, Any], path: str = "") -> dict[str, str]:
    return {
        p: ("int-or-string" if n.get("x-kubernetes-int-or-string") else n["type"]) for p, n in walk_schema(node, path)
    }


def test_crd_spec_is_networkpolicyspec_field_for_field() -> None:
    """The MultiNetworkPolicy spec has exactly the fields and types of networking.k8s.io/v1 NetworkPolicySpec."""
    expected = k8s_tree({"$ref": "#/$defs/io.k8s.api.networking.v1.NetworkPolicySpec"})
    spec = crd_version("v1beta1")["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert crd_tree(spec) == expected


# ------------------------------------------------------------------------------------------------ policies vs the CRD


def strict_crd_schema() -> dict[str, Any]:
    """v1beta1's openAPIV3Schema as a JSON schema that, like `kubectl apply --validate=strict`, rejects unknown
    fields, with metadata checked as a real ObjectMeta."""
    schema: dict[str, Any] = copy.deepcopy(crd_version("v1beta1")["schema"]["openAPIV3Schema"])
    for _, node in walk_schema(schema):
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
    schema["properties"]["metadata"] = {"$ref": f"#/$defs/{OBJECT_META}"}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    schema["properties"]["apiVersion"] = {"enum": [f"{MNP_GROUP}/v1beta1"]}
    schema["properties"]["kind"] = {"const": "MultiNetworkPolicy"}
    schema["$defs"] = k8s_defs()
    return schema


@cache
def example_docs() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(id, object) for every Kubernetes object in deploy/examples/** (multi-document files and `kind: List`)."""
    out = []
    if EXAMPLES.is_dir():
        for path in yaml_files(EXAMPLES):
            for index, doc in enumerate(load_docs(path, only_mappings=True)):
                items = doc.get("items", []) if doc.get("kind") == "List" else [doc]
                for item in items:
                    if isinstance(item, dict) and "apiVersion" in item and "kind" in item:
                        name = item.get("metadata", {}).get("name")
                        out.append((f"{rel(path)}#{index}:{item['kind']}/{name}", item))
    return tuple(out)


POLICIES: list[Any] = [(i, d) for i, d in example_docs() if d["kind"] == "MultiNetworkPolicy"]
EXAMPLE_BUILTINS: list[Any] = [
    (i, d)
    for i, d in example_docs()
    if not str(d["apiVersion"]).startswith(MNP_GROUP + "/") and d["apiVersion"] != KUSTOMIZE_API
]


@pytest.mark.parametrize(
    ("ident", "doc"),
    EXAMPLE_BUILTINS or [pytest.param("none", {}, marks=pytest.mark.skip(reason="no built-in kinds in examples"))],
    ids=[i for i, _ in EXAMPLE_BUILTINS] or ["none"],
)
def test_example_builtin_object_validates_against_kubernetes_openapi(ident: str, doc: dict[str, Any]) -> None:
    """The examples' Namespaces and Pods are applied with kubectl too: same strict check as deploy/'s objects."""
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{ident} is invalid for Kubernetes {version} at {path or '<root>'}: {exc.message}")


@pytest.mark.parametrize(
    ("ident", "policy"),
    POLICIES or [pytest.param("none", {}, marks=pytest.mark.skip(reason="deploy/examples/ has no policies yet"))],
    ids=[i for i, _ in POLICIES] or ["none"],
)
def test_example_policy_validates_against_the_crd(ident: str, policy: dict[str, Any]) -> None:
    errors = sorted(jsonschema.Draft202012Validator(strict_crd_schema()).iter_errors(policy), key=str)
    assert not errors, f"{ident}: " + "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_crd_schema_accepts_a_full_policy_and_rejects_mistakes() -> None:
    """Control for the test above, on a policy using every field."""
    policy = {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {"name": "p", "namespace": "ns", "annotations": {"k8s.v1.cni.cncf.io/policy-for": "ns/blue"}},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}},
                        {"namespaceSelector": {}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                    ],
                    "ports": [{"protocol": "TCP", "port": 5432}, {"port": "metrics"}, {"port": 7000, "endPort": 7100}],
                }
            ],
            "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/8"}}], "ports": [{"protocol": "SCTP"}]}],
        },
    }
    validator = jsonschema.Draft202012Validator(strict_crd_schema())
    assert list(validator.iter_errors(policy)) == []
    mutations: tuple[Callable[[dict[str, Any]], object], ...] = (
        lambda p: p["spec"].pop("podSelector"),
        lambda p: p["spec"]["ingress"][0]["ports"][0].update(endport=1),
        lambda p: p["spec"]["ingress"][0]["ports"][0].update(port=[1]),
        lambda p: p["spec"]["ingress"][0]["from"][2]["ipBlock"].pop("cidr"),
        lambda p: p["spec"].update(policyTypes="Ingress"),
        lambda p: p["metadata"].update(name=7),
    )
    for mutate in mutations:
        bad = copy.deepcopy(policy)
        mutate(bad)
        assert list(validator.iter_errors(bad)), f"accepted a broken policy: {bad['spec']}"


# ------------------------------------------------------------------------------------------------ NADs


def is_nad(doc: dict[str, Any]) -> bool:
    return bool(doc["apiVersion"] == NAD_API and doc["kind"] == "NetworkAttachmentDefinition")


def nad_docs() -> list[dict[str, Any]]:
    """deploy/nads' NADs only (the ones mnp ships as examples of chaining)."""
    return [d for _, d in object_docs() if is_nad(d)]


# Every NAD the repository ships: deploy/nads and the ones in deploy/examples.
ALL_NADS = [(i, d) for i, d in (*object_docs(), *example_docs()) if is_nad(d)]


def plugin_chain(nad: dict[str, Any]) -> list[dict[str, Any]]:
    conf = json.loads(nad["spec"]["config"])
    plugins: list[dict[str, Any]] = conf["plugins"]
    return plugins


NAD_IDS = [i for i, _ in ALL_NADS]
NADS_ONLY = [d for _, d in ALL_NADS]
# deploy/examples/adopted's NAD leaves mnp out on purpose: mnpd adopts its interfaces (docs/user-guide.md §10)
UNCHAINED_EXAMPLE = "deploy/examples/adopted/"
CHAINED_IDS = [i for i in NAD_IDS if not i.startswith(UNCHAINED_EXAMPLE)]
CHAINED_NADS = [d for i, d in ALL_NADS if not i.startswith(UNCHAINED_EXAMPLE)]


@pytest.mark.parametrize("nad", NADS_ONLY, ids=NAD_IDS)
def test_nad_validates_against_the_nad_crd(nad: dict[str, Any]) -> None:
    """The NetworkAttachmentDefinition CRD (k8snetworkplumbingwg) has spec.config, a string; metadata is ObjectMeta."""
    schema = {
        "$defs": k8s_defs(),
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": NAD_API},
            "kind": {"const": "NetworkAttachmentDefinition"},
            "metadata": {"$ref": f"#/$defs/{OBJECT_META}"},
            "spec": {
                "type": "object",
                "required": ["config"],
                "additionalProperties": False,
                "properties": {"config": {"type": "string"}},
            },
        },
    }
    jsonschema.Draft202012Validator(schema).validate(nad)


@pytest.mark.parametrize("nad", CHAINED_NADS, ids=CHAINED_IDS)
def test_nad_conflist_chains_mnp_last(nad: dict[str, Any]) -> None:
    conf = json.loads(nad["spec"]["config"])
    assert conf["name"] == nad["metadata"]["name"], "the network name should be the NAD's name"
    types = [p["type"] for p in conf["plugins"]]
    assert types[-1] == "mnp", "mnp must be the last plugin of the chain"
    assert types.count("mnp") == 1 and len(types) >= 2, "mnp is a chained plugin: it needs an interface plugin before"


PREV_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "net1", "mac": "0a:58:0a:0a:00:05", "sandbox": "/var/run/netns/cni-1234"}],
    "ips": [{"interface": 0, "address": "10.10.0.5/24"}],
}


@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
@pytest.mark.parametrize("nad", CHAINED_NADS, ids=CHAINED_IDS)
def test_nad_conflist_is_accepted_by_the_plugins_parser(nad: dict[str, Any], command: str) -> None:
    """The `mnp` entry, as libcni hands it to the plugin (its own keys plus the list's name and cniVersion, and the
    previous plugin's result), parses with the plugin's own validating parser."""
    try:
        config = importlib.import_module("cni.config")
    except ModuleNotFoundError:
        pytest.skip("cni/config.py (the plugin's config parser) is not in the tree yet")
    conf = json.loads(nad["spec"]["config"])
    entry = dict(conf["plugins"][-1], name=conf["name"], cniVersion=conf["cniVersion"])
    if command in ("ADD", "CHECK"):
        entry["prevResult"] = dict(PREV_RESULT, cniVersion=conf["cniVersion"])
    parsed = config.parse_config(json.dumps(entry), command, "net1")
    assert parsed.type == "mnp"
    assert parsed.name == nad["metadata"]["name"]
    assert parsed.state_dir == configmap()["data"]["MNP_STATE_DIR"], "plugin and daemon must share the state dir"
    assert parsed.on_error == "fail", "examples must never run a pod open on error"
    if command == "ADD":
        assert parsed.ips == ("10.10.0.5/24",)


# ------------------------------------------------------------------------------------------------ kustomize


def kustomizations() -> list[Path]:
    return [p for p in deploy_manifest_files() if any(is_kustomization(d) for d in load_docs(p))]


def kustomization_refs(path: Path) -> set[Path]:
    (doc,) = load_docs(path)
    refs = {(path.parent / r).resolve() for r in doc.get("resources", [])}
    refs |= {(path.parent / p["path"]).resolve() for p in doc.get("patches", []) if "path" in p}
    return refs


def test_kustomizations_reference_existing_files() -> None:
    assert kustomizations(), "no kustomization under deploy/"
    for path in kustomizations():
        for ref in kustomization_refs(path):
            assert ref.exists(), f"{rel(path)} lists {ref}, which does not exist"
            if ref.is_dir():
                assert (ref / "kustomization.yaml").is_file(), f"{rel(path)}: {ref} is not a kustomization"


def test_no_orphan_manifests() -> None:
    """Every YAML file under deploy/kustomize is listed by a kustomization (or is one); deploy/nads holds examples
    to copy and adapt, so it is the only other place for manifests."""
    listed = {ref for k in kustomizations() for ref in kustomization_refs(k)} | {k.resolve() for k in kustomizations()}
    for path in deploy_manifest_files():
        if NADS in path.parents:
            continue
        assert DEPLOY / "kustomize" in path.parents, f"{rel(path)}: manifests belong in deploy/kustomize or deploy/nads"
        assert path.resolve() in listed, f"{rel(path)} is not listed in any kustomization.yaml"


def test_base_lists_every_file_in_its_directory() -> None:
    listed = kustomization_refs(BASE / "kustomization.yaml")
    on_disk = {p.resolve() for p in yaml_files(BASE) if p.name != "kustomization.yaml"}
    assert on_disk == listed


def strategic_merge(base: Any, patch: Any) -> Any:
    """The part of a strategic merge patch our overlays use: maps merge, lists of named maps merge by name, other
    lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in patch):
        merged = [dict(x) for x in base]
        for item in patch:
            index = next((i for i, x in enumerate(merged) if x.get("name") == item["name"]), None)
            if index is None:
                merged.append(item)
            else:
                merged[index] = strategic_merge(merged[index], item)
        return merged
    return patch


OVERLAY_DIRS = sorted(p for p in OVERLAYS.iterdir() if p.is_dir()) if OVERLAYS.is_dir() else []


@pytest.mark.parametrize("overlay", OVERLAY_DIRS, ids=[p.name for p in OVERLAY_DIRS])
def test_overlay_patch_yields_a_valid_daemonset(overlay: Path) -> None:
    (kustomization,) = load_docs(overlay / "kustomization.yaml")
    assert "../../base" in kustomization["resources"]
    for entry in kustomization.get("patches", []):
        (patch,) = load_docs(overlay / entry["path"])
        target = find(patch["kind"], patch["metadata"]["name"])
        merged = strategic_merge(target, patch)
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(merged, version, strict=True)


def test_proc_netns_overlay_adds_hostpid_and_sys_ptrace_only() -> None:
    (patch,) = load_docs(OVERLAYS / "proc-netns" / "daemonset-proc-netns.yaml")
    merged = strategic_merge(daemonset(), patch)
    pod = merged["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    caps = container(pod, "mnpd")["securityContext"]["capabilities"]
    assert sorted(caps["add"]) == ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]
    assert caps["drop"] == ["ALL"]


KUBECTL = shutil.which("kubectl")


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL
    proc = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: cannot run `kubectl kustomize`")
@pytest.mark.parametrize("directory", [BASE, *OVERLAY_DIRS], ids=lambda p: rel(p))
def test_kubectl_kustomize_renders_valid_objects(directory: Path) -> None:
    rendered = kustomize_build(directory)
    base_objects = sorted((d["kind"], d["metadata"]["name"]) for _, d in builtin_docs())
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == base_objects
    for doc in rendered:
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kustomize"
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


# ------------------------------------------------------------------------------------------------ consistency


def configmap() -> dict[str, Any]:
    return find("ConfigMap", "mnp-config")


def test_rbac_is_least_privilege() -> None:
    role = find("ClusterRole", "mnp")
    granted = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    read = ["get", "list", "watch"]
    assert granted == {
        ("k8s.cni.cncf.io", "multi-networkpolicies"): read,
        ("k8s.cni.cncf.io", "network-attachment-definitions"): read,
        ("", "pods"): read,
        ("", "namespaces"): read,
        ("", "events"): ["create", "patch"],
    }
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule


def test_rbac_names_agree() -> None:
    sa = find("ServiceAccount", "mnp")
    binding = find("ClusterRoleBinding", "mnp")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mnp"}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}
    ]
    assert daemonset()["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_daemonset_selector_matches_its_template() -> None:
    spec = daemonset()["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()


def test_daemonset_capabilities_are_exactly_what_mnpd_needs() -> None:
    pod = daemonset()["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod.get("hostPID", False) is False, "hostPID only in the proc-netns overlay"
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    mnpd = container(pod, "mnpd")["securityContext"]
    assert mnpd["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN"]}
    assert not mnpd.get("privileged", False)
    assert mnpd["readOnlyRootFilesystem"] is True
    init = container(pod, "install-plugin", init=True)["securityContext"]
    assert init["capabilities"] == {"drop": ["ALL"]}
    assert init["allowPrivilegeEscalation"] is False


def host_mounts(pod: dict[str, Any], ctr: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """mountPath → (host path, the volumeMount) for the container's hostPath mounts."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for mount in ctr.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "hostPath" in volume:
            out[mount["mountPath"]] = (volume["hostPath"]["path"], mount)
    return out


def test_daemonset_mounts_what_mnpd_and_the_installer_need() -> None:
    pod = daemonset()["spec"]["template"]["spec"]
    mnpd = host_mounts(pod, container(pod, "mnpd"))
    host_netns, mount = mnpd["/run/netns"]
    assert host_netns == "/run/netns"
    assert mount["mountPropagation"] == "HostToContainer", "netns created after start must show up"
    state_dir = configmap()["data"]["MNP_STATE_DIR"]
    assert any(
        state_dir.startswith(path.rstrip("/") + "/") and host == path and not m.get("readOnly")
        for path, (host, m) in mnpd.items()
    ), f"{state_dir} is not under a writable hostPath mount of the same path"
    installer = host_mounts(pod, container(pod, "install-plugin", init=True))
    assert {host for host, _ in installer.values()} == {"/opt/cni/bin", "/opt/mnp"}
    env = {e["name"]: e["value"] for e in container(pod, "install-plugin", init=True)["env"]}
    assert installer[env["MNP_CNI_BIN_DIR"]][0] == "/opt/cni/bin"
    bundles_mount = next(p for p in installer if env["MNP_BUNDLES_DIR"].startswith(p + "/"))
    suffix = env["MNP_BUNDLES_DIR"][len(bundles_mount) :]
    assert installer[bundles_mount][0] + suffix == env["MNP_BUNDLES_DIR_ON_HOST"], "symlink text = host path"


def test_daemonset_probes_and_metrics_port_match_the_listen_address() -> None:
    mnpd = container(daemonset()["spec"]["template"]["spec"], "mnpd")
    ports = {p["name"]: p["containerPort"] for p in mnpd["ports"]}
    env = {e["name"]: e for e in mnpd["env"]}
    assert "MNP_LISTEN" not in configmap()["data"], "set in the DaemonSet, where the node's address is known"
    assert env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    host, _, port = env["MNP_LISTEN"]["value"].rpartition(":")
    assert host == "$(HOST_IP)", "the kubelet probes the node's address; not 127.0.0.1, and not 0.0.0.0"
    assert ports["metrics"] == int(port)
    annotations = daemonset()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == port
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert mnpd[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe


def test_daemonset_resources_are_set() -> None:
    mnpd = container(daemonset()["spec"]["template"]["spec"], "mnpd")
    assert mnpd["resources"]["requests"]["memory"] == "64Mi"
    assert mnpd["resources"]["limits"]["memory"] == "256Mi"
    assert "cpu" not in mnpd["resources"].get("limits", {}), "no CPU limit: throttling delays rule updates"


def test_daemonset_passes_node_name_and_the_configmap() -> None:
    mnpd = container(daemonset()["spec"]["template"]["spec"], "mnpd")
    assert {"configMapRef": {"name": "mnp-config"}} in mnpd["envFrom"]
    node = next(e for e in mnpd["env"] if e["name"] == "NODE_NAME")
    assert node["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_configmap_keys_are_mnpd_options_and_load() -> None:
    """Every key is the environment twin of an `mnpd` flag, and daemon.config accepts the whole set."""
    try:
        daemon_config = importlib.import_module("daemon.config")
    except ModuleNotFoundError:
        pytest.skip("daemon/config.py is not in the tree yet")
    data = configmap()["data"]
    known = {opt.env for opt in daemon_config.OPTIONS}
    assert set(data) <= known, f"not mnpd options: {sorted(set(data) - known)}"
    env = dict(data, NODE_NAME="node-1", KUBERNETES_SERVICE_HOST="10.96.0.1")
    loaded = daemon_config.load([], env)
    assert loaded.node_name == "node-1"
    assert loaded.state_dir == data["MNP_STATE_DIR"]


def test_images_and_commands_match_the_containerfile() -> None:
    pod = daemonset()["spec"]["template"]["spec"]
    text = CONTAINERFILE.read_text()
    for ctr in [*pod["containers"], *pod["initContainers"]]:
        assert ctr["image"].split(":")[0] == "mnp", "kustomize `images: - name: mnp` must be able to retarget it"
        assert ctr["command"][0] in text, f"{ctr['command'][0]} is not created by packaging/Containerfile"
    env = {e["name"]: e["value"] for e in container(pod, "install-plugin", init=True)["env"]}
    assert env["MNP_BUNDLE_SRC"] in text
    assert (ROOT / "packaging" / "container" / "install-plugin.sh").is_file()


def test_user_guide_documents_every_mnpd_option() -> None:
    """docs/user-guide.md §5 lists every flag with its variable; a new option must be documented."""
    try:
        daemon_config = importlib.import_module("daemon.config")
    except ModuleNotFoundError:
        pytest.skip("daemon/config.py is not in the tree yet")
    guide = (ROOT / "docs" / "user-guide.md").read_text()
    missing = [o.flag for o in daemon_config.OPTIONS if f"| `{o.flag}` | `{o.env}` |" not in guide]
    assert not missing, f"docs/user-guide.md does not document: {missing}"
