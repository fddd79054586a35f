"""`mnpctl lab` as a user runs it (a subprocess, the lab's own `mnplab-` prefix): the README's main job, JSON
records, exit statuses, Ctrl-C in the middle, `--keep` / `--down`, a lab that fails half-built — and never a
leftover namespace, work dir or process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from daemon.lab.build import WORK_ROOT, process_alive, read_record, wait_pid_exit
from daemon.testbed.netns import Probe, leftover_netns, run_probes
from tests.e2e.conftest import REPO

pytestmark = pytest.mark.netns

LAYER2 = REPO / "deploy" / "examples" / "layer2"
LAB_PREFIX = "mnplab-"


def mnpctl(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from daemon.ctl import main; sys.exit(main())", *args]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(mnpctl(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def workdirs_of(pid: int) -> list[Path]:
    return sorted(WORK_ROOT.glob(f"{LAB_PREFIX}{pid}-*")) if WORK_ROOT.is_dir() else []


def assert_clean(pid: int) -> None:
    """Nothing of the lab run by process `pid` is left: namespaces (and their links), work dir, processes."""
    assert leftover_netns(prefix=LAB_PREFIX, pid=pid) == []
    assert workdirs_of(pid) == []
    stragglers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if f"/run/mnplab/{LAB_PREFIX}{pid}-".encode() in cmdline:
                stragglers.append(int(entry.name))
    assert stragglers == [], f"processes of the lab still running: {stragglers}"


@pytest.fixture
def lab_dir(tmp_path: Path) -> Path:
    """A copy of deploy/examples/layer2 the test may change."""
    target = tmp_path / "layer2"
    shutil.copytree(LAYER2, target)
    return target


def test_layer2_json_matches_matrix_and_the_seed(need_lab: None) -> None:
    done = run("lab", str(LAYER2), "--json")
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    matrix = json.loads(run("matrix", str(LAYER2), "--json").stdout)
    assert [
        {k: v for k, v in r.items() if k not in ("observed", "outcome", "attempts", "detail")} for r in records
    ] == matrix
    for r in records:
        assert r["observed"] == r["allowed"] and r["outcome"] in ("ok", "timeout", "eperm")
        assert r["expected"] == ("allow" if r["observed"] else "deny")
    seen = {(r["from"], r["to"]): r["observed"] for r in records}
    # the seed: the producer C reaches the processor A but not the monitor B; A reaches B
    assert seen[("layer2/vmc", "layer2/vma")] is True
    assert seen[("layer2/vmc", "layer2/vmb")] is False
    assert seen[("layer2/vma", "layer2/vmb")] is True
    assert "mnpd" in done.stderr and "STAND-IN" not in done.stderr


def test_table_output_and_an_unmet_expectation(need_lab: None, lab_dir: Path) -> None:
    probes = yaml.safe_load((lab_dir / "probes.yaml").read_text())
    probes[0]["expect"] = "deny" if probes[0]["expect"] == "allow" else "allow"
    wrong = lab_dir.parent / "wrong-probes.yaml"
    wrong.write_text(yaml.safe_dump(probes))
    done = run("lab", str(lab_dir), "--probes", str(wrong))
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:6] == ["FROM", "TO", "PORT/PROTO", "PREDICTED", "OBSERVED", "EXPECTED"]
    assert "(NOT MET)" in lines[1] and "\033[" not in done.stdout  # NO_COLOR
    assert "not as expected" in lines[-1]


def test_invalid_input_builds_nothing(need_lab: None, lab_dir: Path) -> None:
    workloads = list(yaml.safe_load_all((lab_dir / "workloads.yaml").read_text()))
    pods = [w for w in workloads if w and w.get("kind") == "Pod"]
    pods[0]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] = "no-such-network"
    (lab_dir / "workloads.yaml").write_text(yaml.safe_dump_all(workloads))
    proc = subprocess.Popen(mnpctl("lab", str(lab_dir)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "no-such-network" in err and "nothing was built" in err
    assert_clean(proc.pid)


def test_a_lab_failing_half_built_is_removed(need_lab: None, lab_dir: Path) -> None:
    """ipvlan is not in this kernel (nor in many CI kernels): the pod's ADD fails after the node and the first pod
    netns exist, and the lab removes them."""
    text = (
        (lab_dir / "network.yaml")
        .read_text()
        .replace('"macvlan"', '"ipvlan"')
        .replace('"mode": "bridge"', '"mode": "l2"')
    )
    (lab_dir / "network.yaml").write_text(text)
    proc = subprocess.Popen(mnpctl("lab", str(lab_dir)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("this kernel has ipvlan: the failure this test needs does not happen")
    assert proc.returncode == 3, err
    assert "CNI ADD" in err and "ipvlan" in err
    assert_clean(proc.pid)


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill `proc` if it still runs, wait for it and close its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def _wait_for_line(stream: object, needle: str, timeout: float) -> str:
    """Read lines until one contains `needle` (a thread, so the deadline holds); returns what was read."""
    seen: list[str] = []
    found = threading.Event()

    def reader() -> None:
        for line in stream:  # type: ignore[attr-defined]
            seen.append(line)
            if needle in line:
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    assert found.wait(timeout), f"{needle!r} not seen in: {''.join(seen)}"
    return "".join(seen)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_lab_tears_everything_down(need_lab: None, sig: signal.Signals) -> None:
    """The signal arrives while the lab works (after its pods are attached). On a loaded machine this test may be
    too slow to catch the lab before it finishes by itself; that run must be clean too, and it tries again."""
    for _ in range(3):
        proc = subprocess.Popen(mnpctl("lab", str(LAYER2)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_line(proc.stderr, "pods attached", 120)
            proc.send_signal(sig)
            proc.wait(60)
        finally:
            reap(proc)
        assert proc.returncode in (0, 130)
        assert_clean(proc.pid)
        if proc.returncode == 130:
            return
    pytest.fail("the lab always finished before the signal arrived")


@pytest.fixture
def kept() -> Iterator[dict[str, Path | int]]:
    """A lab left running with --keep; removed with --down at the end whatever happens."""
    proc = subprocess.Popen(
        mnpctl("lab", str(LAYER2), "--keep"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    (workdir,) = workdirs_of(proc.pid)
    try:
        yield {"workdir": workdir, "pid": proc.pid}
    finally:
        if workdir.exists():
            run("lab", "--down", str(workdir))
        assert_clean(proc.pid)


def test_keep_leaves_a_working_lab_and_down_removes_it(need_lab: None, kept: dict[str, Path | int]) -> None:
    workdir, pid = Path(kept["workdir"]), int(kept["pid"])
    record = read_record(workdir)
    assert record is not None and record["pid"] == pid
    names = leftover_netns(prefix=LAB_PREFIX, pid=pid)
    assert set(names) == set(record["netns"]) and len(names) == 4  # the node and three pods
    daemon = int(record["processes"]["mnpd"])
    assert process_alive(daemon)
    # still enforcing, still answering: A → B allowed, C → B denied
    ns = {n.rsplit("-", 1)[-1]: n for n in names}
    vma, vmc = f"/run/netns/{ns['vma']}", f"/run/netns/{ns['vmc']}"
    statuses = {i["pod"]: i for i in json.loads((workdir / "mnpd-status.json").read_text())["interfaces"]}
    assert {s["state"] for s in statuses.values()} == {"programmed"}
    vmb_ip = yaml.safe_load((workdir / "manifests" / "pod_layer2_vmb.yaml").read_text())["metadata"]["annotations"]
    address = json.loads(vmb_ip["k8s.v1.cni.cncf.io/network-status"])[0]["ips"][0]
    assert run_probes(vma, [Probe("tcp", address, 9093, 2.0)])[0].allowed
    assert not run_probes(vmc, [Probe("tcp", address, 9093, 0.5)])[0].allowed

    done = run("lab", "--down", str(workdir))
    assert done.returncode == 0, done.stderr
    assert "stopped mnpd" in done.stderr and not workdir.exists()
    assert leftover_netns(prefix=LAB_PREFIX, pid=pid) == []
    assert not process_alive(daemon) or Path(f"/proc/{daemon}/stat").read_text().split(") ")[1].startswith("Z")


def test_a_killed_lab_stops_its_daemon_and_down_removes_the_rest(need_lab: None) -> None:
    """kill -9 skips every teardown: mnpd still goes (PR_SET_PDEATHSIG), the listeners go (their stdin closes),
    and `mnpctl lab --down` removes the namespaces and the work dir from lab.json."""
    proc = subprocess.Popen(mnpctl("lab", str(LAYER2)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(proc.stderr, "every interface programmed", 120)
        (workdir,) = workdirs_of(proc.pid)
        record = read_record(workdir)
        assert record is not None
        daemon = int(record["processes"]["mnpd"])
        proc.kill()
        proc.wait(30)
    finally:
        reap(proc)
    assert wait_pid_exit(daemon, 30), "mnpd outlived the killed lab"
    assert leftover_netns(prefix=LAB_PREFIX, pid=proc.pid) != []  # nothing ran the teardown …
    done = run("lab", "--down", str(workdir))
    assert done.returncode == 0, done.stderr
    assert_clean(proc.pid)  # … until --down
