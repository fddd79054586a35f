"""Part 5 — scale: mnpd's memory and CPU with 10,000 pods and 1,000 policies in the API, and how many pod events
per second it keeps up with.

mnpd runs as its own process here, exactly as deployed (`python -m daemon.main --kubeconfig … --node-name …`,
default timings), against the fake API server (another process) and the bench node's 110 pod netns (the same
node as parts 2–3 when they ran; the state entries are re-pointed at the new API's pod UIDs). It is started twice:

* **baseline** — the API holds only the 110 local pods and one policy: the interpreter, the libraries, the
  threads and the node's own interfaces;
* **scaled** — 10,000 pods (110 local) and 1,000 policies (tests/bench/cluster.py).

RSS is /proc/PID/status VmRSS once every local interface is programmed and after the event test (VmHWM: peak);
CPU is utime+stime of the daemon process (its nsenter/nft/conntrack children separately).

Events: for `--event-seconds` per step, at paced rates, a remote pod's label changes (`rev`, selected by no
policy, so each event is a real change of the parsed pod that the daemon must take in and check, though most
change no rule; pods at random, so some are peers of local policies and make the daemon recompute their pods).
Every 2 s, on the same watch stream, a marker: the local pod `local-010` gets label `mk: <n mod 20>`, which
the policy `mnpb-local/mk-<n mod 20>` selects — one interface's rules change, and the status file names the
policy. Marker lag = the API committed marker n → the status file shows it (or a later one) programmed: how stale
the rules are at that rate (markers alone are measured first: at 10,000 pods a sync that programs one interface
costs ~0.5 CPU s, so markers are sparse). A rate is kept up with when every marker got through and the lag does not grow
(least-squares slope over the step < 0.25 s per s: the daemon takes in at least ~80 % of the offered events;
the lag itself varies by a sync's duration with the phase a marker lands in). Steps stop at the first rate that
is not kept up with.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from shared.state import StateStore
from tests.bench import cluster as synth
from tests.bench.apiserver import ApiProcess
from tests.bench.common import (
    ROOT,
    BenchError,
    loadavg,
    proc_children_cpu_seconds,
    proc_cpu_seconds,
    proc_rss_mb,
)
from tests.bench.node import LabNode

__test__ = False

MARKERS = 20  # marker policies mk-0 … mk-19; the marker number mod 20 names the one that selects the marker pod
MARKER_EVERY_S = 2.0  # a marker is a sync that programs one interface: ~0.5 CPU s at 10,000 pods, so not more often
MARKER_POD = "local-010"  # role=server: no local policy has it as a peer, so its label changes touch only itself


def marker_policy(k: int) -> dict[str, Any]:
    """`mnpb-local/mk-K` selects the pods labelled `mk: K` (it isolates them and allows nothing more): the marker
    pod's label names the marker, and the status file's `ingress.policies` shows which one was programmed."""
    return {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {
            "name": f"mk-{k}",
            "namespace": synth.LOCAL_NS,
            "annotations": {"k8s.v1.cni.cncf.io/policy-for": synth.NETWORK},
        },
        "spec": {"podSelector": {"matchLabels": {"mk": str(k)}}, "policyTypes": ["Ingress"], "ingress": []},
    }


class World:
    """One API process with a cluster of `pods`/`policies`, the node's local pods registered in it."""

    def __init__(self, node: LabNode, pods: int, policies: int, local: int) -> None:
        self.api = ApiProcess()
        self.cluster = synth.build(pods, policies, local)
        self.api.call("build", pods=pods, policies=policies, local=local)
        uids = {}
        for p in self.cluster.local:
            uids[p.name] = self.api.call("create", obj=synth.local_pod_object(p))["uid"]
        for k in range(MARKERS):
            self.api.call("create", obj=marker_policy(k))
        retag(node, uids)

    def close(self) -> None:
        self.api.stop()


