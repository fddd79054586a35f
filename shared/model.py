"""The cluster as the compiler sees it, built from plain dicts (raw API JSON or YAML manifests).

Everything here is pure and immutable: the daemon builds these from its watch caches, `mnpctl` from files, the
tests from literals. Parsing never raises on bad content: it returns the object plus every problem found, so a
user sees all mistakes of a policy at once.

**The fail-closed rule for invalid MultiNetworkPolicies** (decided here, implemented in the compiler):
an invalid policy *never widens access*. It still isolates, in the directions it names (both directions when
its policyTypes cannot be read), every pod it selects on every network of its `policy-for` that could be read;
when its podSelector cannot be read it selects every pod of its namespace; when its `policy-for` annotation is
there but cannot be fully read (not a string, a name that is no network name), on every network of those pods.
It contributes **no allow at all**, because a partly understood rule can widen access (a dropped port entry turns
"these ports" into "all ports"). A policy whose `policy-for` annotation is missing or empty applies to no
network: it names none, so it is reported and changes nothing, as every other implementation does.

The same rule covers policies that cannot be used at all (shared.manifests decides which objects those are): a
MultiNetworkPolicy-looking object with a wrong apiVersion, a misspelt kind or no `metadata.name` is parsed as far
as it can be and carries the problem, so it isolates what it can be seen to select; and two definitions of one
namespace/name (`refuse_duplicates`) are both refused: the policy that stands for them isolates the union of
what they select (the whole namespace when their podSelectors differ), in the union of their directions, on the
union of their networks, and allows nothing — never wider than either. `MultiNetworkPolicy.effect` says in one
sentence what an invalid policy actually does, for Events, logs and `mnpctl status`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.rules import EGRESS, INGRESS, IPAddress, IPNetwork
from shared.selectors import (
    MATCH_EVERYTHING,
    UNREADABLE_LABELS,
    LabelSelector,
    UnreadableLabels,
    excerpt,
    label_key_problem,
    label_value_problem,
    parse_selector,
    present,
)

POLICY_FOR = "k8s.v1.cni.cncf.io/policy-for"
NETWORKS = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")

# IANA_SVC_NAME, as validation.IsValidPortName: 1-15 characters, lowercase alphanumerics and '-', at least one
# letter, no leading, trailing or doubled hyphen.
_PORT_NAME = re.compile(r"^(?!-)(?!.*--)[a-z0-9-]{1,15}(?<!-)\Z")


def is_port_name(value: str) -> bool:
    return bool(_PORT_NAME.match(value)) and any(c.isalpha() for c in value)


# --------------------------------------------------------------------------------------------------- objects


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    """One network interface of a pod, from Multus' network-status (or, before it exists, the request)."""

    network: str  # "namespace/name" of the NetworkAttachmentDefinition; the primary network's own name otherwise
    interface: str
    ips: tuple[IPAddress, ...] = ()
    mac: str = ""
    default: bool = False  # the primary (cluster) network: never guarded by a MultiNetworkPolicy


