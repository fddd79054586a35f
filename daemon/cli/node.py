"""What the node inspection commands (`mnpctl pods/rules/explain/drops/status`) read, and nothing more.

Three local sources, each usable without the others, so every command works while mnpd is down:

* the CNI plugin's **state dir** (shared.state): which pod interfaces the plugin closed, with netns, pod,
  network and addresses — the list of what to look at;
* each pod's **live table**, `nft -j list table inet mnp` run inside its netns (`nsenter --net=PATH`, through
  shared.netns.netns_command and the same runner seam as shared.nft.exec) — the truth of what is enforced:
  guarded interfaces (the vmaps), the `default deny (policies)` comments, the counters, the element comments
  (`LiveTable`, here, reading the listing only through the one reader, shared.nft.trace.NftListing);
* **mnpd's local status**: the status file it writes beside the state dir (daemon/cli/statusfile.py) and its
  `/healthz` and `/readyz` endpoints (daemon/cli/endpoints.py, short timeout).

`Inspector` reads them. Nothing here writes anything, talks to the API server or needs mnpd. Every external call
goes through a seam of `Inspector` (nft runner, HTTP getter, netns check, clock) so the unit tests feed canned
answers. The shared command-line options are daemon/cli/options.py.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TextIO

from daemon.cli.endpoints import HTTP_TIMEOUT, DaemonHealth, Endpoint, HttpGet, http_get, why_failed
from daemon.cli.errors import InspectError
from daemon.cli.exitcodes import EXIT_FAILED, EXIT_INVALID
from daemon.cli.options import listen_address
from daemon.cli.statusfile import StatusFile, read_status_file
from daemon.config import DEFAULT_LISTEN, default_status_file, parse_duration
from shared.errors import NetnsGone, NetnsUnusable, StateError
from shared.netns import check_netns, interface_index, netns_command
from shared.nft.backend import dispatch_elements
from shared.nft.errors import NftError, NotFoundError
from shared.nft.exec import Runner, subprocess_runner, wrap_error
from shared.nft.fake import TableView
from shared.nft.render import (
    DENY_COMMENT,
    FAMILY,
    NOT_ISOLATED,
    PENDING_POLICIES,
    TABLE,
    chain_name,
    interface_names,
)
from shared.nft.trace import BaseChain, NftListing, TraceError
from shared.rules import EGRESS, INGRESS
from shared.state import DEFAULT_STATE_DIR, Problem, StateEntry, StateStore

WORKERS = 8  # nsenter + nft processes at once when reading many pods

DIRECTIONS = ((INGRESS, "ingress"), (EGRESS, "egress"))
DIRECTION_OF = {label: direction for direction, label in DIRECTIONS}


UNUSABLE = "unusable: "


def netns_problem(path: str) -> str | None:
    """Why `path` is not (any more) a usable network namespace, or None when it is one. A path that exists but
    cannot be used (permission denied, not a network namespace) is not "gone": its reason starts with UNUSABLE.
    "Gone" is what it is for mnpd (shared.netns.netns_path_error with gone_needs_visible_dir): mnpctl may run in
    mnpd's container, and a netns directory it cannot see says nothing about the pod."""
    if not path:
        return "the state entry names no netns"
    try:
        check_netns(path, gone_needs_visible_dir=True)
    except NetnsGone as exc:
        return str(exc)
    except NetnsUnusable as exc:
        return UNUSABLE + str(exc)
    return None


# ------------------------------------------------------------------------------------------- the live table


@dataclass(frozen=True)
class RuleInfo:
    chain: str
    index: int  # position in its chain, as the tracer counts (0-based)
    handle: int | None
    text: str  # as nft prints it (shared.nft.trace), or its JSON for a shape mnp does not write
    comment: str | None
    packets: int | None  # None: no counter
    bytes: int | None

    @property
    def is_counted_drop(self) -> bool:
        return self.packets is not None and self.text.split()[-1:] == ["drop"]


