"""`mnpctl drops [--follow [--interval S] [--count N] [--duration S]] [--log] [--json]`: what mnp's default deny
dropped, per pod, interface and direction — counted, and with `--log` packet by packet.

Every guarded interface has one counted drop per isolated direction — `counter drop comment "default deny
(policies)"`, the last rule of `ingress_<if>` / `egress_<if>` — so its packets and bytes are exactly the new
connections the policies refused (plus, in the plugin's pending table, everything but established flows and
neighbour discovery). Read from the live tables (`nft -j list table inet mnp` in each pod netns); a direction
that is not isolated has no drop rule and is not listed. `ct state invalid drop` is not counted.

`--follow` prints the totals, then every `--interval` seconds the directions whose counters grew, with the
growth (a counter that went down was reset — the table was recreated — and counts from zero); `--json` then
prints one JSON object per sample and line. It runs until Ctrl-C, for `--count` samples or for `--duration`.

`--log` (implies `--follow`) also prints each dropped packet as it happens:

    2026-05-09T07:35:27Z  ns1/a net1 ingress: dropped tcp 10.243.0.52:43210 → 10.243.0.10:9090 [S] (60 bytes)

The rule before each counted drop logs what it drops to nflog group 667 of the pod's netns, rate-limited (a burst
of 20, then 10 a second, per interface and direction: a flood is sampled, the counters count it all); the kernel
discards those messages while nobody listens. `--log` listens: one `tcpdump` on `nflog:667` in each guarded pod
netns (entered with nsenter) while it runs, all stopped when it ends. It needs tcpdump (`--tcpdump PATH`);
without it, `drops` says so and follows the counters only. One listener per netns can hold the group: a second
`drops --log` at the same time gets none. (A kernel `log` to the kernel log would be silent: the kernel ignores
it in non-initial network namespaces unless the host sets net.netfilter.nf_log_all_netns=1.) `--json` gives one
object per dropped packet, `{"time", "dropped": {pod, ifname, direction, packet}}`, between the samples.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from daemon.cli import Subparsers
from daemon.cli.droplog import LIMIT, DropLog, Event, LogProblem, Spawn, spawn_process
from daemon.cli.errors import InspectError
from daemon.cli.exitcodes import EXIT_OK
from daemon.cli.node import Inspector, LiveTable, pod_label, print_json, run_node_command
from daemon.cli.options import add_node_options
from daemon.cli.output import table
from shared.nft.render import DROP_LOG_GROUP
from shared.rules import EGRESS, INGRESS
from shared.state import StateEntry

Key = tuple[str, str, str]  # (netns, ifname, direction)
READY_TIMEOUT = 5.0  # seconds the tcpdumps of --log get to bind before the first interval starts


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


def pods_by_netns(inspector: Inspector) -> dict[str, list[StateEntry]]:
    entries, _ = inspector.entries()
    by_netns: dict[str, list[StateEntry]] = {}
    for entry in entries:
        if entry.netns:
            by_netns.setdefault(entry.netns, []).append(entry)
    return by_netns


def sample(inspector: Inspector) -> Sample:
    by_netns = pods_by_netns(inspector)
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
    duration: float | None = None,
    log: bool = False,
    tcpdump: str = "tcpdump",
    spawn: Spawn = spawn_process,
    which: Callable[[str], str | None] = shutil.which,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    if interval <= 0:
        raise InspectError("--interval must be more than 0", usage=True)
    if count is not None and count < 1:
        raise InspectError("--count must be at least 1", usage=True)
    if duration is not None and duration <= 0:
        raise InspectError("--duration must be more than 0", usage=True)
    follow = follow or log
    end = None if duration is None else clock() + duration
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
    restore = _sigterm_interrupts() if log else _nothing  # before any tcpdump starts
    droplog: DropLog | None = None
    previous, samples = first, 1
    try:
        droplog = _open_drop_log(inspector, tcpdump, spawn, which, as_json, out, err) if log else None
        while count is None or samples < count:
            wait = interval if end is None else min(interval, end - clock())
            if wait <= 0:
                break
            out.flush()
            if droplog is None:
                sleep(wait)
            else:
                _pump(droplog, wait, clock, as_json, out, err)
            current = sample(inspector)
            samples += 1
            if as_json:
                _json_line(current, previous, out)
            else:
                _text_deltas(current, previous, out, err)
            previous = current
            if droplog is not None:  # a pod gone: its tcpdump would keep the dead netns alive
                for netns in [n for n in droplog.listeners if inspector.netns_check(n) is not None]:
                    droplog.stop(netns)
        if droplog is not None:
            _pump(droplog, 0.0, clock, as_json, out, err)  # what arrived during the last sample
    except KeyboardInterrupt:
        out.write("\n")
    finally:
        if droplog is not None:
            droplog.stop()
        restore()
    return EXIT_OK


def _open_drop_log(
    inspector: Inspector,
    tcpdump: str,
    spawn: Spawn,
    which: Callable[[str], str | None],
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> DropLog | None:
    """Start a tcpdump in every live pod netns and wait until they listen; None (and why, on `err`) when tcpdump
    is not installed."""
    if which(tcpdump) is None:
        print(
            f"mnpctl drops: --log needs tcpdump, and {tcpdump!r} is not installed (apt-get install tcpdump); "
            "following the counters only",
            file=err,
        )
        return None
    targets = {n: es for n, es in pods_by_netns(inspector).items() if inspector.netns_check(n) is None}
    droplog = DropLog(targets, tcpdump=tcpdump, spawn=spawn, now=inspector.now)
    try:
        droplog.start()
        late = droplog.wait_ready(READY_TIMEOUT)
    except BaseException:
        droplog.stop()
        raise
    listening = droplog.listening()
    if as_json:
        doc = {"group": DROP_LOG_GROUP, "listening": listening, "starting": late, "pods": len(targets)}
        out.write(json.dumps({"time": _stamp(inspector.now()), "dropLog": doc}) + "\n")
    else:
        out.write(f"drop log: nflog group {DROP_LOG_GROUP} in {len(listening)} of {len(targets)} pod netns ({LIMIT})\n")
        if late:
            print(f"drop log: tcpdump not listening yet for {', '.join(late)}", file=err)
    _pump(droplog, 0.0, time.monotonic, as_json, out, err)  # the pods whose tcpdump failed at once
    out.flush()
    return droplog


def _pump(
    droplog: DropLog, seconds: float, clock: Callable[[], float], as_json: bool, out: TextIO, err: TextIO
) -> None:
    """Print the drop log's events as they come for `seconds`, then those queued by then (not more: a flood must
    not hold up the next sample)."""
    end = clock() + seconds
    while clock() < end:
        event = droplog.next(end - clock())
        if event is None:
            break
        _emit(event, as_json, out, err)
    for _ in range(droplog.events.qsize()):
        event = droplog.next(0.0)
        if event is None:
            break
        _emit(event, as_json, out, err)


def _emit(event: Event, as_json: bool, out: TextIO, err: TextIO) -> None:
    if as_json:
        out.write(json.dumps(event.to_json()) + "\n")
    elif isinstance(event, LogProblem):
        print(event.text(), file=err)
    else:
        out.write(event.text() + "\n")
    out.flush()


def _sigterm_interrupts() -> Callable[[], None]:
    """While the tcpdumps run, SIGTERM ends `drops` like Ctrl-C, so they are stopped too; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return _nothing

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return restore


def _nothing() -> None:
    return None


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
    parser.add_argument("--duration", type=float, metavar="S", help="with --follow: stop after S seconds")
    parser.add_argument(
        "--log",
        action="store_true",
        help=f"also print each dropped packet (rate-limited), from nflog group {DROP_LOG_GROUP} in every pod netns "
        "through tcpdump; implies --follow",
    )
    parser.add_argument(
        "--tcpdump", metavar="PATH", default="tcpdump", help="the tcpdump executable (default: tcpdump on PATH)"
    )
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
            duration=args.duration,
            log=args.log,
            tcpdump=args.tcpdump,
        ),
    )
