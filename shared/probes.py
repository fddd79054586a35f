"""Probes: the questions `mnpctl matrix` and `mnpctl lab` ask — may `from` reach `to` on `port/protocol`?

A probe file is a YAML list of `{from, to, port, protocol, network?, expect?}`. `from`/`to` is `namespace/pod`
or an IP address; an address no pod has is a host outside the cluster (matched only by ipBlocks) attached to a
network: the one `network` names, else the one whose on-link prefixes hold it (its NAD's IPAM subnets, or — with
static IPAM and per-pod `ips`, where the NAD names no subnet — the prefixes the pods request on it), else the only
secondary network of the pod at the other end. `network` is needed only when that leaves a choice (two pods, or
a pod and an address, that share more than one secondary network).
`expect: allow|deny` turns the matrix into a test: a probe whose verdict differs fails the run.

Without a probe file: every ordered pair of distinct pods sharing a network × every containerPort of the
destination.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from shared.model import PROTOCOLS, Cluster, Pod, normalise_network
from shared.rules import IPAddress, IPNetwork


@dataclass(frozen=True)
class Probe:
    source: str  # as given: "ns/pod" or an address
    target: str
    port: int
    protocol: str = "TCP"
    network: str | None = None
    expect: bool | None = None  # True allow, False deny, None: no expectation


@dataclass(frozen=True)
class Endpoint:
    address: IPAddress
    pod: Pod | None  # None: a host outside the cluster


@dataclass(frozen=True)
class ResolvedProbe:
    probe: Probe
    network: str
    source: Endpoint
    target: Endpoint


def parse_probes(raw: Any, where: str = "probes") -> tuple[list[Probe], list[str]]:
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [f"{where}: must be a YAML list of {{from, to, port, protocol}}"]
    probes: list[Probe] = []
    problems: list[str] = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{at}: must be a mapping with from, to, port, protocol")
            continue
        unknown = set(item) - {"from", "to", "port", "protocol", "network", "expect"}
        if unknown:
            problems.append(f"{at}: unknown field(s) {', '.join(sorted(unknown))}")
        missing = [k for k in ("from", "to", "port") if k not in item]
        if missing:
            problems.append(f"{at}: missing {', '.join(missing)}")
            continue
        port, protocol = item["port"], str(item.get("protocol", "TCP")).upper()
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(f"{at}.port: {port!r} is not a port number 1-65535")
            continue
        if protocol not in PROTOCOLS:
            problems.append(f"{at}.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
            continue
        expect = item.get("expect")
        if expect not in (None, "allow", "deny", True, False):
            problems.append(f"{at}.expect: {expect!r} is not allow or deny")
            continue
        probes.append(
            Probe(
                str(item["from"]),
                str(item["to"]),
                port,
                protocol,
                str(item["network"]) if item.get("network") else None,
                None if expect is None else expect in ("allow", True),
            )
        )
    return probes, problems


def default_probes(cluster: Cluster) -> list[Probe]:
    probes = []
    pods = [p for p in cluster.pods if p.is_active and p.secondary_attachments()]
    for src in pods:
        for dst in pods:
            if src is dst:
                continue
            # networks both are on with addresses of one IP version (a v4-only and a v6-only pod cannot talk)
            shared = [
                a.network
                for a in dst.secondary_attachments()
                if {ip.version for ip in a.ips} & {ip.version for ip in src.addresses_on(a.network)}
            ]
            for network in dict.fromkeys(shared):
                for cp in dst.container_ports:
                    probes.append(
                        Probe(src.key, dst.key, cp.port, cp.protocol, network if len(set(shared)) > 1 else None)
                    )
    return probes


def _pod(cluster: Cluster, key: str) -> Pod | None:
    return next((p for p in cluster.pods if p.key == key), None)


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def on_link_prefixes(cluster: Cluster, network: str) -> list[IPNetwork]:
    """The prefixes on the segment of `network`: its NAD's IPAM subnets, then the prefixes its pods request in
    `k8s.v1.cni.cncf.io/networks` (`"ips": ["10.10.1.10/16"]`, static IPAM's usual form, where the NAD names no
    subnet). Host routes (/32, /128) say nothing about the segment and are left out."""
    nad = cluster.nads.get(network)
    found: list[IPNetwork] = list(nad.subnets) if nad is not None else []
    for pod in cluster.pods:
        for request in pod.requests:
            if normalise_network(request.network, pod.namespace) != network:
                continue
            for text in request.ips:
                try:
                    net = ipaddress.ip_interface(text).network
                except ValueError:
                    continue
                if net.prefixlen != net.max_prefixlen and net not in found:
                    found.append(net)
    return found


def _networks(cluster: Cluster) -> list[str]:
    """Every secondary network a pod is on, or a NAD defines."""
    found = [a.network for p in cluster.pods for a in p.secondary_attachments()]
    return list(dict.fromkeys([*cluster.nads, *found]))


def _network_of_address(cluster: Cluster, address: IPAddress) -> list[str]:
    """Networks whose on-link prefixes or whose pods' addresses include `address`."""
    found = [n for n in _networks(cluster) if any(address in net for net in on_link_prefixes(cluster, n))]
    found += [a.network for p in cluster.pods for a in p.secondary_attachments() if address in a.ips]
    return list(dict.fromkeys(found))


