"""A CNI runtime that executes conflists the way libcni (containerd, CRI-O, Multus) does: the lab's Multus,
and the test suite's runtime.

Why: mnp's CNI plugin is a *chained* plugin.  What it sees — its own object with ``name`` and
``cniVersion`` copied from the list, ``prevResult``, ``runtimeConfig``, CNI_ARGS, the cached result
on CHECK/DEL, reverse order on DEL, GC's ``cni.dev/valid-attachments`` — is decided by the runtime,
and no runtime binary (cnitool, containerd) is available on the project's machines.  This module
reproduces libcni's behaviour (libcni/api.go, spec 1.1) closely enough that a plugin passing
here behaves the same under a real kubelet, while recording every invocation (for assertions,
and for the lab's error messages).

Faithful to libcni:
  * ADD runs the plugins in order, plugin *i* gets plugin *i-1*'s parsed stdout as ``prevResult``
    (the first gets none); the final result is cached (cniCacheV1 JSON under
    ``cache_dir/results/<network>-<containerID>-<ifname>``); a plugin that prints no result on
    ADD is an error.
  * CHECK (list cniVersion >= 0.4.0, else an error; skipped if ``disableCheck``) and DEL get the
    cached result as ``prevResult``; DEL runs in reverse order; the cache is removed after a
    successful DEL, so a second DEL gets no ``prevResult``.
  * ``runtimeConfig`` holds only the capabilities the plugin declares true *and* the caller passed.
  * Env: the runtime's environment plus CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
    CNI_PATH, CNI_ARGS (``IgnoreUnknown=1;K8S_POD_NAMESPACE=…;K8S_POD_NAME=…;
    K8S_POD_INFRA_CONTAINER_ID=…;K8S_POD_UID=…``).
  * GC: DEL of every cached attachment of the network not in the valid list (with its cached
    netns/args/capabilities), then, for cniVersion >= 1.1.0, GC to each plugin with
    ``cni.dev/valid-attachments``.  STATUS (>= 1.1.0) to each plugin in order, stopping at the
    first error.  Both send empty CNI_CONTAINERID/NETNS/IFNAME/ARGS, as libcni does.
  * VERSION sends ``{"cniVersion": <newest>}`` with the dummy NETNS/IFNAME/PATH libcni uses.
  * Errors: non-zero exit → the CNI error JSON on stdout (code/msg/details), or the stderr text.

Deliberate differences (for hygiene, all switchable):
  * DEL continues past a failing plugin so the rest still clean up, then raises the *first*
    error (libcni stops at the first failure: ``continue_del_on_error=False``).  Either way
    the cache is kept when a DEL failed, so a retried DEL gets ``prevResult`` again.
  * ``cache_dir/results`` is created up front (libcni's GC silently does nothing at all when
    that directory does not exist yet).
  * DEL/CHECK without ``capability_args`` reuse the ones cached at ADD (a real runtime passes the
    same ones again).

Plugins can run inside a given netns (``exec_netns``: a netns name or a NetNS → ``ip netns exec``,
any other path → ``nsenter --net=``) — macvlan creates its link in the netns it runs in, so the lab
and the tests run it inside a "node" netns, never in the host's root netns.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_KIND",
    "NEWEST_VERSION",
    "Attachment",
    "CachedAttachment",
    "CniError",
    "CniFailure",
    "CniResult",
    "CniRuntime",
    "Conflist",
    "IPConfig",
    "Interface",
    "NetworkList",
    "PluginCall",
    "PodRef",
    "VersionInfo",
    "build_plugin_config",
    "load_conflist",
    "version_ge",
]

NEWEST_VERSION = "1.1.0"
CACHE_KIND = "cniCacheV1"

# libcni's cniReg `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`: Go's `$` ends the text, so fullmatch (Python's `$` would let a
# trailing newline through)
_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")

Conflist = Mapping[str, Any] | str | os.PathLike[str]


# --------------------------------------------------------------------------------------------
# Errors


class CniFailure(Exception):
    """Any failure of a CNI operation (bad config, plugin not found, plugin error, timeout).

    ``others`` holds further failures when an operation kept going after the first one
    (DEL with continue_del_on_error, GC).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.others: list[CniFailure] = []


