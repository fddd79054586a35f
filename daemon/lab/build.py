"""The lab's throwaway node, built for real: namespaces, links, CNI chains, outside hosts, listeners, teardown.

Everything the lab creates lives in network namespaces named `mnplab-<pid>-<hex>-…` (daemon/testbed/netns.py) and in
one work dir under /run/mnplab/; no link, route, rule or file of the host is touched:

* the **node** netns holds the NADs' `master` links (plan.Master) — the CNI plugins run inside it, so a macvlan
  is created there and moved into the pod netns;
* each **pod** gets a netns and, attachment by attachment in request order, the NAD's real CNI chain run the way
  Multus runs a delegate (daemon/testbed/cniruntime.py: libcni's semantics): CNI_IFNAME is the requested interface
  (else `netN`), CNI_ARGS carry K8S_POD_* plus the `IP`/`MAC` Multus still adds, runtimeConfig carries the
  requested `ips`/`mac` to plugins declaring those capabilities. The Pod object is written into the runtime
  manifests dir before the calls (scheduled, Pending) and again after them, Running with Multus'
  `k8s.v1.cni.cncf.io/network-status` — the daemon watches that dir as it would watch the API;
* a **host outside the cluster** (a probe address no pod has) gets a plain netns attached to its network by the
  network's own interface plugin with static IPAM (never the mnp plugin: it is not a pod);
* **listeners** (TCP accept, UDP echo — daemon/testbed/netns.py's Server) start after the CNI calls, like a container.

IPv6 duplicate address detection is switched off inside the lab's pod and host namespaces (only there), so
addresses are usable when ADD returns instead of ~1 s later; it has no bearing on policy.

`record()` keeps `lab.json` in the work dir up to date with every namespace and process, so `mnpctl lab --down`
can remove a lab kept with `--keep` or left by a killed run.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daemon.lab.plan import (
    MNP_PLUGIN,
    AttachmentRequest,
    LabPaths,
    Network,
    Plan,
    PodPlan,
    host_attachment_config,
    runtime_pod_manifest,
)
from daemon.testbed import cniruntime, netns
from daemon.testbed.netns import NetNS, NetnsError, Node, Proto, Server
from shared.manifests import load_dir
from shared.model import Cluster
from shared.probes import on_link_prefixes
from shared.rules import IPAddress

NODE_NAME = "mnplab"
PREFIX = "mnplab-"  # of every namespace a lab creates (the tests' are `mnpt-`)
WORK_ROOT = Path("/run/mnplab")
DEFAULT_CNI_DIRS = (Path("/opt/cni/bin"), Path("/usr/lib/cni"))
HOST_NAMESPACE = "mnplab-outside"  # CNI_ARGS namespace of outside hosts (they are not pods)
ADD_WORKERS = 4


class LabError(Exception):
    """The lab could not be built or run (not a policy result): the message says what and where."""


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent.parent


def find_plugin(explicit: str | None = None) -> tuple[Path, str]:
    """The `mnp` plugin binary and how it was chosen: `explicit`, else the frozen one-dir bundle
    (packaging/build-plugin.sh → dist/mnp/mnp), else the virtualenv's console script."""
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LabError(f"--plugin {explicit}: not an executable file")
        return path.resolve(), "given with --plugin"
    frozen = repo_root() / "dist" / "mnp" / "mnp"
    if frozen.is_file() and os.access(frozen, os.X_OK):
        return frozen, "frozen bundle (packaging/build-plugin.sh)"
    exe = Path(sys.executable)
    for candidate in (exe.parent / "mnp", Path(os.path.realpath(exe)).parent / "mnp", shutil.which("mnp")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate), "the virtualenv's console script (not frozen)"
    raise LabError("no `mnp` plugin: build it (packaging/build-plugin.sh) or install the project (pip install -e .)")


def stale_frozen_plugin(plugin: Path) -> str | None:
    """A warning when the frozen plugin is older than the sources it was built from (cni/, shared/)."""
    root = repo_root()
    if plugin != root / "dist" / "mnp" / "mnp":
        return None
    built = plugin.stat().st_mtime
    newer = [p for d in ("cni", "shared") for p in (root / d).rglob("*.py") if p.stat().st_mtime > built]
    if not newer:
        return None
    return (
        f"the frozen plugin {plugin} is older than {len(newer)} source file(s) (e.g. {newer[0].relative_to(root)}): "
        "rebuild it with packaging/build-plugin.sh, or use --plugin .venv/bin/mnp"
    )


