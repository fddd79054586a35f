"""Kubernetes objects → a `Cluster`, from the API or from a directory of YAML manifests.

`mnpctl matrix`, `mnpctl lab` and the daemon's manifests source read a directory of YAML files (multi-document
streams and `kind: List` accepted) holding Namespaces, Pods, NetworkAttachmentDefinitions and
MultiNetworkPolicies; the daemon's API source hands the same dicts to `build_cluster`. Nothing here raises on
bad content: every problem is collected with the object and field it concerns, and every valid object is still
used. Errors make `mnpctl` exit 2; warnings (an unknown kind, a policy naming a network no NAD defines) do not.

A file named `probes.yaml` beside the manifests is not a manifest: it is the default probe file (shared.probes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.model import (
    Cluster,
    MultiNetworkPolicy,
    Namespace,
    NetworkAttachmentDefinition,
    Pod,
    parse_nad,
    parse_namespace,
    parse_pod,
    parse_policy,
)

PROBES_FILE = "probes.yaml"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KINDS = {
    "Namespace": ("v1",),
    "Pod": ("v1",),
    "NetworkAttachmentDefinition": ("k8s.cni.cncf.io/v1",),
    "MultiNetworkPolicy": ("k8s.cni.cncf.io/v1beta1", "k8s.cni.cncf.io/v1beta2"),
}


@dataclass(frozen=True)
class Problem:
    where: str  # "layer2/policies.yaml#2 MultiNetworkPolicy blue/allow-a"
    message: str  # "spec.ingress[0].from[0].ipBlock.cidr: '10.0.0.300/24' is not a valid CIDR (…)"
    error: bool = True

    def __str__(self) -> str:
        return f"{'error' if self.error else 'warning'}: {self.where}: {self.message}"


@dataclass
class Manifests:
    cluster: Cluster
    problems: list[Problem] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # "Kind ns/name" → where it was read

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.error]


def _describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    kind = obj.get("kind", "?")
    name = meta.get("name", "?")
    return f"{kind} {name}" if kind == "Namespace" else f"{kind} {meta.get('namespace') or 'default'}/{name}"


def build_cluster(objects: Iterable[tuple[str, Mapping[str, Any]]]) -> Manifests:
    """(source, object) pairs → Cluster, with every problem. Later duplicates are reported and ignored."""
    namespaces: dict[str, Namespace] = {}
    pods: dict[str, Pod] = {}
    nads: dict[str, NetworkAttachmentDefinition] = {}
    policies: dict[str, MultiNetworkPolicy] = {}
    problems: list[Problem] = []
    sources: dict[str, str] = {}
    for source, obj in objects:
        if not isinstance(obj, dict):
            problems.append(Problem(source, f"not a Kubernetes object (a {type(obj).__name__})"))
            continue
        if obj.get("kind") == "List" or (str(obj.get("kind", "")).endswith("List") and "items" in obj):
            items = obj.get("items") or []
            inner = build_cluster((f"{source} items[{i}]", item) for i, item in enumerate(items))
            for ns in inner.cluster.namespaces.values():
                namespaces.setdefault(ns.name, ns)
            pods.update({p.key: p for p in inner.cluster.pods if p.key not in pods})
            nads.update({k: v for k, v in inner.cluster.nads.items() if k not in nads})
            policies.update({p.key: p for p in inner.cluster.policies if p.key not in policies})
            problems.extend(inner.problems)
            sources.update(inner.sources)
            continue
        kind, api = obj.get("kind"), obj.get("apiVersion")
        what = _describe(obj)
        where = f"{source} {what}"
        if kind not in KINDS:
            problems.append(Problem(where, f"kind {kind!r} is not used by mnp; ignored", error=False))
            continue
        if api not in KINDS[str(kind)]:
            problems.append(Problem(where, f"apiVersion {api!r} is not one of {', '.join(KINDS[str(kind)])}"))
            continue
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not meta.get("name"):
            problems.append(Problem(where, "metadata.name: missing"))
            continue
        if what in sources:
            problems.append(Problem(where, f"defined again (first in {sources[what]}); this one is ignored"))
            continue
        sources[what] = source
        messages: list[str] = []
        if kind == "Namespace":
            ns = parse_namespace(obj)
            namespaces[ns.name] = ns
        elif kind == "Pod":
            pod, messages = parse_pod(obj)
            pods[pod.key] = pod
        elif kind == "NetworkAttachmentDefinition":
            nad, messages = parse_nad(obj)
            nads[nad.key] = nad
        else:
            policy = parse_policy(obj)
            policies[policy.key] = policy
            messages = list(policy.problems)
        problems.extend(Problem(where, m) for m in messages)
    for policy in policies.values():
        for network in policy.policy_for:
            if nads and network not in nads:
                problems.append(
                    Problem(
                        f"{sources.get(f'MultiNetworkPolicy {policy.key}', '?')} MultiNetworkPolicy {policy.key}",
                        f"policy-for names {network}, which no NetworkAttachmentDefinition here defines",
                        error=False,
                    )
                )
    cluster = Cluster.of(namespaces.values(), pods.values(), nads.values(), policies.values())
    return Manifests(cluster, problems, sources)


def read_documents(path: Path, root: Path | None = None) -> tuple[list[tuple[str, Any]], list[Problem]]:
    """All YAML documents of one file, each with a source label `file#n`."""
    label = str(path.relative_to(root)) if root else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [], [Problem(label, f"cannot read: {exc.strerror}")]
    except UnicodeDecodeError as exc:  # a binary file among the manifests
        return [], [Problem(label, f"cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})")]
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        return [], [Problem(label, f"not valid YAML: {exc}")]
    return [(f"{label}#{i + 1}" if len(docs) > 1 else label, d) for i, d in enumerate(docs)], []


def manifest_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        # a dangling symlink is listed too, so that reading it reports the problem instead of skipping it
        if (p.is_file() or (p.is_symlink() and not p.exists()))
        and p.suffix in MANIFEST_SUFFIXES
        and p.name != PROBES_FILE
        and not p.name.startswith(".")
    )


def load_dir(directory: str | Path) -> Manifests:
    """Every manifest under `directory` (recursively, sorted by path)."""
    root = Path(directory)
    if not root.is_dir():
        return Manifests(Cluster(), [Problem(str(root), "not a directory")])
    documents: list[tuple[str, Any]] = []
    problems: list[Problem] = []
    for path in manifest_files(root):
        docs, file_problems = read_documents(path, root)
        documents.extend(docs)
        problems.extend(file_problems)
    loaded = build_cluster(documents)
    loaded.problems[:0] = problems
    return loaded
