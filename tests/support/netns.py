"""The tests' netns, node, server and probe helpers: a re-export of `daemon.testbed.netns` with the tests' prefix.

The helpers are product code because `mnpctl lab` builds its throwaway node with them; the tests import them from
here, where every namespace name starts with `mnpt-` (the lab's start with `mnplab-`), so a test run and a lab on
the same machine never mistake each other's namespaces for their own debris. Everything else — `Server`,
`Probe`, `run_probes`, `probe_matrix`, `Hammer` … — is the lab's code unchanged; see daemon/testbed/netns.py.
"""

from __future__ import annotations

from collections.abc import Iterable

from daemon.testbed import netns as _lab
from daemon.testbed.netns import *  # noqa: F403
from daemon.testbed.netns import MasterKind

PREFIX = "mnpt-"


def unique_name(label: str = "ns", *, prefix: str = PREFIX) -> str:
    """`mnpt-<pid>-<4 hex>-<label>`: unique, attributable to this process, sortable by run."""
    return _lab.unique_name(label, prefix=prefix)


class NetNS(_lab.NetNS):
    """`daemon.testbed.netns.NetNS`, created with the tests' prefix."""

    @classmethod
    def create(cls, label: str = "ns", *, lo_up: bool = True, prefix: str = PREFIX) -> _lab.NetNS:
        return super().create(label, lo_up=lo_up, prefix=prefix)


class TestNode(_lab.Node):
    """`daemon.testbed.netns.Node` with the tests' prefix (and not collected by pytest)."""

    __test__ = False

    def __init__(
        self,
        label: str = "node",
        *,
        masters: Iterable[str] = ("m0",),
        kind: MasterKind = "veth",
        prefix: str = PREFIX,
    ) -> None:
        super().__init__(label, masters=masters, kind=kind, prefix=prefix)


def list_netns(prefix: str = PREFIX) -> list[str]:
    return _lab.list_netns(prefix)


def owner_pid(name: str, prefix: str = PREFIX) -> int | None:
    return _lab.owner_pid(name, prefix)


def leftover_netns(*, own_only: bool = True, prefix: str = PREFIX, pid: int | None = None) -> list[str]:
    return _lab.leftover_netns(own_only=own_only, prefix=prefix, pid=pid)


def check_leftovers(prefix: str = PREFIX) -> list[str]:
    return _lab.check_leftovers(prefix)


def sweep_stale_netns(prefix: str = PREFIX) -> list[str]:
    return _lab.sweep_stale_netns(prefix)


__all__ = [*_lab.__all__, "PREFIX", "TestNode"]  # the lab's names (those above with the tests' prefix) and ours
