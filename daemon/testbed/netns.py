"""Network namespaces, "node" netns with macvlan masters, traffic servers and probes — real packets, nothing
touched outside the namespaces created here.

`mnpctl lab` builds a throwaway node from manifests with these, and the test suite uses the very same code, so
what the lab reports and what the tests assert come from one place:

* `NetNS` — a named netns under /run/netns with a unique, recognisable name `<prefix><pid>-<random>-<label>`.
  The prefix is per user of the module (`mnpt-`, the default, for the tests; `mnplab-` for the lab); the creating
  process id in the name lets a sweeper tell a namespace leaked by a dead run from one a live run still uses.
  Deletion never raises; an `atexit` hook deletes whatever was not deleted or explicitly `release()`d
  (`mnpctl lab --keep`).
* `Node` — a "node" netns that owns the macvlan masters (a veth pair with both ends up, or a port-less bridge).
  CNI plugins run *inside* it, so no link is ever created in the host's root netns.
* Traffic servers, probes and the `Hammer` run in a *child process* that enters the target netns with
  `setns(2)`; the calling process and its threads never switch namespaces. Servers report readiness on a pipe
  (waited for with a deadline, never a sleep) and exit by themselves when their stdin closes, i.e. also when the
  caller dies (unless started with `linger=True`). Probes of one source netns run concurrently in one child;
  `probe_matrix` runs several source namespaces in parallel.
* `leftover_netns` / `leftover_processes` / `check_leftovers` / `sweep_stale_netns` — leak checks and cleanup.

Namespaces, links, addresses and routes go through netlink with pyroute2, which the plugin and the daemon do not
use, so these helpers cannot mask a bug in the code they exercise; `NetNS.run` executes a program inside the netns
with `ip netns exec` (which also gives it the namespace's own /sys).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pyroute2 import IPRoute, NetlinkError
from pyroute2 import config as pyroute2_config
from pyroute2 import netns as pyroute2_netns

from shared.ifname import ifname_problem

__all__ = [
    "NETNS_DIR",
    "PREFIX",
    "Attempt",
    "Connection",
    "Hammer",
    "Link",
    "MasterKind",
    "NetNS",
    "NetnsError",
    "Node",
    "Probe",
    "ProbeResult",
    "Proto",
    "Server",
    "check_leftovers",
    "cleanup_all",
    "have_netns_support",
    "leftover_netns",
    "leftover_processes",
    "list_netns",
    "owner_pid",
    "probe_matrix",
    "probe_once",
    "release_servers",
    "run_probes",
    "stop_servers",
    "sweep_stale_netns",
    "tcp_server",
    "udp_echo_server",
    "unique_name",
]

PREFIX = "mnpt-"  # the tests'; the lab names its own (`mnplab-`, daemon/lab/build.py)
NETNS_DIR = Path("/run/netns")
MasterKind = Literal["veth", "bridge"]
IFF_UP = 0x1  # <linux/if.h>

# pyroute2 opens a socket in another netns from a fork()ed child, which it ends with SIGTERM. Without this the child
# keeps the parent's handlers: `mnpctl lab` turns SIGTERM into KeyboardInterrupt, so the child would unwind a copy
# of the lab's stack and run its teardown. With it the child takes SIGTERM's default action and just ends.
pyroute2_config.disable_mp_signal = True
RT_SCOPE_UNIVERSE = 0  # <linux/rtnetlink.h>: a global address
Proto = Literal["tcp", "udp"]

_LABEL_RE = re.compile(r"[^a-z0-9-]+")


class NetnsError(RuntimeError):
    """A namespace-level command failed; carries the command, return code and stderr."""

    def __init__(self, argv: Sequence[str], rc: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} failed (rc {rc}): {stderr.strip()}")
        self.argv = list(argv)
        self.rc = rc
        self.stderr = stderr


def _run(
    argv: Sequence[str], *, check: bool = True, input: str | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(argv, proc.returncode, proc.stderr)
    return proc


def have_netns_support() -> str | None:
    """Return why real-netns tests cannot run here, or None if they can (root and ``ip`` present for `run`)."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "iproute2 'ip' not found"
    return None


