"""Every scenario directory through `mnpctl lab`: real CNI chains, mnpd, real packets — against the prediction
(`mnpctl matrix`) and against the hand-written `expect` of every probe.

The scenarios are deploy/examples/{layer2,localnet} (the seeds' two use cases), examples/adopted and every directory of
tests/scenarios (their probes.yaml files hold the hand-written expected matrices): default deny ingress / egress /
both, pod and namespace selectors, AND vs OR peers, ports and endPort, UDP, ipBlock with except and hosts outside
the cluster, named ports, stacked policies, a policy for another network, a pod on two networks with one guarded,
IPv6 and dual stack, invalid policies failing closed. The curated set below names the scenario for each of those;
the rest of tests/scenarios is marked `slow` (they run in CI too: `-m "not slow"` leaves them out locally).

Labs are independent (own namespaces, work dir, mnpd), so the selected scenarios run two at a time in the
background while pytest collects their results in order; each test checks its own lab left nothing behind.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from daemon.cli.exitcodes import EXIT_INVALID, EXIT_OK
from daemon.lab.plan import LabPaths, plan
from daemon.lab.session import LabRun, run_lab
from daemon.testbed.netns import PREFIX
from shared.manifests import load_dir
from shared.predict import evaluate_probes, load_probes
from tests.e2e.conftest import REPO, assert_gone, lab_unavailable

pytestmark = pytest.mark.netns

SCENARIOS = REPO / "tests" / "scenarios"
EXAMPLES = REPO / "deploy" / "examples"
CONCURRENT_LABS = 2

# One scenario per requirement of the end-to-end suite (see the module docstring).
CURATED = {
    "examples/layer2": "the seeds' layer2 use case: C→A allowed, C→B denied, A→B allowed",
    "examples/localnet": "the seeds' localnet use case: only the VM reaches the database outside the cluster",
    "examples/adopted": "a NAD that does not chain mnp: mnpd adopts a pod from before its start and later ones",
    "default-deny-ingress": "default deny ingress",
    "default-deny-egress": "default deny egress",
    "default-deny-all": "default deny both",
    "simple-v4-ingress": "allow from a pod selector",
    "allow-from-namespace": "namespace selector",
    "namespace-and-pod-selector-and": "both selectors in one peer (AND)",
    "namespace-or-pod-selector-or": "selectors in two peers (OR)",
    "podselector-peer-stays-in-namespace": "a podSelector peer stays in the policy's namespace",
    "port-range": "ports and endPort",
    "overlapping-port-ranges-union": "overlapping port ranges of two policies",
    "udp-only-egress": "UDP",
    "udp-and-tcp-same-port-number": "UDP and TCP on one port number",
    "ipblock-except": "ipBlock with except",
    "egress-to-outside-host": "a host outside the cluster, by ipBlock",
    "ingress-from-outside-host": "a host outside the cluster as the client",
    "static-ipam-outside-host": "hosts outside the cluster on a static-IPAM network (no NAD subnet)",
    "named-port-ingress": "named ports",
    "named-port-egress-per-peer": "egress named ports resolved per peer",
    "stacked": "stacked policies",
    "policy-for-other-network-ignored": "a policy for another network is ignored",
    "two-networks-one-guarded": "a pod on two secondary networks, one guarded",
    "simple-v6-ingress": "IPv6",
    "ipv6-ipblock-except": "IPv6 ipBlock with except",
    "dual-stack-selectors-and-ipblocks": "dual stack",
    "unknown-policy-type-fails-closed": "an invalid policy fails closed (real packets)",
    "sctp": "SCTP probes are skipped, never passed",
}


def scenario_dirs() -> dict[str, Path]:
    found = {f"examples/{d.name}": d for d in sorted(EXAMPLES.iterdir()) if d.is_dir()} if EXAMPLES.is_dir() else {}
    if SCENARIOS.is_dir():
        found.update({d.name: d for d in sorted(SCENARIOS.iterdir()) if (d / "probes.yaml").is_file()})
    return found


ALL = scenario_dirs()


def _params() -> list[object]:
    params: list[object] = []
    for name in sorted(ALL, key=lambda n: (n not in CURATED, n)):
        marks = [] if name in CURATED else [pytest.mark.slow]
        params.append(pytest.param(name, id=name, marks=marks))
    return params


class Batch:
    """Runs the selected scenarios' labs in the background, CONCURRENT_LABS at a time, in test order."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.pool: ThreadPoolExecutor | None = None
        self.futures: dict[str, Future[tuple[LabRun, str, str]]] = {}
        self.lock = threading.Lock()

    def result(self, name: str) -> tuple[LabRun, str, str]:
        with self.lock:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(max_workers=CONCURRENT_LABS, thread_name_prefix="lab")
                for n in self.names:
                    self.futures[n] = self.pool.submit(_run, ALL[n])
            future = self.futures.get(name) or self.pool.submit(_run, ALL[name])
        return future.result()

    def close(self) -> None:
        if self.pool is not None:
            for future in self.futures.values():
                future.cancel()
            self.pool.shutdown(wait=True)


def _run(directory: Path) -> tuple[LabRun, str, str]:
    out, err = io.StringIO(), io.StringIO()
    result = run_lab(directory, out=out, err=err, prefix=PREFIX, colour=False)
    return result, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def batch(request: pytest.FixtureRequest) -> Iterator[Batch]:
    selected = [
        item.callspec.params["scenario"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "scenario" in item.callspec.params
    ]
    runner = Batch(selected if lab_unavailable() is None else [])
    yield runner
    runner.close()


@pytest.mark.parametrize("scenario", _params())
def test_scenario_with_real_packets(scenario: str, batch: Batch, need_lab: None) -> None:
    directory = ALL[scenario]
    run, out, err = batch.result(scenario)
    context = f"\n--- stdout\n{out}\n--- stderr\n{err}"
    assert_gone(run.netns, run.pids)
    assert run.workdir is not None and not run.workdir.exists(), f"work dir {run.workdir} left behind"
    assert run.problems == [], f"lab problems: {run.problems}{context}"

    invalid = plan(directory, LabPaths(Path("/nonexistent"))).invalid
    assert run.status == (EXIT_INVALID if invalid else EXIT_OK), context
    assert run.observations, f"no probes ran{context}"

    # 1. real packets agree with the prediction the lab made from its runtime manifests
    failed = [o for o in run.observations if o.failed]
    assert failed == [], (
        "observed ≠ predicted or expected:\n"
        + "\n".join(
            f"  {o.record.probe.source} -> {o.record.probe.target} {o.record.probe.port}/{o.record.probe.protocol}: "
            f"predicted {o.record.allowed}, observed {o.verdict()} ({o.detail}), expect {o.record.probe.expect}"
            for o in failed
        )
        + context
    )

    # 2. ... and with `mnpctl matrix DIR` offline (DIR as written, without the lab's network-status)
    cluster = load_dir(directory).cluster
    probes, problems, _ = load_probes(directory, None, cluster)
    assert problems == []
    offline = {r.probe: r.allowed for r in evaluate_probes(cluster, probes)}
    for o in run.observations:
        key = o.record.probe
        if offline.get(key) is not None:
            assert offline[key] == o.record.allowed, f"matrix offline says {offline[key]} for {key}{context}"

    # 3. the hand-written expectations, observed (SCTP is skipped: never counted as passed)
    for o in run.observations:
        if o.skipped:
            assert o.record.probe.protocol == "SCTP" and not o.passed
            continue
        if o.record.probe.expect is not None:
            assert o.observed == o.record.probe.expect, f"{o.record.probe}: observed {o.verdict()}{context}"
