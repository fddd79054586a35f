"""Kubernetes objects → a `Cluster`, from the API or from a directory of YAML manifests.

`mnpctl matrix`, `mnpctl lab` and the daemon's manifests source read a directory of YAML files (multi-document
streams and `kind: List` accepted) holding Namespaces, Pods, NetworkAttachmentDefinitions and
MultiNetworkPolicies; the daemon's API source hands the same dicts to `build_cluster`. Nothing here raises on
bad content: every problem is collected with the object and field it concerns, and every valid object is still
used. Errors make `mnpctl` exit 2; warnings (an unknown kind, a policy naming a network no NAD defines) do not.

A file named `probes.yaml` beside the manifests is not a manifest: it is the default probe file (shared.probes).

Every file is hostile input. It is read only if it is a regular file of at most `MAX_FILE_BYTES` inside the
directory (a symlink that leads out of it is not followed), parsed with libyaml's safe loader where PyYAML has it
(`yaml.CSafeLoader`, about ten times faster than the pure-Python one), and each document must be a tree of at most
`MAX_DEPTH` levels and `MAX_VALUES` values once YAML aliases are expanded, without cycles — so no later step
(parsing, comparing, logging) can recurse or loop without bound. A file that fails any of this is one problem
naming the file; the other files are still used.

What cannot be used must not vanish (docs/daemon.md, "Hostile input"), so each document is judged:

* **MultiNetworkPolicy-looking** — kind MultiNetworkPolicy, a kind that is a near miss of it, an object of the
  `k8s.cni.cncf.io` group that is not a NAD, or an object without kind that carries the policy-for annotation or a
  policy's spec: it becomes a policy even when its apiVersion is wrong, its kind misspelt or its name missing,
  carrying that problem, and so is enforced fail-closed by shared.model's rule (it isolates what it can be seen
  to select). Two definitions of one namespace/name are both refused (`shared.model.refuse_duplicates`).
* **Unidentifiable** — not an object, a kind that is not a string, metadata or namespace that cannot be read: no
  one can say what it would have selected. The problem has `breaks_file`: the daemon keeps the file's last good
  version in force (daemon.sources.manifests).
* **Another kind of mnp's with an error** (a Pod, Namespace or NAD that is invalid, has a wrong apiVersion, a
  near-miss kind or no name): also `breaks_file`. A pod's labels or a namespace's labels taken half-read could
  make a selector match or stop matching; the last good version of the file is the only safe reading.
* **Any other kind** (a ConfigMap): a warning, ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.errors import StateError
from shared.model import (
    NETWORK_STATUS,
    POLICY_FOR,
    Cluster,
    metadata_problems,
    parse_nad,
    parse_namespace,
    parse_pod,
    parse_policy,
    refuse_duplicates,
)
from shared.selectors import excerpt
from shared.state import read_entry_file

PROBES_FILE = "probes.yaml"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KINDS = {
    "Namespace": ("v1",),
    "Pod": ("v1",),
    "NetworkAttachmentDefinition": ("k8s.cni.cncf.io/v1",),
    "MultiNetworkPolicy": ("k8s.cni.cncf.io/v1beta1", "k8s.cni.cncf.io/v1beta2"),
}
POLICY_KIND = "MultiNetworkPolicy"
POLICY_GROUP = "k8s.cni.cncf.io/"
MAX_FILE_BYTES = 4 << 20  # a manifest file; the API server's own limit for one object is 1.5 MB
MAX_DEPTH = 64  # levels of one document; a Pod is about 10 deep
MAX_VALUES = 1_000_000  # values of one file's documents with YAML aliases expanded (a "billion laughs" is far more)
LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it


@dataclass(frozen=True)
class Problem:
    where: str  # "layer2/policies.yaml#2 MultiNetworkPolicy blue/allow-a"
    message: str  # "spec.ingress[0].from[0].ipBlock.cidr: '10.0.0.300/24' is not a valid CIDR (…)"
    error: bool = True
    # The file cannot be used as it is: the daemon keeps its last good version (see the module docstring).
    breaks_file: bool = False
    policy: str = ""  # the namespace/name of the MultiNetworkPolicy it concerns (the daemon reports those itself)

    def __str__(self) -> str:
        return f"{'error' if self.error else 'warning'}: {self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class ManifestObject:
    """One object read from a document: its kind, key and parsed value, where it was read."""

    kind: str
    key: str  # "ns/name", or a namespace's name
    value: Any  # Namespace, Pod, NetworkAttachmentDefinition or MultiNetworkPolicy
    where: str  # the document's source label ("pods.yaml#2", "list.yaml items[3]")
    status_reported: bool = True  # a Pod: Multus' network-status annotation is present


@dataclass
class ParsedFile:
    """The objects and problems of one file's documents (pure; the daemon caches it per file version)."""

    objects: list[ManifestObject] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return any(p.breaks_file for p in self.problems)


