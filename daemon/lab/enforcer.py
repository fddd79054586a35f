"""Who programs the lab's pods, and how the lab knows they are programmed.

**`Mnpd`** — the real thing: `mnpd --manifests-dir <runtime dir> --state-dir <the plugin's> --status-file …
--node-name mnplab --listen off`, started in its own session (a Ctrl-C of the lab is the lab's to handle) and
stopped with SIGTERM. It learns interfaces from the state entries the `mnp` plugin writes at ADD and objects from
the manifests the lab writes, exactly as on a standalone host.

**Programmed** means what the kernel holds, not what anyone reports: for every interface the lab created, the
chains, sets and verdict-map entry of `inet mnp` in the pod's netns (`nft -j list table`, read back with
shared.nft.trace) equal what shared.nft.render makes of the compiler's rules for the lab's *current* manifests.
The daemon's status file is only the doorbell: the lab watches it with inotify (watchdog) and checks the kernel
when it changes — it is rewritten after every sync that changed anything — so there is no polling loop and no
sleep, and a deadline bounds the wait. The status is also where a pending or failed interface's reason comes
from when the deadline passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.config import DEFAULT_NETWORK_PLUGINS
from daemon.lab.build import Lab, LabError, stop_process
from daemon.lab.plan import LabPaths
from shared.compiler import compile_cluster
from shared.model import Cluster
from shared.netns import interface_index
from shared.nft.backend import interface_view, is_guarded
from shared.nft.errors import NftError
from shared.nft.exec import RealNft
from shared.nft.fake import FakeNft, TableView
from shared.nft.render import render_interface
from shared.nft.trace import TraceError, table_from_nft_json
from shared.rules import InterfaceRules

PROGRAM_TIMEOUT = 30.0


@dataclass(frozen=True)
class Target:
    """One interface the lab created, and the rules the compiler says it must have now."""

    pod: str
    ifname: str
    netns: str
    container_id: str
    network: str
    rules: InterfaceRules
    recorded: bool  # the daemon knows the interface: its network's chain has the mnp plugin, or mnpd adopts it

    @property
    def label(self) -> str:
        return f"{self.pod} {self.ifname}"


def targets(lab: Lab, cluster: Cluster | None = None, pods: Iterable[str] | None = None) -> list[Target]:
    """The lab's interfaces (of `pods`, default all) with their rules for `cluster` (default: the runtime dir)."""
    cluster = lab.runtime_cluster() if cluster is None else cluster
    compiled = compile_cluster(cluster, node=lab.node_name)
    wanted = set(lab.pods if pods is None else pods)
    out = []
    for key, pod in sorted(lab.pods.items()):
        if key not in wanted:
            continue
        for att in pod.attachments:
            rules = compiled.get((key, att.request.ifname))
            if rules is None:
                continue
            network = lab.plan.networks[att.request.network]
            # mnpd knows the interface from the plugin's entry, or adopts it (daemon/sources/adopt.py)
            known = network.chains_mnp or any(network.plugin_types[:1] == (t,) for t in DEFAULT_NETWORK_PLUGINS)
            out.append(Target(key, att.request.ifname, pod.ns.path, pod.container_id, network.key, rules, known))
    return out


# ------------------------------------------------------------------------------------------------ the kernel


Digest = tuple[Any, ...]


def interface_digest(table: TableView | None, ifname: str) -> Digest | None:
    """What of `table` belongs to `ifname` (shared.nft.backend.interface_view: verdict-map entries, chain rules,
    what the chain reaches — peer maps, port groups, port sets — per direction). None when the interface is not
    guarded at all (no table, or not in the maps)."""
    if table is None:
        return None
    part = interface_view(table, ifname)
    return part if is_guarded(part) else None