def _netlink_error(what: str, exc: NetlinkError | OSError) -> NetnsError:
    code = exc.code if isinstance(exc, NetlinkError) else (exc.errno or 1)
    return NetnsError(["netlink", *what.split()], code, os.strerror(code) if code > 0 else str(exc))


@dataclass(frozen=True)
class Link:
    """One link of a netns, as netlink reports it."""

    ifname: str
    index: int
    up: bool  # administratively up (IFF_UP)
    operstate: str
    mac: str


def unique_name(label: str = "ns", *, prefix: str = PREFIX) -> str:
    """`<prefix><pid>-<4 hex>-<label>`: unique, attributable to this process, sortable by run."""
    clean = _LABEL_RE.sub("-", label.lower()).strip("-")[:24] or "ns"
    return f"{prefix}{os.getpid()}-{secrets.token_hex(2)}-{clean}"


# --------------------------------------------------------------------------------------------
# NetNS


_live_lock = threading.Lock()
_live_netns: dict[str, NetNS] = {}


class NetNS(os.PathLike[str]):
    """A named network namespace (/run/netns/NAME). `os.fspath(ns)` is its path.

    `NetNS.create()` makes a new one (loopback up) that this process owns: it is deleted at exit unless deleted
    or `release()`d before. `NetNS(name)` wraps an existing one without owning it (`delete()` still works on it).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def create(cls, label: str = "ns", *, lo_up: bool = True, prefix: str = PREFIX) -> NetNS:
        ns = cls(unique_name(label, prefix=prefix))
        try:
            pyroute2_netns.create(ns.name)
        except OSError as exc:
            raise _netlink_error(f"netns add {ns.name}", exc) from exc
        with _live_lock:
            _live_netns[ns.name] = ns
        try:
            if lo_up:
                ns.set_up("lo")
        except BaseException:
            ns.delete()
            raise
        return ns

    @property
    def path(self) -> str:
        return str(NETNS_DIR / self.name)

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"NetNS({self.name!r})"

    def __enter__(self) -> NetNS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def exec_prefix(self) -> list[str]:
        """argv prefix that runs a command inside this netns."""
        return ["ip", "netns", "exec", self.name]

    def run(
        self, *argv: str, check: bool = True, input: str | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the netns (``ip netns exec``); raises NetnsError if check and rc != 0."""
        return _run([*self.exec_prefix(), *argv], check=check, input=input, timeout=timeout)

    @contextlib.contextmanager
    def netlink(self, what: str) -> Iterator[IPRoute]:
        """A netlink socket inside the netns; a netlink error becomes a NetnsError naming `what`."""
        try:
            with IPRoute(netns=self.name) as ipr:
                yield ipr
        except (NetlinkError, OSError) as exc:
            raise _netlink_error(f"{what} in {self.name}", exc) from exc

    def _index(self, ipr: IPRoute, ifname: str) -> int:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise NetnsError(["netlink", "link", ifname], errno.ENODEV, f"no link {ifname} in {self.name}")
        return int(found[0])

    def set_up(self, ifname: str, up: bool = True) -> None:
        with self.netlink(f"link set {ifname} {'up' if up else 'down'}") as ipr:
            ipr.link("set", index=self._index(ipr, ifname), state="up" if up else "down")

    def add_veth(self, name: str, peer: str) -> None:
        with self.netlink(f"link add {name} veth peer {peer}") as ipr:
            ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer})

    def add_bridge(self, name: str) -> None:
        with self.netlink(f"link add {name} bridge") as ipr:
            ipr.link("add", ifname=name, kind="bridge")

    def add_address(self, ifname: str, cidr: str) -> None:
        """Add ``addr/prefix`` to a link."""
        iface = ipaddress.ip_interface(cidr)
        with self.netlink(f"addr add {cidr} dev {ifname}") as ipr:
            ipr.addr("add", index=self._index(ipr, ifname), address=str(iface.ip), prefixlen=iface.network.prefixlen)

    def del_address(self, ifname: str, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        with self.netlink(f"addr del {cidr} dev {ifname}") as ipr:
            ipr.addr("del", index=self._index(ipr, ifname), address=str(iface.ip), prefixlen=iface.network.prefixlen)

    def add_default_route(self, ifname: str, *, family: Literal[4, 6] = 4) -> None:
        """A default route out of `ifname` (on-link: no gateway)."""
        with self.netlink(f"route add default dev {ifname} (IPv{family})") as ipr:
            ipr.route(
                "add",
                dst="0.0.0.0/0" if family == 4 else "::/0",
                oif=self._index(ipr, ifname),
                family=socket.AF_INET if family == 4 else socket.AF_INET6,
            )

    def links(self) -> list[Link]:
        with self.netlink("link show") as ipr:
            return [
                Link(
                    str(m.get("ifname")),
                    int(m["index"]),
                    bool(m["flags"] & IFF_UP),
                    str(m.get("operstate") or "UNKNOWN"),
                    str(m.get("address") or ""),
                )
                for m in ipr.get_links()
            ]

    def link(self, ifname: str) -> Link | None:
        """The link named `ifname`, or None if there is no such link."""
        return next((link for link in self.links() if link.ifname == ifname), None)

    def ifindex(self, ifname: str) -> int:
        """The index of the link named `ifname` in this namespace; LookupError if there is none."""
        link = self.link(ifname)
        if link is None:
            raise LookupError(f"no link {ifname!r} in {self.name}")
        return link.index

    def link_names(self) -> list[str]:
        return [link.ifname for link in self.links()]

    def addresses(self, ifname: str | None = None, *, family: Literal[4, 6] = 4) -> list[str]:
        """Global addresses as ``addr/prefix`` (of one link, or all)."""
        with self.netlink("addr show") as ipr:
            match: dict[str, Any] = {"family": socket.AF_INET if family == 4 else socket.AF_INET6}
            if ifname is not None:
                match["index"] = self._index(ipr, ifname)
            return [
                f"{m.get('address')}/{m['prefixlen']}"
                for m in ipr.get_addr(**match)
                if m["scope"] == RT_SCOPE_UNIVERSE and m.get("address")
            ]

    def pids(self) -> list[int]:
        """The processes whose network namespace this is (what `ip netns pids` does: compare /proc/PID/ns/net)."""
        try:
            own = os.stat(self.path)
        except OSError:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
                found.append(int(entry))
        return found

    def release(self) -> None:
        """Stop owning it: it (and the servers in it) survive this process (`mnpctl lab --keep`)."""
        release_servers(self)
        with _live_lock:
            _live_netns.pop(self.name, None)

    def delete(self) -> None:
        """Stop our servers in it, kill remaining processes inside it, and remove it.

        Idempotent and never raises: it runs in teardown, where an exception would hide the
        caller's own result.
        """
        with contextlib.suppress(Exception):
            stop_servers(self)
        with contextlib.suppress(Exception):
            if self.exists():
                # Anything still inside a namespace we created was started by us (a plugin, a
                # server): end it by pid so the netns can really go away.
                for pid in self.pids():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, 9)
                pyroute2_netns.remove(self.name)
        with _live_lock:
            _live_netns.pop(self.name, None)


