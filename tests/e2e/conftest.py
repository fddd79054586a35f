"""Fixtures of the end-to-end suite: `mnpctl lab` on scenario directories, real CNI plugins, real packets.

Real-packet tests need root, iproute2, nft, nsenter, the Debian CNI plugins and the `mnp` plugin; without them
they skip with the reason. Every lab the tests build uses the tests' namespace prefix `mnpt-`, and the session
ends by checking that this process left no namespace, work dir or process behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.lab.build import WORK_ROOT, down, find_plugin, process_alive, read_record
from daemon.testbed.netns import PREFIX, check_leftovers, have_netns_support, sweep_stale_netns

REPO = Path(__file__).resolve().parent.parent.parent
CNI_BIN = Path(os.environ.get("MNP_TEST_CNI_BIN", "/usr/lib/cni"))


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    reason = have_netns_support()
    if reason:
        return reason
    for tool in ("nft", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    if not (CNI_BIN / "macvlan").exists():
        return f"containernetworking-plugins not found in {CNI_BIN}"
    try:
        find_plugin()
    except Exception as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session", autouse=True)
def _session_leak_guard() -> Iterator[None]:
    if have_netns_support() is None:
        sweep_stale_netns()  # debris of killed earlier runs (dead creator pid only)
        for workdir in WORK_ROOT.glob(f"{PREFIX}*") if WORK_ROOT.is_dir() else ():
            owner = (read_record(workdir) or {}).get("pid")
            if isinstance(owner, int) and not process_alive(owner):
                down(workdir)
    yield
    if have_netns_support() is None:
        assert check_leftovers() == [], "the e2e suite leaked namespaces or processes"
        assert own_workdirs() == [], "the e2e suite leaked lab work dirs"


def own_workdirs() -> list[Path]:
    """Lab work dirs this process created (the tests' prefix and our pid)."""
    try:
        return sorted(WORK_ROOT.glob(f"{PREFIX}{os.getpid()}-*"))
    except OSError:
        return []


@pytest.fixture
def need_lab() -> None:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)


def assert_gone(netns: list[str], pids: list[int]) -> None:
    """Nothing a lab created survives it: namespaces (and with them every link in them), processes."""
    alive_ns = [n for n in netns if (Path("/run/netns") / n).exists()]
    alive_pids = [p for p in pids if process_alive(p) and not _zombie(p)]
    assert alive_ns == [] and alive_pids == [], f"leftovers: netns {alive_ns}, processes {alive_pids}"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False