def describe_difference(actual: Digest | None, expected: Digest | None) -> str:
    """Where the kernel's state of an interface differs from the expected one, in a few words."""
    if actual is None:
        return "the interface is not in the mnp table's maps (no table, or not guarded)"
    if expected is None:
        return "the interface is guarded, but nothing isolates it"
    for (direction, jumps, rules, reached), (_, want_jumps, want_rules, want_reached) in zip(
        actual, expected, strict=True
    ):
        if jumps != want_jumps:
            return f"{direction}: the verdict map has {list(jumps)}, expected {list(want_jumps)}"
        if rules != want_rules:
            have = [r[0] for r in rules or ()]
            want = [r[0] for r in want_rules or ()]
            return f"{direction}: the chain's rules are {have}, expected {want}"
        have_objects, want_objects = dict(reached), dict(want_reached)
        for name in sorted(have_objects.keys() | want_objects.keys()):
            if have_objects.get(name) != want_objects.get(name):
                return f"{name} holds {_content(have_objects.get(name))}, expected {_content(want_objects.get(name))}"
    return "no difference"


def _content(content: Any) -> str:
    """A reached chain's rules or a set's elements, in a few words."""
    if content is None:
        return "nothing (no such object)"
    items = content[-1]  # a chain: (hook, rules); a set or map: (key, value type, flags, elements)
    return f"{len(items)} item(s) {list(items)[:4]}" + (" …" if len(items) > 4 else "")


def expected_digest(rules: InterfaceRules) -> Digest | None:
    """The digest of the table the renderer makes of `rules` (None: not isolated either way = unguarded is as
    good as an open chain)."""
    fake = FakeNft()
    # the digest leaves the dispatch key (the index) out: any index renders the same digest
    indexed = InterfaceRules(rules.pod, rules.ifname, rules.network, rules.ingress, rules.egress, rules.ifindex or 1)
    fake.run(render_interface(indexed))
    return interface_digest(fake.list_table(), rules.ifname)


def _open(rules: InterfaceRules) -> bool:
    return not rules.ingress.isolated and not rules.egress.isolated


def kernel_table(netns: str) -> TableView | None:
    try:
        listing = RealNft(netns).list_table_json()  # nft runs inside `netns`: indexes are printed as its names
        return table_from_nft_json(listing, ifindex_of=lambda name: interface_index(netns, name))
    except NftError:
        return None  # no table (yet)
    except TraceError as exc:
        raise LabError(f"{netns}: the mnp table holds rules the lab cannot read back: {exc}") from exc


def unprogrammed(items: Sequence[Target]) -> list[tuple[Target, str]]:
    """The targets whose kernel state differs from their rules, each with where (one `nft -j list` per netns,
    in parallel)."""
    by_netns: dict[str, list[Target]] = {}
    for t in items:
        by_netns.setdefault(t.netns, []).append(t)

    def check(netns: str) -> list[tuple[Target, str]]:
        table = kernel_table(netns)
        out = []
        for t in by_netns[netns]:
            actual = interface_digest(table, t.ifname)
            expected = expected_digest(t.rules)
            if actual != expected and not (actual is None and _open(t.rules)):
                out.append((t, describe_difference(actual, expected)))
        return out

    if not by_netns:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(by_netns))) as pool:
        return [t for found in pool.map(check, list(by_netns)) for t in found]


# ------------------------------------------------------------------------------------------------ enforcers


@dataclass
class Programmed:
    """The outcome of a wait: how long it took, and what is still not programmed at the deadline (with why)."""

    seconds: float
    missing: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing


def mnpd_command() -> list[str]:
    script = Path(sys.executable).parent / "mnpd"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "import sys; from daemon.main import main; sys.exit(main())"]


class _Doorbell:
    """Rings (wakes waiters) when a file changes: inotify through watchdog on its directory."""

    def __init__(self, path: Path) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        self.path = str(path)
        self.rings = 0
        self.cond = threading.Condition()
        bell = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                paths = {str(event.src_path), str(getattr(event, "dest_path", "") or "")}
                if bell.path in paths:
                    bell.ring()

        self.observer = Observer()
        self.observer.schedule(Handler(), os.path.dirname(self.path), recursive=False)
        self.observer.start()

    def ring(self) -> None:
        with self.cond:
            self.rings += 1
            self.cond.notify_all()

    def wait(self, seen: int, deadline: float) -> bool:
        """Wait until it rang after `seen` rings; False at the deadline."""
        with self.cond:
            while self.rings == seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
            return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.observer.stop()
            self.observer.join(5)