# --------------------------------------------------------------------------------------------
# Node


class Node:
    """A "node": a netns that owns macvlan masters, plus the pod netns created for it.

    A veth master has both ends up inside the node netns (macvlan needs carrier); a bridge
    master is a port-less bridge, which is up with carrier immediately. Run CNI plugins with
    `node.ns` as the runtime's exec netns so the macvlan is created here, never in the host.
    Every netns it creates carries `prefix`.
    """

    def __init__(
        self,
        label: str = "node",
        *,
        masters: Iterable[str] = ("m0",),
        kind: MasterKind = "veth",
        prefix: str = PREFIX,
    ) -> None:
        self.prefix = prefix
        self.ns = NetNS.create(label, prefix=prefix)
        self.masters: dict[str, MasterKind] = {}
        self.pods: list[NetNS] = []
        try:
            for m in masters:
                self.add_master(m, kind)
        except BaseException:
            self.delete()
            raise

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    @property
    def name(self) -> str:
        return self.ns.name

    def add_master(self, name: str, kind: MasterKind = "veth") -> str:
        """Create a macvlan master link ``name`` (veth: peer ``<name>p``) and bring it up."""
        if ifname_problem(name) is not None or (kind == "veth" and len(name) > 14):
            raise ValueError(f"bad master name {name!r} (veth masters: at most 14 chars)")
        if name in self.masters:
            raise ValueError(f"master {name!r} exists")
        if kind == "veth":
            self.ns.add_veth(name, f"{name}p")
            self.ns.set_up(f"{name}p")
        elif kind == "bridge":
            self.ns.add_bridge(name)
        else:
            raise ValueError(f"unknown master kind {kind!r}")
        self.ns.set_up(name)
        self.masters[name] = kind
        return name

    def peer_of(self, master: str) -> str | None:
        return f"{master}p" if self.masters.get(master) == "veth" else None

    def set_carrier(self, master: str, up: bool) -> None:
        """Give or take away the master's carrier (veth: via its peer; bridge: the bridge itself)."""
        target = self.peer_of(master) or master
        self.ns.set_up(target, up)

    def new_pod(self, label: str = "pod") -> NetNS:
        """A fresh pod netns (loopback up), deleted together with the node."""
        pod = NetNS.create(label, prefix=self.prefix)
        self.pods.append(pod)
        return pod

    def namespaces(self) -> list[NetNS]:
        """The node netns and every pod netns, node first."""
        return [self.ns, *self.pods]

    def release(self) -> None:
        """Leave the node and its pods in place after this process exits (`mnpctl lab --keep`)."""
        for ns in self.namespaces():
            ns.release()

    def delete(self) -> None:
        """Delete the pods, then the node (never raises)."""
        for pod in self.pods:
            pod.delete()
        self.pods.clear()
        self.ns.delete()


