"""`mnpctl explain POD (--from ADDR | --to ADDR) --port PORT[/PROTO] [--iface IF]`: which rule decides a packet.

`--from ADDR`: a connection from ADDR to the pod (ingress, the input hook); `--to ADDR`: from the pod to ADDR
(egress, the output hook). The pod's own address is its address of ADDR's family on the interface (`--iface`, or
the one interface of the pod, or the one whose subnet holds ADDR). PORT/PROTO is e.g. `8080/tcp`, `53/udp` (no
protocol: tcp); `icmp` or `icmpv6` for a packet without ports.

The packet — by default the first one of a new connection (`--ct-state`) — is traced over the LIVE ruleset of the
pod's netns (`nft -j list ruleset` → shared.nft.trace): every rule that matched on its way, the verdict, and what
decided it, with the deciding element's comment naming the policy rule (`ns/policy ingress[0]`). Only mnp's
table is traced; base chains of other tables in the pod netns on the same hook are listed, because they see the
packet too. Exit status: 0 traced (1 when `--expect` is given and not met), 1 the table cannot be read, 2 bad
input.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from daemon.cli import Subparsers
from daemon.cli.errors import InspectError
from daemon.cli.exitcodes import EXIT_FAILED, EXIT_OK
from daemon.cli.node import Inspector, pod_label, print_json, run_node_command
from daemon.cli.options import add_node_options
from shared.errors import NetnsGone
from shared.nft.errors import NftError
from shared.nft.trace import PORT_PROTOCOLS, BaseChain, Packet, Step, Trace, TraceError, trace
from shared.state import StateEntry

_NO_PORT = {"icmp": "icmp", "icmpv6": "ipv6-icmp", "ipv6-icmp": "ipv6-icmp"}
CT_STATES = ("new", "established", "related", "invalid")


def parse_port(text: str) -> tuple[str, int | None]:
    """`8080/tcp` → ("tcp", 8080); `8080` → ("tcp", 8080); `icmp` → ("icmp", None)."""
    value = text.strip().lower()
    if value in _NO_PORT:
        return _NO_PORT[value], None
    port_text, _, proto = value.partition("/")
    proto = proto or "tcp"
    if proto in _NO_PORT:
        raise InspectError(f"--port {text}: {proto} has no ports; write --port {proto}", usage=True)
    if proto not in PORT_PROTOCOLS:
        raise InspectError(f"--port {text}: protocol must be one of {', '.join(PORT_PROTOCOLS)}", usage=True)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InspectError(f"--port {text}: {port_text!r} is not a port (1-65535)", usage=True)
    return proto, int(port_text)


def pick_interface(
    entries: list[StateEntry], iface: str | None, peer: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> StateEntry:
    label = pod_label(entries[0])
    names = ", ".join(e.ifname for e in entries)
    if iface is not None:
        chosen = [e for e in entries if e.ifname == iface]
        if not chosen:
            raise InspectError(f"{label} has no guarded interface {iface!r} (it has {names})", usage=True)
        return chosen[0]
    if len(entries) == 1:
        return entries[0]
    holding = [e for e in entries if any(_contains(ip, peer) for ip in e.ips)]
    if len(holding) == 1:
        return holding[0]
    raise InspectError(f"{label} has several guarded interfaces ({names}): give --iface", usage=True)


def _contains(interface_ip: str, peer: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return peer in ipaddress.ip_interface(interface_ip).network
    except ValueError:
        return False


def own_address(entry: StateEntry, version: int) -> str:
    for text in entry.ips:
        try:
            address = ipaddress.ip_interface(text).ip
        except ValueError:
            continue
        if address.version == version:
            return str(address)
    raise InspectError(
        f"{pod_label(entry)} {entry.ifname} has no IPv{version} address ({', '.join(entry.ips) or 'none recorded'})",
        usage=True,
    )


@dataclass(frozen=True)
class Explanation:
    entry: StateEntry
    direction: str  # ingress | egress
    packet: Packet
    result: Trace
    handles: dict[tuple[str, int], int | None]
    others: list[BaseChain]  # base chains of other tables on the packet's hook

    def handle(self, step: Step) -> int | None:
        return self.handles.get((step.chain, step.index))

    def step_text(self, step: Step) -> str:
        handle = self.handle(step)
        where = f"{step.chain} rule {step.index}" + (f" (handle {handle})" if handle is not None else "")
        note = f"  # {step.rule.comment}" if step.rule.comment else ""
        return f"{where}: {step.rule.text}{note}{_element_text(step)}"

    def decision(self) -> str:
        """`accept: g_ingress_net1_… rule 0 meta l4proto . th dport @g_ingress_net1_…_ports ← tcp . 8080 (ns/p
        ingress[0])`"""
        verdict = self.result.verdict
        decided = self.result.steps[-1] if self.result.steps and _final(self.result.steps[-1]) else None
        if decided is None:
            hook = self.packet.hook
            unguarded = not self.result.steps
            why = f" ({self.entry.ifname} is not guarded by mnp in this direction)" if unguarded else ""
            return f"{verdict}: the policy of mnp's base chain {hook}{why}"
        text = decided.rule.text
        if decided.element is not None:
            text = text.removesuffix(f" {verdict}")
            return f"{verdict}: {decided.chain} rule {decided.index} {text}{_element_text(decided, ' ← ')}"
        note = f" ({decided.rule.comment})" if decided.rule.comment else ""
        return f"{verdict}: {decided.chain} rule {decided.index} {text}{note}"

    def headline(self) -> str:
        p = self.packet
        what = f"{p.l4proto} dport {p.dport}" if p.dport is not None else p.l4proto
        network = f" (network {self.entry.network})" if self.entry.network else ""
        state = "a new connection" if p.ct_state == "new" else f"ct state {p.ct_state}"
        return (
            f"{pod_label(self.entry)} {self.entry.ifname}{network}, {self.direction}: "
            f"{p.saddr} → {p.daddr} {what}, {state}"
        )

    def other_notes(self) -> list[str]:
        return [
            f"note: table {c.family} {c.table} has base chain {c.name} on hook {c.hook} "
            f"(priority {c.prio}, policy {c.policy or 'accept'}), not traced: it sees this packet too"
            for c in self.others
        ]

    def to_json(self) -> dict[str, Any]:
        p = self.packet
        steps = [_step_json(s, self.handle(s)) for s in self.result.steps]
        decided = steps[-1] if self.result.steps and _final(self.result.steps[-1]) else None
        return {
            "pod": self.entry.pod,
            "containerID": self.entry.container_id,
            "ifname": self.entry.ifname,
            "network": self.entry.network,
            "direction": self.direction,
            "packet": {
                "hook": p.hook,
                "ifname": p.ifname,
                "saddr": p.saddr,
                "daddr": p.daddr,
                "l4proto": p.l4proto,
                "dport": p.dport,
                "ctState": p.ct_state,
            },
            "verdict": self.result.verdict,
            "reason": self.result.comment,
            "decision": self.decision(),
            "decidedBy": decided,
            "steps": steps,
            "otherBaseChains": [
                {k: getattr(c, k) for k in ("family", "table", "name", "hook", "prio", "policy")} for c in self.others
            ],
        }


def _final(step: Step) -> bool:
    """Whether a step gave the verdict itself (accept/drop), not a jump: by its rule, or by the element of a
    verdict map (a peer every port is open to)."""
    if step.element is not None and step.element.value in ("accept", "drop"):
        return True
    return step.rule.text.endswith((" accept", " drop")) or step.rule.text in ("accept", "drop")


def _element_text(step: Step, arrow: str = "  ← ") -> str:
    element = step.element
    if element is None:
        return ""
    value = f" : {element.value}" if element.value else ""
    note = f" ({element.comment})" if element.comment else ""
    return f"{arrow}{element.key}{value}{note}"


def _step_json(step: Step, handle: int | None) -> dict[str, Any]:
    element = step.element
    return {
        "chain": step.chain,
        "rule": step.index,
        "handle": handle,
        "text": step.rule.text,
        "comment": step.rule.comment,
        "element": None
        if element is None
        else {"key": element.key, "value": element.value, "comment": element.comment},
    }


def explain_packet(
    inspector: Inspector,
    pod: str,
    *,
    peer: str,
    ingress: bool,
    port: str,
    iface: str | None = None,
    ct_state: str = "new",
) -> Explanation:
    try:
        peer_address = ipaddress.ip_address(peer)
    except ValueError as exc:
        raise InspectError(f"{peer!r} is not an IP address", usage=True) from exc
    l4proto, dport = parse_port(port)
    if {"icmp": 4, "ipv6-icmp": 6}.get(l4proto, peer_address.version) != peer_address.version:
        raise InspectError(f"{l4proto} does not go with the IPv{peer_address.version} address {peer}", usage=True)
    entries = inspector.find_pod(pod)
    entry = pick_interface(entries, iface, peer_address)
    mine = own_address(entry, peer_address.version)
    saddr, daddr = (str(peer_address), mine) if ingress else (mine, str(peer_address))
    packet = Packet(
        "input" if ingress else "output",
        entry.ifname,
        saddr,
        daddr,
        l4proto,
        dport,
        ct_state=ct_state,  # type: ignore[arg-type]  # argparse limits it to CtState's values
    )
    label = pod_label(entry)
    try:
        live = inspector.ruleset(entry.netns)
    except NetnsGone as exc:
        raise InspectError(f"{label}: netns gone: {exc}") from exc
    except NftError as exc:
        raise InspectError(f"{label}: nft failed in {entry.netns}: {exc}") from exc
    if not live.exists:
        raise InspectError(f"{label}: no mnp table in its netns {entry.netns} (removed, or never installed)")
    try:
        view = live.view()
        result = trace(view, packet)
    except TraceError as exc:
        raise InspectError(f"{label}: the live table holds something mnp does not write: {exc}") from exc
    handles = {(name, index): r.handle for name, c in view.chains.items() for index, r in enumerate(c.rules)}
    others = [c for c in live.base_chains() if c.hook == packet.hook and _sees(c, packet)]
    return Explanation(entry, "ingress" if ingress else "egress", packet, result, handles, others)


def _sees(chain: BaseChain, packet: Packet) -> bool:
    family = chain.family
    return family == "inet" or (family == "ip" and packet.version == 4) or (family == "ip6" and packet.version == 6)


def explain(inspector: Inspector, args: argparse.Namespace, out: TextIO) -> int:
    if (args.source is None) == (args.destination is None):
        raise InspectError("give exactly one of --from ADDR (ingress) and --to ADDR (egress)", usage=True)
    found = explain_packet(
        inspector,
        args.pod,
        peer=args.source or args.destination,
        ingress=args.source is not None,
        port=args.port,
        iface=args.iface,
        ct_state=args.ct_state,
    )
    daemon = inspector.health()
    if args.json:
        print_json({**found.to_json(), "daemon": daemon.to_json()}, out)
    else:
        lines = [found.headline()]
        lines += [f"  {found.step_text(step)}" for step in found.result.steps]
        lines.append(found.decision())
        lines += found.other_notes()
        lines.append(f"# {daemon.summary()}")
        out.write("\n".join(lines) + "\n")
    if args.expect is not None and (found.result.verdict == "accept") != (args.expect == "allow"):
        return EXIT_FAILED
    return EXIT_OK


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "explain",
        help="which rule of a pod's live table decides a packet, and the policy behind it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pod", metavar="POD", help="namespace/name, a pod name unique on this node, or a container ID")
    peer = parser.add_mutually_exclusive_group(required=True)
    peer.add_argument("--from", dest="source", metavar="ADDR", help="ingress: a connection from ADDR to the pod")
    peer.add_argument("--to", dest="destination", metavar="ADDR", help="egress: a connection from the pod to ADDR")
    parser.add_argument(
        "--port", required=True, metavar="PORT/PROTO", help="destination port and protocol: 8080/tcp, 53/udp, icmp"
    )
    parser.add_argument("--iface", metavar="IF", help="the pod's interface (needed when it has several)")
    parser.add_argument(
        "--ct-state", choices=CT_STATES, default="new", help="conntrack state of the packet (default: new)"
    )
    parser.add_argument(
        "--expect", choices=("allow", "deny"), help="exit with status 1 unless the verdict is this (for scripts)"
    )
    add_node_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_node_command(args, lambda inspector: explain(inspector, args, sys.stdout))
