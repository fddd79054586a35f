"""The synthetic cluster the daemon benchmarks run against: deterministic, sized by pods and policies.

One secondary network, `default/mnpb-net` (a macvlan NAD). The node under test (`mnpb-node`) has `local` pods,
all in namespace `mnpb-local` (a real netns each, created by the node builder); every other pod exists only in the
API, spread over namespaces of ~100 pods on 45 other nodes, with addresses drawn at random (seeded) from
10.200.0.0/16 so that a policy's peers do not collapse into a few prefixes.

Labels: pods carry `app: a0..a9` and `role: client|server|db|cache`; namespaces `team: t0..t4` and
`env: prod|dev`. Policies, all `policy-for: default/mnpb-net`:

* in `mnpb-local`: `base` selects every local pod — ingress TCP 8080 from `role=client` pods of `team=t1`
  namespaces, egress TCP 5432 to `role=db` pods of `team=t2` namespaces; and `app-a0`…`app-a9`, each selecting
  one app (11 local pods) — ingress on the named port `http` and 9090 from the local clients and from the same
  app's clients in `env=prod` namespaces;
* the rest spread over the other namespaces, each selecting one app: ingress from the namespace's own clients
  (port 80-82) and from one team's clients (443); every third one also egress to `env=prod` databases.

With 5,000 pods / 500 policies a local pod's interface admits ≈ 300 ingress and ≈ 250 egress peer addresses.
"""

from __future__ import annotations

import ipaddress
import json
import random
from dataclasses import dataclass, field
from typing import Any

__test__ = False

NAD_NAMESPACE, NAD_NAME = "default", "mnpb-net"
NETWORK = f"{NAD_NAMESPACE}/{NAD_NAME}"
LOCAL_NS = "mnpb-local"
NODE = "mnpb-node"
ROLES = ("client", "server", "db", "cache")
APPS = 10
LOCAL_SUBNET = ipaddress.ip_network("10.201.0.0/16")
REMOTE_SUBNET = ipaddress.ip_network("10.200.0.0/16")
PODS_PER_NAMESPACE = 100

JSON = dict[str, Any]


@dataclass(frozen=True)
class LocalPod:
    name: str
    ip: str
    labels: dict[str, str]

    @property
    def key(self) -> str:
        return f"{LOCAL_NS}/{self.name}"


def local_ip(index: int) -> str:
    """Local pod `index` → 10.201.<index // 200>.<10 + index % 200>."""
    return str(LOCAL_SUBNET.network_address + (index // 200) * 256 + 10 + index % 200)


def local_labels(index: int) -> dict[str, str]:
    return {"app": f"a{index % APPS}", "role": ROLES[(index // APPS) % len(ROLES)]}


def namespace(name: str, labels: dict[str, str] | None = None) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}},
    }


def nad() -> JSON:
    config = {"cniVersion": "1.0.0", "name": NAD_NAME, "type": "macvlan", "master": "m0", "mode": "bridge"}
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": NAD_NAME, "namespace": NAD_NAMESPACE},
        "spec": {"config": json.dumps(config)},
    }


def pod(ns: str, name: str, labels: dict[str, str], ip: str | None, node: str, *, uid: str | None = None) -> JSON:
    """A pod with one secondary attachment `net1` on the bench network. `ip=None`: Multus has not reported the
    network-status yet (the pod is scheduled, its sandbox is being set up)."""
    annotations = {"k8s.v1.cni.cncf.io/networks": f"{NETWORK}@net1"}
    if ip is not None:
        annotations["k8s.v1.cni.cncf.io/network-status"] = network_status(ip)
    meta: JSON = {"name": name, "namespace": ns, "labels": dict(labels), "annotations": annotations}
    if uid:
        meta["uid"] = uid
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "app", "image": "registry.example/app:1", "ports": [
                    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                ]},
            ],
        },
        "status": {"phase": "Running"},
    }  # fmt: skip


def network_status(ip: str, mac: str = "") -> str:
    net1: JSON = {"name": NETWORK, "interface": "net1", "ips": [ip]}
    if mac:
        net1["mac"] = mac
    return json.dumps([{"name": "cbr0", "interface": "eth0", "ips": ["172.31.0.2"], "default": True}, net1])


def policy(ns: str, name: str, select: dict[str, str], ingress: list[JSON], egress: list[JSON] | None = None) -> JSON:
    types = ["Ingress"] + (["Egress"] if egress is not None else [])
    spec: JSON = {"podSelector": {"matchLabels": select}, "policyTypes": types, "ingress": ingress}
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "annotations": {"k8s.v1.cni.cncf.io/policy-for": NETWORK}},
        "spec": spec,
    }