@dataclass(frozen=True)
class Direction:
    """One direction of one interface as the live table enforces it.

    `mode`: `isolated` (policies below; set lookups then a counted drop), `open` (not isolated: accept),
    `pending` (the plugin's closed table, never programmed by mnpd), `missing` (not in the table)."""

    direction: str  # ingress | egress
    chain: str
    mode: str
    policies: tuple[str, ...] = ()
    truncated: bool = False  # the deny comment was cut at nft's comment limit: the list may be incomplete
    drop: RuleInfo | None = None

    def describe(self) -> str:
        if self.mode == "isolated":
            names = ", ".join(self.policies) or "(no policy named)"
            return names + (" …" if self.truncated else "")
        return f"({self.mode})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"chain": self.chain, "mode": self.mode, "policies": list(self.policies)}
        if self.truncated:
            out["truncated"] = True
        if self.drop is not None:
            out["dropped"] = {"packets": self.drop.packets, "bytes": self.drop.bytes}
        return out


@dataclass(frozen=True)
class LiveTable:
    """`nft -j list table inet mnp` (or `list ruleset`) of one netns: its `nftables` items, read on demand through
    the one reader (shared.nft.trace.NftListing) and sliced per interface by the one slice (render.interface_names)."""

    netns: str
    items: tuple[dict[str, Any], ...]  # the `nftables` array

    @staticmethod
    def parse(netns: str, text: str) -> LiveTable:
        try:
            return LiveTable(netns, NftListing.parse(text).items)
        except TraceError as exc:
            raise InspectError(f"{netns}: {exc}") from exc

    @cached_property
    def listing(self) -> NftListing:
        return NftListing(self.items)

    @property
    def exists(self) -> bool:
        return self.listing.has_table(FAMILY, TABLE)

    @cached_property
    def rules(self) -> dict[str, list[RuleInfo]]:
        """Each chain's rules with their handles and counters (a table that cannot be read: InspectError)."""
        return {
            chain.name: [
                RuleInfo(chain.name, index, r.handle, r.text, r.comment, r.packets, r.bytes)
                for index, r in enumerate(chain.rules)
            ]
            for chain in self.dispatch_view.chains.values()
        }

    @cached_property
    def chains(self) -> set[str]:
        return set(self.dispatch_view.chains)

    def guarded(self, direction: str) -> dict[str, str]:
        """The interfaces in `<direction>_ifindex` (by the name their element records; `<direction>_ifaces` in
        tables written before index dispatch): ifname → the chain it jumps to."""
        out: dict[str, str] = {}
        for _, name, verdict in dispatch_elements(self.dispatch_view, DIRECTION_OF[direction]):
            kind, _, target = verdict.partition(" ")
            if kind in ("jump", "goto") and target:
                out[name] = target
        return out

    @cached_property
    def dispatch_view(self) -> TableView:
        """The table through the one reader, any rule kept as text (a tampered table is still shown); its
        dispatch keys are not mapped back to indexes (each element records its interface's name)."""
        try:
            return self.listing.view(FAMILY, TABLE, ifindex_of=lambda name: 0, opaque=True)
        except TraceError as exc:
            raise InspectError(f"{self.netns}: the table cannot be read: {exc}") from exc

    def interfaces(self) -> list[str]:
        names = set(self.guarded("ingress")) | set(self.guarded("egress"))
        return sorted(names)

    def direction(self, direction: str, ifname: str) -> Direction:
        label = dict(DIRECTIONS)[direction]
        chain = chain_name(direction, ifname)
        if self.guarded(label).get(ifname) != chain or chain not in self.chains:
            return Direction(label, chain, "missing")
        for rule in self.rules.get(chain, ()):
            comment = rule.comment or ""
            if rule.text == "accept" and comment.startswith(NOT_ISOLATED):
                return Direction(label, chain, "open")
            if rule.is_counted_drop and comment.startswith(f"{DENY_COMMENT} ("):
                inner = comment[len(f"{DENY_COMMENT} (") :]
                truncated = not inner.endswith(")")
                inner = inner.removesuffix(")")
                if inner.startswith(PENDING_POLICIES):
                    return Direction(label, chain, "pending", drop=rule)
                policies = tuple(p.strip() for p in inner.split(",") if p.strip())
                return Direction(label, chain, "isolated", policies, truncated, rule)
        return Direction(label, chain, "isolated")  # a shape mnp does not write: isolated, no policy named

    def names_of(self, ifname: str) -> set[str]:
        """The chains, sets and maps that belong to one interface (its port groups found among the listed ones)."""
        return interface_names(ifname, self.listing.names(FAMILY, TABLE))

    def only(self, ifname: str) -> list[dict[str, Any]]:
        """The JSON items of one interface's chains, sets and rules (and the table and metainfo)."""
        return self.listing.items_of(FAMILY, TABLE, self.names_of(ifname))

    def view(self) -> TableView:
        """The tracer's view (shared.nft.trace); TraceError on a rule mnp does not write."""
        return self.listing.view(FAMILY, TABLE, ifindex_of=self._ifindex)

    def _ifindex(self, name: str) -> int:
        """The index of the interface nft printed as `name`: nft listed inside this netns (0: not found now)."""
        try:
            return interface_index(self.netns, name)
        except (OSError, NetnsGone, NetnsUnusable):
            return 0

    def base_chains(self) -> list[BaseChain]:
        """Base chains of *other* tables in this netns (from `list ruleset`): they see packets too."""
        return self.listing.base_chains(FAMILY, TABLE)


