"""The daemon's bookkeeping for each local interface, as the controller keeps it and the status file reports it.

Its own module so that readers of the records (daemon.status) need not import the controller that writes them:
the controller imports this module and daemon.status, never the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.rules import InterfaceRules
from shared.state import StateEntry

IfaceKey = tuple[str, str]  # (containerID, ifname): a state entry's key

PROGRAMMED, PENDING, FAILED, TERMINATED, GONE = "programmed", "pending", "failed", "terminated", "gone"


@dataclass
class InterfaceRecord:
    """The controller's bookkeeping for one local interface (one state entry)."""

    entry: StateEntry
    state: str = PENDING
    reason: str = "not computed yet"
    desired: InterfaceRules | None = None  # last computed
    # What the table holds as far as this process knows: what it last programmed, or the plugin's pending table
    # for an entry that appeared while it ran (None: unknown — full form and a conntrack pass next).
    applied: InterfaceRules | None = None
    last_programmed: float | None = None  # wall clock
    last_error: str = ""
    failures: int = 0
    conntrack_due: bool = False  # a withdrawal whose conntrack cleanup has not succeeded yet
    pod_uid: str = ""
    # The namespace the entry's path named when this daemon first saw it: a path that later names another one
    # (a reused /proc/PID) is never programmed with this interface's rules (daemon.apply). None: not readable.
    identity: tuple[int, int] | None = None
    # The interface's index in its netns, on which its table dispatches: the entry's, or looked up (0: unknown —
    # it cannot be programmed and stays in the plugin's closed table; looked up again on the next sync).
    ifindex: int = 0

    def policies(self) -> set[str]:
        if self.desired is None:
            return set()
        return set(self.desired.ingress.policies) | set(self.desired.egress.policies)


class InterfaceBook(Protocol):
    """What a reader of the records sees of the controller: the records, and whether a full sync has run."""

    records: dict[IfaceKey, InterfaceRecord]
    synced_once: bool  # a sync ran after every source had synced

    def policy_notes(self) -> list[dict[str, Any]]:
        """The policies not used as written, or applying to no known network, with what each does."""
        ...

    def unreadable_notes(self) -> list[dict[str, Any]]:
        """The objects from the API with parts mnpd cannot read, with what it does."""
        ...

    def source_problems(self) -> Mapping[str, Sequence[str]]:
        """What each source currently cannot use."""
        ...

    def unguarded_report(self) -> list[dict[str, Any]]:
        """The selected local interfaces mnp neither chains nor adopts, as status-file items."""
        ...