def retag(node: LabNode, uids: dict[str, str]) -> None:
    """Point the node's state entries at this API's pod UIDs (as if the pods had been created by it)."""
    store = StateStore(str(node.state_dir))
    entries, _ = store.entries()
    for entry in entries:
        name = entry.pod_name
        if entry.pod_namespace == synth.LOCAL_NS and name in uids and entry.pod_uid != uids[name]:
            store.write(entry.replace(pod_uid=uids[name]))


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark dies, even by SIGKILL (prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


class DaemonProcess:
    def __init__(self, node: LabNode, kubeconfig: Path, log: Path) -> None:
        self.node = node
        node.status_file.unlink(missing_ok=True)
        self.log = log.open("w")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        argv = [
            sys.executable, "-m", "daemon.main", "--kubeconfig", str(kubeconfig), "--node-name", synth.NODE,
            "--state-dir", str(node.state_dir), "--status-file", str(node.status_file), "--listen", "off",
        ]  # fmt: skip
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=self.log, env=env, cwd=ROOT, preexec_fn=_die_with_parent
        )
        self._mtime = 0.0
        self._doc: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict[str, Any]:
        try:
            mtime = os.stat(self.node.status_file).st_mtime
        except FileNotFoundError:
            return {}
        if mtime != self._mtime:
            with contextlib.suppress(ValueError, OSError):
                self._doc = json.loads(self.node.status_file.read_text())
                self._mtime = mtime
        return self._doc

    def programmed(self) -> int:
        return sum(1 for i in self.status().get("interfaces", ()) if i.get("state") == "programmed")

    def digest(self, pod: str) -> str | None:
        for item in self.status().get("interfaces", ()):
            if item.get("pod") == pod:
                return item.get("rules")  # type: ignore[no-any-return]
        return None

    def wait(self, condition: Any, timeout: float, what: str, interval: float = 0.01) -> float:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"mnpd exited with {self.proc.returncode} while waiting for {what}")
            if condition():
                return time.monotonic()
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: not reached within {timeout:g} s")
            time.sleep(interval)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def _start(node: LabNode, world: World, local: int, name: str) -> tuple[DaemonProcess, dict[str, Any]]:
    d = DaemonProcess(
        node, world.api.kubeconfig(node.scratch / f"kubeconfig-{name}"), node.scratch / f"mnpd-{name}.log"
    )
    t_ready = d.wait(lambda: d.status().get("ready"), 180, f"{name} mnpd ready")
    t_prog = d.wait(lambda: d.programmed() >= local, 300, f"{name} mnpd: {local} interfaces programmed")
    cpu, kids = proc_cpu_seconds(d.pid), proc_children_cpu_seconds(d.pid)
    time.sleep(2.0)
    rss, hwm = proc_rss_mb(d.pid)
    return d, {
        "ready_s": round(t_ready - d.started, 2),
        "programmed_s": round(t_prog - d.started, 2),
        "startup_cpu_s": round(cpu, 2),
        "startup_children_cpu_s": round(kids, 2),
        "rss_mb": round(rss, 1),
        "hwm_mb": round(hwm, 1),
    }


class MarkerWatch:
    """Polls the status file (every 5 ms, re-read only when it changed) and records when each marker — the
    marker pod's `mk` label, visible as `mnpb-local/mk-K` among its interface's ingress policies — was first
    programmed. Markers are numbered; the label carries the number mod MARKERS, resolved in order (unambiguous
    while fewer than MARKERS markers are taken in by one sync: 40 s at one marker per 2 s)."""

    def __init__(self, d: DaemonProcess) -> None:
        self.d = d
        self.seen: list[tuple[int, float]] = []  # (marker number, time first seen programmed)
        self.last = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _current(self) -> int | None:
        for item in self.d.status().get("interfaces", ()):
            if item.get("pod") == f"{synth.LOCAL_NS}/{MARKER_POD}" and item.get("state") == "programmed":
                for name in (item.get("ingress") or {}).get("policies", ()):
                    if name.startswith(f"{synth.LOCAL_NS}/mk-"):
                        return int(name.rsplit("-", 1)[1])
        return None

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            k = self._current()
            if k is None:
                continue
            if k == self.last % MARKERS:
                continue  # unchanged
            n = self.last + 1
            while n % MARKERS != k:
                n += 1
            self.last = n
            self.seen.append((n, time.monotonic()))

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.last < n:
            if time.monotonic() > deadline or self.d.proc.poll() is not None:
                return False
            time.sleep(0.01)
        return True

    def lags(self, markers: list[tuple[int, float]]) -> list[float]:
        out = []
        for n, committed in markers:
            seen = next((t for m, t in self.seen if m >= n), None)
            if seen is not None:
                out.append(seen - committed)
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