@dataclass
class Manifests:
    cluster: Cluster
    problems: list[Problem] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # "Kind ns/name" → where it was read
    objects: list[ManifestObject] = field(default_factory=list)  # what the cluster was built from

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.error]


def brief(text: object, limit: int = 200) -> str:
    """`text` on one line and at most `limit` characters: what a log line or Event may quote of hostile input."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _describe(kind: object, obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    name, namespace = meta.get("name", "?"), meta.get("namespace") or "default"
    name_text = brief(name, 100) if isinstance(name, str) else excerpt(name)
    kind_text = brief(kind, 60) if isinstance(kind, str) else "?"
    return f"{kind_text} {name_text}" if kind == "Namespace" else f"{kind_text} {brief(namespace, 100)}/{name_text}"


def _squash(kind: str) -> str:
    return re.sub(r"[^a-z]", "", kind.lower())


def near_kind(kind: str) -> str | None:
    """The kind of mnp's that `kind` is a near miss of ("MultinetworkPolicy", "Pods"), or None."""
    squashed = _squash(kind)
    for known in KINDS:
        target = _squash(known)
        # the same letters (a transposition: "Pdo"), or close enough ("MultiNetworkPolicys", "Namspace")
        if sorted(squashed) == sorted(target) or difflib.SequenceMatcher(None, squashed, target).ratio() >= 0.8:
            return known
    return None


def _kubernetes_network_policy(kind: object, api: object) -> bool:
    """A Kubernetes NetworkPolicy: close to MultiNetworkPolicy in spelling, but not mnp's."""
    return kind == "NetworkPolicy" and isinstance(api, str) and api.startswith("networking.k8s.io/")


def _looks_like_policy(obj: Mapping[str, Any], kind: object, api: object) -> bool:
    if kind == POLICY_KIND:
        return True
    if isinstance(kind, str):
        if _kubernetes_network_policy(kind, api):
            return False
        if kind in KINDS:
            return False
        if near_kind(kind) == POLICY_KIND:
            return True
        return isinstance(api, str) and api.startswith(POLICY_GROUP) and near_kind(kind) is None
    if kind is not None:
        return False
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    spec = obj.get("spec")
    return (isinstance(annotations, dict) and POLICY_FOR in annotations) or (
        isinstance(spec, dict) and bool({"podSelector", "policyTypes", "ingress", "egress"} & set(spec))
    )


def unidentifiable(obj: object) -> str | None:
    """Why no one can say which object `obj` is (so not what it would select), or None."""
    if not isinstance(obj, dict):
        return f"not a Kubernetes object (a {type(obj).__name__})"
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        return "metadata: not an object, so its namespace and name cannot be read"
    namespace = (meta or {}).get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        return f"metadata.namespace: {excerpt(namespace)} is not a namespace name"
    name = (meta or {}).get("name")
    if name is not None and not isinstance(name, str):
        return f"metadata.name: {excerpt(name)} is not a name"
    if meta and not all(isinstance(key, str) for key in meta):
        return "metadata: keys that are not strings"
    return None


