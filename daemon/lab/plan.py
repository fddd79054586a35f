"""What a lab builds, decided from the manifests alone: pure, no I/O but reading DIR, testable without root.

`plan(directory)` reads DIR as `mnpctl matrix` does and returns a `Plan`:

* **networks** — every NetworkAttachmentDefinition a pod requests, with its CNI config rewritten for the lab
  only where it would otherwise touch the host: the `mnp` plugin's `stateDir`/`logFile` point into the lab's
  work dir, host-local's `dataDir` too. Everything else (plugin types, master names, modes, capabilities) is
  run exactly as written: that is what is being tested.
* **masters** — the links the configs name as `master`, to be created inside the lab's node netns (a veth pair
  with both ends up when the name leaves room for the peer's, else a port-less bridge). A macvlan/ipvlan
  without `master` uses the node's default-route interface, so then one master also carries the default route.
* **pods** — one per active, non-hostNetwork Pod with a `k8s.v1.cni.cncf.io/networks` request: its attachments
  in request order, with the interface names Multus gives (`interface`, else `net1`, `net2` …) and the requested
  `ips`/`mac`.
* **errors** (the lab cannot be built: exit 2, like `matrix` on invalid input), **invalid** policies (the lab
  still runs: the daemon must enforce them fail-closed, which is worth seeing with real packets; the exit status
  is still 2, as `matrix`'s) and **warnings**.

Where a network's addresses come from is the NAD's business (static with the `ips` capability, host-local …):
the lab reads the real addresses from the CNI results afterwards (see daemon/lab/build.py).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.testbed.netns import MasterKind
from shared.ifname import ifname_problem
from shared.manifests import Manifests, load_dir, manifest_files, read_documents
from shared.model import NETWORK_STATUS, NetworkAttachmentDefinition, Pod

MNP_PLUGIN = "mnp"
# A Pod annotation for the lab only: attach this pod before mnpd starts (a pod that existed before the daemon,
# e.g. one mnpd must adopt at its first sync). Every other pod is attached after mnpd started.
BEFORE_MNPD = "lab.mnp/attach-before-mnpd"
DEFAULT_ROUTE_MASTER = "eth0"  # the master of macvlan/ipvlan configs without one: the node's default route
_MASTERLESS = ("macvlan", "ipvlan")
_LOSSY_MODES = {
    "private": "macvlan mode private forbids traffic between sub-interfaces of one master",
    "vepa": "macvlan mode vepa sends traffic between sub-interfaces to an external switch, which the lab has not",
    "passthru": "macvlan mode passthru allows only one sub-interface per master",
}


@dataclass(frozen=True)
class LabPaths:
    """Where a lab keeps its files: everything under one work dir on tmpfs."""

    workdir: Path

    @property
    def manifests(self) -> Path:
        """The runtime manifests dir `mnpd --manifests-dir` watches (DIR itself is never written)."""
        return self.workdir / "manifests"

    @property
    def state(self) -> Path:
        """The `mnp` plugin's state dir, shared with `mnpd --state-dir`."""
        return self.workdir / "state"

    @property
    def status_file(self) -> Path:
        return self.workdir / "mnpd-status.json"

    @property
    def cni_cache(self) -> Path:
        return self.workdir / "cni-cache"

    @property
    def ipam(self) -> Path:
        return self.workdir / "ipam"

    @property
    def bin(self) -> Path:
        """Holds the `mnp` plugin (a symlink), searched first in CNI_PATH."""
        return self.workdir / "bin"

    @property
    def plugin_log(self) -> Path:
        return self.workdir / "mnp-plugin.log"

    @property
    def daemon_log(self) -> Path:
        return self.workdir / "mnpd.log"

    @property
    def record(self) -> Path:
        """What the lab created (namespaces, pids), for `mnpctl lab --down`."""
        return self.workdir / "lab.json"