def create_workdir(paths: LabPaths) -> None:
    """Create the lab's work dir and its subdirectories (under /run/mnplab: tmpfs, gone at reboot like the
    namespaces)."""
    WORK_ROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
    paths.workdir.mkdir(mode=0o755)
    for sub in (paths.manifests, paths.state, paths.cni_cache, paths.ipam, paths.bin):
        sub.mkdir(parents=True, exist_ok=True)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one rename; the temporary name starts with a dot, which every reader of manifest
    directories skips."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _disable_dad(ns: NetNS) -> None:
    ns.run(
        "sh",
        "-c",
        "for f in /proc/sys/net/ipv6/conf/all/accept_dad /proc/sys/net/ipv6/conf/default/accept_dad; "
        'do [ -w "$f" ] && echo 0 > "$f"; done; true',
        check=False,
    )


# ------------------------------------------------------------------------------------------------ objects


@dataclass
class LabAttachment:
    request: AttachmentRequest
    result: cniruntime.CniResult
    ips: tuple[IPAddress, ...]
    mac: str

    def status(self) -> dict[str, Any]:
        """This attachment's entry of Multus' network-status annotation."""
        entry: dict[str, Any] = {
            "name": self.request.network,
            "interface": self.request.ifname,
            "ips": [str(ip) for ip in self.ips],
            "dns": {},
        }
        if self.mac:
            entry["mac"] = self.mac
        return entry


@dataclass
class LabPod:
    plan: PodPlan
    ns: NetNS
    container_id: str
    attachments: list[LabAttachment] = field(default_factory=list)
    added_at: float | None = None  # time.monotonic() when the last ADD returned
    server: Server | None = None

    @property
    def key(self) -> str:
        return self.plan.key

    def network_status(self) -> list[dict[str, Any]]:
        return [a.status() for a in self.attachments]

    def cni_attachment(self, request: AttachmentRequest, network: Network) -> cniruntime.Attachment:
        ref = cniruntime.PodRef(self.plan.pod.namespace, self.plan.pod.name, self.plan.uid)
        extra = request.cni_args(network.capabilities)
        return cniruntime.Attachment(self.container_id, self.ns, request.ifname, ref, extra_args=extra)


@dataclass
class LabHost:
    """A host outside the cluster on one network (a probe address no pod has)."""

    address: IPAddress
    network: str
    ns: NetNS
    container_id: str
    conflist: dict[str, Any]
    server: Server | None = None

    @property
    def label(self) -> str:
        return str(self.address)


# ------------------------------------------------------------------------------------------------ the lab


