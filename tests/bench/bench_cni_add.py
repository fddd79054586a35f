"""Benchmark (not a test): wall time of the `mnp` plugin's ADD next to the macvlan plugin's own ADD.

    sudo .venv/bin/python -m tests.bench.bench_cni_add [-n 25] [--json out.json] [--plugin dist/mnp/mnp …]

Same setup for both, interleaved so both see the same machine noise: a test node netns with a veth master `m0`
and a pod netns; every round runs macvlan ADD (timed), then mnp ADD with macvlan's result as prevResult (timed),
then DEL of both (untimed). Each plugin is executed directly, as a runtime does, by a child that enters the node
netns before exec (setns in preexec, no nsenter/`ip netns exec` in the measured time). VERSION is measured too: it
is pure start-up. Next to wall time, the CPU time of the call and everything it waited for (getrusage of the
children), which a loaded machine disturbs less. Prints a table and a JSON document (docs/benchmarks.md "CNI ADD"
records the results).

The frozen one-dir build (dist/mnp/mnp) is built first if it is missing. Other variants: `--plugin PATH` (any
number; e.g. dist/mnp-onefile) and `--venv` (the plugin run by the venv's Python, for comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from daemon.testbed.netns import Node, have_netns_support

__test__ = False  # not collected by pytest

ROOT = Path(__file__).resolve().parents[2]
MACVLAN = Path("/usr/lib/cni/macvlan")
FROZEN = ROOT / "dist" / "mnp" / "mnp"
CLONE_NEWNET = 0x40000000


def enter(netns: str) -> Callable[[], None]:
    """A preexec_fn that moves the child into `netns` (setns is per thread; the child has one)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        fd = os.open(netns, os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)

    return preexec


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(
    argv: Sequence[str], env: dict[str, str], stdin: bytes, preexec: Callable[[], None]
) -> tuple[float, float, bytes]:
    """Run one plugin call: (wall ms, CPU ms of it and every process it waited for, stdout)."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(list(argv), input=stdin, env=env, capture_output=True, preexec_fn=preexec, check=False)
    elapsed, cpu = (time.perf_counter() - t0) * 1000, (_children_cpu() - cpu0) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} {env.get('CNI_COMMAND')} failed: {done.stdout!r} {done.stderr!r}")
    return elapsed, cpu, done.stdout


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "cpu": cpu,
        "python": platform.python_version(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def summary(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=10)
    return {"median": statistics.median(samples), "p10": qs[0], "p90": qs[-1], "min": min(samples)}


KEEPER = (
    "import sys\n"
    "from daemon.keeper import SocketKeeper\n"
    "keeper = SocketKeeper(sys.argv[1]).start()\n"
    "sys.stdin.read()\n"
    "keeper.stop()\n"
    "print(keeper.kept, keeper.refused)\n"
)


@contextlib.contextmanager
def keeper(state_dir: str) -> Iterator[None]:
    """mnpd's netlink socket keeper (daemon/keeper.py) in a process of its own, as on a node."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", KEEPER, state_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(os.path.join(state_dir, ".nfnl-keeper")):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the keeper did not start")
        time.sleep(0.01)
    try:
        yield
    finally:
        out, _ = proc.communicate(b"", timeout=30)
        print(f"keeper: kept, refused = {out.decode().split()}", file=sys.stderr)