@dataclass(frozen=True, slots=True)
class NetworkRequest:
    """One entry of the `k8s.v1.cni.cncf.io/networks` annotation."""

    network: str  # "namespace/name"
    interface: str = ""
    ips: tuple[str, ...] = ()  # with prefix length, as requested ("10.0.0.5/24")
    mac: str = ""


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    uid: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    node_name: str = ""
    phase: str = "Running"
    host_network: bool = False
    container_ports: tuple[ContainerPort, ...] = ()
    requests: tuple[NetworkRequest, ...] = ()
    attachments: tuple[Attachment, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def is_active(self) -> bool:
        """Terminated pods neither get rules nor count as peers: their addresses may already be reused."""
        return self.phase not in ("Succeeded", "Failed")

    def secondary_attachments(self) -> tuple[Attachment, ...]:
        if self.host_network:
            return ()
        if any(a.default for a in self.attachments):
            return tuple(a for a in self.attachments if not a.default)
        return self.attachments  # the daemon's compact pods: nothing to filter, nothing to allocate

    def addresses_on(self, network: str) -> tuple[IPAddress, ...]:
        return tuple(ip for a in self.secondary_attachments() if a.network == network for ip in a.ips)

    def resolve_named_port(self, name: str, protocol: str) -> int | None:
        """A named port is the containerPort with that name *and* the rule's protocol."""
        for cp in self.container_ports:
            if cp.name == name and cp.protocol == protocol:
                return cp.port
        return None


@dataclass(frozen=True, slots=True)
class NetworkAttachmentDefinition:
    namespace: str
    name: str
    config: Mapping[str, Any] = field(default_factory=dict)  # the parsed spec.config (single conf or conflist)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def plugins(self) -> tuple[Mapping[str, Any], ...]:
        if "plugins" in self.config and isinstance(self.config["plugins"], list):
            return tuple(p for p in self.config["plugins"] if isinstance(p, dict))
        return (self.config,) if self.config else ()

    @property
    def plugin_types(self) -> tuple[str, ...]:
        return tuple(str(p.get("type", "")) for p in self.plugins)

    @property
    def subnets(self) -> tuple[IPNetwork, ...]:
        """The subnets the network's IPAM hands out: host-local `ranges`/`subnet`, static `addresses`,
        whereabouts `range`, or OVN-Kubernetes' top-level `subnets`. Used to place hosts outside the cluster."""
        found: list[str] = []
        for plugin in self.plugins:
            ipam = plugin.get("ipam") if isinstance(plugin.get("ipam"), dict) else {}
            assert isinstance(ipam, dict)
            for range_set in ipam.get("ranges") or ():
                found.extend(str(r.get("subnet", "")) for r in range_set if isinstance(r, dict))
            found.extend(str(ipam[k]) for k in ("subnet", "range") if ipam.get(k))
            found.extend(str(a.get("address", "")) for a in ipam.get("addresses") or () if isinstance(a, dict))
            if plugin.get("subnets"):
                found.extend(str(plugin["subnets"]).split(","))
        out: list[IPNetwork] = []
        for text in found:
            try:
                # OVN-Kubernetes layer3 writes "10.128.0.0/16/24" (cluster subnet / host subnet length)
                net = ipaddress.ip_interface("/".join(text.strip().split("/")[:2])).network
            except ValueError:
                continue
            if net not in out:
                out.append(net)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One entry of a rule's `ports`. `port` None means every port of the protocol."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class IPBlock:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def contains(self, address: IPAddress) -> bool:
        return address in self.cidr and not any(address in e for e in self.excepts)


@dataclass(frozen=True, slots=True)
class Peer:
    """A NetworkPolicyPeer: an ipBlock, or pod/namespace selectors (None = the field is absent)."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """An ingress or egress rule. `peers` None or empty, and `ports` empty, mean "everything"."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PortSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class MultiNetworkPolicy:
    namespace: str
    name: str
    policy_for: tuple[str, ...]  # normalised "namespace/name"
    pod_selector: LabelSelector
    policy_types: frozenset[str]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    problems: tuple[str, ...] = ()
    # The policy-for annotation is there but cannot be fully read: the (invalid) policy isolates on every network.
    every_network: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def valid(self) -> bool:
        return not self.problems

    def applies_on(self, network: str) -> bool:
        return self.every_network or network in self.policy_for

    def effect(self, known_networks: Iterable[str] | None = None) -> str:
        """What this invalid policy does, in words (`known_networks`: the networks NADs define, None = unknown)."""
        networks = ["every network"] if self.every_network else list(self.policy_for)
        if known_networks is not None and not self.every_network:
            known = set(known_networks)
            networks = [n for n in networks if n in known]
        if not networks and not self.policy_for:
            return "applies to no network, so it changes nothing"
        if not networks:
            return f"applies to no known network ({', '.join(self.policy_for)}: no NetworkAttachmentDefinition)"
        selected = (
            f"every pod of namespace {self.namespace}"
            if self.pod_selector == MATCH_EVERYTHING
            else "the pods its podSelector selects"
        )
        directions = " and ".join(d.lower() for d in sorted(self.policy_types, key=POLICY_TYPES.index))
        return f"enforced fail-closed: isolates {directions} of {selected} on {', '.join(networks)}, allows nothing"

    def rules(self, direction: str) -> tuple[Rule, ...]:
        """The rules of a direction, or none: "explicit policyTypes ignore rules of unlisted directions", and
        an invalid policy contributes no allows (see the module docstring)."""
        if not self.valid or direction not in self.policy_types:
            return ()
        return self.ingress if direction == INGRESS else self.egress


@dataclass(frozen=True, slots=True)
class Cluster:
    """Everything the compiler reads, indexed once."""

    namespaces: Mapping[str, Namespace] = field(default_factory=dict)
    pods: tuple[Pod, ...] = ()
    nads: Mapping[str, NetworkAttachmentDefinition] = field(default_factory=dict)
    policies: tuple[MultiNetworkPolicy, ...] = ()

    @staticmethod
    def of(
        namespaces: Iterable[Namespace] = (),
        pods: Iterable[Pod] = (),
        nads: Iterable[NetworkAttachmentDefinition] = (),
        policies: Iterable[MultiNetworkPolicy] = (),
    ) -> Cluster:
        return Cluster(
            {n.name: n for n in namespaces},
            tuple(pods),
            {n.key: n for n in nads},
            tuple(policies),
        )

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        ns = self.namespaces.get(name)
        # A namespace we have not seen still carries the automatic kubernetes.io/metadata.name label.
        return ns.labels if ns else {"kubernetes.io/metadata.name": name}


# --------------------------------------------------------------------------------------------------- parsing


def normalise_network(name: str, namespace: str) -> str:
    """`name` → `namespace/name`; `ns/name` stays. Used for policy-for, requests and network-status alike."""
    name = name.strip()
    return sys.intern(name if "/" in name else f"{namespace}/{name}")


# Networks one policy-for annotation may name: far more than any policy needs. Any tenant can write tens of
# thousands: every node's mnpd kept them all, and a message for each invalid one (docs/benchmarks.md, "Large objects
# from the API"). Over this it cannot be read (every network).
MAX_POLICY_FOR = 64


def parse_policy_for(value: object, namespace: str) -> tuple[tuple[str, ...], list[str]]:
    """`k8s.v1.cni.cncf.io/policy-for: <ns>/<nad>[, …]`; bare names mean the policy's namespace."""
    where = f"metadata.annotations[{POLICY_FOR}]"
    if value is None:
        return (), [f"{where}: missing; the policy names no network and applies to none"]
    if not isinstance(value, str):
        return (), [f"{where}: must be a string like 'net1, other-ns/net2'; isolating on every network"]
    if not value.strip():
        return (), [f"{where}: empty; the policy names no network and applies to none"]
    items = value.split(",")
    if len(items) > MAX_POLICY_FOR:
        return (), [f"{where}: names {len(items)} networks, more than mnpd reads ({MAX_POLICY_FOR}); isolating on "
                    "every network"]  # fmt: skip
    networks: list[str] = []
    problems: list[str] = []
    for item in items:
        item = item.strip()
        parts = item.split("/")
        if not item or len(parts) > 2 or not all(_DNS_LABEL.match(p) for p in parts):
            problems.append(f"{where}: {excerpt(item)} is not '<name>' or '<namespace>/<name>'")
            continue
        network = normalise_network(item, namespace)
        if network not in networks:
            networks.append(network)
    return tuple(networks), problems


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\Z")


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


# Labels read per object: far more than any tool writes. Any tenant can write tens of thousands on its own pods,
# kept by every node's mnpd (what that cost: docs/benchmarks.md, "Large objects from the API"); over this the labels
# are unreadable (fail closed: no interface, no peer, a namespace matches no label selector), reported.
MAX_LABELS = 256


def _string_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def metadata_type_problems(obj: Mapping[str, Any], fields: tuple[str, ...] = ("labels", "annotations")) -> list[str]:
    """What is not of the types the API server holds in an object's uid and `fields` (maps of string to string).
    Such labels are read as `UNREADABLE_LABELS`, such annotations as no annotation mnp uses: a label taken as
    str() of a list or a number would match selectors it was never meant to (`{"app": ["server"]}` is no
    `app=server`, so the policy selecting that would no longer isolate the pod)."""
    meta = _meta(obj)
    problems: list[str] = []
    if meta.get("uid") is not None and not isinstance(meta.get("uid"), str):
        problems.append(f"metadata.uid: {excerpt(meta.get('uid'))} is not a string")
    for name in fields:
        value = meta.get(name)
        if name == "labels" and isinstance(value, dict) and len(value) > MAX_LABELS:
            problems.append(f"metadata.labels: {len(value)} labels, more than mnpd reads ({MAX_LABELS})")
            continue
        if value is None or _string_map(value):
            continue
        if not isinstance(value, dict):
            problems.append(f"metadata.{name}: must be a map of string to string")
            continue
        key, item = next((k, v) for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str))
        problems.append(f"metadata.{name}: {excerpt(key)}: {excerpt(item)} is not a string to a string")
    return problems