def resolve(cluster: Cluster, probe: Probe) -> ResolvedProbe | str:
    """The network and addresses a probe means, or why it cannot be answered."""
    ends: list[Pod | IPAddress] = []
    for text in (probe.source, probe.target):
        address = _address(text)
        if address is not None:
            ends.append(address)
            continue
        pod = _pod(cluster, text if "/" in text else f"default/{text}")
        if pod is None:
            return f"{text!r} is neither an IP address nor a known pod (namespace/name)"
        ends.append(pod)
    wanted = normalise_network(probe.network, "default") if probe.network else None
    pods = [e for e in ends if isinstance(e, Pod)]
    candidates: list[str] | None = None
    for end in ends:
        if isinstance(end, Pod):
            nets = [a.network for a in end.secondary_attachments() if a.ips]
        else:
            nets = _network_of_address(cluster, end)
            owned = any(end in a.ips for p in cluster.pods for a in p.secondary_attachments())
            if not owned and wanted is not None and wanted in _networks(cluster):
                nets = [*nets, wanted]  # an outside host goes where the probe says
            elif not nets and len(pods) == 1:
                # an outside host on no known prefix: on the pod's own network, if the pod has only one
                nets = [a.network for a in pods[0].secondary_attachments() if a.ips]
                if len(set(nets)) > 1:
                    return (
                        f"{end} is on no known prefix of a network and {pods[0].key} is on several "
                        f"({', '.join(dict.fromkeys(nets))}): set 'network:' on the probe"
                    )
        candidates = nets if candidates is None else [n for n in candidates if n in nets]
    candidates = list(dict.fromkeys(candidates or []))
    if wanted is not None:
        if wanted not in candidates:
            return f"network {wanted} does not connect {probe.source} and {probe.target}"
        candidates = [wanted]
    if not candidates:
        return f"{probe.source} and {probe.target} share no secondary network with addresses"
    if len(candidates) > 1:
        return (
            f"{probe.source} and {probe.target} share several networks ({', '.join(candidates)}): "
            "set 'network:' on the probe"
        )
    network = candidates[0]

    # A pod end uses its first address on the network of the other end's IP version (a dual-stack pod probed
    # from an IPv6 address answers on its IPv6 address; two pods use IPv4 if both have it, else IPv6); an address
    # end is whoever has it, else an outside host.
    versions = {e.version for e in ends if not isinstance(e, Pod)}
    if not versions:
        common = set.intersection(*({a.version for a in e.addresses_on(network)} for e in ends if isinstance(e, Pod)))
        if not common:
            return f"{probe.source} and {probe.target} have no IP version in common on {network}"
        versions = {min(common)}

    def endpoint(end: Pod | IPAddress) -> Endpoint | None:
        if isinstance(end, Pod):
            addresses = [a for a in end.addresses_on(network) if not versions or a.version in versions]
            return Endpoint(addresses[0], end) if addresses else None
        owner = next((p for p in cluster.pods if p.is_active and end in p.addresses_on(network)), None)
        return Endpoint(end, owner)

    src, dst = endpoint(ends[0]), endpoint(ends[1])
    if src is None or dst is None:
        return f"no address on {network}" + (f" of IP version {min(versions)}" if versions else "")
    if src.pod is None and dst.pod is None:
        return "at least one side of a probe must be a pod (or a pod's address)"
    if src.address.version != dst.address.version:
        return f"{src.address} and {dst.address} are of different IP versions"
    return ResolvedProbe(probe, network, src, dst)