def _parse_policy_document(obj: Mapping[str, Any], kind: object, api: object, source: str) -> ManifestObject:
    """A MultiNetworkPolicy-looking object as a policy, with whatever makes it unusable as a problem."""
    extra: list[str] = []
    if kind is None:
        extra.append(f"kind: missing (taken as {POLICY_KIND}, fail-closed)")
    if api not in KINDS[POLICY_KIND]:
        extra.append(f"apiVersion {excerpt(api)} is not one of {', '.join(KINDS[POLICY_KIND])}")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    if not meta.get("name"):
        extra.append("metadata.name: missing")
        # a name of the characters a real one may have, so that it is safe wherever a policy's name goes
        unnamed = ("unnamed." + re.sub(r"[^a-z0-9.-]+", "-", source.lower()))[:253].strip("-.")
        obj = {**obj, "metadata": {**meta, "name": unnamed}}
    policy = parse_policy({**obj, "kind": kind if isinstance(kind, str) else POLICY_KIND})
    if extra and not policy.policy_for and not policy.every_network:
        # Neither which policy it is meant to be nor which networks it guards can be told: no scope of its own.
        raise _Unidentifiable(f"{'; '.join(extra)}, and no policy-for: which policy and networks is unknown")
    if extra:
        policy = dataclasses.replace(policy, problems=(*extra, *policy.problems))
    return ManifestObject(POLICY_KIND, policy.key, policy, source)


class _Unidentifiable(Exception):
    """A document that cannot be pinned down after all (the message says why)."""


def parse_documents(documents: Iterable[tuple[str, Any]]) -> ParsedFile:
    """(source, document) pairs — one file's, or API dicts — → objects and problems, every document judged as
    the module docstring says. Pure and independent of every other file."""
    out = ParsedFile()
    for source, obj in documents:
        _parse_document(source, obj, out)
    return out


def _parse_document(source: str, obj: Any, out: ParsedFile) -> None:
    try:
        _judge_document(source, obj, out)
    except Exception as exc:  # a parser that did not foresee some shape: the document is unusable, not the daemon
        why = f"cannot be parsed ({type(exc).__name__}: {brief(exc)})"
        out.problems.append(Problem(source, why, breaks_file=True))


def _judge_document(source: str, obj: Any, out: ParsedFile) -> None:
    why = unidentifiable(obj)
    if why is not None:
        out.problems.append(Problem(source, why, breaks_file=True))
        return
    kind, api = obj.get("kind"), obj.get("apiVersion")
    if isinstance(kind, str) and kind.endswith("List") and kind != POLICY_KIND:
        items = obj.get("items")
        if kind == "List" or "items" in obj:
            if not isinstance(items, list):
                out.problems.append(Problem(source, f"{kind}.items: not a list", breaks_file=True))
                return
            for i, entry in enumerate(items):
                _parse_document(f"{source} items[{i}]", entry, out)
            return
    where = f"{source} {_describe(kind, obj)}"
    if _looks_like_policy(obj, kind, api):
        try:
            parsed = _parse_policy_document(obj, kind, api, source)
        except _Unidentifiable as exc:
            out.problems.append(Problem(where, str(exc), breaks_file=True))
            return
        out.objects.append(parsed)
        out.problems.extend(Problem(where, m, policy=parsed.key) for m in parsed.value.problems)
        return
    if not isinstance(kind, str):
        message = "kind: missing" if kind is None else f"kind: {excerpt(kind)} is not a kind"
        out.problems.append(Problem(where, f"{message}; cannot tell what it is", breaks_file=True))
        return
    if kind not in KINDS:
        near = None if _kubernetes_network_policy(kind, api) else near_kind(kind)
        if near is not None:
            out.problems.append(Problem(where, f"kind {excerpt(kind)}: not {near} (misspelt?)", breaks_file=True))
        else:
            out.problems.append(Problem(where, f"kind {excerpt(kind)} is not used by mnp; ignored", error=False))
        return
    messages: list[str] = []
    if api not in KINDS[kind]:
        messages.append(f"apiVersion {excerpt(api)} is not one of {', '.join(KINDS[kind])}")
    meta = obj.get("metadata") or {}
    if not meta.get("name"):
        messages.append("metadata.name: missing")
    messages += metadata_problems(obj)
    if messages:
        out.problems.extend(Problem(where, m, breaks_file=True) for m in messages)
        return
    item: ManifestObject
    if kind == "Namespace":
        ns = parse_namespace(obj)
        item = ManifestObject(kind, ns.name, ns, source)
    elif kind == "Pod":
        pod, messages = parse_pod(obj)
        annotations = meta.get("annotations")
        reported = isinstance(annotations, dict) and NETWORK_STATUS in annotations
        item = ManifestObject(kind, pod.key, pod, source, reported)
    else:
        nad, messages = parse_nad(obj)
        item = ManifestObject(kind, nad.key, nad, source)
    if messages:
        out.problems.extend(Problem(where, m, breaks_file=True) for m in messages)
        return
    out.objects.append(item)


