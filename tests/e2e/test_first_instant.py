"""First-instant isolation: a new pod is closed from the moment its CNI ADD returns, and opens exactly as far as
policy allows once mnpd has programmed it.

A lab (tests/e2e/first-instant/) runs `good` and `bad` with mnpd; then `server` is added — the real macvlan +
static + mnp chain, the Pod written to mnpd's manifests dir before and after, as a kubelet and Multus do —
while clients hammer it with connection attempts (a new one every 10 ms per target):

* `good` and `bad` hammer the server's address from *before* its ADD;
* the server's own attempts (egress) and listeners start the moment ADD returns, like its containers.

No attempt that policy forbids may ever succeed; the allowed ones must start succeeding once mnpd has programmed
the pod. The time from ADD's return to the first allowed success is the latency this prints (docs/lab.md).
A second test pauses mnpd (SIGSTOP, by pid) across the ADD to show that even the *allowed* connections stay
closed for as long as the daemon has not programmed the pod.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.lab.build import NODE_NAME, WORK_ROOT, Lab, LabPod, create_workdir, find_plugin
from daemon.lab.enforcer import Mnpd, expected_digest, interface_digest, kernel_table, targets
from daemon.lab.plan import LabPaths, plan
from daemon.testbed.netns import PREFIX, Attempt, Hammer, Server
from daemon.testbed.netns import Probe as Packet
from shared.evaluate import evaluate
from shared.manifests import load_dir
from shared.rules import InterfaceRules, IPAddress
from tests.e2e.conftest import assert_gone

pytestmark = pytest.mark.netns

SCENARIO = Path(__file__).parent / "first-instant"
SERVER, GOOD, BAD = "10.77.0.10", "10.77.0.2", "10.77.0.3"
NETWORK = "instant/lan"
ATTEMPT_TIMEOUT = 0.2
AFTER_PROGRAMMED = 20  # attempts every target must make after programming, all as policy says


@dataclass(frozen=True)
class Target:
    source: str
    packet: Packet
    allowed: bool  # by hand, from the policies; checked against the evaluator below


INGRESS = [
    Target("instant/good", Packet("tcp", SERVER, 8080, ATTEMPT_TIMEOUT, GOOD), True),
    Target("instant/good", Packet("tcp", SERVER, 8081, ATTEMPT_TIMEOUT, GOOD), False),
    Target("instant/bad", Packet("tcp", SERVER, 8080, ATTEMPT_TIMEOUT, BAD), False),
]
EGRESS = [
    Target("instant/server", Packet("tcp", GOOD, 9090, ATTEMPT_TIMEOUT, SERVER), True),
    Target("instant/server", Packet("udp", GOOD, 9091, ATTEMPT_TIMEOUT, SERVER), True),
    Target("instant/server", Packet("tcp", BAD, 9090, ATTEMPT_TIMEOUT, SERVER), False),
    Target("instant/server", Packet("udp", BAD, 9091, ATTEMPT_TIMEOUT, SERVER), False),
]


@pytest.fixture
def lab(need_lab: None) -> Iterator[tuple[Lab, Mnpd]]:
    paths = LabPaths(WORK_ROOT / f"{PREFIX}{os.getpid()}-{os.urandom(2).hex()}")
    the_plan = plan(SCENARIO, paths)
    assert the_plan.errors == [] and the_plan.invalid == []
    create_workdir(paths)
    plugin, _ = find_plugin()
    built = Lab(the_plan, paths, plugin, prefix=PREFIX)
    daemon = Mnpd(paths, NODE_NAME)
    netns: list[str] = []
    pids: list[int] = []
    try:
        built.build_node()
        built.write_cluster_manifests()
        daemon.start()
        built.add_pods([p for p in the_plan.pods if p.key != "instant/server"])
        built.start_listeners({k: [("tcp", 9090), ("udp", 9091)] for k in ("instant/good", "instant/bad")})
        ready = daemon.wait(targets(built))
        assert ready.ok, ready.missing
        yield built, daemon
    finally:
        netns = [ns.name for ns in built.namespaces()]
        pids = [s.pid for s in built.servers() if s.pid] + ([daemon.pid] if daemon.pid else [])
        if daemon.proc is not None and daemon.proc.poll() is None:
            os.kill(daemon.proc.pid, signal.SIGCONT)  # in case a test paused it
        daemon.stop()
        assert built.teardown() == []
        assert_gone(netns, pids)
        assert not paths.workdir.exists()


def _check_by_hand_matches_prediction() -> None:
    cluster = load_dir(SCENARIO).cluster
    for t in INGRESS + EGRESS:
        verdict = evaluate(
            cluster, NETWORK, _ip(t.packet.source), _ip(t.packet.host), t.packet.proto.upper(), t.packet.port
        )
        assert verdict.allowed == t.allowed, (t, verdict.reason)


def _ip(text: str | None) -> IPAddress:
    assert text is not None
    return ipaddress.ip_address(text)


def _add_server(lab: Lab) -> tuple[LabPod, Hammer, Server, float]:
    """ADD the server while `good` and `bad` hammer it; start its own attempts and listeners the moment the ADD
    returns. Returns the pod, the server's hammer, its listeners, and when they were ready."""
    server_plan = next(p for p in lab.plan.pods if p.key == "instant/server")
    pod = lab.add_pod(server_plan)
    egress = Hammer(pod.ns, [t.packet for t in EGRESS], interval=0.01)
    listeners = Server(pod.ns, [("tcp", 8080), ("tcp", 8081)], label="instant/server")
    return pod, egress, listeners, time.monotonic()