MAX_GROWTH = 0.25  # lag growing by more than 0.25 s per second: the daemon takes in < ~80 % of the offered events


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than 3 points)."""
    if len(xs) < 3:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def _step(
    d: DaemonProcess, world: World, watch: MarkerWatch, rate: float, seconds: float, start: int
) -> dict[str, Any]:
    cpu0, t0 = proc_cpu_seconds(d.pid), time.monotonic()
    answer = world.api.call(
        "churn", rate=rate, seconds=seconds, marker_every=MARKER_EVERY_S, marker_start=start, markers=MARKERS,
        tag=start, seed=start, marker_pod=f"{synth.LOCAL_NS}/{MARKER_POD}", timeout=seconds + 60,
    )  # fmt: skip
    markers = [(int(n), float(t)) for n, t in answer["markers"]]
    drained = watch.wait_for(markers[-1][0], 60.0)
    busy = time.monotonic() - t0
    cpu = proc_cpu_seconds(d.pid) - cpu0
    lags = watch.lags(markers)
    slope = _slope([t for _, t in markers[: len(lags)]], lags)
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(answer["achieved"]),
        "events": answer["events"],
        "markers": len(markers),
        "lag_median_s": round(statistics.median(lags), 3) if lags else None,
        "lag_max_s": round(max(lags), 3) if lags else None,
        "lag_growth_s_per_s": round(slope, 3),
        "daemon_cpu_pct": round(100 * cpu / busy, 1),
        "kept_up": drained and len(lags) == len(markers) and slope < MAX_GROWTH,
        "next": markers[-1][0] + 1,
    }


def start_py_spy(pid: int, directory: str | None, seconds: float) -> tuple[subprocess.Popen[bytes], Path] | None:
    """py-spy (pip install py-spy into the venv) sampling the daemon during the event steps, if available."""
    exe = Path(sys.executable).parent / "py-spy"
    if not directory or not exe.exists():
        return None
    out = Path(directory) / "scale-events.folded"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(exe), "record", "-p", str(pid), "-r", "50", "-f", "raw", "-o", str(out), "-d", str(int(seconds))]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def finish_py_spy(spy: tuple[subprocess.Popen[bytes], Path] | None) -> str | None:
    """Stop py-spy and write the functions with the largest inclusive share of the samples beside its output."""
    if spy is None:
        return None
    proc, out = spy
    proc.send_signal(2)  # py-spy writes its output on SIGINT
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if not out.exists():
        return None
    inclusive: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            name = frame.split(":")[0] + ")" if " (" in frame else frame
            if name not in seen:
                seen.add(name)
                inclusive[name] = inclusive.get(name, 0) + n
    top = sorted(inclusive.items(), key=lambda kv: -kv[1])[:45]
    report = out.with_suffix(".txt")
    report.write_text(
        f"py-spy, mnpd during the event steps: {total} samples of active threads; share of samples in which each "
        "function is on the stack\n" + "\n".join(f"{n / total:6.1%}  {name}" for name, n in top) + "\n"
    )
    return str(report)


def run(args: Any, node: LabNode | None = None, log: Any = print) -> dict[str, Any]:
    pods, policies, local = int(args.scale_pods), int(args.scale_policies), int(args.local)
    rates = [int(r) for r in str(args.event_rates).split(",") if r]
    step_s = float(args.event_seconds)
    own = node is None
    node = node or LabNode()
    world: World | None = None
    d: DaemonProcess | None = None
    try:
        have = {p for p in node.pods if p.startswith("local-")}
        missing = [p for p in synth.build(local, 1, local).local if p.name not in have]
        if missing:
            log(f"  CNI ADD of {len(missing)} local pods …")
            node.add_pods([(p.name, p.ip, "") for p in missing])
        # baseline: the same daemon with only the node's own pods and one policy in the API
        world = World(node, local, 1, local)
        d, base = _start(node, world, local, "baseline")
        d.stop()
        world.close()
        d = world = None
        log(f"  baseline mnpd: RSS {base['rss_mb']} MB")
        t0 = time.monotonic()
        world = World(node, pods, policies, local)
        built = time.monotonic() - t0
        log(f"  API with {pods} pods / {policies} policies (+{MARKERS} markers) built in {built:.1f} s; starting mnpd")
        d, scaled = _start(node, world, local, "scaled")
        log(f"  mnpd: ready {scaled['ready_s']} s, programmed {scaled['programmed_s']} s, RSS {scaled['rss_mb']} MB")
        cpu0, t_idle = proc_cpu_seconds(d.pid), time.monotonic()
        time.sleep(float(args.idle_seconds))
        idle_cpu = (proc_cpu_seconds(d.pid) - cpu0) / (time.monotonic() - t_idle)
        watch = MarkerWatch(d)
        spy = start_py_spy(d.pid, args.profile_dir, step_s * (len(rates) + 1) + 30)
        try:
            idle = _step(d, world, watch, 0.0, 4 * MARKER_EVERY_S, 0)
            log(f"  markers alone: lag median {idle['lag_median_s']} s, mnpd CPU {idle['daemon_cpu_pct']} %")
            steps, kept, n = [], 0, idle["next"]
            for rate in rates:
                st = _step(d, world, watch, rate, step_s, n)
                n = st.pop("next")
                steps.append(st)
                log(f"  {rate} pod events/s (API achieved {st['achieved_per_s']}/s): marker lag median "
                    f"{st['lag_median_s']} s, max {st['lag_max_s']} s, growing {st['lag_growth_s_per_s']} s/s, "
                    f"mnpd CPU {st['daemon_cpu_pct']} % → {'kept up' if st['kept_up'] else 'fell behind'}")  # fmt: skip
                if not st["kept_up"]:
                    break
                kept = max(kept, st["achieved_per_s"])
        finally:
            watch.stop()
            spy_report = finish_py_spy(spy)
        rss_after, hwm_after = proc_rss_mb(d.pid)
        fell = next((st["achieved_per_s"] for st in steps if not st["kept_up"]), None)
        staleness = next((st["lag_median_s"] for st in reversed(steps) if st["kept_up"]), None)
        rows = [
            {
                "metric": f"mnpd RSS, {pods} pods / {policies} policies in the API",
                "value": scaled["rss_mb"], "unit": "MB",
                "baseline": base["rss_mb"], "baseline_name": f"same daemon, {local} local pods only",
                "ratio": scaled["rss_mb"] / base["rss_mb"], "goal": "≤ 100 MB", "met": scaled["rss_mb"] <= 100,
            },
            {
                "metric": "mnpd peak RSS (VmHWM, after the event test)",
                "value": hwm_after, "unit": "MB",
                "baseline": base["hwm_mb"], "baseline_name": "baseline's peak",
                "ratio": hwm_after / base["hwm_mb"], "goal": "≤ 100 MB", "met": hwm_after <= 100,
            },
            {
                "metric": "mnpd CPU from exec to every local pod programmed",
                "value": scaled["startup_cpu_s"], "unit": "CPU s",
                "baseline": base["startup_cpu_s"], "baseline_name": "baseline",
                "ratio": scaled["startup_cpu_s"] / max(base["startup_cpu_s"], 1e-3), "goal": "report", "met": None,
            },
            {
                "metric": "mnpd CPU when idle",
                "value": idle_cpu * 100, "unit": "% of a core",
                "baseline": None, "baseline_name": "", "ratio": None, "goal": "report", "met": None,
            },
            {
                "metric": "pod events/s kept up with (marker lag not growing)",
                "value": kept, "unit": "events/s",
                "baseline": fell, "baseline_name": "first rate it fell behind at" if fell else "no higher rate tried",
                "ratio": None, "goal": "report", "met": None,
            },
            {
                "metric": f"rule staleness at {kept} events/s: marker lag, median",
                "value": staleness, "unit": "s",
                "baseline": idle["lag_median_s"], "baseline_name": "markers alone",
                "ratio": staleness / idle["lag_median_s"] if staleness and idle["lag_median_s"] else None,
                "goal": "report", "met": None,
            },
        ]  # fmt: skip
        return {
            "part": "scale",
            "title": f"Scale ({pods} pods / {policies} policies in the API, mnpd as its own process)",
            "rows": rows,
            "details": {
                "baseline": base,
                "scaled": scaled,
                "rss_after_events_mb": round(rss_after, 1),
                "idle_cpu_pct": round(idle_cpu * 100, 2),
                "markers_alone": {k: v for k, v in idle.items() if k != "next"},
                "event_steps": steps,
                "profile": spy_report,
                "loadavg_after": loadavg(),
            },
        }
    finally:
        if d is not None:
            d.stop()
        if world is not None:
            world.close()
        if own:
            node.close()
