"""`mnpctl status [--json]`: is mnpd healthy on this node, which sources are synced, the last sync, errors.

Asks mnpd's `/healthz` and `/readyz` (`--listen`, short timeout) and reads its status file (`--status-file`):
the sources and whether each completed its first list, when the file was last written (after every sync that
changed something and at least once per resync period — an old file means mnpd is not running or stuck), and
every interface mnpd could not program with the reason. Also counts the CNI plugin's state-dir entries. Works
while mnpd is down: it then says `daemon: not running / status file stale`.

The status file names the process that wrote it (pid, start time, pid namespace): when that process no longer
runs, mnpd is not running, whatever the file's age — `daemon: not running (status file from dead pid N, written
Xs ago)`. Also listed: the policies mnpd cannot use as written or that apply to no known network, each with what
it actually does, the objects from the API with parts mnpd cannot read (a garbled network-status annotation, a NAD
config that is no JSON object) with what it does about them, and what each source cannot use (a broken manifest
file keeps its last good version).

Exit status: 0 when mnpd answers healthy and ready, its status file is fresh and its writer alive, else 1.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any, TextIO

from daemon.cli import Subparsers
from daemon.cli.endpoints import DaemonHealth
from daemon.cli.errors import InspectError
from daemon.cli.exitcodes import EXIT_FAILED, EXIT_OK
from daemon.cli.node import Inspector, print_json, run_node_command
from daemon.cli.options import add_node_options
from daemon.cli.statusfile import format_age, records
from daemon.status import writer_alive


def unguarded_lines(doc: dict[str, Any] | None) -> list[str]:
    """mnpd's `unguarded` list (daemon/sources/adopt.py): selected interfaces that nothing enforces, and why."""
    return [
        f"{item.get('pod')} {item.get('ifname')} (network {item.get('network')}) unguarded: {item.get('message')}"
        for item in records(doc, "unguarded")
    ]


def _errors(health: DaemonHealth, problems: list[dict[str, str]]) -> list[str]:
    out = []
    for endpoint in (health.healthz, health.readyz):
        if endpoint is not None and endpoint.code is not None and not endpoint.ok:
            out.append(endpoint.describe())
    doc = health.status.doc or {}
    for item in records(doc, "interfaces"):
        if item.get("state") == "failed":
            who = item.get("pod") or str(item.get("containerID", ""))[:12]
            failures = item.get("failures") or 0
            out.append(f"{who} {item.get('ifname')}: failed ({failures} failures): {item.get('reason') or '?'}")
    if health.status.error and health.status.error != "missing":
        out.append(f"status file {health.status.describe()}")
    out += [f"unreadable state entry {p['path']}: {p['reason']}" for p in problems]
    return out


