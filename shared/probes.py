"""Probes: the questions `mnpctl matrix` and `mnpctl lab` ask — may `from` reach `to` on `port/protocol`?

A probe file is a YAML list of `{from, to, port, protocol, network?, expect?}`. `from`/`to` is `namespace/pod`
or an IP address; an address no pod has is a host outside the cluster (matched only by ipBlocks) attached to the
network whose subnet holds it. `network` is needed only when two pods share more than one secondary network.
`expect: allow|deny` turns the matrix into a test: a probe whose verdict differs fails the run.

Without a probe file: every ordered pair of distinct pods sharing a network × every containerPort of the
destination.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from shared.model import PROTOCOLS, Cluster, IPAddress, Pod, normalise_network


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


def _network_of_address(cluster: Cluster, address: IPAddress) -> list[str]:
    """Networks whose NAD subnet or whose pods' addresses include `address`."""
    found = [key for key, nad in cluster.nads.items() if any(address in net for net in nad.subnets)]
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
    candidates: list[str] = []
    for end in ends:
        nets = (
            [a.network for a in end.secondary_attachments() if a.ips]
            if isinstance(end, Pod)
            else _network_of_address(cluster, end)
        )
        candidates = nets if not candidates and end is ends[0] else [n for n in candidates if n in nets]
    if probe.network:
        wanted = normalise_network(probe.network, "default")
        if wanted not in candidates:
            return f"network {wanted} does not connect {probe.source} and {probe.target}"
        candidates = [wanted]
    if not candidates:
        return f"{probe.source} and {probe.target} share no secondary network with addresses"
    if len(candidates) > 1:
        return f"{probe.source} and {probe.target} share several networks ({', '.join(candidates)}): set 'network'"
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