# --------------------------------------------------------------------------------------------
# Servers and probes, run in child processes that setns() into the target netns.

# The agent (daemon/testbed/agent.py) enters the netns before it creates any thread.
AGENT = "daemon.testbed.agent"


def _agent_argv(ns: str | os.PathLike[str] | None, mode: str, arg: Any) -> list[str]:
    path = os.fspath(ns) if ns is not None else ""
    return [sys.executable, "-I", "-m", AGENT, path, mode, json.dumps(arg)]


@dataclass(frozen=True)
class Probe:
    """One connection attempt: TCP connect + nonce line, or UDP nonce datagram awaiting its echo."""

    proto: Proto
    host: str
    port: int
    timeout: float = 0.5
    source: str | None = None  # bind to this local address first


@dataclass(frozen=True)
class ProbeResult:
    """``outcome`` is ok | timeout | refused | eperm | unreachable | reset | no-reply | bad-reply | error.

    Only ``ok`` (the server answered with our nonce) counts as allowed.  A policy ``drop`` shows
    as ``timeout`` (or ``eperm`` when the prober's own output chain dropped it), a ``reject`` or
    a closed port as ``refused``.
    """

    probe: Probe
    outcome: str
    detail: str = ""
    responder: str | None = None  # the label of the server that answered
    elapsed: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.outcome == "ok"

    @property
    def denied(self) -> bool:
        return not self.allowed

    def __str__(self) -> str:
        p = self.probe
        return f"{p.proto}/{p.host}:{p.port} -> {self.outcome} ({self.elapsed * 1000:.0f} ms) {self.detail}"


def run_probes(ns: str | os.PathLike[str] | None, probes: Sequence[Probe], *, margin: float = 5.0) -> list[ProbeResult]:
    """Run all ``probes`` concurrently from inside ``ns`` (one child process); results in order.

    ``ns`` is a NetNS or any netns path (e.g. /proc/PID/ns/net); None means the current netns.
    """
    if not probes:
        return []
    spec = [
        {"proto": p.proto, "host": p.host, "port": p.port, "timeout": p.timeout, "source": p.source} for p in probes
    ]
    argv = _agent_argv(ns, "probe", spec)
    limit = max(p.timeout for p in probes) + margin
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return [ProbeResult(p, "error", f"probe process exceeded {limit:.1f} s") for p in probes]
    if proc.returncode != 0:
        raise NetnsError(["probe-agent", os.fspath(ns) if ns else "-"], proc.returncode, proc.stderr)
    raw = json.loads(proc.stdout)
    return [
        ProbeResult(p, r["outcome"], r.get("detail") or "", r.get("responder"), float(r["elapsed"]))
        for p, r in zip(probes, raw, strict=True)
    ]