def metadata_problems(obj: Mapping[str, Any]) -> list[str]:
    """What the API server would refuse in an object's uid, labels and annotations: their types
    (`metadata_type_problems`) and the syntax of label keys and values."""
    problems = metadata_type_problems(obj)
    labels = _meta(obj).get("labels")
    if not problems and isinstance(labels, dict):
        for key, item in labels.items():
            problem = label_key_problem(key) or label_value_problem(item)
            if problem:
                problems.append(f"metadata.labels: {problem}")
                break
    return problems


def _labels(meta: Mapping[str, Any]) -> Mapping[str, str]:
    """The labels, or `UNREADABLE_LABELS` when they are there but no map of string to string, or over MAX_LABELS."""
    labels = meta.get("labels")
    if labels is None:
        return {}
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS or not _string_map(labels):
        return UNREADABLE_LABELS
    # Interned: a cluster's pods repeat a few keys and values thousands of times (the daemon keeps them all).
    return {sys.intern(k): sys.intern(v) for k, v in labels.items()}


def _annotations(meta: Mapping[str, Any]) -> dict[str, Any]:
    ann = meta.get("annotations")
    return dict(ann) if isinstance(ann, dict) else {}


def parse_namespace(obj: Mapping[str, Any]) -> Namespace:
    meta = _meta(obj)
    name = sys.intern(str(meta.get("name", "")))
    labels = _labels(meta)
    if isinstance(labels, UnreadableLabels):
        return Namespace(name, labels)  # it matches no namespaceSelector with a requirement
    # "The Kubernetes control plane sets an immutable label kubernetes.io/metadata.name on all namespaces, the
    # value of the label is the namespace name": whatever a manifest says, the API server would overwrite it.
    return Namespace(name, {**labels, "kubernetes.io/metadata.name": name})