class Lab:
    """Builds a `Plan` in namespaces with `prefix`; `teardown()` (or `release()` to keep it) when done."""

    def __init__(
        self,
        plan: Plan,
        paths: LabPaths,
        plugin: Path,
        *,
        cni_dirs: Sequence[Path] = DEFAULT_CNI_DIRS,
        prefix: str = PREFIX,
        node_name: str = NODE_NAME,
        log: Callable[[str], None] = lambda message: None,
        linger: bool = False,
    ) -> None:
        self.plan = plan
        self.linger = linger  # listeners outlive this process (--keep)
        self.paths = paths
        self.plugin = plugin
        self.prefix = prefix
        self.node_name = node_name
        self.log = log
        self.cni_dirs = [d for d in cni_dirs if d.is_dir()]
        (paths.bin / MNP_PLUGIN).unlink(missing_ok=True)
        (paths.bin / MNP_PLUGIN).symlink_to(plugin)
        self.node: Node | None = None
        self.runtime: cniruntime.CniRuntime | None = None
        self.pods: dict[str, LabPod] = {}
        self.hosts: dict[tuple[str, str], LabHost] = {}  # (network, address)
        self.processes: dict[str, int] = {}  # what else runs for the lab (the daemon), for lab.json
        self._lock = threading.RLock()
        self.record()

    # ------------------------------------------------------------------ bookkeeping

    def namespaces(self) -> list[NetNS]:
        with self._lock:
            out = [self.node.ns] if self.node else []
            out += [p.ns for p in self.pods.values()]
            out += [h.ns for h in self.hosts.values()]
            return out

    def servers(self) -> list[Server]:
        with self._lock:
            return [s for s in [*(p.server for p in self.pods.values()), *(h.server for h in self.hosts.values())] if s]

    def record(self) -> None:
        """Write lab.json: what `mnpctl lab --down` removes."""
        with self._lock:
            doc = {
                "pid": os.getpid(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "workdir": str(self.paths.workdir),
                "source": str(self.plan.directory),
                "netns": [ns.name for ns in self.namespaces()],
                "processes": dict(self.processes),
                "servers": [s.pid for s in self.servers() if s.pid],
            }
        with contextlib.suppress(OSError):
            write_atomically(self.paths.record, json.dumps(doc, indent=1) + "\n")

    def add_process(self, name: str, pid: int) -> None:
        with self._lock:
            self.processes[name] = pid
        self.record()

    # ------------------------------------------------------------------ node and manifests

    def build_node(self) -> None:
        """The node netns with every master; checks that every plugin the chains name exists."""
        self.runtime = cniruntime.CniRuntime(
            [self.paths.bin, *self.cni_dirs], self.paths.cni_cache, exec_netns=None, timeout=30.0
        )
        missing = []
        for network in self.plan.networks.values():
            for plugin_type in network.plugin_types:
                try:
                    self.runtime.find_plugin(plugin_type)
                except cniruntime.CniFailure:
                    missing.append(f"{network.key}: plugin {plugin_type!r}")
        if missing:
            raise LabError(
                "CNI plugins not found in "
                + ":".join(str(d) for d in [self.paths.bin, *self.cni_dirs])
                + ": "
                + "; ".join(missing)
                + " (the lab runs the real plugins; ipvlan, sriov and OVN-Kubernetes need "
                "what this host may not have)"
            )
        node = Node("node", masters=(), prefix=self.prefix)
        with self._lock:
            self.node = node
        self.record()
        self.runtime.exec_netns = node.ns
        for master in self.plan.masters:
            node.add_master(master.name, master.kind)
            if master.default_route:
                node.ns.add_default_route(master.name)
                with contextlib.suppress(NetnsError):  # a kernel without IPv6
                    node.ns.add_default_route(master.name, family=6)
        self.log(
            f"node {node.name}: " + (", ".join(f"{m.name} ({m.kind})" for m in self.plan.masters) or "no master links")
        )

    def write_manifest(self, name: str, *objects: Mapping[str, Any]) -> None:
        """One file of the runtime manifests dir (a multi-document YAML stream), replaced atomically."""
        write_atomically(self.paths.manifests / name, yaml.safe_dump_all([dict(o) for o in objects], sort_keys=False))

    def write_cluster_manifests(self) -> None:
        """Every Namespace, NAD and MultiNetworkPolicy of DIR, and the Pods that get no netns (no secondary
        network, hostNetwork or terminated): what the daemon reads before the first pod appears."""
        planned = {p.key for p in self.plan.pods}
        others = [o for o in self.plan.pod_objects if _object_key(o) not in planned]
        self.write_manifest("cluster.yaml", *[o for _, o in self.plan.objects], *others)

    def runtime_cluster(self) -> Cluster:
        """The cluster as the daemon sees it now (the runtime manifests dir)."""
        return load_dir(self.paths.manifests).cluster

    # ------------------------------------------------------------------ pods

    def add_pods(self, pods: Iterable[PodPlan] | None = None) -> list[LabPod]:
        """Create every planned pod (in parallel, each pod's attachments in order); raises LabError on the first
        failure, after every started pod has finished."""
        todo = list(self.plan.pods if pods is None else pods)
        if not todo:
            return []
        with ThreadPoolExecutor(max_workers=min(ADD_WORKERS, len(todo))) as pool:
            futures = [pool.submit(self.add_pod, p) for p in todo]
            errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
        return [self.pods[p.key] for p in todo]

    def add_pod(self, plan_pod: PodPlan) -> LabPod:
        """One pod: netns, the Pod object (Pending), the CNI ADD of every attachment, the Pod again (Running, with
        network-status). Returns when the last ADD has returned (`LabPod.added_at`)."""
        assert self.node is not None and self.runtime is not None
        label = f"{plan_pod.pod.namespace}-{plan_pod.pod.name}"
        ns = self.node.new_pod(label)
        pod = LabPod(plan_pod, ns, secrets.token_hex(32))
        with self._lock:
            self.pods[pod.key] = pod
        self.record()
        _disable_dad(ns)
        manifest = self._pod_file(pod)
        self.write_manifest(manifest, runtime_pod_manifest(plan_pod, self.node_name, None, "Pending"))
        for request in plan_pod.attachments:
            network = self.plan.networks[request.network]
            try:
                result = self.runtime.add(
                    network.conflist,
                    pod.cni_attachment(request, network),
                    capability_args=request.capability_args() or None,
                )
            except cniruntime.CniFailure as exc:
                raise LabError(
                    f"Pod {pod.key}: CNI ADD of {request.network} as {request.ifname} failed: {exc}"
                ) from exc
            pod.attachments.append(_attachment(request, result))
        pod.added_at = time.monotonic()
        self.write_manifest(manifest, runtime_pod_manifest(plan_pod, self.node_name, pod.network_status(), "Running"))
        return pod

    def delete_pod(self, key: str) -> list[str]:
        """CNI DEL of every attachment (reverse order, as Multus), then the netns; returns the DEL problems."""
        with self._lock:
            pod = self.pods.pop(key, None)
        if pod is None:
            return []
        problems = []
        if pod.server:
            pod.server.stop()
        if self.runtime is not None:
            for attachment in reversed(pod.attachments):
                network = self.plan.networks[attachment.request.network]
                try:
                    self.runtime.delete(network.conflist, pod.cni_attachment(attachment.request, network))
                except cniruntime.CniFailure as exc:
                    problems.append(f"Pod {key}: CNI DEL of {attachment.request.network}: {exc}")
        with contextlib.suppress(OSError):
            (self.paths.manifests / self._pod_file(pod)).unlink()
        pod.ns.delete()
        if self.node is not None:
            with contextlib.suppress(ValueError):
                self.node.pods.remove(pod.ns)
        self.record()
        return problems

    @staticmethod
    def _pod_file(pod: LabPod) -> str:
        return f"pod_{pod.plan.pod.namespace}_{pod.plan.pod.name}.yaml"  # "_" is in no Kubernetes name

    # ------------------------------------------------------------------ outside hosts

    def add_host(self, address: IPAddress, network_key: str) -> LabHost:
        """A host outside the cluster with `address` on `network_key`."""
        assert self.node is not None and self.runtime is not None
        with self._lock:
            existing = self.hosts.get((network_key, str(address)))
        if existing:
            return existing
        network = self.plan.networks.get(network_key)
        if network is None:
            raise LabError(f"outside host {address}: no pod of the lab is on {network_key}")
        prefix = self._prefix_for(network, address)
        name = f"mnplab-host-{network.nad.name}"[:60]
        conflist = host_attachment_config(network, f"{address}/{prefix}", name)
        if conflist is None:
            raise LabError(f"outside host {address}: {network_key} has no interface plugin to attach it with")
        ns = self.node.new_pod(f"host-{address}".replace(":", "-").replace(".", "-"))
        host = LabHost(address, network_key, ns, secrets.token_hex(32), conflist)
        with self._lock:
            self.hosts[(network_key, str(address))] = host
        self.record()
        _disable_dad(ns)
        attachment = cniruntime.Attachment(
            host.container_id, ns, "eth0", cniruntime.PodRef(HOST_NAMESPACE, host.label.replace(":", "-"))
        )
        try:
            self.runtime.add(conflist, attachment)
        except cniruntime.CniFailure as exc:
            raise LabError(f"outside host {address} on {network_key}: CNI ADD failed: {exc}") from exc
        return host

    def _prefix_for(self, network: Network, address: IPAddress) -> int:
        subnets = [n for n in on_link_prefixes(self.plan.manifests.cluster, network.key) if address in n]
        if not subnets:
            # the pods' real addresses on the network (host-local results carry the prefix length)
            for pod in self.pods.values():
                for att in pod.attachments:
                    if att.request.network != network.key:
                        continue
                    for cidr in att.result.addresses(att.request.ifname) or att.result.addresses():
                        net = ipaddress.ip_interface(cidr).network
                        if address in net:
                            subnets.append(net)
        if not subnets:
            raise LabError(
                f"outside host {address}: no subnet of {network.key} holds it (neither its IPAM config nor its "
                "pods' addresses and requested prefixes): the lab cannot put it on that network; probe an address "
                "inside one of them"
            )
        return max(subnets, key=lambda n: n.prefixlen).prefixlen

    # ------------------------------------------------------------------ listeners

    def start_listeners(self, wanted: Mapping[str, Sequence[tuple[Proto, int]]]) -> None:
        """Start the listeners: `wanted` maps a pod key or an outside host's address to (protocol, port) pairs.
        Started in parallel; each returns once its sockets are bound."""
        jobs: list[tuple[LabPod | LabHost, list[tuple[Proto, int]]]] = []
        for key, listeners in wanted.items():
            target: LabPod | LabHost | None = self.pods.get(key)
            if target is None:
                target = next((h for h in self.hosts.values() if h.label == key), None)
            if target is None or not listeners:
                continue
            jobs.append((target, sorted(set(listeners))))
        if not jobs:
            return

        def start(job: tuple[LabPod | LabHost, list[tuple[Proto, int]]]) -> None:
            target, listeners = job
            label = target.key if isinstance(target, LabPod) else target.label
            target.server = Server(target.ns, listeners, label=label, linger=self.linger)

        with ThreadPoolExecutor(max_workers=8) as pool:
            errors = [f.exception() for f in [pool.submit(start, job) for job in jobs]]
        self.record()
        for error in errors:
            if error is not None:
                raise LabError(f"listener: {error}")

    # ------------------------------------------------------------------ the end

    def teardown(self) -> list[str]:
        """Remove everything (never raises): servers, CNI DEL of every pod, namespaces, the work dir. Returns
        the problems met (a DEL that failed is reported, and its namespace is removed anyway)."""
        problems: list[str] = []
        for server in self.servers():
            server.stop()
        keys = list(self.pods)
        if keys:
            with ThreadPoolExecutor(max_workers=min(ADD_WORKERS, len(keys))) as pool:
                for found in pool.map(self._safe_delete_pod, keys):
                    problems.extend(found)
        with self._lock:
            hosts = list(self.hosts.values())
            self.hosts.clear()
        for host in hosts:
            host.ns.delete()
        if self.node is not None:
            self.node.delete()
        remaining = netns.leftover_netns(prefix=self.prefix)
        mine = {ns.name for ns in self.namespaces()}
        problems += [f"netns {n} could not be removed" for n in remaining if n in mine]
        shutil.rmtree(self.paths.workdir, ignore_errors=True)
        return problems

    def _safe_delete_pod(self, key: str) -> list[str]:
        try:
            return self.delete_pod(key)
        except Exception as exc:  # teardown goes on whatever happens
            return [f"Pod {key}: {exc}"]

    def release(self) -> None:
        """Keep everything after this process exits (`--keep`)."""
        for ns in self.namespaces():
            ns.release()
        self.record()


def _object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    return f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"


def _attachment(request: AttachmentRequest, result: cniruntime.CniResult) -> LabAttachment:
    cidrs = result.addresses(request.ifname) or result.addresses()
    ips = tuple(ipaddress.ip_interface(c).ip for c in cidrs)
    mac = next((i.mac or "" for i in result.interfaces if i.name == request.ifname and i.sandbox), "")
    return LabAttachment(request, result, ips, mac)


# ------------------------------------------------------------------------------------------------ --down


def read_record(workdir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((workdir / "lab.json").read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def down(workdir: Path) -> list[str]:
    """Remove a lab from its lab.json: its processes (by pid, only if they still are what the lab started),
    its namespaces (with whatever runs inside them) and the work dir. Returns what it removed."""
    doc = read_record(workdir)
    if doc is None:
        raise LabError(f"{workdir}: no lab.json; not a lab work dir")
    owner = int(doc.get("pid") or 0)
    if owner and owner != os.getpid() and "mnpctl" in _cmdline(owner) and "lab" in _cmdline(owner):
        raise LabError(f"{workdir}: its mnpctl lab (pid {owner}) is still running; stop it with Ctrl-C")
    done = []
    for name, pid in (doc.get("processes") or {}).items():
        line = _cmdline(int(pid))
        if line and str(workdir) in line:
            terminate_pid(int(pid))
            done.append(f"stopped {name} (pid {pid})")
    for name in doc.get("netns") or ():
        if (netns.NETNS_DIR / str(name)).exists():
            NetNS(str(name)).delete()
            done.append(f"removed netns {name}")
    shutil.rmtree(workdir, ignore_errors=True)
    done.append(f"removed {workdir}")
    return done


def labs() -> list[Path]:
    """Every lab work dir on this machine."""
    try:
        return sorted(p for p in WORK_ROOT.iterdir() if p.is_dir() and (p / "lab.json").exists())
    except FileNotFoundError:
        return []


def process_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def wait_pid_exit(pid: int, timeout: float) -> bool:
    """Wait for a process that is not our child to exit (a pidfd becomes readable then; no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def terminate_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM a process the lab started (by pid), wait for it; SIGKILL if it does not go. Never raises."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_pid_exit(pid, timeout):
            return


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, wait, SIGKILL: for the processes the lab started. Never raises."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    netns.reap(proc, timeout)