@dataclass(frozen=True)
class Master:
    name: str
    kind: MasterKind
    default_route: bool = False
    networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Network:
    """A NetworkAttachmentDefinition as the lab runs it."""

    key: str  # "namespace/name"
    nad: NetworkAttachmentDefinition
    conflist: Mapping[str, Any]  # rewritten for the lab; see `lab_config`
    chains_mnp: bool  # whether its chain has the mnp plugin (else its pods are open until mnpd programs them)

    @property
    def plugin_types(self) -> tuple[str, ...]:
        return self.nad.plugin_types

    @property
    def capabilities(self) -> frozenset[str]:
        """The runtimeConfig capabilities some plugin of the chain declares."""
        found: set[str] = set()
        for plugin in self.nad.plugins:
            caps = plugin.get("capabilities")
            if isinstance(caps, dict):
                found.update(str(k) for k, v in caps.items() if v is True)
        return frozenset(found)

    @property
    def interface_plugin(self) -> Mapping[str, Any] | None:
        """The plugin that creates the interface: the first of the chain (Multus' delegates are like that)."""
        plugins = self.nad.plugins
        return plugins[0] if plugins and plugins[0].get("type") != MNP_PLUGIN else None


@dataclass(frozen=True)
class AttachmentRequest:
    network: str
    ifname: str
    ips: tuple[str, ...] = ()
    mac: str = ""

    def capability_args(self) -> dict[str, Any]:
        """runtimeConfig candidates, as Multus' mergeCNIRuntimeConfig builds them (libcni then keeps those a
        plugin declares in `capabilities`)."""
        args: dict[str, Any] = {}
        if self.ips:
            args["ips"] = list(self.ips)
        if self.mac:
            args["mac"] = self.mac
        return args

    def cni_args(self, capabilities: Iterable[str] = ()) -> tuple[tuple[str, str], ...]:
        """The deprecated CNI_ARGS `MAC=`/`IP=` Multus also adds for requested addresses — here only for what no
        plugin of the chain takes as a capability: static and host-local read `IP` from CNI_ARGS, but some
        interface plugins (Debian's macvlan 1.1.1) reject a dual-stack `IP=a/24,b/64` there, and with the
        capability declared runtimeConfig carries the request anyway (and wins in static IPAM)."""
        declared = set(capabilities)
        extra: list[tuple[str, str]] = []
        if self.mac and "mac" not in declared:
            extra.append(("MAC", self.mac))
        if self.ips and "ips" not in declared:
            extra.append(("IP", ",".join(self.ips)))
        return tuple(extra)


@dataclass(frozen=True)
class PodPlan:
    pod: Pod
    manifest: Mapping[str, Any]  # the object as read from DIR
    uid: str
    attachments: tuple[AttachmentRequest, ...]

    @property
    def key(self) -> str:
        return self.pod.key

    @property
    def before_mnpd(self) -> bool:
        annotations = (self.manifest.get("metadata") or {}).get("annotations") or {}
        return isinstance(annotations, dict) and str(annotations.get(BEFORE_MNPD, "")).lower() == "true"


@dataclass
class Plan:
    directory: Path
    manifests: Manifests
    objects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (kind, object) of all but Pods
    pod_objects: list[dict[str, Any]] = field(default_factory=list)  # every Pod object, as read
    networks: dict[str, Network] = field(default_factory=dict)
    masters: list[Master] = field(default_factory=list)
    pods: list[PodPlan] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the lab cannot be built
    invalid: list[str] = field(default_factory=list)  # invalid policies: built and probed, then exit 2 as matrix
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ helpers


def _flatten(obj: Any) -> Iterator[Any]:
    """A document, with `kind: List` (and `*List` with items) expanded, as shared.manifests reads them."""
    if isinstance(obj, dict) and (
        obj.get("kind") == "List" or (str(obj.get("kind", "")).endswith("List") and "items" in obj)
    ):
        for item in obj.get("items") or ():
            yield from _flatten(item)
    else:
        yield obj