def _parse_ip(value: str) -> IPAddress:
    return ipaddress.ip_interface(value.strip()).ip


def _strings(item: Mapping[str, Any], *keys: str) -> bool:
    """Each of `keys` absent, null or a string (Multus writes strings; anything else is no interface name)."""
    return all(isinstance(present(item.get(k), ""), str) for k in keys)


# Addresses read in one pod's network-status (or networks request): Multus writes one or two per interface. Any pod
# owner can write thousands, parsed on the pods' reflector by every node's mnpd and made peer addresses
# (docs/benchmarks.md, "Large objects from the API"). Over this the annotation cannot be read.
MAX_POD_ADDRESSES = 256


def _too_many_addresses(items: list[Any], annotation: str) -> list[str]:
    count = sum(len(item["ips"]) for item in items if isinstance(item, dict) and isinstance(item.get("ips"), list))
    if count <= MAX_POD_ADDRESSES:
        return []
    return [f"annotation {annotation}: {count} addresses, more than mnpd reads ({MAX_POD_ADDRESSES})"]


def parse_network_requests(value: object, namespace: str) -> tuple[tuple[NetworkRequest, ...], list[str]]:
    """The Multus request annotation: `a, ns/b@net2` or a JSON list of {name, namespace, interface, ips, mac}."""
    if value is None or value == "":
        return (), []
    if not isinstance(value, str):
        return (), [f"annotation {NETWORKS}: must be a string"]
    text = value.strip()
    requests: list[NetworkRequest] = []
    problems: list[str] = []
    if any(c in text for c in '[{"'):  # as Multus decides (parsePodNetworkAnnotation): JSON, else the short form
        try:
            items = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            return (), [f"annotation {NETWORKS}: not valid JSON: {exc}"]
        if not isinstance(items, list):
            return (), [f"annotation {NETWORKS}: must be a JSON list"]
        if too_many := _too_many_addresses(items, NETWORKS):
            return (), too_many
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                problems.append(f"annotation {NETWORKS}[{i}]: needs a string 'name'")
                continue
            ips = present(item.get("ips"), [])
            if not isinstance(ips, list) or not all(isinstance(v, str) for v in (item.get("namespace") or "", *ips)):
                problems.append(f"annotation {NETWORKS}[{i}]: 'namespace' and 'ips' must be a string and strings")
                continue
            if not _strings(item, "interface", "mac"):
                problems.append(f"annotation {NETWORKS}[{i}]: 'interface' and 'mac' must be strings")
                continue
            for ip in ips:  # kept in the request (its position names the interface), left out of the attachment
                try:
                    _parse_ip(ip)
                except ValueError:
                    problems.append(f"annotation {NETWORKS}[{i}].ips: {excerpt(ip)} is not an IP address")
            ns = str(item.get("namespace") or namespace)
            requests.append(
                NetworkRequest(
                    normalise_network(item["name"], ns),
                    str(item.get("interface") or ""),
                    tuple(ips),
                    str(item.get("mac") or ""),
                )
            )
        return tuple(requests), problems
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, interface = item.partition("@")
        requests.append(NetworkRequest(normalise_network(name, namespace), interface.strip()))
    return tuple(requests), problems