def _closed_at_add(pod: LabPod, rules: InterfaceRules) -> str:
    """'pending' or 'programmed': what the kernel holds for the server's net1 (anything else fails)."""
    actual = interface_digest(kernel_table(pod.ns.path), "net1")
    if actual == expected_digest(InterfaceRules.pending("net1")):
        return "pending"
    assert actual == expected_digest(rules), "the interface is neither closed (pending) nor programmed"
    return "programmed"


def _first_ok(attempts: list[Attempt], target: int) -> Attempt | None:
    return min((a for a in attempts if a.target == target and a.allowed), key=lambda a: a.t1, default=None)


def _enough_after(since: float, n_targets: int) -> Callable[[list[Attempt]], bool]:
    """A Hammer.wait_until predicate: every target made AFTER_PROGRAMMED attempts that started after `since`."""

    def enough(attempts: list[Attempt]) -> bool:
        return all(
            sum(1 for a in attempts if a.target == i and a.t0 >= since) >= AFTER_PROGRAMMED for i in range(n_targets)
        )

    return enough


def _hammer_all(lab: Lab) -> tuple[Hammer, Hammer]:
    good = Hammer(lab.pods["instant/good"].ns, [t.packet for t in INGRESS if t.source == "instant/good"])
    bad = Hammer(lab.pods["instant/bad"].ns, [t.packet for t in INGRESS if t.source == "instant/bad"])
    return good, bad


def _verdicts(
    hammers: list[tuple[Hammer, list[Target]]], programmed_at: float, listening_at: float
) -> dict[str, float]:
    """Assert the attempts of every hammer; returns, per allowed target, the seconds from `programmed_at`'s
    reference (the ADD's return) to its first success."""
    firsts: dict[str, float] = {}
    for hammer, wanted in hammers:
        attempts = hammer.attempts()
        for i, t in enumerate(wanted):
            mine = [a for a in attempts if a.target == i]
            assert mine, f"no attempt for {t}"
            name = f"{t.source} -> {t.packet.host}:{t.packet.port}/{t.packet.proto}"
            if not t.allowed:
                leaked = [a for a in mine if a.allowed]
                assert leaked == [], f"FORBIDDEN connection succeeded: {name} ({len(leaked)} of {len(mine)} attempts)"
                continue
            first = _first_ok(attempts, i)
            assert first is not None, f"allowed {name} never succeeded ({[a.outcome for a in mine][-5:]})"
            firsts[name] = first.t1
            settled = [a for a in mine if a.t0 >= max(programmed_at, listening_at)]
            assert settled and all(a.allowed for a in settled), (
                f"allowed {name} failed after programming: {[a.outcome for a in settled if not a.allowed][:5]}"
            )
    return firsts