def raw_objects(directory: Path) -> list[dict[str, Any]]:
    """Every object of DIR as a plain dict, in the order `load_dir` reads them (unreadable files are skipped:
    `load_dir` reports them)."""
    out: list[dict[str, Any]] = []
    for path in manifest_files(directory):
        docs, _ = read_documents(path, directory)
        for _, doc in docs:
            out.extend(o for o in _flatten(doc) if isinstance(o, dict))
    return out


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    return f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"


def pod_uid(pod: Pod) -> str:
    """The Pod's uid, or a stable made-up one (a Pod read from files usually has none)."""
    return pod.uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"mnplab/{pod.key}"))


def lab_config(config: Mapping[str, Any], paths: LabPaths) -> dict[str, Any]:
    """A NAD's CNI config with the host-touching paths moved into the lab: `mnp`'s stateDir and logFile,
    host-local's dataDir. A copy; the plugin chain itself is unchanged."""
    out = copy.deepcopy(dict(config))
    plugins = out["plugins"] if isinstance(out.get("plugins"), list) else [out]
    for plugin in plugins:
        if not isinstance(plugin, dict):
            continue
        if plugin.get("type") == MNP_PLUGIN:
            plugin["stateDir"] = str(paths.state)
            plugin["logFile"] = str(paths.plugin_log)
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local":
            ipam["dataDir"] = str(paths.ipam)
    return out


def host_attachment_config(network: Network, address: str, name: str) -> dict[str, Any] | None:
    """The config that puts a host outside the cluster on `network`: the network's interface plugin alone (no
    mnp: the host is not a pod), with static IPAM holding `address` ("ip/len"). None when the network has no
    interface plugin the lab can reuse."""
    plugin = network.interface_plugin
    if plugin is None:
        return None
    conf = {k: copy.deepcopy(v) for k, v in plugin.items() if k not in ("capabilities", "runtimeConfig", "args")}
    conf["ipam"] = {"type": "static", "addresses": [{"address": address}]}
    return {"cniVersion": str(network.nad.config.get("cniVersion") or "1.0.0"), "name": name, "plugins": [conf]}


# ------------------------------------------------------------------------------------------------ plan