def parse_network_status(value: object, namespace: str) -> tuple[tuple[Attachment, ...], list[str]]:
    if value is None or value == "":
        return (), []
    try:
        items = json.loads(value) if isinstance(value, str) else value
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        return (), [f"annotation {NETWORK_STATUS}: not valid JSON: {exc}"]
    if not isinstance(items, list):
        return (), [f"annotation {NETWORK_STATUS}: must be a JSON list"]
    if too_many := _too_many_addresses(items, NETWORK_STATUS):
        return (), too_many
    attachments: list[Attachment] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"annotation {NETWORK_STATUS}[{i}]: needs a string 'name'")
            continue
        if not _strings(item, "interface", "mac"):
            problems.append(f"annotation {NETWORK_STATUS}[{i}]: 'interface' and 'mac' must be strings")
            continue
        default = present(item.get("default"), False)
        if not isinstance(default, bool):  # "false" is truthy: it would hide a secondary interface as the primary
            problems.append(f"annotation {NETWORK_STATUS}[{i}]: 'default' must be true or false")
            continue
        ips: list[IPAddress] = []
        raw_ips = present(item.get("ips"), [])
        if not isinstance(raw_ips, list):
            problems.append(f"annotation {NETWORK_STATUS}[{i}].ips: must be a list")
            continue
        for ip in raw_ips:
            try:
                ips.append(_parse_ip(str(ip)))
            except ValueError:
                problems.append(f"annotation {NETWORK_STATUS}[{i}].ips: {excerpt(ip)} is not an IP address")
        network = item["name"] if default else normalise_network(item["name"], namespace)
        attachments.append(
            Attachment(
                network, sys.intern(str(item.get("interface") or "")), tuple(ips), str(item.get("mac") or ""), default
            )
        )
    return tuple(attachments), problems


def attachments_from_requests(requests: Iterable[NetworkRequest]) -> tuple[Attachment, ...]:
    """Before Multus writes network-status: the requested interfaces (Multus names them net1, net2, … in order)
    and their requested static addresses."""
    out = []
    for index, req in enumerate(requests, start=1):
        ips = []
        for ip in req.ips:
            try:
                ips.append(_parse_ip(ip))
            except ValueError:
                continue
        out.append(Attachment(req.network, req.interface or f"net{index}", tuple(ips), req.mac))
    return tuple(out)


def parse_pod(obj: Mapping[str, Any]) -> tuple[Pod, list[str]]:
    meta = _meta(obj)
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    assert isinstance(spec, dict) and isinstance(status, dict)
    namespace = sys.intern(str(meta.get("namespace") or "default"))
    # Labels or annotations of other types than the API server holds: what the pod was meant to be selected by, or
    # which interfaces Multus gave it, is not known. It gets no interface (one mnpd programmed keeps its last
    # rules, a new one stays closed) and, having none, is no peer.
    problems = metadata_type_problems(obj)
    labels = _labels(meta)
    annotations = _annotations(meta) if _string_map(meta.get("annotations") or {}) else {}
    ports: list[ContainerPort] = []
    containers = spec.get("containers") if isinstance(spec.get("containers"), list) else []
    for container in containers or ():
        raw_ports = container.get("ports") if isinstance(container, dict) else None
        if not isinstance(raw_ports or [], list) or not isinstance(container or {}, dict):
            problems.append(f"spec.containers[]: bad entry {excerpt(container)}")
            continue
        for p in raw_ports or ():
            number, protocol, name = (
                (p.get(k) for k in ("containerPort", "protocol", "name")) if isinstance(p, dict) else (None, None, None)
            )
            if (
                not isinstance(number, int)
                or isinstance(number, bool)
                or not isinstance(protocol or "", str)
                or not isinstance(name or "", str)
            ):
                problems.append(f"spec.containers[].ports: bad entry {excerpt(p)}")
                continue
            # The API server refuses these ("containerPort: must be between 1 and 65535", protocol "TCP", "UDP" or
            # "SCTP"). A number outside would reach a peer's rules through a named port and make nft refuse the
            # transaction of every pod egressing to that name; the entry is left out (the name resolves to nothing).
            if not 1 <= number <= 65535:
                problems.append(f"spec.containers[].ports: containerPort {excerpt(number)} is not in 1-65535")
                continue
            if (protocol or "TCP") not in PROTOCOLS:
                problems.append(
                    f"spec.containers[].ports: protocol {excerpt(protocol)} is not one of {', '.join(PROTOCOLS)}"
                )
                continue
            ports.append(ContainerPort(number, sys.intern(protocol or "TCP"), sys.intern(name or "")))
    for where, value, kind in (
        ("spec.hostNetwork", spec.get("hostNetwork"), bool),
        ("spec.nodeName", spec.get("nodeName"), str),
        ("status.phase", status.get("phase"), str),
    ):
        if value is not None and not isinstance(value, kind):
            problems.append(f"{where}: {excerpt(value)} is not a {kind.__name__}")
    if not isinstance(spec.get("containers") or [], list):
        problems.append("spec.containers: must be a list")
    requests, req_problems = parse_network_requests(annotations.get(NETWORKS), namespace)
    attachments, status_problems = parse_network_status(annotations.get(NETWORK_STATUS), namespace)
    if NETWORK_STATUS not in annotations:
        attachments = attachments_from_requests(requests)
    if isinstance(labels, UnreadableLabels):
        attachments = ()
    pod = Pod(
        namespace=namespace,
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid") or ""),
        labels=labels,
        node_name=sys.intern(str(spec.get("nodeName") or "")),
        phase=sys.intern(str(status.get("phase") or "Running")),
        host_network=bool(spec.get("hostNetwork", False)),
        container_ports=tuple(ports),
        requests=requests,
        attachments=attachments,
    )
    return pod, problems + req_problems + status_problems