class CniError(CniFailure):
    """A plugin exited non-zero (or timed out / printed garbage).

    ``code``/``msg``/``details`` come from the CNI error JSON on the plugin's stdout; ``code`` is
    None when there was none (then ``msg`` is built from stderr, as libcni does).
    """

    def __init__(
        self,
        *,
        plugin: str,
        command: str,
        rc: int | None,
        code: int | None,
        msg: str,
        details: str = "",
        stderr: str = "",
        stdout: str = "",
        error: Mapping[str, Any] | None = None,
    ) -> None:
        text = f"plugin {plugin!r} failed ({command}, rc {rc}): code {code}: {msg}"
        if details:
            text += f" ({details})"
        super().__init__(text)
        self.plugin = plugin
        self.command = command
        self.rc = rc
        self.code = code
        self.msg = msg
        self.details = details
        self.stderr = stderr
        self.stdout = stdout
        self.error: dict[str, Any] = dict(error or {})


# --------------------------------------------------------------------------------------------
# Data types


@dataclass(frozen=True)
class PodRef:
    """The Kubernetes pod an attachment belongs to (goes into CNI_ARGS)."""

    namespace: str = "default"
    name: str = "pod"
    uid: str = ""  # "" → a uuid derived from the container id


@dataclass(frozen=True)
class Attachment:
    """One (container, interface) attachment: what libcni's RuntimeConf holds."""

    container_id: str
    netns: str | os.PathLike[str]
    ifname: str = "net1"
    pod: PodRef = field(default_factory=PodRef)
    extra_args: tuple[tuple[str, str], ...] = ()  # appended to CNI_ARGS
    args: tuple[tuple[str, str], ...] | None = None  # the complete CNI_ARGS instead (e.g. from a cache)

    @property
    def netns_path(self) -> str:
        return os.fspath(self.netns)

    def cni_args(self) -> list[tuple[str, str]]:
        if self.args is not None:
            return list(self.args)
        uid = self.pod.uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"mnp/{self.container_id}"))
        return [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", self.pod.namespace),
            ("K8S_POD_NAME", self.pod.name),
            ("K8S_POD_INFRA_CONTAINER_ID", self.container_id),
            ("K8S_POD_UID", uid),
            *self.extra_args,
        ]


