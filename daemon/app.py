"""The daemon assembled: sources → store → runner → controller → nft, plus health, Events and the status file.

This is wiring and lifecycle only, kept out of `main` so tests can run a whole daemon in-process with a fake nft,
a fake clock or a FakeKubeAPI client, and stop it again. The pipeline it builds:

    StateDirSource ─┐
    ManifestsSource ├─▶ Store ──request()──▶ BoundedFrequencyRunner ──sync()──▶ Controller ──▶ Applier ──▶ nft
    or KubeSource  ─┘   (parsed objects,                                        (compile,       (one tx per
                         change log)                                             diff)           interface)

Stopping never touches a pod: rules stay exactly as they are (docs/daemon.md, "Stop and restart").
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any

from daemon import operator
from daemon.apply import Applier, NftFactory, real_nft
from daemon.clock import Clock, SystemClock
from daemon.config import DaemonConfig
from daemon.conntrack import ConntrackCleaner
from daemon.controller import Controller
from daemon.events import EventRecorder, KubeEvents, LogEvents
from daemon.health import HealthServer
from daemon.metrics import Metrics
from daemon.runner import BoundedFrequencyRunner, RunnerTimings
from daemon.sources.adopt import Adopter, NetnsScanner
from daemon.sources.kube import Backoff, KubeSource, core_v1
from daemon.sources.kubeclient import api_client
from daemon.sources.manifests import ManifestsSource
from daemon.sources.statedir import StateDirSource
from daemon.status import StatusWriter
from daemon.store import Store
from shared.nft.exec import Runner, subprocess_runner
from shared.nft.render import RenderOptions

log = logging.getLogger(__name__)

STUCK_AFTER_S = 300.0  # one sync running longer than this is a stuck loop
DEFAULT_BACKOFF = Backoff()
SILENT_AFTER_S = 60.0  # the loop wakes every second; not waking for this long is a stuck loop


class Daemon:
    def __init__(
        self,
        config: DaemonConfig,
        *,
        nft_for: NftFactory = real_nft,
        command_runner: Runner = subprocess_runner,
        client: Any = None,
        clock: Clock | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        retry: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        timings = RunnerTimings(config.min_sync_interval, config.resync_period, *retry)
        self.runner = BoundedFrequencyRunner(self._sync, timings, self.clock, name="sync")
        self.store = Store(self.clock, on_change=self.runner.request)
        self.client: Any = None
        self.events: EventRecorder
        if config.source == "api":
            self.client = client if client is not None else api_client(config.kubeconfig)
            self.events = KubeEvents(core_v1(self.client), config.node_name)
            self.objects: KubeSource | ManifestsSource = KubeSource(
                self.store, self.client, watch_timeout=config.watch_timeout, backoff=backoff
            )
        else:
            assert config.manifests_dir is not None
            self.events = LogEvents()
            self.objects = ManifestsSource(self.store, config.manifests_dir)
        additions = operator.load(
            config.allow_src_prefixes,
            config.allow_dst_prefixes,
            config.custom_rule_files,
            events=self.events,
            node=config.node_name,
            runner=command_runner,
        )
        options = RenderOptions(accept_icmp=config.accept_icmp, accept_icmpv6=config.accept_icmpv6, additions=additions)
        applier = Applier(nft_for, options)
        conntrack = ConntrackCleaner(options, applier.netlink_socket) if config.flush_conntrack else None
        self.state_dir = StateDirSource(self.store, config.state_dir, config.resync_period, metrics=self.metrics)
        self.adopter = Adopter(
            self.store,
            config.state_dir,
            self.clock,
            enabled=config.adopt,
            plugins=config.network_plugins,
            node_name=config.node_name,
            scanner=NetnsScanner(self.clock, config.netns_dirs),
            nft_for=nft_for,
            events=self.events,
            metrics=self.metrics,
        )
        self.controller = Controller(
            self.store,
            applier,
            self.clock,
            conntrack=conntrack,
            events=self.events,
            metrics=self.metrics,
            status=StatusWriter(config.status_file, self.clock, config.node_name),
            adopter=self.adopter,
            node=config.node_name,
        )
        address = config.listen_address
        self.http = HealthServer(address, self.metrics, self.healthy, self.ready) if address else None
        self._stop = threading.Event()
        self._frozen = False  # gc.freeze() done after the first full sync
        self._loop = threading.Thread(target=self.runner.loop, args=(self._stop,), name="mnpd-sync", daemon=True)

    def _sync(self, periodic: bool) -> bool:
        ok = self.controller.sync(periodic)
        if self.controller.synced_once and not self._frozen:
            # What the daemon holds from its start on — modules, clients, the first lists' objects, the rules of
            # every local pod — is moved out of the collector's view once (after one full collection), so that a
            # later full collection walks only what changed since: such a collection holds the GIL, stalling the
            # sync and the apply threads, and would walk all of it (docs/benchmarks.md, Policy change). Anything
            # unreachable is freed by that collection first; what is frozen is still freed by reference counts.
            self._frozen = True
            gc.collect()
            gc.freeze()
        return ok

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> Daemon:
        if self.http is not None:
            self.http.start()
        if isinstance(self.events, KubeEvents):
            self.events.start()
        self.state_dir.start()
        self.objects.start()
        self._loop.start()
        return self

    def stop(self) -> None:
        """Stop watching and syncing. Every pod keeps the rules it has."""
        self.objects.stop()
        self.state_dir.stop()
        self._stop.set()
        self.runner.wake()
        self._loop.join(10.0)
        if not self._loop.is_alive():
            self.controller.applier.close()
        if isinstance(self.events, KubeEvents):
            self.events.stop()
        if self.http is not None:
            self.http.stop()
        log.info("stopped; every pod keeps its rules")

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------- checks

    def healthy(self) -> tuple[bool, str]:
        if not self._loop.is_alive():
            return False, "the sync loop is not running"
        stuck = self.runner.stuck_for()
        if stuck > STUCK_AFTER_S:
            return False, f"one sync has been running for {stuck:.0f} s"
        idle = self.runner.idle_for()
        if idle is not None and idle > SILENT_AFTER_S:
            return False, f"the sync loop has not woken for {idle:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        missing = sorted(name for name, synced in self.store.source_status().items() if not synced)
        if missing:
            return False, "waiting for the first list of: " + ", ".join(missing)
        if not self.controller.synced_once:
            return False, "waiting for the first sync"
        return True, "ok"
