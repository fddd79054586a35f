"""`mnpctl drops [--follow [--interval S] [--count N]] [--json]`: packets mnp's default deny dropped, per pod.

Every guarded interface has one counted drop per isolated direction — `counter drop comment "default deny
(policies)"`, the last rule of `ingress_<if>` / `egress_<if>` — so its packets and bytes are exactly the new
connections the policies refused (plus, in the plugin's pending table, everything but established flows and
neighbour discovery). Read from the live tables (`nft -j list table inet mnp` in each pod netns); a direction
that is not isolated has no drop rule and is not listed. `ct state invalid drop` is not counted.

`--follow` prints the totals, then every `--interval` seconds the directions whose counters grew, with the
growth (a counter that went down was reset — the table was recreated — and counts from zero); `--json` then
prints one JSON object per sample and line. It runs until Ctrl-C, or for `--count` samples.

There is no per-packet drop log: mnp's rules carry no `log` statement, and one could not be read cleanly from
here — the kernel suppresses `log` output from non-initial network namespaces unless the host-wide sysctl
net.netfilter.nf_log_all_netns=1 is set, and `log group N` (nflog) needs a netlink listener inside every pod
netns plus a rule that only the daemon may write (any rule mnpctl added would be flushed by mnpd's next
transaction). The counters are read-only and cost nothing per packet.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from daemon.cli import Subparsers
from daemon.cli.node import (
    EXIT_OK,
    InspectError,
    Inspector,
    LiveTable,
    add_node_options,
    pod_label,
    print_json,
    run_node_command,
)
from daemon.cli.output import table
from shared.model import EGRESS, INGRESS
from shared.state import StateEntry

Key = tuple[str, str, str]  # (netns, ifname, direction)


@dataclass(frozen=True)
class DropRow:
    pod: str
    container_id: str
    netns: str
    ifname: str
    direction: str  # ingress | egress
    chain: str
    mode: str  # isolated | pending
    policies: tuple[str, ...]
    packets: int
    bytes: int

    @property
    def key(self) -> Key:
        return (self.netns, self.ifname, self.direction)

    def to_json(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "containerID": self.container_id,
            "ifname": self.ifname,
            "direction": self.direction,
            "chain": self.chain,
            "mode": self.mode,
            "policies": list(self.policies),
            "packets": self.packets,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class Sample:
    time: float
    rows: list[DropRow]
    errors: list[dict[str, str]]  # {pod, ifname, reason}: pods whose table could not be read

    def by_key(self) -> dict[Key, DropRow]:
        return {row.key: row for row in self.rows}


def sample(inspector: Inspector) -> Sample:
    entries, _ = inspector.entries()
    by_netns: dict[str, list[StateEntry]] = {}
    for entry in entries:
        if entry.netns:
            by_netns.setdefault(entry.netns, []).append(entry)
    tables = inspector.tables(by_netns)
    rows: list[DropRow] = []
    errors: list[dict[str, str]] = []
    for netns, live in sorted(tables.items(), key=lambda item: pod_label(by_netns[item[0]][0])):
        owners = by_netns[netns]
        if isinstance(live, str):
            errors += [{"pod": pod_label(e), "ifname": e.ifname, "reason": live} for e in owners]
            continue
        rows += _rows(live, owners)
    return Sample(inspector.now(), rows, errors)


def _rows(live: LiveTable, owners: list[StateEntry]) -> list[DropRow]:
    first = owners[0]
    rows = []
    # the table's own interfaces: an interface whose entry went (or never came) still counts
    for ifname in sorted(set(live.interfaces()) | {e.ifname for e in owners}):
        for direction in (INGRESS, EGRESS):
            d = live.direction(direction, ifname)
            if d.drop is None or d.drop.packets is None:
                continue
            rows.append(
                DropRow(
                    pod_label(first),
                    first.container_id,
                    live.netns,
                    ifname,
                    d.direction,
                    d.chain,
                    d.mode,
                    d.policies,
                    d.drop.packets,
                    d.drop.bytes or 0,
                )
            )
    return rows


def _delta(now: DropRow, before: DropRow | None) -> tuple[int, int]:
    if before is None or now.packets < before.packets or now.bytes < before.bytes:
        return now.packets, now.bytes  # new, or reset: counted from zero
    return now.packets - before.packets, now.bytes - before.bytes


def _stamp(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def render(rows: list[DropRow]) -> str:
    header = ["POD", "IFACE", "DIRECTION", "PACKETS", "BYTES", "DEFAULT DENY OF"]
    cells = [
        [
            r.pod,
            r.ifname,
            r.direction,
            str(r.packets),
            str(r.bytes),
            "(pending: the plugin's closed table)" if r.mode == "pending" else ", ".join(r.policies) or "-",
        ]
        for r in rows
    ]
    return table(header, cells)


def _errors_text(errors: list[dict[str, str]]) -> list[str]:
    return [f"{e['pod']} {e['ifname']}: {e['reason']}" for e in errors]


def drops(
    inspector: Inspector,
    *,
    follow: bool,
    interval: float,
    count: int | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    if interval <= 0:
        raise InspectError("--interval must be more than 0", usage=True)
    if count is not None and count < 1:
        raise InspectError("--count must be at least 1", usage=True)
    daemon = inspector.health()
    first = sample(inspector)
    if as_json and not follow:
        print_json(
            {
                "daemon": daemon.to_json(),
                "time": _stamp(first.time),
                "drops": [r.to_json() for r in first.rows],
                "errors": first.errors,
            },
            out,
        )
        return EXIT_OK
    if as_json:
        _json_line(first, None, out, daemon=daemon.to_json())
    else:
        out.write(daemon.summary() + "\n")
        out.write(render(first.rows) if first.rows else "no drop counters (no isolated guarded interface)\n")
        for line in _errors_text(first.errors):
            print(line, file=err)
    if not follow:
        return EXIT_OK
    previous, samples = first, 1
    try:
        while count is None or samples < count:
            out.flush()
            sleep(interval)
            current = sample(inspector)
            samples += 1
            if as_json:
                _json_line(current, previous, out)
            else:
                _text_deltas(current, previous, out, err)
            previous = current
    except KeyboardInterrupt:
        out.write("\n")
    return EXIT_OK


def _json_line(current: Sample, previous: Sample | None, out: TextIO, **extra: Any) -> None:
    before = previous.by_key() if previous else {}
    items = []
    for row in current.rows:
        item = row.to_json()
        if previous is not None:
            item["deltaPackets"], item["deltaBytes"] = _delta(row, before.get(row.key))
        items.append(item)
    out.write(json.dumps({"time": _stamp(current.time), "drops": items, "errors": current.errors, **extra}) + "\n")


def _text_deltas(current: Sample, previous: Sample, out: TextIO, err: TextIO) -> None:
    before = previous.by_key()
    stamp = _stamp(current.time)
    for row in current.rows:
        packets, nbytes = _delta(row, before.get(row.key))
        if packets or nbytes:
            out.write(
                f"{stamp}  {row.pod} {row.ifname} {row.direction}: +{packets} packets +{nbytes} bytes "
                f"(total {row.packets})\n"
            )
    old_errors = {tuple(e.values()) for e in previous.errors}
    for error in current.errors:
        if tuple(error.values()) not in old_errors:
            print(f"{stamp}  {error['pod']} {error['ifname']}: {error['reason']}", file=err)


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "drops",
        help="default-deny drop counters per pod, interface and direction; --follow for their growth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-f", "--follow", action="store_true", help="keep sampling and print what grew (Ctrl-C ends)")
    parser.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between samples (default: 2)")
    parser.add_argument("--count", type=int, metavar="N", help="with --follow: stop after N samples")
    add_node_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_node_command(
        args,
        lambda inspector: drops(
            inspector,
            follow=args.follow,
            interval=args.interval,
            count=args.count,
            as_json=args.json,
            out=sys.stdout,
            err=sys.stderr,
        ),
    )