def merge(files: Iterable[ParsedFile]) -> Manifests:
    """Every file's objects → one Cluster. A second definition of a Pod, Namespace or NAD is reported and ignored
    (the first stays); two definitions of a policy are both refused (`refuse_duplicates`), both reported."""
    chosen: dict[tuple[str, str], ManifestObject] = {}
    problems: list[Problem] = []
    for parsed in files:
        problems.extend(parsed.problems)
        for item in parsed.objects:
            first = chosen.get((item.kind, item.key))
            if first is None:
                chosen[(item.kind, item.key)] = item
                continue
            what = f"{item.kind} {item.key}"
            if item.kind != POLICY_KIND:
                problems.append(
                    Problem(f"{item.where} {what}", f"defined again (first in {first.where}); this one is ignored")
                )
                continue
            both = f"in {first.where} and in {item.where}"
            merged = refuse_duplicates(first.value, item.value, both)
            chosen[(item.kind, item.key)] = dataclasses.replace(first, value=merged)
            for where in (first.where, item.where):
                message = f"defined again {both}: both refused, fail-closed"
                problems.append(Problem(f"{where} {what}", message, policy=item.key))
    objects = list(chosen.values())
    by_kind: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    for item in objects:
        by_kind[item.kind].append(item.value)
    nads = {n.key for n in by_kind["NetworkAttachmentDefinition"]}
    sources = {f"{item.kind} {item.key}": item.where for item in objects}
    for policy in by_kind[POLICY_KIND]:
        for network in policy.policy_for:
            if nads and network not in nads:
                problems.append(
                    Problem(
                        f"{sources[f'{POLICY_KIND} {policy.key}']} {POLICY_KIND} {policy.key}",
                        f"policy-for names {network}, which no NetworkAttachmentDefinition here defines",
                        error=False,
                    )
                )
    cluster = Cluster.of(
        by_kind["Namespace"], by_kind["Pod"], by_kind["NetworkAttachmentDefinition"], by_kind[POLICY_KIND]
    )
    return Manifests(cluster, problems, sources, objects)


def build_cluster(objects: Iterable[tuple[str, Any]]) -> Manifests:
    """(source, object) pairs → Cluster, with every problem."""
    return merge([parse_documents(objects)])


class UnreadableFile(Exception):
    """A manifest file that cannot be read or parsed; the message says why, without quoting much of it."""