def parse_nad(obj: Mapping[str, Any]) -> tuple[NetworkAttachmentDefinition, list[str]]:
    meta = _meta(obj)
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    raw = (spec or {}).get("config")
    config: dict[str, Any] = {}
    problems: list[str] = []
    if isinstance(raw, str) and raw.strip():
        try:
            loaded = json.loads(raw)
            if isinstance(loaded, dict):
                config = loaded
            else:
                problems.append("spec.config: must be a JSON object")
        except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            problems.append(f"spec.config: not valid JSON: {exc}")
    elif isinstance(raw, dict):
        config = raw
    return NetworkAttachmentDefinition(
        str(meta.get("namespace") or "default"), str(meta.get("name", "")), config
    ), problems


def _parse_network(value: object, where: str, problems: list[str]) -> IPNetwork | None:
    if not isinstance(value, str):
        problems.append(f"{where}: must be a CIDR string like 10.0.0.0/24 or 2001:db8::/64")
        return None
    if "/" not in value:
        # "CIDR is a string representing the IPBlock. Valid examples are "192.168.1.0/24" or "2001:db8::/64"": the
        # API server refuses a bare address; taking it as a /32 would guess at what was meant.
        problems.append(f"{where}: {excerpt(value)} is an address, not a CIDR (write it as a /32 or /128)")
        return None
    try:
        # strict: "10.0.0.1/24" has host bits set; the API server rejects it too (it is almost always a typo)
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        problems.append(f"{where}: {excerpt(value)} is not a valid CIDR ({exc})")
        return None


def _parse_peer(raw: object, where: str, problems: list[str]) -> Peer | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be an object")
        return None
    # An explicit null is the field being absent (the API's fields are pointers): `namespaceSelector: null` next to
    # a podSelector keeps the peer in the policy's namespace, it does not select every namespace.
    raw = {k: v for k, v in raw.items() if v is not None}
    unknown = set(raw) - {"podSelector", "namespaceSelector", "ipBlock"}
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    has_selector = "podSelector" in raw or "namespaceSelector" in raw
    if "ipBlock" in raw:
        if has_selector:
            problems.append(f"{where}: ipBlock cannot be combined with podSelector or namespaceSelector in one peer")
        block = raw["ipBlock"]
        if not isinstance(block, dict):
            problems.append(f"{where}.ipBlock: must be an object with cidr and optional except")
            return None
        cidr = _parse_network(block.get("cidr"), f"{where}.ipBlock.cidr", problems)
        excepts: list[IPNetwork] = []
        raw_excepts = present(block.get("except"), [])
        if not isinstance(raw_excepts, list):
            problems.append(f"{where}.ipBlock.except: must be a list of CIDRs")
            raw_excepts = []
        for j, e in enumerate(raw_excepts):
            net = _parse_network(e, f"{where}.ipBlock.except[{j}]", problems)
            if net is None or cidr is None:
                continue
            # "Except values will be rejected if they are outside the cidr range"
            if net.version != cidr.version or not net.subnet_of(cidr):  # type: ignore[arg-type]
                problems.append(f"{where}.ipBlock.except[{j}]: {net} is not inside the cidr {cidr}")
                continue
            # NetworkPolicy validation: an except "must be a strict subset of `cidr`"
            if net.prefixlen <= cidr.prefixlen:
                problems.append(
                    f"{where}.ipBlock.except[{j}]: {net} is the whole cidr; an except must be a strict subset"
                )
                continue
            excepts.append(net)
        return Peer(ip_block=IPBlock(cidr, tuple(excepts))) if cidr else None
    if not has_selector:
        problems.append(f"{where}: a peer needs a podSelector, a namespaceSelector or an ipBlock")
        return None
    pod_sel = ns_sel = None
    if "podSelector" in raw:
        pod_sel, p = parse_selector(raw["podSelector"], f"{where}.podSelector")
        problems.extend(p)
    if "namespaceSelector" in raw:
        ns_sel, p = parse_selector(raw["namespaceSelector"], f"{where}.namespaceSelector")
        problems.extend(p)
    return Peer(pod_selector=pod_sel, namespace_selector=ns_sel)


