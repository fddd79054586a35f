"""The node-local status file: what the daemon did to each local interface, for `mnpctl pods/status`.

Default path: `mnpd-status.json` beside the state dir (`/run/mnp/mnpd-status.json`); never inside it, because
the state dir is the contract between the CNI plugin and mnpd and holds only interface entries. Written
atomically (tmp + rename) after a sync that changed anything and after every periodic resync, so a reader always
gets a whole document. Schema 1:

    {
      "schema": 1, "node": "node-a", "updated": "2026-05-09T07:35:25Z",
      "ready": true,                              every source synced and a sync has run since
      "sources": {"api/pods": true, "state-dir": true, ...},
      "writer": {"pid": 4711, "startTime": 123456,   the mnpd that wrote it: pid, start time in clock ticks
                 "pidNamespace": 4026531836,        since boot (/proc/PID/stat field 22), pid namespace inode
                 "bootId": "…"},                    and boot id, so a reader can tell it is still alive
      "problems": {"manifests": ["error: a.yaml: …"]},  what each source cannot use (broken files, garbled answers)
      "policies": [{"policy": "ns1/p", "effect": "enforced fail-closed: …", "problems": ["…"]}],
                                                  policies mnpd cannot use as written, or that apply to no known
                                                  network, each with what it actually does
      "objects": [{"kind": "Pod", "object": "ns1/web-0", "effect": "mnpd leaves out what it cannot read, …",
                   "problems": ["annotation k8s.v1.cni.cncf.io/network-status[1]: 'default' must be true or false"]}],
                                                  objects from the API with parts mnpd cannot read (daemon.sources.
                                                  convert), each with what it does about them
      "interfaces": [
        {"containerID": "3f69…", "ifname": "net1", "pod": "ns1/web-0", "netns": "/var/run/netns/cni-…",
         "state": "programmed",                   programmed | pending | failed | terminated | gone
         "reason": "",                            why it is pending / failed
         "network": "ns1/macvlan-conf",
         "ingress": {"isolated": true, "policies": ["ns1/allow-db"], "allows": 2},
         "egress": {"isolated": false, "policies": [], "allows": 0},
         "rules": "5f3a9c0e1b2d",                 digest of the programmed rules (absent: not programmed by this run)
         "lastProgrammed": "2026-05-09T07:35:25Z", "failures": 0,
         "origin": "adopted"}                     only for an interface mnpd adopted (daemon/sources/adopt.py)
      ],
      "unguarded": [                              local interfaces a policy selects that mnp does not enforce
        {"pod": "ns1/db-0", "ifname": "net1", "network": "ns1/legacy", "reason": "adoption-off",
         "message": "NAD does not chain mnp and adoption is off"}
      ]
    }
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from daemon.clock import Clock
from daemon.logs import fields
from daemon.records import InterfaceBook
from shared.rules import Allow, DirectionRules, InterfaceRules
from shared.value import Value
from shared.version import VERSION

log = logging.getLogger(__name__)
SCHEMA = 1


def _stamp(wall: float | None) -> str | None:
    return None if wall is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def _direction(rules: DirectionRules) -> dict[str, Any]:
    return {"isolated": rules.isolated, "policies": list(rules.policies), "allows": len(rules.allows)}


class RulesDigest:
    """A short digest of programmed rules that changes exactly when a transaction changed them. Computed once
    per rules object (the controller keeps the object until the next transaction), not on every status write:
    hashing the full rules of every interface on every sync dominated the daemon's CPU with large peer sets.
    The peers are in the directions, which the controller makes one object per distinct value (shared by the
    pods of a Deployment): each direction's text is hashed once, and an interface's digest hashes its own
    fields with those two — a policy change of 110 pods in ten groups hashes eleven directions, not 110."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[InterfaceRules, str]] = {}
        self._directions: dict[DirectionRules, str] = {}
        self._allows: dict[Allow, str] = {}

    def __call__(self, rules: InterfaceRules) -> str:
        hit = self._cache.get(id(rules))
        if hit is None or hit[0] is not rules:
            parts = dict(zip(rules._fields, rules._get(rules), strict=True))
            parts.update(ingress=self._direction(rules.ingress), egress=self._direction(rules.egress))
            text = repr(sorted(parts.items()))
            hit = (rules, hashlib.sha256(text.encode()).hexdigest()[:12])
            self._cache[id(rules)] = hit
        return hit[1]

    def _direction(self, rules: DirectionRules) -> str:
        found = self._directions.get(rules)
        if found is None:
            parts = [
                tuple(self._allow(a) for a in rules.allows) if name == "allows" else _plain(value)
                for name, value in zip(rules._fields, rules._get(rules), strict=True)
            ]
            found = self._directions[rules] = hashlib.sha256(repr(parts).encode()).hexdigest()
        return found

    def _allow(self, allow: Allow) -> str:
        """An allow's digest, once per allow object value (a policy selecting pods of several groups puts the same
        allow into each group's direction)."""
        found = self._allows.get(allow)
        if found is None:
            found = self._allows[allow] = hashlib.sha256(repr(_plain(allow)).encode()).hexdigest()
        return found

    def keep_only(self, live: list[InterfaceRules]) -> None:
        ids = {id(r) for r in live}
        self._cache = {k: v for k, v in self._cache.items() if k in ids}
        directions = {d for r in live for d in (r.ingress, r.egress)}
        self._directions = {d: v for d, v in self._directions.items() if d in directions}
        allows = {a for d in directions for a in d.allows}
        self._allows = {a: v for a, v in self._allows.items() if a in allows}


