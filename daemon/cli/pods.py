"""`mnpctl pods [--json]`: every pod interface the CNI plugin closed on this node, and what guards it now.

One row per state-dir entry: pod, interface, network, addresses, the policies applied per direction, the sync
state and when mnpd last programmed it. Policies and state come from the pod's live table (what the kernel
enforces: the `default deny (policies)` comment, `not isolated`, or the plugin's `pending` form), the reason and
the last-programmed time from mnpd's status file when there is one. States:

* `programmed` — mnpd's rules are in place (`open` in a direction: no policy isolates it);
* `pending`    — still the plugin's closed table: mnpd has not programmed it (not running, not ready, or the pod
                 is not resolvable yet — the status file's reason says which);
* `error`      — no table, the interface is missing from it, nft failed, or mnpd's last attempt failed (the
                 interface keeps its previous rules);
* `netns gone` — the entry's netns no longer exists (the pod died without a CNI DEL; mnpd removes such entries);
* `open`       — an interface mnpd adopted (its NAD does not chain mnp) that it has not programmed yet: nothing
                 guards it until then.

After the table, the selected interfaces nothing enforces (mnpd's `unguarded` list: the NAD does not chain mnp
and adoption is off, the netns was not found, …).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from daemon.cli import Subparsers
from daemon.cli.exitcodes import EXIT_OK
from daemon.cli.node import Direction, Inspector, entry_json, is_netns_gone, pod_label, print_json, run_node_command
from daemon.cli.options import add_node_options
from daemon.cli.output import GREEN, RED, YELLOW, table, use_colour
from daemon.cli.status import unguarded_lines
from shared.rules import EGRESS, INGRESS
from shared.state import StateEntry

PROGRAMMED, PENDING, ERROR, NETNS_GONE, OPEN = "programmed", "pending", "error", "netns gone", "open"
_COLOURS = {PROGRAMMED: GREEN, PENDING: YELLOW, ERROR: RED, NETNS_GONE: RED, OPEN: RED}


@dataclass(frozen=True)
class PodInterface:
    entry: StateEntry
    state: str
    reason: str
    ingress: Direction | None  # None: the live table could not be read
    egress: Direction | None
    status: dict[str, Any] | None  # mnpd's status file item, if any

    @property
    def network(self) -> str:
        network = (self.status or {}).get("network")
        return network if isinstance(network, str) and network else self.entry.network

    @property
    def last_programmed(self) -> str | None:
        value = (self.status or {}).get("lastProgrammed")
        return value if isinstance(value, str) else None

    def policies(self, direction: Direction | None) -> list[str]:
        """The live table's policy names; mnpd's list when the table's comment was cut at nft's limit."""
        if direction is None:
            return []
        if direction.truncated and self.status:
            recorded = self.status.get(direction.direction)
            from_status = recorded.get("policies") if isinstance(recorded, dict) else None
            if isinstance(from_status, list):
                return [str(p) for p in from_status]
        return list(direction.policies)

    def describe(self, direction: Direction | None) -> str:
        if direction is None:
            return "-"
        if direction.mode == "isolated" and direction.truncated and self.status:
            return ", ".join(self.policies(direction))
        return direction.describe()

    def to_json(self) -> dict[str, Any]:
        out = entry_json(self.entry)
        out["network"] = self.network
        out["state"] = self.state
        out["reason"] = self.reason
        for direction in (self.ingress, self.egress):
            if direction is not None:
                item = direction.to_json()
                item["policies"] = self.policies(direction)
                item.pop("truncated", None)
                out[direction.direction] = item
        out["lastProgrammed"] = self.last_programmed
        status = self.status or {}
        out["daemon"] = {k: status.get(k) for k in ("state", "reason", "failures", "rules")} if status else None
        return out


def _adopted_open(entry: StateEntry, live: Any, item: dict[str, Any] | None) -> bool:
    """An adopted interface mnpd has not programmed has no table, or is not in it: nothing guards it."""
    if (item or {}).get("state") == "programmed" or live is None:
        return False
    if isinstance(live, str):
        return not is_netns_gone(live)
    return "missing" in (live.direction(INGRESS, entry.ifname).mode, live.direction(EGRESS, entry.ifname).mode)


def collect(inspector: Inspector) -> list[PodInterface]:
    entries, _ = inspector.entries()
    status = inspector.status().interfaces()
    tables = inspector.tables(e.netns for e in entries if e.netns)
    rows = []
    for entry in entries:
        item = status.get(entry.key)
        live = tables.get(entry.netns) if entry.netns else "the state entry names no netns"
        if entry.adopted and _adopted_open(entry, live, item):
            rows.append(PodInterface(entry, OPEN, "adopted: open until programmed", None, None, item))
            continue
        if live is None or isinstance(live, str):
            reason = live or "not read"
            rows.append(PodInterface(entry, NETNS_GONE if is_netns_gone(reason) else ERROR, reason, None, None, item))
            continue
        ingress, egress = live.direction(INGRESS, entry.ifname), live.direction(EGRESS, entry.ifname)
        modes = {ingress.mode, egress.mode}
        daemon_state = (item or {}).get("state")
        daemon_reason = str((item or {}).get("reason") or "")
        if "missing" in modes:
            state, reason = ERROR, f"{entry.ifname} is not in the pod's mnp table (removed behind mnp's back?)"
        elif daemon_state == "failed":
            state, reason = ERROR, f"mnpd could not program it, previous rules stay: {daemon_reason}"
        elif "pending" in modes:
            state = PENDING
            reason = daemon_reason or "the plugin's closed table: not programmed by mnpd yet"
        else:
            state = PROGRAMMED
            reason = daemon_reason if daemon_state not in (None, "programmed") else ""
        rows.append(PodInterface(entry, state, reason, ingress, egress, item))
    return sorted(rows, key=lambda r: (pod_label(r.entry), r.entry.container_id, r.entry.ifname))


def render(rows: list[PodInterface], colour: bool) -> str:
    header = ["POD", "IFACE", "NETWORK", "IPS", "STATE", "INGRESS", "EGRESS", "LAST PROGRAMMED", "REASON"]
    cells = [
        [
            pod_label(r.entry),
            r.entry.ifname,
            r.network or "-",
            ",".join(r.entry.ips) or "-",
            r.state,
            r.describe(r.ingress),
            r.describe(r.egress),
            r.last_programmed or "-",
            r.reason,
        ]
        for r in rows
    ]
    colours: list[list[str | None]] = [
        [None, None, None, None, _COLOURS.get(r.state), None, None, None, None] for r in rows
    ]
    return table(header, cells, colours, colour)


def pods(inspector: Inspector, as_json: bool, out: TextIO, err: TextIO) -> int:
    _, problems = inspector.entries()
    health = inspector.health()
    rows = collect(inspector)
    if as_json:
        print_json(
            {
                "daemon": health.to_json(),
                "stateDir": inspector.state_dir,
                "interfaces": [r.to_json() for r in rows],
                "problems": [{"path": p.path, "reason": p.reason} for p in problems],
                "unguarded": unguarded_lines(inspector.status().doc),
            },
            out,
        )
    else:
        out.write(health.summary() + "\n")
        if rows:
            out.write(render(rows, use_colour(out)))
        else:
            out.write(f"no guarded pod interfaces (state dir {inspector.state_dir} has no entries)\n")
        for line in unguarded_lines(inspector.status().doc):
            out.write(line + "\n")
    for problem in problems:
        print(f"warning: unreadable state entry {problem.path}: {problem.reason}", file=err)
    return EXIT_OK


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "pods",
        help="guarded pod interfaces on this node: network, IPs, policies applied, sync state",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_node_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_node_command(args, lambda inspector: pods(inspector, args.json, sys.stdout, sys.stderr))