@dataclass(frozen=True)
class NetworkList:
    """A parsed conflist (a single plugin conf is wrapped into a one-plugin list, like libcni)."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    disable_check: bool = False
    disable_gc: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    def bytes(self) -> bytes:
        return json.dumps(self.raw, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str | None = None
    sandbox: str | None = None
    mtu: int | None = None


@dataclass(frozen=True)
class IPConfig:
    address: str  # CIDR, e.g. "10.200.0.10/24"
    gateway: str | None = None
    interface: int | None = None

    @property
    def ip(self) -> str:
        """The address without the prefix length."""
        return self.address.split("/", 1)[0]


@dataclass(frozen=True)
class CniResult:
    """A parsed CNI result; ``raw`` is exactly what the last plugin printed (parsed JSON)."""

    cni_version: str
    interfaces: tuple[Interface, ...]
    ips: tuple[IPConfig, ...]
    routes: tuple[dict[str, Any], ...]
    dns: dict[str, Any]
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CniResult:
        ifaces = tuple(
            Interface(str(i.get("name", "")), i.get("mac"), i.get("sandbox"), i.get("mtu"))
            for i in raw.get("interfaces") or []
        )
        ips = tuple(IPConfig(str(i["address"]), i.get("gateway"), i.get("interface")) for i in raw.get("ips") or [])
        return cls(
            cni_version=str(raw.get("cniVersion", "")),
            interfaces=ifaces,
            ips=ips,
            routes=tuple(raw.get("routes") or []),
            dns=dict(raw.get("dns") or {}),
            raw=dict(raw),
        )

    def addresses(self, ifname: str | None = None) -> list[str]:
        """CIDR addresses (of the interface named ``ifname`` in the result, or all)."""
        out = []
        for ip in self.ips:
            if ifname is not None:
                idx = ip.interface
                if idx is None or not (0 <= idx < len(self.interfaces)) or self.interfaces[idx].name != ifname:
                    continue
            out.append(ip.address)
        return out

    def ip(self, ifname: str | None = None) -> str:
        """The first address without prefix length (raises if there is none)."""
        addrs = self.addresses(ifname)
        if not addrs:
            raise LookupError(f"no address for {ifname or 'any interface'} in result")
        return addrs[0].split("/", 1)[0]


@dataclass(frozen=True)
class VersionInfo:
    cni_version: str
    supported_versions: tuple[str, ...]


@dataclass(frozen=True)
class CachedAttachment:
    """A cache entry (cniCacheV1) as written after a successful ADD."""

    container_id: str
    ifname: str
    network: str
    netns: str
    cni_args: tuple[tuple[str, str], ...]
    capability_args: dict[str, Any]
    result: dict[str, Any]
    config: bytes
    path: Path


@dataclass
class PluginCall:
    """One plugin execution, recorded for assertions and for debugging a failing test."""

    plugin: str
    path: str
    command: str
    stdin: bytes
    env: dict[str, str]  # the CNI_* variables only
    rc: int | None
    stdout: str
    stderr: str
    duration: float

    @property
    def config(self) -> dict[str, Any]:
        """The stdin parsed as JSON (``{}`` if it is not a JSON object)."""
        try:
            value = json.loads(self.stdin)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def error(self) -> CniError | None:
        """The CniError this call amounts to (libcni's rules), or None if it succeeded."""
        if self.rc == 0:
            return None
        if self.rc is None:
            return CniError(
                plugin=self.plugin,
                command=self.command,
                rc=None,
                code=None,
                msg=f"timed out after {self.duration:.1f} s",
                stderr=self.stderr,
                stdout=self.stdout,
            )
        if not self.stdout.strip():
            msg = (
                f"netplugin failed: {self.stderr!r}"
                if self.stderr
                else f"netplugin failed with no error message: exit status {self.rc}"
            )
            return CniError(
                plugin=self.plugin, command=self.command, rc=self.rc, code=None, msg=msg, stderr=self.stderr
            )
        try:
            err = json.loads(self.stdout)
            if not isinstance(err, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            return CniError(
                plugin=self.plugin,
                command=self.command,
                rc=self.rc,
                code=None,
                msg=f"netplugin failed but error parsing its diagnostic message {self.stdout!r}: {exc}",
                stderr=self.stderr,
                stdout=self.stdout,
            )
        code = err.get("code")
        return CniError(
            plugin=self.plugin,
            command=self.command,
            rc=self.rc,
            code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            msg=str(err.get("msg", "")),
            details=str(err.get("details", "")),
            stderr=self.stderr,
            stdout=self.stdout,
            error=err,
        )


# --------------------------------------------------------------------------------------------
# Helpers


def _version_tuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError as exc:
        raise CniFailure(f"invalid cniVersion {v!r}") from exc


def version_ge(a: str, b: str) -> bool:
    return _version_tuple(a) >= _version_tuple(b)


def _truthy(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() == "true")


def load_conflist(conf: Conflist | NetworkList) -> NetworkList:
    """Parse a conflist from a mapping, a JSON string or a file path (a single conf is wrapped)."""
    if isinstance(conf, NetworkList):
        return conf
    if isinstance(conf, Mapping):
        raw: Any = json.loads(json.dumps(conf))  # deep copy, JSON-clean
    elif isinstance(conf, str) and conf.lstrip().startswith("{"):
        raw = json.loads(conf)
    else:
        raw = json.loads(Path(conf).read_text())
    if not isinstance(raw, dict):
        raise CniFailure("network configuration is not a JSON object")
    if "plugins" not in raw:
        if "type" not in raw:
            raise CniFailure("configuration has neither 'plugins' nor 'type'")
        raw = {"cniVersion": raw.get("cniVersion", ""), "name": raw.get("name", ""), "plugins": [raw]}
    name, cni_version, plugins = raw.get("name"), raw.get("cniVersion"), raw.get("plugins")
    if not isinstance(name, str) or not name:
        raise CniFailure("conflist has no 'name'")
    if not _ID_RE.fullmatch(name):
        raise CniFailure(f"invalid network name {name!r}")
    if not isinstance(cni_version, str) or not cni_version:
        raise CniFailure("conflist has no 'cniVersion'")
    _version_tuple(cni_version)
    if not isinstance(plugins, list) or not plugins:
        raise CniFailure("conflist has no plugins")
    for p in plugins:
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
            raise CniFailure(f"plugin entry without a type: {p!r}")
    return NetworkList(
        name=name,
        cni_version=cni_version,
        plugins=tuple(plugins),
        disable_check=_truthy(raw.get("disableCheck")),
        disable_gc=_truthy(raw.get("disableGC")),
        raw=raw,
    )


def _validate_attachment(att: Attachment) -> None:
    if not att.container_id or not _ID_RE.fullmatch(att.container_id):
        raise CniFailure(f"invalid container id {att.container_id!r}")
    name = att.ifname
    if (
        not name
        or len(name) > 15
        or name in (".", "..")
        or any(c in name for c in "/:")
        or any(c.isspace() for c in name)
    ):
        raise CniFailure(f"invalid interface name {name!r}")


def build_plugin_config(
    plugin: Mapping[str, Any],
    net: NetworkList,
    prev_result: Mapping[str, Any] | None,
    capability_args: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """libcni's buildOneConfig: own object + name/cniVersion (+ prevResult) (+ runtimeConfig)."""
    conf = dict(plugin)
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    if prev_result is not None:
        conf["prevResult"] = prev_result
    caps = plugin.get("capabilities")
    rc = {}
    if isinstance(caps, Mapping) and capability_args:
        rc = {k: capability_args[k] for k, enabled in caps.items() if enabled is True and k in capability_args}
    if rc:
        conf["runtimeConfig"] = rc
    return conf


# --------------------------------------------------------------------------------------------
# The runtime


class CniRuntime:
    """Runs CNI plugins/conflists like libcni.  Thread-safe for concurrent operations.

    ``plugin_dirs`` is CNI_PATH (searched in order); ``cache_dir`` holds the result cache;
    ``exec_netns`` is the netns plugins run in (None = the caller's — do not use that with
    interface plugins like macvlan).  ``calls`` records every execution.
    """

    def __init__(
        self,
        plugin_dirs: Sequence[str | os.PathLike[str]],
        cache_dir: str | os.PathLike[str],
        *,
        exec_netns: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        continue_del_on_error: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.plugin_dirs = [Path(d) for d in plugin_dirs]
        self.cache_dir = Path(cache_dir)
        self.exec_netns = exec_netns
        self.timeout = timeout
        self.continue_del_on_error = continue_del_on_error
        self.extra_env = dict(extra_env or {})
        self.calls: list[PluginCall] = []
        self._lock = threading.Lock()
        (self.cache_dir / "results").mkdir(parents=True, exist_ok=True)

    # ---- plumbing

    @property
    def cni_path(self) -> str:
        return os.pathsep.join(str(d) for d in self.plugin_dirs)

    def find_plugin(self, plugin_type: str) -> Path:
        """First ``plugin_dirs/<type>`` that exists (libcni's FindInPath)."""
        if not plugin_type or "/" in plugin_type:
            raise CniFailure(f"invalid plugin type {plugin_type!r}")
        for d in self.plugin_dirs:
            p = d / plugin_type
            if p.exists() and not p.is_dir():
                return p
        raise CniFailure(f"failed to find plugin {plugin_type!r} in path {[str(d) for d in self.plugin_dirs]}")

    def _exec_prefix(self) -> list[str]:
        ns = self.exec_netns
        if ns is None:
            return []
        path = os.fspath(ns)
        if "/" not in path:
            return ["ip", "netns", "exec", path]
        if os.path.dirname(path) in ("/run/netns", "/var/run/netns"):
            return ["ip", "netns", "exec", os.path.basename(path)]
        return ["nsenter", f"--net={path}", "--"]

    def exec_plugin(
        self,
        plugin_type: str,
        command: str,
        stdin: bytes | Mapping[str, Any],
        *,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        cni_args: str = "",
        cni_path: str | None = None,
        timeout: float | None = None,
    ) -> PluginCall:
        """Execute one plugin once and record it; never raises for a plugin failure (see .error()).

        The low-level entry for tests that need to hand-craft stdin (malformed JSON, odd env).
        """
        path = self.find_plugin(plugin_type)
        data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
        cni_env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_ARGS": cni_args,
            "CNI_IFNAME": ifname,
            "CNI_PATH": self.cni_path if cni_path is None else cni_path,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update(self.extra_env)
        env.update(cni_env)
        argv = [*self._exec_prefix(), str(path)]
        limit = self.timeout if timeout is None else timeout
        t0 = time.monotonic()
        rc: int | None
        for attempt in range(6):
            try:
                proc = subprocess.run(argv, input=data, capture_output=True, env=env, timeout=limit, check=False)
            except subprocess.TimeoutExpired as exc:
                rc, out, err = None, exc.stdout or b"", exc.stderr or b""
                break
            except OSError as exc:
                if exc.errno == errno.ETXTBSY and attempt < 5:  # libcni retries "text file busy" too
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise CniFailure(f"cannot execute {path}: {exc}") from exc
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
            if rc != 0 and not out and b"Text file busy" in err and attempt < 5:
                time.sleep(0.05 * (attempt + 1))
                continue
            break
        call = PluginCall(
            plugin=plugin_type,
            path=str(path),
            command=command,
            stdin=data,
            env=cni_env,
            rc=rc,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            duration=time.monotonic() - t0,
        )
        with self._lock:
            self.calls.append(call)
        return call

    def _run(self, plugin_type: str, command: str, conf: Mapping[str, Any], att: Attachment | None) -> PluginCall:
        if att is None:
            call = self.exec_plugin(plugin_type, command, conf)
        else:
            call = self.exec_plugin(
                plugin_type,
                command,
                conf,
                container_id=att.container_id,
                netns=att.netns_path,
                ifname=att.ifname,
                cni_args=";".join(f"{k}={v}" for k, v in att.cni_args()),
            )
        error = call.error()
        if error is not None:
            raise error
        return call

    # ---- cache

    def cache_path(self, network: str, att: Attachment) -> Path:
        return self.cache_dir / "results" / f"{network}-{att.container_id}-{att.ifname}"

    def _write_cache(
        self, net: NetworkList, att: Attachment, result: Mapping[str, Any], caps: Mapping[str, Any] | None
    ) -> None:
        entry: dict[str, Any] = {
            "kind": CACHE_KIND,
            "containerId": att.container_id,
            "config": base64.b64encode(net.bytes()).decode(),
            "ifName": att.ifname,
            "networkName": net.name,
            "netns": att.netns_path,
            "cniArgs": [list(kv) for kv in att.cni_args()],
            "result": dict(result),
        }
        if caps:
            entry["capabilityArgs"] = dict(caps)
        path = self.cache_path(net.name, att)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)

    @staticmethod
    def _read_cache_file(path: Path) -> CachedAttachment | None:
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(d, dict) or d.get("kind") != CACHE_KIND or not d.get("ifName") or not d.get("networkName"):
            return None
        return CachedAttachment(
            container_id=str(d.get("containerId", "")),
            ifname=str(d["ifName"]),
            network=str(d["networkName"]),
            netns=str(d.get("netns", "")),
            cni_args=tuple((str(k), str(v)) for k, v in d.get("cniArgs") or []),
            capability_args=dict(d.get("capabilityArgs") or {}),
            result=dict(d.get("result") or {}),
            config=base64.b64decode(d.get("config") or ""),
            path=path,
        )

    def cached(self, conflist: Conflist | NetworkList, att: Attachment) -> CachedAttachment | None:
        """The cache entry for this attachment, or None."""
        net = load_conflist(conflist)
        return self._read_cache_file(self.cache_path(net.name, att))

    def cached_attachments(self, network: str | None = None) -> list[CachedAttachment]:
        """All cache entries (of one network), sorted by file name like libcni."""
        out = []
        for p in sorted((self.cache_dir / "results").iterdir()):
            if p.name.endswith(".tmp"):
                continue
            entry = self._read_cache_file(p)
            if entry and (network is None or entry.network == network):
                out.append(entry)
        return out

    # ---- operations

    def add(
        self,
        conflist: Conflist | NetworkList,
        att: Attachment,
        *,
        capability_args: Mapping[str, Any] | None = None,
    ) -> CniResult:
        """ADD every plugin in order, chaining prevResult; cache and return the final result."""
        net = load_conflist(conflist)
        _validate_attachment(att)
        prev: dict[str, Any] | None = None
        for plugin in net.plugins:
            conf = build_plugin_config(plugin, net, prev, capability_args)
            call = self._run(plugin["type"], "ADD", conf, att)
            try:
                parsed = json.loads(call.stdout)
                if not isinstance(parsed, dict):
                    raise ValueError("result is not a JSON object")
            except ValueError as exc:
                raise CniError(
                    plugin=plugin["type"],
                    command="ADD",
                    rc=call.rc,
                    code=None,
                    msg=f"failed to parse ADD result: {exc}",
                    stderr=call.stderr,
                    stdout=call.stdout,
                ) from exc
            parsed.setdefault("cniVersion", net.cni_version)  # libcni's fixupResultVersion
            prev = parsed
        assert prev is not None
        self._write_cache(net, att, prev, capability_args)
        return CniResult.from_json(prev)

    def _caps_for(
        self, net: NetworkList, att: Attachment, capability_args: Mapping[str, Any] | None
    ) -> tuple[CachedAttachment | None, Mapping[str, Any] | None]:
        entry = self._read_cache_file(self.cache_path(net.name, att))
        if capability_args is None and entry is not None:
            capability_args = entry.capability_args
        return entry, capability_args

    def check(
        self,
        conflist: Conflist | NetworkList,
        att: Attachment,
        *,
        capability_args: Mapping[str, Any] | None = None,
    ) -> None:
        """CHECK every plugin in order with the cached result as prevResult."""
        net = load_conflist(conflist)
        if not version_ge(net.cni_version, "0.4.0"):
            raise CniFailure(f'configuration version "{net.cni_version}" does not support the CHECK command')
        if net.disable_check:
            return
        entry, caps = self._caps_for(net, att, capability_args)
        prev = entry.result if entry else None
        for plugin in net.plugins:
            self._run(plugin["type"], "CHECK", build_plugin_config(plugin, net, prev, caps), att)

    def delete(
        self,
        conflist: Conflist | NetworkList,
        att: Attachment,
        *,
        capability_args: Mapping[str, Any] | None = None,
    ) -> None:
        """DEL every plugin in reverse order with the cached result as prevResult.

        Raises the first failure (further ones in ``.others``); the cache entry is removed only
        when every plugin succeeded.
        """
        net = load_conflist(conflist)
        entry, caps = self._caps_for(net, att, capability_args)
        prev = entry.result if entry and version_ge(net.cni_version, "0.4.0") else None
        errors: list[CniFailure] = []
        for plugin in reversed(net.plugins):
            try:
                self._run(plugin["type"], "DEL", build_plugin_config(plugin, net, prev, caps), att)
            except CniFailure as exc:
                errors.append(exc)
                if not self.continue_del_on_error:
                    break
        if errors:
            errors[0].others = errors[1:]
            raise errors[0]
        if entry is not None:
            entry.path.unlink(missing_ok=True)

    def gc(
        self,
        conflist: Conflist | NetworkList,
        valid_attachments: Iterable[Attachment | tuple[str, str]] | None,
    ) -> None:
        """libcni's GCNetworkList: DEL stale cached attachments, then GC each plugin (>= 1.1.0).

        ``valid_attachments`` are Attachments or (containerID, ifname) pairs; None means "no
        list given" (every cached attachment of this network is stale, and no
        ``cni.dev/valid-attachments`` key is sent).
        """
        net = load_conflist(conflist)
        if net.disable_gc:
            return
        valid: list[dict[str, str]] | None = None
        if valid_attachments is not None:
            valid = []
            for a in valid_attachments:
                cid, ifn = (a.container_id, a.ifname) if isinstance(a, Attachment) else a
                valid.append({"containerID": cid, "ifname": ifn})
        keep = {(v["containerID"], v["ifname"]) for v in valid or []}
        errors: list[CniFailure] = []
        for entry in self.cached_attachments(net.name):
            if (entry.container_id, entry.ifname) in keep:
                continue
            stale = Attachment(entry.container_id, entry.netns, entry.ifname, args=entry.cni_args)
            try:
                self.delete(net, stale, capability_args=entry.capability_args)
            except CniFailure as exc:
                errors.append(exc)
        if version_ge(net.cni_version, "1.1.0"):
            for plugin in net.plugins:
                conf = dict(plugin)
                conf["name"] = net.name
                conf["cniVersion"] = net.cni_version
                if valid is not None:
                    conf["cni.dev/valid-attachments"] = valid
                try:
                    self._run(plugin["type"], "GC", conf, None)
                except CniFailure as exc:
                    errors.append(exc)
        if errors:
            errors[0].others = errors[1:]
            raise errors[0]

    def status(self, conflist: Conflist | NetworkList) -> None:
        """STATUS to each plugin in order (cniVersion >= 1.1.0, else a no-op); first error raises."""
        net = load_conflist(conflist)
        if not version_ge(net.cni_version, "1.1.0"):
            return
        for plugin in net.plugins:
            conf = dict(plugin)
            conf["name"] = net.name
            conf["cniVersion"] = net.cni_version
            self._run(plugin["type"], "STATUS", conf, None)

    def version(self, plugin_type: str, *, cni_version: str = NEWEST_VERSION) -> VersionInfo:
        """VERSION, as libcni's GetVersionInfo sends it."""
        call = self.exec_plugin(
            plugin_type,
            "VERSION",
            {"cniVersion": cni_version},
            netns="dummy",
            ifname="dummy",
            cni_path="dummy",
        )
        error = call.error()
        if error is not None:
            raise error
        try:
            d = json.loads(call.stdout)
            return VersionInfo(str(d["cniVersion"]), tuple(str(v) for v in d["supportedVersions"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CniError(
                plugin=plugin_type,
                command="VERSION",
                rc=call.rc,
                code=None,
                msg=f"bad VERSION answer: {exc}",
                stdout=call.stdout,
                stderr=call.stderr,
            ) from exc

    def validate(self, conflist: Conflist | NetworkList) -> list[str]:
        """libcni's ValidateNetworkList: every plugin exists and supports the list's cniVersion.

        Returns the capabilities enabled anywhere in the list.
        """
        net = load_conflist(conflist)
        problems = []
        caps: set[str] = set()
        for plugin in net.plugins:
            info = self.version(plugin["type"])
            if net.cni_version not in info.supported_versions:
                problems.append(f"plugin {plugin['type']} does not support config version {net.cni_version!r}")
            for cap, enabled in (plugin.get("capabilities") or {}).items():
                if enabled is True:
                    caps.add(cap)
        if problems:
            raise CniFailure("; ".join(problems))
        return sorted(caps)

    def calls_for(self, *, command: str | None = None, plugin: str | None = None) -> list[PluginCall]:
        """Recorded calls filtered by command and/or plugin type."""
        with self._lock:
            calls = list(self.calls)
        return [
            c for c in calls if (command is None or c.command == command) and (plugin is None or c.plugin == plugin)
        ]
