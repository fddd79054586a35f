"""Shared helpers of the benchmark suite: statistics, the machine description, bounded waits, cleanup.

Not a test module (pytest never collects tests/bench; see tests/bench/conftest.py).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__test__ = False

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "mnpb-"  # every netns, link and scratch dir the suite creates starts with this
CNI_BIN = Path(os.environ.get("MNP_BENCH_CNI_BIN", "/usr/lib/cni"))


class BenchError(RuntimeError):
    """A part could not run (not a slow result): the message says why."""


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) — with n samples, p99 is the largest unless n ≥ 100."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def summary(samples: Sequence[float]) -> dict[str, float]:
    xs = list(samples)
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "p50": percentile(xs, 50),
        "p90": percentile(xs, 90),
        "p99": percentile(xs, 99),
        "min": min(xs),
        "max": max(xs),
    }


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.005, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy (returned) or `timeout` s pass (BenchError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not reached within {timeout:g} s")
        time.sleep(interval)


def _first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "?"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    os_name = "?"
    with_release = Path("/etc/os-release")
    if with_release.exists():
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', with_release.read_text(), re.M)
        os_name = m.group(1) if m else "?"
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": os_name,
        "nft": _first_line(["nft", "--version"]),
        "conntrack": _first_line(["conntrack", "--version"]) if shutil.which("conntrack") else "absent",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its own threads, not its children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_children_cpu_seconds(pid: int) -> float:
    """cutime + cstime: CPU of the children the process has waited for (nsenter/nft/conntrack)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[13]) + int(fields[14])) / ticks


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    rss = hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


def fmt_ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.1f} ms"