# ------------------------------------------------------------------------------------------- the inspector


@dataclass
class Inspector:
    state_dir: str = DEFAULT_STATE_DIR
    status_file: str | None = None  # None: beside the state dir
    listen: tuple[str, int] | None = None
    stale_after: float = 180.0
    nft: str = "nft"
    runner: Runner = subprocess_runner
    http: HttpGet = http_get
    netns_check: Callable[[str], str | None] = netns_problem
    now: Callable[[], float] = time.time
    http_timeout: float = HTTP_TIMEOUT
    _entries: tuple[list[StateEntry], list[Problem]] | None = field(default=None, repr=False)

    @staticmethod
    def from_args(args: argparse.Namespace, runner: Runner | None = None) -> Inspector:
        env = os.environ
        state_dir = args.state_dir or env.get("MNP_STATE_DIR") or DEFAULT_STATE_DIR
        try:
            stale_after = parse_duration(args.stale_after)
        except ValueError as exc:
            raise InspectError(f"--stale-after: {exc}", usage=True) from exc
        return Inspector(
            state_dir=state_dir,
            status_file=args.status_file or env.get("MNP_STATUS_FILE") or None,
            listen=listen_address(args.listen if args.listen is not None else env.get("MNP_LISTEN", DEFAULT_LISTEN)),
            stale_after=stale_after,
            nft=args.nft,
            runner=runner or default_runner,
        )

    @property
    def status_path(self) -> str:
        return self.status_file or default_status_file(self.state_dir)

    # -- the state dir

    def entries(self) -> tuple[list[StateEntry], list[Problem]]:
        """Every readable state entry, and every unreadable one (read once per command)."""
        if self._entries is None:
            try:
                self._entries = StateStore(self.state_dir).entries()
            except StateError as exc:
                raise InspectError(str(exc)) from exc
        return self._entries

    def find_pod(self, query: str) -> list[StateEntry]:
        """The entries (interfaces) of the pod `query` names: `namespace/name`, a name unique on this node, or a
        container ID (or a unique prefix of one, for pods the runtime gave no name)."""
        entries, _ = self.entries()
        by_container: dict[str, list[StateEntry]] = {}
        for entry in entries:
            by_container.setdefault(entry.container_id, []).append(entry)
        matches = [cid for cid, es in by_container.items() if es[0].pod == query]
        if not matches and "/" not in query:
            matches = [cid for cid, es in by_container.items() if es[0].pod_name == query]
        if not matches:
            matches = [cid for cid in by_container if cid == query]
        if not matches and len(query) >= 4:
            matches = [cid for cid in by_container if cid.startswith(query)]
        if not matches:
            known = sorted({pod_label(es[0]) for es in by_container.values()})
            hint = f"; pods here: {', '.join(known[:20])}" if known else f"; {self.state_dir} has no entries"
            raise InspectError(f"no guarded pod {query!r} on this node{hint}", usage=True)
        if len(matches) > 1:
            found = sorted((pod_label(by_container[c][0]), c) for c in matches)
            names = ", ".join(f"{label} (container {c[:12]})" for label, c in found)
            raise InspectError(f"{query!r} is ambiguous: {names}; give namespace/name or a container ID", usage=True)
        return sorted(by_container[matches[0]], key=lambda e: e.ifname)

    # -- mnpd

    def status(self) -> StatusFile:
        return read_status_file(self.status_path, self.now(), self.stale_after)

    def endpoint(self, path: str) -> Endpoint | None:
        if self.listen is None:
            return None
        host, port = self.listen
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"
        try:
            code, body = self.http(host, port, path, self.http_timeout)
        except (OSError, http.client.HTTPException) as exc:
            return Endpoint(url, error=why_failed(exc))
        return Endpoint(url, code, body)

    def health(self) -> DaemonHealth:
        return DaemonHealth(self.endpoint("/healthz"), self.endpoint("/readyz"), self.status())

    # -- pod netns

    def _nft(self, netns: str, args: Sequence[str]) -> str:
        problem = self.netns_check(netns)
        if problem is not None and problem.startswith(UNUSABLE):
            raise InspectError(f"netns {problem}")
        if problem is not None:
            raise NetnsGone(problem)
        rc, out, err = self.runner(netns_command(netns, [self.nft, *args]), "")
        if rc != 0:
            raise wrap_error(err, rc)
        return out

    def table(self, netns: str) -> LiveTable:
        """The live `inet mnp` table of `netns`. NetnsGone, NotFoundError (no table) or NftError."""
        return LiveTable.parse(netns, self._nft(netns, ["-j", "list", "table", FAMILY, TABLE]))

    def ruleset(self, netns: str) -> LiveTable:
        """Every table of `netns` (for the tracer's note on other base chains)."""
        return LiveTable.parse(netns, self._nft(netns, ["-j", "list", "ruleset"]))

    def table_text(self, netns: str, handles: bool = False) -> str:
        return self._nft(netns, [*(["-a"] if handles else []), "list", "table", FAMILY, TABLE])

    def tables(self, netns_paths: Iterable[str]) -> dict[str, LiveTable | str]:
        """The live table of each netns, or why it could not be read; several at once."""
        paths = sorted(set(netns_paths))

        def one(path: str) -> LiveTable | str:
            try:
                return self.table(path)
            except NetnsGone as exc:
                return f"netns gone: {exc}"
            except NotFoundError:
                return "no mnp table in the pod netns"
            except InspectError as exc:
                return str(exc)
            except NftError as exc:
                return f"nft failed: {exc}"

        if len(paths) <= 1:
            return {p: one(p) for p in paths}
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(paths))) as pool:
            return dict(zip(paths, pool.map(one, paths), strict=True))


default_runner: Runner = subprocess_runner  # tests replace it to run `mnpctl` end to end on canned nft output


def run_node_command(args: argparse.Namespace, body: Callable[[Inspector], int], err: TextIO | None = None) -> int:
    """Run a node command's body; an InspectError becomes one line on stderr and exit status 1 (2: bad input)."""
    err = err if err is not None else sys.stderr
    try:
        return body(Inspector.from_args(args))
    except InspectError as exc:
        print(f"mnpctl {args.command}: {exc}", file=err)
        return EXIT_INVALID if exc.usage else EXIT_FAILED


def pod_label(entry: StateEntry) -> str:
    """`namespace/name`, or the container ID's first 12 characters when the runtime gave no pod name."""
    return entry.pod or entry.container_id[:12]


def is_netns_gone(reason: str) -> bool:
    return reason.startswith("netns gone")


def print_json(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2)
    out.write("\n")


def entry_json(entry: StateEntry) -> dict[str, Any]:
    return {
        "pod": entry.pod,
        "containerID": entry.container_id,
        "ifname": entry.ifname,
        "network": entry.network,
        "ips": list(entry.ips),
        "netns": entry.netns,
    }
