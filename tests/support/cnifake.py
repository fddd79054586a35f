"""A fake node for the CNI plugin's unit tests: FakeNft per netns path, a tmp state dir, netns that exist or not.

`FakeNode.call("ADD", conf)` runs the real `cni.skel.Dispatcher` with a dict environment and StringIO streams —
no os.environ mutation, no process — and returns the exit code, the parsed stdout and the log lines. Everything
the plugin does on the node goes through `FakeNode.deps`: nft (one `JsonFakeNft` per netns path), the state
store, the netns checks and a fixed clock.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni.config import PluginConf
from cni.plugin import Deps
from cni.skel import Dispatcher
from shared.errors import NetnsGone, NetnsUnusable
from shared.nft.errors import NotFoundError
from shared.nft.fake import FakeNft
from shared.nft.transaction import Transaction
from shared.state import StateStore

CLOCK = 1_778_312_125.0  # 2026-05-09T07:35:25Z
OWN_NETNS = "/proc/1/ns/net"


def _verdict_json(value: str | None) -> Any:
    if value is None:
        return None
    verb, _, target = value.partition(" ")
    return {verb: {"target": target}} if target else {verb: None}


class JsonFakeNft(FakeNft):
    """FakeNft plus what RealNft adds for the plugin — `list_table_json()` in `nft -j` shape (chains; sets and
    maps with their elements) — and scripted failures: exceptions in `fail` are raised by the next `run`s."""

    def __init__(self) -> None:
        super().__init__()
        self.fail: list[Exception] = []

    def run(self, tx: Transaction) -> None:
        if self.fail:
            self.transactions += 1
            raise self.fail.pop(0)
        super().run(tx)

    def list_table_json(self, family: str = "inet", table: str = "mnp") -> str:
        view = self.list_table(family, table)
        items: list[dict[str, Any]] = [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}]
        items.append({"table": {"family": family, "name": table, "handle": 1}})
        for chain in view.chains.values():
            obj: dict[str, Any] = {"family": family, "table": table, "name": chain.name}
            if chain.hook:
                obj.update(type="filter", hook=chain.hook, prio=0, policy=chain.policy)
            items.append({"chain": obj})
        for s in view.sets.values():
            obj = {"family": family, "name": s.name, "table": table, "type": s.key_type}
            if s.value_type:
                obj["map"] = s.value_type
            if s.elements:
                # nft -j writes strings (interface names) unquoted
                keys = [e.key[1:-1] if e.key.startswith('"') else e.key for e in s.elements]
                values = [_verdict_json(e.value) for e in s.elements]
                obj["elem"] = [[k, v] for k, v in zip(keys, values, strict=True)] if s.value_type else keys
            items.append({"map" if s.value_type else "set": obj})
        return json.dumps({"nftables": items})


class GoneNft:
    """nft aimed at a netns that does not exist: nsenter cannot open it."""

    def __init__(self, netns: str) -> None:
        self.netns = netns

    def run(self, tx: Transaction) -> None:
        raise NotFoundError(f"nsenter: cannot open {self.netns}: No such file or directory")

    def list_table_json(self, family: str = "inet", table: str = "mnp") -> str:
        raise NotFoundError(f"nsenter: cannot open {self.netns}: No such file or directory")


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def code(self) -> int | None:
        return self.json.get("code") if self.rc else None


@dataclass
class FakeNode:
    """A node as the plugin sees it. `netns` lists the namespaces that exist; `unusable` paths that exist but are
    no namespace the plugin can use (path → why: EACCES, a mount namespace …); `nfts` their nft state."""

    state_dir: Path
    netns: set[str] = field(default_factory=lambda: {"/run/netns/pod-a", "/run/netns/pod-b"})
    unusable: dict[str, str] = field(default_factory=dict)
    nfts: dict[str, JsonFakeNft] = field(default_factory=dict)
    host: JsonFakeNft = field(default_factory=JsonFakeNft)
    store_factory: Callable[[str], StateStore] = StateStore

    def nft(self, netns: str | None) -> JsonFakeNft | GoneNft:
        if netns is None:
            return self.host
        if netns not in self.netns:
            return GoneNft(netns)
        return self.nfts.setdefault(netns, JsonFakeNft())

    def check_netns(self, netns: str) -> None:
        if netns in self.unusable:
            raise NetnsUnusable(f"{netns}: {self.unusable[netns]}")
        if netns not in self.netns:
            raise NetnsGone(f"network namespace {netns} does not exist")

    def deps(self, conf: PluginConf) -> Deps:
        return Deps(
            nft=self.nft,
            store=self.store_factory,
            clock=lambda: CLOCK,
            own_netns=lambda path: path == OWN_NETNS,
            check_netns=self.check_netns,
        )

    @property
    def store(self) -> StateStore:
        return StateStore(str(self.state_dir))

    def dump(self, netns: str = "/run/netns/pod-a") -> str:
        return self.nfts[netns].dump() if netns in self.nfts else ""

    def transactions(self) -> int:
        return sum(n.transactions for n in self.nfts.values()) + self.host.transactions

    def conf(self, **overrides: Any) -> dict[str, Any]:
        """A chained config for `mnp` as libcni builds it, with a macvlan-like prevResult for net1."""
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "net-a",
            "type": "mnp",
            "stateDir": str(self.state_dir),
            "prevResult": prev_result(),
        }
        conf.update(overrides)
        return {k: v for k, v in conf.items() if v is not None}

    def env(
        self,
        command: str,
        *,
        container: str = "c1",
        netns: str = "/run/netns/pod-a",
        ifname: str = "net1",
        args: str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_UID=uid-1",
        **extra: str,
    ) -> dict[str, str]:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": "/opt/cni/bin",
            "CNI_ARGS": args,
        }
        env.update(extra)
        return env

    def call(
        self,
        command: str,
        conf: Mapping[str, Any] | str | bytes | None = None,
        *,
        env: Mapping[str, str] | None = None,
        deps: Callable[[PluginConf], Deps] | None = None,
        **env_kw: str,
    ) -> Outcome:
        stdin: str | bytes
        if conf is None:
            stdin = json.dumps(self.conf())
        elif isinstance(conf, str | bytes):
            stdin = conf
        else:
            stdin = json.dumps(conf)
        out, err = io.StringIO(), io.StringIO()
        environ = dict(env) if env is not None else self.env(command, **env_kw)
        rc = Dispatcher(environ, stdin, out, err, deps=deps or self.deps, clock=lambda: CLOCK).run()
        return Outcome(rc, out.getvalue(), err.getvalue())


def prev_result(
    ifname: str = "net1",
    address: str = "10.200.0.10/24",
    sandbox: str = "/run/netns/pod-a",
    version: str = "1.0.0",
    mac: str = "52:54:00:12:34:56",
) -> dict[str, Any]:
    """What the macvlan plugin prints for one interface."""
    ip: dict[str, Any] = {"interface": 0, "address": address, "gateway": "10.200.0.1"}
    if version < "1.0.0":
        ip["version"] = "6" if ":" in address else "4"
    return {
        "cniVersion": version,
        "interfaces": [{"name": ifname, "mac": mac, "sandbox": sandbox}],
        "ips": [ip],
        "dns": {},
    }