class Mnpd:
    """The real daemon on the lab (see the module docstring)."""

    name = "mnpd"

    def __init__(
        self, paths: LabPaths, node_name: str, extra_args: Sequence[str] = (), *, linger: bool = False
    ) -> None:
        self.paths = paths
        self.node_name = node_name
        self.extra_args = list(extra_args)
        self.linger = linger  # outlives the lab's process (--keep); else it gets SIGTERM when that dies
        self.proc: subprocess.Popen[bytes] | None = None
        self.bell: _Doorbell | None = None
        self.description = "mnpd"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def argv(self) -> list[str]:
        # Unless kept, mnpd gets SIGTERM if the lab's process dies without tearing down (kill -9): a daemon must
        # not outlive its throwaway node (util-linux setpriv sets PR_SET_PDEATHSIG, then execs mnpd).
        guard = [] if self.linger or shutil.which("setpriv") is None else ["setpriv", "--pdeathsig", "TERM", "--"]
        return [
            *guard,
            *mnpd_command(),
            "--manifests-dir",
            str(self.paths.manifests),
            "--state-dir",
            str(self.paths.state),
            "--status-file",
            str(self.paths.status_file),
            "--node-name",
            self.node_name,
            "--listen",
            "off",
            *self.extra_args,
        ]

    def start(self) -> None:
        self.bell = _Doorbell(self.paths.status_file)
        log = open(self.paths.daemon_log, "ab")  # noqa: SIM115 - the child keeps it; closed after Popen
        try:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        self.description = f"mnpd (pid {self.proc.pid})"
        threading.Thread(target=self._watch_exit, daemon=True).start()

    def _watch_exit(self) -> None:
        if self.proc is not None:
            self.proc.wait()
        if self.bell is not None:
            self.bell.ring()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.paths.daemon_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def status(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.paths.status_file.read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _why(self, target: Target) -> str:
        for item in self.status().get("interfaces") or ():
            if (
                isinstance(item, dict)
                and item.get("ifname") == target.ifname
                and target.pod
                in (
                    item.get("pod"),
                    item.get("containerID"),
                )
            ):
                state, reason = item.get("state", "?"), item.get("reason") or ""
                return f"mnpd says {state}" + (f": {reason}" if reason else "")
        return "mnpd does not list it" if self.status() else "mnpd wrote no status yet"

    def wait(self, items: Sequence[Target], timeout: float = PROGRAM_TIMEOUT) -> Programmed:
        assert self.bell is not None and self.proc is not None
        start = time.monotonic()
        deadline = start + timeout
        unknown = [t for t in items if not t.recorded]
        watched = [t for t in items if t.recorded]
        while True:
            seen = self.bell.rings
            left = unprogrammed(watched)
            if not left:
                missing = [
                    f"{t.label}: not programmed (its network's chain has no mnp plugin, its type is not adopted)"
                    for t in unknown
                    if not _open(t.rules)
                ]
                return Programmed(time.monotonic() - start, missing)
            if self.proc.poll() is not None:
                raise LabError(f"mnpd exited with status {self.proc.returncode}:\n{self.log_tail()}")
            if not self.bell.wait(seen, deadline):
                left = unprogrammed(watched)
                missing = [
                    f"{t.label}: not programmed after {timeout:.0f} s ({self._why(t)}; {why})" for t, why in left
                ]
                missing += [
                    f"{t.label}: not programmed (its network's chain has no mnp plugin, its type is not adopted)"
                    for t in unknown
                ]
                return Programmed(time.monotonic() - start, missing)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self.bell is not None:
            self.bell.close()

    def release(self) -> None:
        """Leave it running (`--keep`)."""
        if self.bell is not None:
            self.bell.close()
        self.proc = None