def _parse_port(raw: object, where: str, problems: list[str]) -> PortSpec | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be an object with protocol, port and endPort")
        return None
    unknown = set(raw) - {"protocol", "port", "endPort"}
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    protocol = raw.get("protocol")
    if protocol is None:
        protocol = "TCP"  # "If not specified, this field defaults to TCP." (null is not specified)
    if protocol not in PROTOCOLS:
        problems.append(f"{where}.protocol: {excerpt(protocol)} is not one of {', '.join(PROTOCOLS)}")
    port: int | str | None = raw.get("port")
    end_port = raw.get("endPort")
    if isinstance(port, bool) or (port is not None and not isinstance(port, int | str)):
        problems.append(f"{where}.port: must be a number or a port name")
        port = None
    # An IntOrString given as "80" in YAML. ASCII digits only: str.isdigit() is true for "²" (which int() refuses)
    # and for "٣" or "８０" (which it takes as 3 and 80); the CRD lets any tenant write them.
    if isinstance(port, str) and port.isascii() and port.isdigit():
        port = int(port)
    if isinstance(port, int) and not 1 <= port <= 65535:
        problems.append(f"{where}.port: {port} is not in 1-65535")
    if isinstance(port, str) and not is_port_name(port):
        problems.append(f"{where}.port: {excerpt(port)} is not a valid port name (IANA_SVC_NAME)")
    if end_port is not None:
        if isinstance(end_port, bool) or not isinstance(end_port, int):
            problems.append(f"{where}.endPort: must be a number")
            end_port = None
        elif port is None:
            problems.append(f"{where}.endPort: requires port")
        elif isinstance(port, str):
            problems.append(f"{where}.endPort: cannot be used with the named port {excerpt(port)}")
        elif end_port < port:
            problems.append(f"{where}.endPort: {end_port} is smaller than port {port}")
        elif end_port > 65535:
            problems.append(f"{where}.endPort: {end_port} is not in 1-65535")
    return PortSpec(str(protocol), port, end_port)


def _parse_rules(raw: object, direction: str, problems: list[str]) -> tuple[Rule, ...]:
    field_name, peers_name = ("ingress", "from") if direction == INGRESS else ("egress", "to")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"spec.{field_name}: must be a list of rules")
        return ()
    rules = []
    for i, rule in enumerate(raw):
        at = f"spec.{field_name}[{i}]"
        if rule is None:
            rule = {}
        if not isinstance(rule, dict):
            problems.append(f"{at}: must be an object")
            continue
        unknown = set(rule) - {peers_name, "ports"}
        if unknown:
            problems.append(f"{at}: unknown field(s) {', '.join(sorted(unknown))}")
        # `present`, not `or`: `from: 0` must be an error, not an empty list (which would allow from everyone)
        raw_peers, raw_ports = present(rule.get(peers_name), []), present(rule.get("ports"), [])
        if not isinstance(raw_peers, list):
            problems.append(f"{at}.{peers_name}: must be a list of peers")
            raw_peers = []
        if not isinstance(raw_ports, list):
            problems.append(f"{at}.ports: must be a list of ports")
            raw_ports = []
        peers = []
        for j, peer in enumerate(raw_peers):
            parsed = _parse_peer(peer, f"{at}.{peers_name}[{j}]", problems)
            if parsed:
                peers.append(parsed)
        ports = []
        for j, port in enumerate(raw_ports):
            parsed_port = _parse_port(port, f"{at}.ports[{j}]", problems)
            if parsed_port:
                ports.append(parsed_port)
        rules.append(Rule(tuple(peers), tuple(ports)))
    return tuple(rules)


# Values (every object, list, string, number) read in a policy's spec: room for thousands of ipBlocks. Any tenant
# can create far larger ones in its namespace, kept and parsed by every node's mnpd (docs/benchmarks.md, "Large
# objects from the API"); over this its rules are not read: invalid, fail closed, reported.
MAX_POLICY_VALUES = 20_000