def test_new_pod_closed_from_add_and_open_once_programmed(lab: tuple[Lab, Mnpd]) -> None:
    built, daemon = lab
    _check_by_hand_matches_prediction()
    good, bad = _hammer_all(built)
    egress: Hammer | None = None
    listeners: Server | None = None
    try:
        pod, egress, listeners, listening_at = _add_server(built)
        added = pod.added_at
        assert added is not None
        rules = {t.pod: t for t in targets(built)}["instant/server"].rules
        state_at_add = _closed_at_add(pod, rules)
        ready = daemon.wait(targets(built))
        programmed_at = time.monotonic()
        assert ready.ok, ready.missing
        hammers = [
            (good, [t for t in INGRESS if t.source == "instant/good"]),
            (bad, [t for t in INGRESS if t.source == "instant/bad"]),
            (egress, EGRESS),
        ]
        for hammer, wanted in hammers:
            assert hammer.wait_until(_enough_after(programmed_at, len(wanted)), 30), "the hammer stalled"
    finally:
        for h in (good, bad, egress):
            if h is not None:
                h.stop()
        if listeners is not None:
            listeners.stop()
    firsts = _verdicts(hammers, programmed_at, listening_at)
    latencies = {name: t1 - added for name, t1 in firsts.items()}
    report = ", ".join(f"{n}: {s * 1000:.0f} ms" for n, s in sorted(latencies.items()))
    print(
        f"\nfirst-instant: at ADD return the interface was {state_at_add}; ADD → first allowed success: {report}; "
        f"median {statistics.median(latencies.values()) * 1000:.0f} ms; mnpd confirmed programmed "
        f"{(programmed_at - added) * 1000:.0f} ms after ADD (kernel check)"
    )


def test_allowed_traffic_waits_for_the_daemon(lab: tuple[Lab, Mnpd]) -> None:
    """With mnpd paused across the ADD, even allowed connections fail: the plugin's pending table holds them
    until the daemon programs the pod — then they open."""
    built, daemon = lab
    assert daemon.proc is not None
    good, bad = _hammer_all(built)
    egress: Hammer | None = None
    listeners: Server | None = None
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    resumed = False
    try:
        pod, egress, listeners, listening_at = _add_server(built)
        rules = {t.pod: t for t in targets(built)}["instant/server"].rules
        assert _closed_at_add(pod, rules) == "pending"
        # while the daemon sleeps: every target gets attempts after the server listens, and all of them fail
        paused = [(good, 2), (bad, 1), (egress, len(EGRESS))]
        for hammer, n in paused:
            assert hammer.wait_until(_enough_after(listening_at, n), 30)
        for hammer, _ in paused:
            opened = [a for a in hammer.attempts() if a.allowed]
            assert opened == [], f"a connection passed the pending table: {opened[:3]}"
        resumed_at = time.monotonic()
        os.kill(daemon.proc.pid, signal.SIGCONT)
        resumed = True
        ready = daemon.wait(targets(built))
        assert ready.ok, ready.missing
        programmed_at = time.monotonic()
        for hammer, n in paused:
            assert hammer.wait_until(_enough_after(programmed_at, n), 30)
    finally:
        if not resumed:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        for h in (good, bad, egress):
            if h is not None:
                h.stop()
        if listeners is not None:
            listeners.stop()
    hammers = [
        (good, [t for t in INGRESS if t.source == "instant/good"]),
        (bad, [t for t in INGRESS if t.source == "instant/bad"]),
        (egress, EGRESS),
    ]
    firsts = _verdicts(hammers, programmed_at, listening_at)
    assert all(t1 > resumed_at for t1 in firsts.values()), "an allowed connection opened before mnpd resumed"
    latencies = [t1 - resumed_at for t1 in firsts.values()]
    print(
        f"\nfirst-instant (mnpd paused across ADD): resume → first allowed success, median "
        f"{statistics.median(latencies) * 1000:.0f} ms"
    )