def probe_once(ns: str | os.PathLike[str] | None, probe: Probe) -> ProbeResult:
    """One probe from ``ns``: TCP connects, sends a nonce line and expects it echoed; UDP resends a nonce
    datagram a few times until it is echoed or the timeout passes."""
    return run_probes(ns, [probe])[0]


def probe_matrix(items: Sequence[tuple[str | os.PathLike[str], Probe]]) -> list[ProbeResult]:
    """Run ``(source netns, probe)`` pairs: one child per source netns, all in parallel."""
    groups: dict[str, list[int]] = {}
    for i, (ns, _) in enumerate(items):
        groups.setdefault(os.fspath(ns), []).append(i)
    results: list[ProbeResult | None] = [None] * len(items)

    def do(path: str, idxs: list[int]) -> None:
        for i, r in zip(idxs, run_probes(path, [items[i][1] for i in idxs]), strict=True):
            results[i] = r

    if groups:
        with ThreadPoolExecutor(max_workers=min(len(groups), 32)) as pool:
            for fut in [pool.submit(do, path, idxs) for path, idxs in groups.items()]:
                fut.result()
    return [r for r in results if r is not None]


@dataclass(frozen=True)
class Connection:
    """A request a server answered: protocol, peer address/port, local port and the probe nonce."""

    proto: str
    peer: str
    peer_port: int
    port: int
    nonce: str


_servers_lock = threading.Lock()
_servers: set[Server] = set()