def _values_over(value: object, limit: int) -> int:
    """How many values `value` holds, counting no further than limit + 1."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def parse_policy(obj: Mapping[str, Any]) -> MultiNetworkPolicy:
    """Parse a MultiNetworkPolicy; `problems` lists every validation error (empty = valid)."""
    meta = _meta(obj)
    namespace = str(meta.get("namespace") or "default")
    problems: list[str] = []
    if obj.get("kind", "MultiNetworkPolicy") != "MultiNetworkPolicy":
        problems.append(f"kind: {excerpt(obj.get('kind'))} is not MultiNetworkPolicy")
    raw_annotations = meta.get("annotations")
    raw_policy_for = _annotations(meta).get(POLICY_FOR)
    policy_for, pf_problems = parse_policy_for(raw_policy_for, namespace)
    # There but not fully readable: which networks it meant is unknown, so every one (fail-closed). Missing or
    # empty: it names none.
    named_none = raw_policy_for is None or (isinstance(raw_policy_for, str) and not raw_policy_for.strip())
    every_network = bool(pf_problems) and not named_none
    readable = isinstance(raw_annotations, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw_annotations.items()
    )
    if raw_annotations is not None and not readable:
        pf_problems = [
            "metadata.annotations: not a map of string to string, so policy-for cannot be read; "
            "isolating on every network"
        ]
        every_network = True
    problems.extend(pf_problems)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        problems.append("spec: missing or not an object")
        spec = {}
    unknown = set(spec) - {"podSelector", "policyTypes", "ingress", "egress"}
    if unknown:
        problems.append(f"spec: unknown field(s) {', '.join(sorted(unknown))}")
    # Too large to read: its rules are not read (it is invalid, so it allows nothing whatever they say).
    too_large = _values_over(spec, MAX_POLICY_VALUES) > MAX_POLICY_VALUES
    if too_large:
        problems.append(f"spec: more than mnpd reads ({MAX_POLICY_VALUES} values); its rules are not read")
    # podSelector is required by the API; an unreadable one selects the whole namespace (fail closed).
    raw_selector = spec.get("podSelector", {})
    pod_selector = MATCH_EVERYTHING
    # Within a spec that is not too large, so is its selector: it is counted again only when the spec was.
    if not too_large or _values_over(raw_selector, MAX_POLICY_VALUES) <= MAX_POLICY_VALUES:
        pod_selector, sel_problems = parse_selector(raw_selector, "spec.podSelector")
        if sel_problems:
            problems.extend(sel_problems)
            pod_selector = MATCH_EVERYTHING
    ingress = () if too_large else _parse_rules(spec.get("ingress"), INGRESS, problems)
    egress = () if too_large else _parse_rules(spec.get("egress"), EGRESS, problems)
    raw_types = spec.get("policyTypes")
    if not isinstance(obj.get("spec"), dict):
        policy_types = frozenset(POLICY_TYPES)  # unreadable: isolate both directions
    elif raw_types is not None and raw_types != []:
        bad = [t for t in raw_types if t not in POLICY_TYPES] if isinstance(raw_types, list) else [raw_types]
        if bad:
            problems.append(f"spec.policyTypes: {excerpt(bad)} not in {list(POLICY_TYPES)}")
            policy_types = frozenset(POLICY_TYPES)  # unreadable: isolate both directions
        else:
            policy_types = frozenset(raw_types)
    else:
        # "If this field is not specified, it will default based on the existence of ingress or egress rules":
        # the API server sets Ingress always, and Egress when the policy has a non-empty egress section.
        # An egress section that is there but cannot be read counts as non-empty (fail closed).
        has_egress = spec.get("egress") is not None and spec.get("egress") != []
        policy_types = frozenset({INGRESS, EGRESS} if has_egress else {INGRESS})
    return MultiNetworkPolicy(
        namespace=namespace,
        name=str(meta.get("name", "")),
        policy_for=policy_for,
        pod_selector=pod_selector,
        policy_types=policy_types,
        ingress=ingress,
        egress=egress,
        problems=tuple(problems),
        every_network=every_network,
    )


def refuse_duplicates(first: MultiNetworkPolicy, second: MultiNetworkPolicy, where: str) -> MultiNetworkPolicy:
    """The policy that stands for two definitions of one namespace/name (`where` names both): both are refused,
    and what stands for them is never wider than either — it isolates the union of what they select (the whole
    namespace when their podSelectors differ) in the union of their directions, on the union of their networks,
    and allows nothing (it is invalid). Folding a third definition in keeps all of that."""
    networks = tuple(dict.fromkeys(first.policy_for + second.policy_for))
    selector = first.pod_selector if first.pod_selector == second.pod_selector else MATCH_EVERYTHING
    problems = tuple(p for p in first.problems if not p.startswith("defined more than once"))
    return MultiNetworkPolicy(
        namespace=first.namespace,
        name=first.name,
        policy_for=networks,
        pod_selector=selector,
        policy_types=first.policy_types | second.policy_types,
        every_network=first.every_network or second.every_network,
        problems=(f"defined more than once ({where}): every definition is refused", *problems, *second.problems),
    )