def plan(directory: str | Path, paths: LabPaths) -> Plan:
    """Read DIR and decide what to build. Never raises for bad content: see `Plan.errors`."""
    root = Path(directory)
    manifests = load_dir(root)
    result = Plan(root, manifests)
    for problem in manifests.problems:
        if not problem.error:
            result.warnings.append(str(problem))
        elif " MultiNetworkPolicy " in f" {problem.where} ":
            result.invalid.append(str(problem))  # the daemon must enforce it fail-closed: worth running
        else:
            result.errors.append(str(problem))
    if not root.is_dir():
        return result
    cluster = manifests.cluster
    seen: set[tuple[str, str]] = set()
    for obj in raw_objects(root):
        kind = str(obj.get("kind", ""))
        ident = (kind, _key(obj) if kind != "Namespace" else str((obj.get("metadata") or {}).get("name", "")))
        if ident in seen:
            continue  # a later duplicate: load_dir reported it and ignores it, so do we
        seen.add(ident)
        if kind == "Pod":
            result.pod_objects.append(obj)
        else:
            result.objects.append((kind, obj))
    manifests_by_key = {_key(o): o for o in result.pod_objects}

    used: dict[str, list[str]] = {}
    for pod in cluster.pods:
        if not pod.requests:
            continue
        if pod.host_network:
            result.warnings.append(f"Pod {pod.key}: hostNetwork pods get no secondary networks; not attached")
            continue
        if not pod.is_active:
            continue
        attachments: list[AttachmentRequest] = []
        names: set[str] = set()
        for index, req in enumerate(pod.requests, start=1):
            if req.network not in cluster.nads:
                result.errors.append(
                    f"Pod {pod.key}: requests network {req.network}, which no NetworkAttachmentDefinition in "
                    f"{root} defines (Multus would fail the pod)"
                )
                continue
            ifname = req.interface or f"net{index}"
            if ifname_problem(ifname) is not None or ifname in names:
                result.errors.append(f"Pod {pod.key}: interface name {ifname!r} is invalid or used twice")
                continue
            names.add(ifname)
            for ip in req.ips:
                try:
                    ipaddress.ip_interface(ip)
                except ValueError:
                    result.errors.append(f"Pod {pod.key}: requested address {ip!r} on {req.network} is not an IP")
            attachments.append(AttachmentRequest(req.network, ifname, req.ips, req.mac))
            used.setdefault(req.network, []).append(pod.key)
        if NETWORK_STATUS in ((manifests_by_key.get(pod.key) or {}).get("metadata") or {}).get("annotations", {}):
            result.warnings.append(
                f"Pod {pod.key}: its {NETWORK_STATUS} annotation is replaced by what the lab's CNI calls return"
            )
        result.pods.append(PodPlan(pod, manifests_by_key.get(pod.key, {}), pod_uid(pod), tuple(attachments)))

    masters: dict[str, list[str]] = {}
    default_route_users: list[str] = []
    for key in sorted(used):
        nad = cluster.nads[key]
        if not nad.plugins:
            result.errors.append(f"NetworkAttachmentDefinition {key}: spec.config has no CNI plugin")
            continue
        config = lab_config(nad.config, paths)
        network = Network(key, nad, config, MNP_PLUGIN in nad.plugin_types)
        result.networks[key] = network
        if not network.chains_mnp:
            result.warnings.append(
                f'NetworkAttachmentDefinition {key}: its chain has no {{"type": "mnp"}}: its pods are open '
                "until mnpd adopts and programs them (only plugin types in mnpd's --network-plugins are adopted)"
            )
        for plugin in nad.plugins:
            master = plugin.get("master")
            if isinstance(master, str) and master:
                if ifname_problem(master) is not None:
                    result.errors.append(f"NetworkAttachmentDefinition {key}: master {master!r} is not a link name")
                    continue
                masters.setdefault(master, []).append(key)
            elif plugin.get("type") in _MASTERLESS:
                default_route_users.append(key)
            mode = plugin.get("mode")
            if plugin.get("type") == "macvlan" and isinstance(mode, str) and mode in _LOSSY_MODES:
                result.warnings.append(f"NetworkAttachmentDefinition {key}: {_LOSSY_MODES[mode]}")
    if default_route_users:
        masters.setdefault(DEFAULT_ROUTE_MASTER, [])
    for name, users in masters.items():
        link_kind: MasterKind = "veth" if len(name) <= 14 else "bridge"
        is_default = name == DEFAULT_ROUTE_MASTER and bool(default_route_users)
        nets = tuple(dict.fromkeys(users + (default_route_users if is_default else [])))
        result.masters.append(Master(name, link_kind, is_default, nets))
    return result


def runtime_pod_manifest(
    plan_pod: PodPlan, node_name: str, network_status: list[dict[str, Any]] | None, phase: str
) -> dict[str, Any]:
    """The Pod as the API would show it on the lab's node: scheduled there, with a uid, and (after the CNI
    calls) Multus' network-status annotation."""
    obj = copy.deepcopy(dict(plan_pod.manifest))
    obj.setdefault("apiVersion", "v1")
    obj.setdefault("kind", "Pod")
    meta = obj.setdefault("metadata", {})
    meta.setdefault("namespace", plan_pod.pod.namespace)
    meta["uid"] = plan_pod.uid
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(NETWORK_STATUS, None)
    if network_status is not None:
        annotations[NETWORK_STATUS] = json.dumps(network_status)
    meta["annotations"] = annotations
    spec = obj.setdefault("spec", {})
    spec["nodeName"] = node_name
    status = dict(obj.get("status") or {})
    status["phase"] = phase
    obj["status"] = status
    return obj