@dataclass(eq=False)
class Server:
    """Background TCP-answer / UDP-echo server process inside a netns.

    ``Server(ns, [("tcp", 8080), ("udp", 5353)])`` starts it and returns once every socket is
    bound (or raises).  Port 0 picks a free port; see ``ports``.  Stop with ``stop()`` or use it
    as a context manager; NetNS.delete() stops the servers of its namespace too.  A ``linger``
    server keeps answering after this process is gone (until its netns is deleted).
    """

    ns: str | os.PathLike[str]
    listeners: Sequence[tuple[Proto, int]]
    host: str = ""  # "" = dual-stack wildcard
    label: str | None = None  # what replies carry; default: the netns basename
    ready_timeout: float = 10.0
    linger: bool = False
    ports: list[tuple[str, int]] = field(default_factory=list, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)
    _conns: list[Connection] = field(default_factory=list, init=False, repr=False)
    _stderr: list[bytes] = field(default_factory=list, init=False, repr=False)
    _ready: bool = field(default=False, init=False, repr=False)
    _eof: bool = field(default=False, init=False, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        path = os.fspath(self.ns)
        label = self.label or os.path.basename(path)
        spec = {
            "label": re.sub(r"\s+", "_", label),
            "listeners": [{"proto": p, "host": self.host, "port": port} for p, port in self.listeners],
            "linger": self.linger,
        }
        self._proc = subprocess.Popen(
            _agent_argv(path, "serve", spec),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=self.linger,  # a lingering server must not get the terminal's Ctrl-C
        )
        with _servers_lock:
            _servers.add(self)
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + self.ready_timeout
        with self._cond:
            while not self._ready and not self._eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            ready = self._ready
        if not ready:
            self.stop()
            err = b"".join(self._stderr).decode(errors="replace").strip()
            raise NetnsError(["server", path, json.dumps(spec)], -1, err or "not ready in time")

    @property
    def path(self) -> str:
        return os.fspath(self.ns)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def port(self) -> int:
        """The port of the only listener."""
        if len(self.ports) != 1:
            raise ValueError(f"server has {len(self.ports)} listeners; use .ports")
        return self.ports[0][1]

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            kind, _, payload = line.partition(" ")
            with self._cond:
                if kind == "READY":
                    self.ports = [(str(p), int(n)) for p, n in json.loads(payload)]
                    self._ready = True
                elif kind == "CONN":
                    d = json.loads(payload)
                    self._conns.append(
                        Connection(d["proto"], d["peer"], int(d["peer_port"]), int(d["port"]), d["nonce"])
                    )
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            self._stderr.append(raw)

    def connections(self) -> list[Connection]:
        with self._cond:
            return list(self._conns)

    def wait_connections(self, count: int, timeout: float = 2.0) -> list[Connection]:
        """Wait (deadline, not sleep) until at least ``count`` requests were answered."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._conns) < count and not self._eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(self._conns)

    def release(self) -> None:
        """Stop tracking it: a lingering server then outlives this process; others exit with it."""
        with _servers_lock:
            _servers.discard(self)

    def stop(self, timeout: float = 3.0) -> None:
        """Close its stdin (it exits), wait; SIGKILL it by pid if it does not.  Never raises."""
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(Exception):
                if proc.stdin:
                    proc.stdin.close()
            if self.linger:
                with contextlib.suppress(Exception):
                    proc.kill()
            reap(proc, timeout)
            for t in self._threads:
                t.join(timeout)
            for stream in (proc.stdout, proc.stderr):
                with contextlib.suppress(Exception):
                    if stream:
                        stream.close()
        with _servers_lock:
            _servers.discard(self)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tcp_server(ns: str | os.PathLike[str], port: int = 0, *, host: str = "", label: str | None = None) -> Server:
    """A TCP server in ``ns`` that answers ``MNP-OK <label> <nonce>`` to each nonce line."""
    return Server(ns, [("tcp", port)], host=host, label=label)


def udp_echo_server(ns: str | os.PathLike[str], port: int = 0, *, host: str = "", label: str | None = None) -> Server:
    """A UDP server in ``ns`` that answers each datagram with ``MNP-OK <label> <payload>``."""
    return Server(ns, [("udp", port)], host=host, label=label)


def reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait up to `timeout` for `proc` to exit; SIGKILL it and wait again if it does not. Never raises."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(Exception):
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(timeout)


def stop_servers(ns: str | os.PathLike[str] | None = None) -> None:
    """Stop our servers (all, or those in one netns)."""
    path = os.fspath(ns) if ns is not None else None
    with _servers_lock:
        victims = [s for s in _servers if path is None or s.path == path]
    for s in victims:
        s.stop()


def release_servers(ns: str | os.PathLike[str]) -> None:
    """Stop tracking the servers of one netns (see `Server.release`)."""
    path = os.fspath(ns)
    with _servers_lock:
        victims = [s for s in _servers if s.path == path]
    for s in victims:
        s.release()


# --------------------------------------------------------------------------------------------
# Hammer: connection attempts at a steady rate, each reported with its time


@dataclass(frozen=True)
class Attempt:
    """One attempt of a `Hammer`: target index, CLOCK_MONOTONIC start/end (comparable with
    `time.monotonic()` in this process), and the outcome as in `ProbeResult`."""

    target: int
    t0: float
    t1: float
    outcome: str
    responder: str | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome == "ok"


class Hammer:
    """From inside `ns`, attempt every probe of `targets` every `interval` seconds (each attempt with the
    probe's own timeout, concurrently) until `stop()`; `attempts()` lists what happened so far.

    This is how the first-instant isolation is shown: start it before a pod exists, and no attempt
    that policy forbids may ever be `allowed`.
    """

    def __init__(
        self,
        ns: str | os.PathLike[str],
        targets: Sequence[Probe],
        *,
        interval: float = 0.01,
        inflight: int = 16,
        ready_timeout: float = 10.0,
    ) -> None:
        self.targets = list(targets)
        spec = {
            "interval": interval,
            "inflight": inflight,
            "targets": [
                {"id": i, "proto": p.proto, "host": p.host, "port": p.port, "timeout": p.timeout, "source": p.source}
                for i, p in enumerate(self.targets)
            ],
        }
        self._cond = threading.Condition()
        self._attempts: list[Attempt] = []
        self._ready = False
        self._eof = False
        self._proc = subprocess.Popen(
            _agent_argv(ns, "hammer", spec), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + ready_timeout
        with self._cond:
            while not self._ready and not self._eof and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            ready = self._ready
        if not ready:
            self.stop()
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise NetnsError(["hammer", os.fspath(ns)], -1, err or "not ready in time")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            kind, _, payload = raw.decode(errors="replace").rstrip("\n").partition(" ")
            with self._cond:
                if kind == "READY":
                    self._ready = True
                elif kind == "ATTEMPT":
                    d = json.loads(payload)
                    self._attempts.append(
                        Attempt(int(d["target"]), float(d["t0"]), float(d["t1"]), str(d["outcome"]), d.get("responder"))
                    )
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def attempts(self) -> list[Attempt]:
        with self._cond:
            return list(self._attempts)

    def wait_until(self, predicate: Callable[[list[Attempt]], bool], timeout: float) -> bool:
        """Wait (deadline, no sleep) until `predicate(attempts so far)` holds; returns whether it did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._attempts):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    return predicate(self._attempts)
                self._cond.wait(remaining)
            return True

    def stop(self, timeout: float = 5.0) -> list[Attempt]:
        """End it (attempts in flight finish or are cut); returns every attempt reported. Never raises."""
        with contextlib.suppress(Exception):
            if self._proc.stdin:
                self._proc.stdin.close()
        reap(self._proc, timeout)
        self._reader.join(timeout)
        for stream in (self._proc.stdout, self._proc.stderr):
            with contextlib.suppress(Exception):
                if stream:
                    stream.close()
        return self.attempts()

    def __enter__(self) -> Hammer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Leak checks and cleanup


def list_netns(prefix: str = PREFIX) -> list[str]:
    """Names of the netns under /run/netns starting with ``prefix``."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def owner_pid(name: str, prefix: str = PREFIX) -> int | None:
    """The pid of the process that created a netns named by `unique_name` with `prefix`, else None."""
    m = re.match(rf"^{re.escape(prefix)}(\d+)-[0-9a-f]+-", name)
    return int(m.group(1)) if m else None


def leftover_netns(*, own_only: bool = True, prefix: str = PREFIX, pid: int | None = None) -> list[str]:
    """`prefix` netns still present: by default only those created by this process (or by `pid`)."""
    names = list_netns(prefix)
    if own_only or pid is not None:
        owner = os.getpid() if pid is None else pid
        names = [n for n in names if owner_pid(n, prefix) == owner]
    return names


def leftover_processes() -> list[int]:
    """Pids of servers started by this process that are still running."""
    with _servers_lock:
        return sorted(s.pid for s in _servers if s.running() and s.pid is not None)


def check_leftovers(prefix: str = PREFIX) -> list[str]:
    """Human-readable list of debris this process left behind (empty = clean)."""
    problems = [f"netns {n}" for n in leftover_netns(prefix=prefix)]
    problems += [f"server process {pid}" for pid in leftover_processes()]
    return problems


def _pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def sweep_stale_netns(prefix: str = PREFIX) -> list[str]:
    """Delete `prefix` netns whose creating process is gone (debris of killed runs).

    Namespaces of live processes (this one, concurrent runs) are never touched, nor are
    names that do not follow `unique_name`.  Returns the names removed.  (Never used with the
    lab's prefix: a lab kept with `--keep` outlives its creator on purpose.)
    """
    removed = []
    for name in list_netns(prefix):
        pid = owner_pid(name, prefix)
        if pid is None or pid == os.getpid() or _pid_alive(pid):
            continue
        NetNS(name).delete()
        removed.append(name)
    return removed


def cleanup_all() -> None:
    """Stop every server and delete every netns this process created (never raises)."""
    with contextlib.suppress(Exception):
        stop_servers()
    with _live_lock:
        live = list(_live_netns.values())
    for ns in live:
        ns.delete()


atexit.register(cleanup_all)
