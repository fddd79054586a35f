"""mnpd's status file as `mnpctl` finds it: present or not, how old, stale or not (daemon/status.py writes it)."""

from __future__ import annotations

import calendar
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import StateError
from shared.state import read_entry_file

# mnpd writes one line per interface, policy and problem (a few hundred bytes each): far below this on any node.
MAX_STATUS_BYTES = 64 * 1024 * 1024


def records(doc: Mapping[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """The objects of the status file's list `key`: the file is input, so anything else there (no list, an item
    that is no object) is left out."""
    items = (doc or {}).get(key)
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


@dataclass(frozen=True)
class StatusFile:
    """mnpd's status file as found: `doc` None when missing or unreadable (`error` says which)."""

    path: str
    doc: dict[str, Any] | None
    error: str | None
    age: float | None  # seconds since `updated` (else since the file's mtime)
    stale: bool

    def interfaces(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {
            (str(i.get("containerID")), str(i.get("ifname"))): i
            for i in records(self.doc, "interfaces")
            if i.get("containerID") and i.get("ifname")
        }

    def describe(self) -> str:
        if self.doc is None:
            return f"{self.error}: {self.path}"
        updated = self.doc.get("updated") or "?"
        return f"updated {updated}, {format_age(self.age)} ago{' (stale)' if self.stale else ''}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "present": self.doc is not None,
            "error": self.error,
            "updated": self.doc.get("updated") if self.doc else None,
            "ageSeconds": None if self.age is None else round(self.age, 1),
            "stale": self.stale,
        }


def _parse_stamp(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (ValueError, OverflowError):
        return None


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds / 3600:.1f}h"


def read_status_file(path: str, now: float, stale_after: float) -> StatusFile:
    """mnpd's status file at `path`, and whether it is older than `stale_after` seconds at `now`. Read as the
    state entries are (shared.state.read_entry_file: a regular file, opened non-blocking, at most
    MAX_STATUS_BYTES): whoever can write beside the state dir can put a FIFO, a huge or a deeply nested
    document there, which must not hang or crash mnpctl."""
    try:
        mtime = os.stat(path).st_mtime
        doc = json.loads(read_entry_file(path, MAX_STATUS_BYTES, follow=True, what="a status file"))
    except FileNotFoundError:
        return StatusFile(path, None, "missing", None, True)
    except (OSError, ValueError, StateError, RecursionError) as exc:
        return StatusFile(path, None, f"unreadable ({exc})", None, True)
    if not isinstance(doc, dict) or doc.get("schema") != 1:
        return StatusFile(path, None, "of an unknown schema", None, True)
    stamp = _parse_stamp(doc.get("updated"))
    age = now - (stamp if stamp is not None else mtime)
    return StatusFile(path, doc, None, age, age > stale_after)