def bench(plugins: dict[str, list[str]], rounds: int, warmup: int) -> dict[str, Any]:
    # The state dir on tmpfs, like the default /run/mnp/state on a node (here / and /tmp are one disk: an fsync
    # there costs ~3 ms that no node pays).
    tmpfs = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with (
        Node("bench", masters=["m0"]) as node,
        tempfile.TemporaryDirectory(prefix="mnp-bench-", dir=tmpfs) as scratch,
        keeper(f"{scratch}/kept"),
    ):
        pod = node.new_pod("pod")
        preexec = enter(node.ns.path)
        base_env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_CONTAINERID": "bench-ctr",
            "CNI_NETNS": pod.path,
            "CNI_IFNAME": "net1",
            "CNI_PATH": f"{MACVLAN.parent}",
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod;K8S_POD_UID=0000",
        }
        macvlan_conf = {
            "cniVersion": "1.0.0",
            "name": "bench",
            "type": "macvlan",
            "master": "m0",
            "mode": "bridge",
            "ipam": {"type": "static", "addresses": [{"address": "10.250.0.10/24"}]},
        }
        verbs = ("ADD", "ADD cpu", "VERSION")
        # every plugin twice: as on a node where mnpd runs (its keeper takes the committed socket), and without
        variants = {f"{name} + mnpd": (argv, f"{scratch}/kept") for name, argv in plugins.items()}
        variants |= {name: (argv, f"{scratch}/state") for name, argv in plugins.items()}
        times: dict[str, dict[str, list[float]]] = {name: {v: [] for v in verbs} for name in ["macvlan", *variants]}
        version_stdin = b'{"cniVersion": "1.0.0"}'
        for i in range(warmup + rounds):
            record = i >= warmup
            t, cpu, out = run(
                [str(MACVLAN)], base_env | {"CNI_COMMAND": "ADD"}, json.dumps(macvlan_conf).encode(), preexec
            )
            if record:
                times["macvlan"]["ADD"].append(t)
                times["macvlan"]["ADD cpu"].append(cpu)
            for name, (argv, state_dir) in variants.items():
                conf = {"cniVersion": "1.0.0", "name": "bench", "type": "mnp", "stateDir": state_dir}
                conf["prevResult"] = json.loads(out)
                t, cpu, _ = run(argv, base_env | {"CNI_COMMAND": "ADD"}, json.dumps(conf).encode(), preexec)
                if record:
                    times[name]["ADD"].append(t)
                    times[name]["ADD cpu"].append(cpu)
                run(argv, base_env | {"CNI_COMMAND": "DEL"}, json.dumps(conf).encode(), preexec)
            run([str(MACVLAN)], base_env | {"CNI_COMMAND": "DEL"}, json.dumps(macvlan_conf).encode(), preexec)
            for name, argv in [("macvlan", [str(MACVLAN)]), *((n, v[0]) for n, v in variants.items())]:
                t, _, _ = run(argv, {"CNI_COMMAND": "VERSION", "PATH": base_env["PATH"]}, version_stdin, preexec)
                if record:
                    times[name]["VERSION"].append(t)
    results = {name: {verb: summary(xs) for verb, xs in by_verb.items()} for name, by_verb in times.items()}
    base, base_cpu = results["macvlan"]["ADD"]["median"], results["macvlan"]["ADD cpu"]["median"]
    return {
        "machine": machine(),
        "rounds": rounds,
        "results": results,
        "ratio_add_vs_macvlan": {name: results[name]["ADD"]["median"] / base for name in results if name != "macvlan"},
        "ratio_add_cpu_vs_macvlan": {
            name: results[name]["ADD cpu"]["median"] / base_cpu for name in results if name != "macvlan"
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", "--rounds", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--plugin", action="append", default=[], help="another mnp executable to measure")
    parser.add_argument("--venv", action="store_true", help="also measure `python -m cni` from the venv")
    parser.add_argument("--json", type=Path, help="write the JSON document here too")
    args = parser.parse_args()
    reason = have_netns_support()
    if reason or not MACVLAN.exists():
        print(f"cannot run: {reason or f'{MACVLAN} missing'}", file=sys.stderr)
        return 2
    if not FROZEN.exists():
        subprocess.run([str(ROOT / "packaging" / "build-plugin.sh")], check=True)
    plugins = {"mnp (frozen one-dir)": [str(FROZEN)]}
    for path in args.plugin:
        plugins[f"mnp ({path})"] = [str(Path(path).resolve())]
    if args.venv:
        plugins["mnp (venv python -m cni)"] = [sys.executable, "-m", "cni"]
    doc = bench(plugins, args.rounds, args.warmup)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{'plugin':40} {'ADD median':>10} {'p10':>7} {'p90':>7} {'ADD cpu':>8} {'VERSION':>8} {'ratio':>6}  (ms)")
    for name, by_verb in doc["results"].items():
        add, cpu, version = by_verb["ADD"], by_verb["ADD cpu"], by_verb["VERSION"]
        ratio = doc["ratio_add_vs_macvlan"].get(name, 1.0)
        print(
            f"{name:40} {add['median']:10.1f} {add['p10']:7.1f} {add['p90']:7.1f} {cpu['median']:8.1f}"
            f" {version['median']:8.1f} {ratio:6.2f}"
        )
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