def _plain(value: object) -> object:
    """`value` as nested tuples of its fields, an address prefix as (version, integer, length): the same
    information as its repr at a fraction of the cost (formatting a prefix as text is most of a repr's)."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return (value.version, int(value.network_address), value.prefixlen)
    if isinstance(value, Value):
        return (type(value).__name__, *(_plain(v) for v in value._get(value)))
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read(4096)
    except OSError:
        return None


def process_start_time(pid: int | str = "self") -> int | None:
    """Field 22 of /proc/PID/stat (starttime, clock ticks after boot): with the pid, it names one process for
    the whole uptime, whereas a pid alone is reused. The command name (field 2) may contain spaces and
    parentheses, so the fields are counted after its last ')'."""
    text = _read(f"/proc/{pid}/stat")
    if text is None or ")" not in text:
        return None
    fields_after = text.rsplit(")", 1)[1].split()
    try:
        return int(fields_after[19])  # fields 3.. follow the name: starttime is the 20th of them
    except (IndexError, ValueError):
        return None


def _pid_namespace(pid: int | str = "self") -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def writer_identity() -> dict[str, Any]:
    """Who writes the status file: this process."""
    return {
        "pid": os.getpid(),
        "startTime": process_start_time(),
        "pidNamespace": _pid_namespace(),
        "bootId": (_read("/proc/sys/kernel/random/boot_id") or "").strip() or None,
    }


def _host_pid(pid: int, namespace: int) -> str | None:
    """The /proc entry (as this process sees it) of the process that is `pid` in pid namespace `namespace`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or _pid_namespace(entry) != namespace:
            continue
        for line in (_read(f"/proc/{entry}/status") or "").splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == str(pid):
                return entry
    return None


def writer_alive(doc: Mapping[str, Any]) -> tuple[bool | None, str]:
    """Whether the mnpd that wrote the status document `doc` still runs: True, False, or None when that cannot be
    told (an older file, or a pid namespace this process cannot see into); and a few words saying why (for a
    dead writer: what shows it is dead; its pid is `doc["writer"]["pid"]`)."""
    writer = doc.get("writer")
    if not isinstance(writer, dict) or not isinstance(writer.get("pid"), int):
        return None, "the file does not say which process wrote it"
    pid, started = writer["pid"], writer.get("startTime")
    boot = (_read("/proc/sys/kernel/random/boot_id") or "").strip()
    if writer.get("bootId") and boot and writer["bootId"] != boot:
        return False, "it ran before the last reboot"
    entry: str | None = str(pid)
    namespace = writer.get("pidNamespace")
    if isinstance(namespace, int) and namespace != _pid_namespace():
        try:
            entry = _host_pid(pid, namespace)
        except OSError:
            return None, f"pid {pid} runs in another pid namespace, which this process cannot inspect"
        if entry is None:
            return False, f"its pid namespace {namespace} has no such process"
    now = process_start_time(entry or pid)
    if now is None:
        return False, "no such process"
    if isinstance(started, int) and now != started:
        return False, "the pid is another process now"
    return True, f"pid {pid}"


def status_document(
    controller: InterfaceBook, sources: Mapping[str, bool], node: str, digest: RulesDigest | None = None
) -> dict[str, Any]:
    digest = digest or RulesDigest()
    interfaces = []
    for key in sorted(controller.records):
        record = controller.records[key]
        item: dict[str, Any] = {
            "containerID": key[0],
            "ifname": key[1],
            "pod": record.entry.pod,
            "netns": record.entry.netns,
            "state": record.state,
            "reason": record.reason,
            "lastProgrammed": _stamp(record.last_programmed),
            "failures": record.failures,
        }
        if record.entry.adopted:
            item["origin"] = record.entry.origin
        if record.applied is not None:
            # a short digest of what is programmed: changes exactly when a transaction changed the rules
            item["rules"] = digest(record.applied)
        rules = record.applied or record.desired
        if rules is not None:
            item["network"] = rules.network
            item["ingress"] = _direction(rules.ingress)
            item["egress"] = _direction(rules.egress)
        interfaces.append(item)
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "node": node,
        "ready": all(sources.values()) and controller.synced_once,
        "sources": dict(sources),
        "problems": {name: list(found) for name, found in controller.source_problems().items() if found},
        "policies": controller.policy_notes(),
        "objects": controller.unreadable_notes(),
        "interfaces": interfaces,
        "unguarded": controller.unguarded_report(),
    }


class StatusWriter:
    def __init__(self, path: str, clock: Clock, node: str = "") -> None:
        self.path = path
        self.clock = clock
        self.node = node
        self._last: dict[str, Any] | None = None
        self._digest = RulesDigest()
        self._writer = writer_identity()

    def write(self, controller: InterfaceBook, sources: Mapping[str, bool], force: bool = False) -> None:
        doc = status_document(controller, sources, self.node, self._digest)
        self._digest.keep_only([r.applied for r in controller.records.values() if r.applied is not None])
        if doc == self._last and not force:
            return
        self._last = doc
        # Compact: with `indent` json uses its pure-Python encoder, on the sync thread (docs/benchmarks.md).
        # `mnpctl status` (or `jq .`) shows it readably.
        text = json.dumps({**doc, "writer": self._writer, "updated": _stamp(self.clock.wall())}) + "\n"
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".mnpd-status.", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(text)
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            self._last = None
            log.warning("cannot write the status file: %s", exc, extra=fields(source=self.path))