def peer(namespaces: dict[str, str] | None, pods: dict[str, str] | None) -> JSON:
    out: JSON = {}
    if namespaces is not None:
        out["namespaceSelector"] = {"matchLabels": namespaces}
    if pods is not None:
        out["podSelector"] = {"matchLabels": pods}
    return out


def tcp(*ports: int | str) -> list[JSON]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def base_policy(ports: tuple[int, ...] = (8080,)) -> JSON:
    """`mnpb-local/base`: selects every local pod (the part-2 change edits its ingress ports)."""
    ingress = [{"from": [peer({"team": "t1"}, {"role": "client"})], "ports": tcp(*ports)}]
    egress = [{"to": [peer({"team": "t2"}, {"role": "db"})], "ports": tcp(5432)}]
    return policy(LOCAL_NS, "base", {}, ingress, egress)


def app_policy(k: int) -> JSON:
    sources = [peer(None, {"role": "client"}), peer({"env": "prod"}, {"app": f"a{k}", "role": "client"})]
    ingress = [{"from": sources, "ports": tcp("http", 9090)}]
    return policy(LOCAL_NS, f"app-a{k}", {"app": f"a{k}"}, ingress)


def remote_policy(ns: str, m: int, k: int) -> JSON:
    ingress = [
        {"from": [peer(None, {"role": "client"})], "ports": tcp(80 + k % 3)},
        {"from": [peer({"team": f"t{k % 5}"}, {"role": "client"})], "ports": tcp(443)},
    ]
    egress = [{"to": [peer({"env": "prod"}, {"role": "db"})], "ports": tcp(5432)}] if m % 3 == 0 else None
    return policy(ns, f"p{m:04d}-a{k % APPS}", {"app": f"a{k % APPS}"}, ingress, egress)


@dataclass
class Cluster:
    namespaces: list[JSON] = field(default_factory=list)
    nads: list[JSON] = field(default_factory=list)
    pods: list[JSON] = field(default_factory=list)  # remote pods only; local ones are added by the node builder
    policies: list[JSON] = field(default_factory=list)
    local: list[LocalPod] = field(default_factory=list)

    def objects(self) -> list[JSON]:
        return [*self.namespaces, *self.nads, *self.pods, *self.policies]

    def remote_namespaces(self) -> dict[str, dict[str, str]]:
        return {n["metadata"]["name"]: n["metadata"]["labels"] for n in self.namespaces}


def build(pods: int, policies: int, local: int = 110, seed: int = 1) -> Cluster:
    """`pods` pods in total (of which `local` on the node under test), `policies` policies in total."""
    rng = random.Random(seed)
    remote = max(pods - local, 0)
    count = max(1, remote // PODS_PER_NAMESPACE)
    c = Cluster()
    c.namespaces.append(namespace("default"))
    c.namespaces.append(namespace(LOCAL_NS, {"team": "local", "env": "prod"}))
    names = [f"ns-{i:03d}" for i in range(count)]
    for i, name in enumerate(names):
        c.namespaces.append(namespace(name, {"team": f"t{i % 5}", "env": "prod" if i % 2 == 0 else "dev"}))
    c.nads.append(nad())
    addresses = rng.sample(range(1, REMOTE_SUBNET.num_addresses - 1), remote)
    for j in range(remote):
        i, k = j % count, j // count
        labels = {"app": f"a{k % APPS}", "role": ROLES[(k // APPS) % len(ROLES)]}
        ip = str(REMOTE_SUBNET.network_address + addresses[j])
        c.pods.append(pod(names[i], f"pod-{k:04d}", labels, ip, f"node-{j % 45:02d}"))
    c.local = [LocalPod(f"local-{i:03d}", local_ip(i), local_labels(i)) for i in range(local)]
    c.policies.append(base_policy())
    local_policies = min(APPS, max(policies - 1, 0))
    c.policies.extend(app_policy(k) for k in range(local_policies))
    for m in range(max(policies - 1 - local_policies, 0)):
        c.policies.append(remote_policy(names[m % count], m, m // count))
    return c


def local_pod_object(p: LocalPod, *, reported: bool = True, uid: str | None = None) -> JSON:
    return pod(LOCAL_NS, p.name, p.labels, p.ip if reported else None, NODE, uid=uid)
