"""`mnpctl rules POD [--iface IF] [--handles] [--json]`: the live `inet mnp` table of one pod, as the kernel has it.

POD is `namespace/name`, a pod name unique on this node, or a container ID (prefix). The table is listed inside
the pod's netns (`nsenter --net=… nft list table inet mnp`); element comments name the policy rules each element
comes from (`ns/policy ingress[0]`) and the default-deny rule names the policies that isolate the interface.
`--iface` keeps only that interface's chains and sets; `--handles` adds nft's rule handles (`nft -a`).
`--json` prints nft's own JSON (`nft -j`), filtered the same way.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import TextIO

from daemon.cli import Subparsers
from daemon.cli.errors import InspectError
from daemon.cli.exitcodes import EXIT_OK
from daemon.cli.node import Inspector, LiveTable, entry_json, pod_label, print_json, run_node_command
from daemon.cli.options import add_node_options
from shared.errors import NetnsGone
from shared.nft.errors import NftError, NotFoundError
from shared.nft.render import interface_names
from shared.state import StateEntry

_BLOCK = re.compile(r"^\t(?:chain|set|map) (?P<name>\S+) \{(?: # handle \d+)?$")


def filter_text(text: str, names: set[str]) -> str:
    """`nft list table` text with only the chains, sets and maps named in `names` (top-level blocks are one tab
    deep: `\\tchain NAME {` … `\\t}`)."""
    lines = text.splitlines()
    if not lines:
        return text
    head, body = lines[0], lines[1:]
    tail = body.pop() if body and body[-1] == "}" else ""
    kept: list[list[str]] = []
    inside = keep = False
    for line in body:
        if not inside:
            start = _BLOCK.match(line)
            if start:
                inside = True
                keep = start["name"] in names
                if keep:
                    kept.append([line])
            continue
        if keep:
            kept[-1].append(line)
        if line == "\t}":
            inside = False
    out = [head]
    for i, block in enumerate(kept):
        if i:
            out.append("")
        out.extend(block)
    out.append(tail)
    return "\n".join(out) + "\n"


def _pick_iface(entries: list[StateEntry], iface: str | None) -> str | None:
    if iface is None:
        return None
    names = [e.ifname for e in entries]
    if iface not in names:
        raise InspectError(
            f"{pod_label(entries[0])} has no guarded interface {iface!r} (it has {', '.join(names)})", usage=True
        )
    return iface


def _header(entries: list[StateEntry]) -> list[str]:
    first = entries[0]
    lines = [f"# pod {pod_label(first)}  container {first.container_id}  netns {first.netns}"]
    for e in entries:
        lines.append(f"# {e.ifname}: network {e.network or '?'}, {', '.join(e.ips) or 'no address'}")
    return lines


def _read(inspector: Inspector, entries: list[StateEntry], what: str) -> str | LiveTable:
    netns = entries[0].netns
    label = pod_label(entries[0])
    try:
        if what == "json":
            return inspector.table(netns)
        return inspector.table_text(netns, handles=what == "handles")
    except NetnsGone as exc:
        raise InspectError(f"{label}: netns gone: {exc}") from exc
    except NotFoundError as exc:
        raise InspectError(f"{label}: no mnp table in its netns {netns} (removed, or never installed)") from exc
    except NftError as exc:
        raise InspectError(f"{label}: nft failed in {netns}: {exc}") from exc


def rules(inspector: Inspector, pod: str, iface: str | None, handles: bool, as_json: bool, out: TextIO) -> int:
    entries = inspector.find_pod(pod)
    iface = _pick_iface(entries, iface)
    daemon = inspector.health()
    if as_json:
        live = _read(inspector, entries, "json")
        assert isinstance(live, LiveTable)
        print_json(
            {
                "pod": entries[0].pod,
                "containerID": entries[0].container_id,
                "netns": entries[0].netns,
                "interfaces": [entry_json(e) for e in entries],
                "iface": iface,
                "daemon": daemon.to_json(),
                "nftables": live.only(iface) if iface else list(live.items),
            },
            out,
        )
        return EXIT_OK
    text = _read(inspector, entries, "handles" if handles else "text")
    assert isinstance(text, str)
    if iface is not None:
        listed = [found["name"] for line in text.splitlines() if (found := _BLOCK.match(line))]
        text = filter_text(text, interface_names(iface, listed))
    out.write("\n".join([*_header(entries), f"# {daemon.summary()}", ""]) + "\n")
    out.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rules",
        help="the live nft table of one pod, policy names in its comments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pod", metavar="POD", help="namespace/name, a pod name unique on this node, or a container ID")
    parser.add_argument("--iface", metavar="IF", help="only this interface's chains and sets")
    parser.add_argument("-a", "--handles", action="store_true", help="show rule handles (nft -a)")
    add_node_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_node_command(
        args, lambda inspector: rules(inspector, args.pod, args.iface, args.handles, args.json, sys.stdout)
    )