def status(inspector: Inspector, as_json: bool, out: TextIO) -> int:
    health = inspector.health()
    doc = health.status.doc or {}
    try:
        entries, problems = inspector.entries()
        state_dir: dict[str, Any] = {"path": inspector.state_dir, "entries": len(entries), "error": None}
    except InspectError as exc:  # an unreadable state dir is one more finding here, not the end
        entries, problems = [], []
        state_dir = {"path": inspector.state_dir, "entries": None, "error": str(exc)}
    problem_items = [{"path": p.path, "reason": p.reason} for p in problems]
    state_dir["unreadable"] = len(problems)
    raw_sources = doc.get("sources")
    sources: dict[str, Any] = raw_sources if isinstance(raw_sources, dict) else {}
    states = Counter(str(i.get("state")) for i in records(doc, "interfaces") if i.get("state"))
    errors = _errors(health, problem_items)
    if state_dir["error"]:
        errors.append(f"state dir: {state_dir['error']}")
    alive, writer = writer_alive(doc) if health.status.doc is not None else (None, "no status file")
    summary = health.summary()
    if alive is False:
        written = f"written {format_age(health.status.age)} ago"
        answering = health.healthz is not None and health.healthz.code is not None
        pid = doc["writer"]["pid"]
        summary = (
            f"daemon: health endpoint answers, but the status file is from dead pid {pid} ({written}; {writer})"
            if answering
            else f"daemon: not running (status file from dead pid {pid}, {written}; {writer})"
        )
    ok = health.healthy and health.ready is True and alive is not False
    policies = records(doc, "policies")
    objects = records(doc, "objects")
    raw_problems = doc.get("problems")
    input_problems = (
        {str(k): [str(m) for m in v] for k, v in raw_problems.items() if isinstance(v, list)}
        if isinstance(raw_problems, dict)
        else {}
    )
    if as_json:
        print_json(
            {
                "daemon": {**health.to_json(), "writer": {"alive": alive, "detail": writer}},
                "summary": summary,
                "policies": policies,
                "objects": objects,
                "inputProblems": input_problems,
                "node": doc.get("node"),
                "lastSync": doc.get("updated"),
                "ready": doc.get("ready"),
                "sources": sources,
                "interfaces": dict(sorted(states.items())),
                "stateDir": state_dir,
                "errors": errors,
                "unguarded": unguarded_lines(doc),
                "ok": ok,
            },
            out,
        )
        return EXIT_OK if ok else EXIT_FAILED
    lines = [summary]

    def row(label: str, text: str) -> None:
        lines.append(f"{label + ':':<13}{text}")

    for name, endpoint in (("healthz", health.healthz), ("readyz", health.readyz)):
        row(name, endpoint.describe() if endpoint else "not checked (--listen off)")
    row(
        "status file",
        health.status.describe() if health.status.doc is None else f"{health.status.path}, {health.status.describe()}",
    )
    if health.status.doc is not None:
        row("node", str(doc.get("node") or "?"))
        row("last sync", f"{doc.get('updated') or '?'} ({format_age(health.status.age)} ago)")
        listed = ", ".join(f"{name} {'synced' if synced else 'NOT synced'}" for name, synced in sorted(sources.items()))
        row("sources", listed or "none reported")
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
        row("interfaces", f"{counts} (as mnpd last wrote them)")
    entries_text = "unreadable" if state_dir["error"] else f"{len(entries)} entries"
    if problems:
        entries_text += f", {len(problems)} unreadable"
    row("state dir", f"{inspector.state_dir}: {entries_text}")
    row("policies", f"{len(policies)} not used as written:" if policies else "all used as written")
    for policy in policies:
        lines += _finding(f"{policy.get('policy')}", policy)
    row("objects", f"{len(objects)} with parts mnpd cannot read:" if objects else "all readable")
    for item in objects:
        lines += _finding(f"{item.get('kind')} {item.get('object')}", item)
    messages = [f"  {name}: {m}" for name, found in sorted(input_problems.items()) for m in found]
    row("input", f"{len(messages)} problems:" if messages else "all usable")
    lines += messages
    lines.append("errors:" + ("" if errors else " none"))
    lines += [f"  {e}" for e in errors]
    unguarded = unguarded_lines(doc)
    if unguarded:  # selected interfaces nothing enforces (daemon/sources/adopt.py)
        lines.append("unguarded:")
        lines += [f"  {u}" for u in unguarded]
    out.write("\n".join(lines) + "\n")
    return EXIT_OK if ok else EXIT_FAILED


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="mnpd's health on this node: endpoints, sources synced, last sync, errors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_node_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_node_command(args, lambda inspector: status(inspector, args.json, sys.stdout))


def _finding(name: str, item: dict[str, Any]) -> list[str]:
    """A policy or object the status file reports, with its problems: only a list of them is read (the file is
    input: a number or a string there is left out)."""
    raw = item.get("problems")
    messages = raw if isinstance(raw, list) else []
    return [f"  {name}: {item.get('effect')}", *(f"    {message}" for message in messages)]
