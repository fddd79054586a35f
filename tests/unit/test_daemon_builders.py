"""Builders of raw Kubernetes objects and state entries shared by the daemon's tests (plus a check of them).

Address plan of the daemon tests: network `default/net-a` uses 10.10.0.0/24 and `default/net-b` 10.20.0.0/24
(pod addresses); 192.0.2.0/24 (RFC 5737 TEST-NET-1) stands for hosts outside the cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from daemon.sources.convert import API_KINDS, convert
from daemon.store import STATE, Store
from shared.model import NETWORK_STATUS, NETWORKS
from shared.state import StateEntry

JSON = dict[str, Any]
NET_A = "default/net-a"


def namespace(name: str, labels: Mapping[str, str] | None = None) -> JSON:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}


def pod(
    name: str,
    ns: str = "default",
    labels: Mapping[str, str] | None = None,
    nets: Sequence[tuple[str, str, str]] = (),  # (network, ifname, ip)
    *,
    uid: str | None = None,
    node: str = "node-a",
    ports: Sequence[tuple[str, int, str]] = (),  # (name, port, protocol)
    status: bool = True,
    phase: str = "Running",
) -> JSON:
    annotations = {NETWORKS: ", ".join(f"{net}@{ifname}" for net, ifname, _ in nets)} if nets else {}
    if status:
        entries = [{"name": "cbr0", "interface": "eth0", "ips": ["172.16.0.9"], "default": True}]
        entries += [{"name": net, "interface": ifname, "ips": [ip]} for net, ifname, ip in nets]
        annotations[NETWORK_STATUS] = json.dumps(entries)
    container: JSON = {"name": "c", "image": "x"}
    if ports:
        container["ports"] = [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid if uid is not None else f"uid-{ns}-{name}",
            "labels": dict(labels or {}),
            "annotations": annotations,
        },
        "spec": {"nodeName": node, "containers": [container]},
        "status": {"phase": phase},
    }


def nad(name: str, ns: str = "default", subnet: str = "10.10.0.0/24") -> JSON:
    ipam = {"type": "static", "addresses": [{"address": subnet}]}
    config = {"cniVersion": "1.0.0", "name": name, "type": "macvlan", "ipam": ipam}
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"config": json.dumps(config)},
    }


def policy(
    name: str,
    ns: str = "default",
    *,
    policy_for: str = NET_A,
    select: Mapping[str, str] | None = None,
    ingress: list[JSON] | None = None,
    egress: list[JSON] | None = None,
    types: list[str] | None = None,
) -> JSON:
    spec: JSON = {"podSelector": {"matchLabels": dict(select)} if select else {}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = types
    return {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "annotations": {"k8s.v1.cni.cncf.io/policy-for": policy_for}},
        "spec": spec,
    }


def from_pods(labels: Mapping[str, str], ports: Iterable[tuple[str, int]] = ()) -> JSON:
    rule: JSON = {"from": [{"podSelector": {"matchLabels": dict(labels)}}]}
    if ports:
        rule["ports"] = [{"protocol": proto, "port": port} for proto, port in ports]
    return rule


def entry(
    container: str, pod_name: str, ns: str = "default", ifname: str = "net1", ip: str = "", uid: str | None = None
) -> StateEntry:
    return StateEntry(
        container_id=container,
        ifname=ifname,
        netns=f"/run/netns/{container}",
        pod_namespace=ns,
        pod_name=pod_name,
        pod_uid=uid if uid is not None else f"uid-{ns}-{pod_name}",
        network="net-a",
        ips=(f"{ip}/24",) if ip else (),
        ifindex=2 if ifname == "net1" else 3,  # the interface's index in its pod netns, as the plugin records it
    )


def put(store: Store, *objects: JSON) -> None:
    """Upsert raw objects as a source would (a value the daemon does not keep deletes; problems are set)."""
    for obj in objects:
        kind = API_KINDS[obj["kind"]]
        key, value, uid, found = convert(kind, obj)
        store.set_object_problems(kind, key, found)
        if value is None:
            store.delete(kind, key)
        else:
            store.upsert(kind, key, value, uid)


def remove(store: Store, obj: JSON) -> None:
    kind = API_KINDS[obj["kind"]]
    key = convert(kind, obj).key
    store.delete(kind, key)
    store.set_object_problems(kind, key, None)


def attach(store: Store, *entries: StateEntry) -> None:
    for e in entries:
        store.upsert(STATE, e.key, e)


def test_builders_make_objects_the_model_reads_without_problems() -> None:
    from daemon.clock import FakeClock
    from daemon.store import POD, POLICY

    store = Store(FakeClock())
    put(store, pod("a", labels={"app": "a"}, nets=[(NET_A, "net1", "10.10.0.1")]), policy("p", ingress=[{}]))
    record = store.get(POD, "default/a")
    assert record.status_reported
    assert [str(ip) for ip in record.pod.addresses_on(NET_A)] == ["10.10.0.1"]
    assert store.get(POLICY, "default/p").valid
    put(store, pod("plain"))  # no secondary network: not kept
    assert store.get(POD, "default/plain") is None
