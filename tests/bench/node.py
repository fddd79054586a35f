"""The node under test: a lab node netns with a macvlan master, pod netns attached through the real CNI chain
(macvlan with static IPAM → the `mnp` plugin, which installs the pending table and writes the state entry), and
the daemon — in this process, instrumented, or as its own process.

Every namespace is named `mnpb-<pid>-…` (daemon/testbed/netns.py deletes them at exit whatever happens; a run killed
with SIGKILL leaves debris that the next run's `sweep` removes); scratch files live in /dev/shm/mnpb-<pid>-… (the
state dir on tmpfs, like /run/mnp/state on a node) and are removed on close.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.apply import real_nft
from daemon.testbed.cniruntime import Attachment, CniRuntime, PodRef
from daemon.testbed.netns import NetNS, Node, sweep_stale_netns
from shared.nft.transaction import Transaction
from tests.bench import cluster as synth
from tests.bench.common import CNI_BIN, PREFIX, ROOT, BenchError

__test__ = False

ADD_WORKERS = 4


def find_plugin() -> tuple[Path, str]:
    frozen = ROOT / "dist" / "mnp" / "mnp"
    if frozen.is_file() and os.access(frozen, os.X_OK):
        return frozen, "frozen one-dir (dist/mnp/mnp)"
    venv = Path(sys.executable).parent / "mnp"
    if venv.is_file():
        return venv, "venv console script (not frozen)"
    raise BenchError("no mnp plugin: run packaging/build-plugin.sh or pip install -e .")


def sweep_stale_scratch(parent: Path) -> None:
    """Remove `mnpb-<pid>-…` scratch dirs whose creating process is gone (debris of a killed run)."""
    for path in parent.glob(f"{PREFIX}*-*"):
        pid = path.name[len(PREFIX) :].split("-", 1)[0]
        if path.is_dir() and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class PodNetns:
    name: str
    ip: str
    netns: NetNS
    container: str
    uid: str
    added_at: float = 0.0  # time.monotonic() when the chain's ADD returned
    mac: str = ""  # net1's MAC, as the interface plugin reported it
    chained: bool = True  # the chain ends with the mnp plugin (False: mnpd must adopt the interface)

    @property
    def path(self) -> str:
        return self.netns.path


class LabNode:
    """A node netns (`mnpb-…-node`) with master m0, and pod netns attached to it by the real CNI chain."""

    def __init__(self) -> None:
        sweep_stale_netns(PREFIX)
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        sweep_stale_scratch(Path(shm or tempfile.gettempdir()))
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=shm))
        self.state_dir = self.scratch / "state"
        self.status_file = self.scratch / "mnpd-status.json"
        self.bin = self.scratch / "bin"
        self.bin.mkdir()
        self.plugin, self.plugin_kind = find_plugin()
        (self.bin / "mnp").symlink_to(self.plugin)
        for tool in ("macvlan", "static"):
            if not (CNI_BIN / tool).exists():
                raise BenchError(f"CNI plugin {tool} missing in {CNI_BIN}")
        self.node = Node("node", masters=["m0"], prefix=PREFIX)
        self.runtime = CniRuntime([self.bin, CNI_BIN], self.scratch / "cni-cache", exec_netns=self.node.ns)
        self.pods: dict[str, PodNetns] = {}
        self._lock = threading.Lock()

    def conflist(self, ip: str, chained: bool = True) -> dict[str, Any]:
        conf = {
            "cniVersion": "1.0.0",
            "name": synth.NAD_NAME,
            "plugins": [
                {
                    "type": "macvlan",
                    "master": "m0",
                    "mode": "bridge",
                    "ipam": {"type": "static", "addresses": [{"address": f"{ip}/8"}]},
                },
                {"type": "mnp", "stateDir": str(self.state_dir)},
            ],
        }
        if not chained:
            conf["plugins"] = conf["plugins"][:1]
        return conf

    def add_pod(
        self, name: str, ip: str, uid: str = "", namespace: str = synth.LOCAL_NS, *, chained: bool = True
    ) -> PodNetns:
        ns = self.node.new_pod(name)
        container = uuid.uuid4().hex
        uid = uid or str(uuid.uuid4())
        attachment = Attachment(container, ns, "net1", PodRef(namespace, name, uid))
        result = self.runtime.add(self.conflist(ip, chained), attachment)
        mac = next((i.mac for i in result.interfaces if i.name == "net1" and i.sandbox and i.mac), "")
        pod = PodNetns(name, ip, ns, container, uid, time.monotonic(), str(mac), chained)
        with self._lock:
            self.pods[name] = pod
        return pod

    def add_pods(self, items: Sequence[tuple[str, str, str]]) -> list[PodNetns]:
        """(name, ip, uid) each; in parallel like a kubelet starting pods."""
        with ThreadPoolExecutor(max_workers=ADD_WORKERS) as pool:
            return list(pool.map(lambda item: self.add_pod(*item), items))

    def delete_pod(self, name: str) -> None:
        pod = self.pods.pop(name, None)
        if pod is None:
            return
        with contextlib.suppress(Exception):
            self.runtime.delete(
                self.conflist(pod.ip, pod.chained),
                Attachment(pod.container, pod.netns, "net1", PodRef(synth.LOCAL_NS, name, pod.uid)),
            )
        pod.netns.delete()
        with contextlib.suppress(ValueError):
            self.node.pods.remove(pod.netns)

    def close(self) -> None:
        self.node.delete()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> LabNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------- the daemon


@dataclass
class Recorder:
    """What the instrumented daemon did, with time.monotonic() stamps."""

    transactions: list[tuple[str, float, float, int]] = field(default_factory=list)  # netns, start, end, lines
    commands: list[tuple[str, float, float]] = field(default_factory=list)  # conntrack passes: what, start, end
    store: list[tuple[str, Any, float]] = field(default_factory=list)  # kind, key, when the store took the change
    syncs: list[tuple[float, float, Any, float, float]] = field(default_factory=list)
    # start, end, SyncReport, CPU s of the sync thread, CPU s of the children it waited for (nsenter nft/conntrack)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Element deltas through libnftables instead of netlink (the path before issue 12), switchable between runs.
    libnft_deltas: bool = False

    def mark(self) -> tuple[int, int, int]:
        with self.lock:
            return len(self.transactions), len(self.commands), len(self.syncs)

    def since(self, mark: tuple[int, int, int]) -> tuple[list[Any], list[Any], list[Any]]:
        with self.lock:
            return self.transactions[mark[0] :], self.commands[mark[1] :], self.syncs[mark[2] :]


class TimedNft:
    """The daemon's own nft backend (daemon.apply.real_nft: netlink deltas + libnftables per netns, else nsenter
    nft), timed. While `recorder.libnft_deltas` is set, deltas go through libnftables like every other change:
    the path before, measured in the same run."""

    def __init__(self, netns: str, recorder: Recorder) -> None:
        self.real = real_nft(netns)
        self.netns = netns
        self.recorder = recorder

    def close(self) -> None:
        self.real.close()

    @property
    def identity(self) -> Any:
        return getattr(self.real, "identity", None)

    @property
    def socket(self) -> Any:  # the netns' kept netlink socket: the conntrack pass uses it, as in production
        return getattr(self.real, "socket", None)

    def list_table(self, family: str = "inet", table: str = "mnp") -> Any:  # the drift check: not timed
        return self.real.list_table(family, table)

    def run(self, tx: Transaction) -> None:
        self._timed(self.real.run, tx)

    def apply_delta(self, tx: Transaction) -> None:
        self._timed(self.real.run if self.recorder.libnft_deltas else self.real.apply_delta, tx)

    def _timed(self, call: Callable[[Transaction], None], tx: Transaction) -> None:
        t0 = time.monotonic()
        call(tx)
        t1 = time.monotonic()
        with self.recorder.lock:
            self.recorder.transactions.append((self.netns, t0, t1, len(tx)))


class InProcessDaemon:
    """`daemon.app.Daemon` with the real nft/conntrack backends and the API source, in this process, with
    timestamps of every sync, transaction and conntrack call. Logging at info to a file, as mnpd logs to stderr."""

    def __init__(self, node: LabNode, kubeconfig: Path, extra_args: Iterable[str] = ()) -> None:
        from daemon import logs
        from daemon.app import Daemon
        from daemon.config import load

        self.recorder = Recorder()
        rec = self.recorder
        self.log_path = node.scratch / "mnpd.log"
        self._log_stream = self.log_path.open("a")
        logs.setup("text", "info", self._log_stream)

        config = load(
            [
                "--kubeconfig", str(kubeconfig), "--node-name", synth.NODE, "--state-dir", str(node.state_dir),
                "--status-file", str(node.status_file), "--listen", "off", *extra_args,
            ],
            {},
        )  # fmt: skip
        self.daemon = Daemon(config, nft_for=lambda netns: TimedNft(netns, rec))
        controller = self.daemon.controller
        cleaner = controller.conntrack
        if cleaner is not None:  # each conntrack pass (ctnetlink dump + deletions in one pod netns), timed
            clean = cleaner.clean

            def timed_clean(netns: str, rules: Any, local: Any) -> int:
                t0 = time.monotonic()
                try:
                    return clean(netns, rules, local)
                finally:
                    with rec.lock:
                        rec.commands.append(("conntrack pass", t0, time.monotonic()))

            cleaner.clean = timed_clean  # type: ignore[method-assign]
        original = controller.sync
        store = self.daemon.store
        upsert = store.upsert

        def timed_upsert(kind: str, key: Any, value: Any, uid: str = "") -> None:
            upsert(kind, key, value, uid)
            with rec.lock:
                rec.store.append((kind, key, time.monotonic()))

        store.upsert = timed_upsert  # type: ignore[method-assign]

        self.profile_next: Path | None = None  # set: profile the next sync that programs something, to here

        def timed_sync(periodic: bool = False) -> bool:
            target, profiler = self.profile_next, None
            if target is not None:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0005)
                profiler.start()
            t0, cpu0, kids0 = time.monotonic(), time.thread_time(), _children_cpu()
            ok = original(periodic)
            cpu, kids = time.thread_time() - cpu0, _children_cpu() - kids0
            if profiler is not None:
                profiler.stop()
                if controller.last_report.transactions and target is not None:
                    target.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
                    self.profile_next = None
            with rec.lock:
                rec.syncs.append((t0, time.monotonic(), controller.last_report, cpu, kids))
            return ok

        controller.sync = timed_sync  # type: ignore[method-assign]

    def start(self, timeout: float = 120.0) -> None:
        self.daemon.start()
        deadline = time.monotonic() + timeout
        while not self.daemon.ready()[0]:
            if time.monotonic() > deadline:
                raise BenchError(f"daemon not ready within {timeout:g} s: {self.daemon.ready()[1]}")
            time.sleep(0.02)

    def states(self) -> dict[str, int]:
        return dict(self.daemon.controller.state_counts())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.daemon.stop()
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        self._log_stream.close()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def quiet(d: InProcessDaemon, idle: float, timeout: float) -> float:
    """Wait until no sync has run for `idle` s (bounded by `timeout`); returns when the last sync ended."""
    recorder = d.recorder
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with recorder.lock:
            last = recorder.syncs[-1][1] if recorder.syncs else 0.0
        if d.daemon.runner.stuck_for() == 0 and time.monotonic() - last >= idle:
            return last
        time.sleep(0.01)
    raise BenchError(f"the daemon did not become idle within {timeout:g} s")


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    from tests.bench.common import wait_until

    return wait_until(condition, timeout, 0.002, what)