def read_text(path: Path, root: Path | None = None) -> str:
    """The text of a manifest file: a regular file inside `root` (symlinks followed only inside it), at most
    MAX_FILE_BYTES, UTF-8. Never blocks on a FIFO or a device."""
    if root is not None:
        real, base = os.path.realpath(path), os.path.realpath(root)
        if real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
            raise UnreadableFile(f"a symlink to {excerpt(real)}, outside the manifests directory: not read")
    try:
        data = read_entry_file(str(path), MAX_FILE_BYTES, follow=True, what="a manifest file")
    except FileNotFoundError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror}") from exc
    except StateError as exc:
        raise UnreadableFile(str(exc)) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:  # a binary file among the manifests
        raise UnreadableFile(f"cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def shape_problem(document: object) -> str | None:
    """Why a parsed document is no tree a later step can walk safely — deeper than MAX_DEPTH, more than
    MAX_VALUES values with aliases expanded, or containing itself — or None. Iterative: never recurses."""
    done: dict[int, tuple[int, int]] = {}  # id → (values with aliases expanded, depth)
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(document, False)]
    while stack:
        node, finished = stack.pop()
        if not isinstance(node, list | dict):
            continue
        children = list(node.values()) if isinstance(node, dict) else node
        key = id(node)
        if finished:
            active.discard(key)
            values, depth = 1, 0
            for child in children:
                if isinstance(child, list | dict):
                    child_values, child_depth = done[id(child)]
                    values, depth = values + child_values, max(depth, child_depth)
                else:
                    values += 1
            depth += 1
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            if values > MAX_VALUES:
                return f"more than {MAX_VALUES} values once its YAML aliases are expanded"
            done[key] = (values, depth)
            continue
        if key in done:
            continue
        if key in active:
            return "contains itself (a recursive YAML alias)"
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if isinstance(child, list | dict) and id(child) not in done)
    return None


def parse_yaml(text: str) -> list[Any]:
    """The non-empty documents of a YAML stream, each checked by `shape_problem`; UnreadableFile otherwise."""
    try:
        documents = [d for d in yaml.load_all(text, Loader=LOADER) if d is not None]
    except yaml.YAMLError as exc:
        raise UnreadableFile(f"not valid YAML: {brief(exc)}") from exc
    except RecursionError as exc:
        raise UnreadableFile("not valid YAML: nested too deeply to parse") from exc
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:  # a constructor refusing a scalar
        raise UnreadableFile(f"cannot be parsed: {type(exc).__name__}: {brief(exc)}") from exc
    for i, document in enumerate(documents):
        why = shape_problem(document)
        if why is not None:
            raise UnreadableFile(f"document {i + 1}: {why}")
    return documents


def read_documents(path: Path, root: Path | None = None) -> tuple[list[tuple[str, Any]], list[Problem]]:
    """All YAML documents of one file, each with a source label `file#n`; or none and the one problem."""
    label = str(path.relative_to(root)) if root else str(path)
    try:
        docs = parse_yaml(read_text(path, root))
    except UnreadableFile as exc:
        return [], [Problem(label, str(exc), breaks_file=True)]
    return [(f"{label}#{i + 1}" if len(docs) > 1 else label, d) for i, d in enumerate(docs)], []


def read_file(path: Path, root: Path | None = None) -> ParsedFile:
    """One manifest file, read and parsed (`ParsedFile.broken` when it cannot be used as it is)."""
    documents, problems = read_documents(path, root)
    return ParsedFile(problems=problems) if problems else parse_documents(documents)


def manifest_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        # a dangling symlink or a FIFO is listed too, so that reading it reports the problem instead of skipping it
        if not p.is_dir() and p.suffix in MANIFEST_SUFFIXES and p.name != PROBES_FILE and not p.name.startswith(".")
    )


def load_dir(directory: str | Path) -> Manifests:
    """Every manifest under `directory` (recursively, sorted by path)."""
    root = Path(directory)
    if not root.is_dir():
        return Manifests(Cluster(), [Problem(str(root), "not a directory")])
    return merge(read_file(path, root) for path in manifest_files(root))
