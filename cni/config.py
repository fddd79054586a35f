"""The one validating parser of everything a CNI call hands the plugin: stdin (the network config with its
`prevResult`) and CNI_ARGS.

Like `parseConfig` in the containernetworking meta plugins, it runs before anything is touched and either
returns a complete, immutable `PluginConf` or raises a `CNIError` with the right code (cni/errors.py) — never
another exception, whatever the bytes (tests/unit/test_cni_config_fuzz.py holds it to that). The plugin code
after it never re-checks a type.

The plugin's own keys and their defaults — a NetworkAttachmentDefinition chain line can be just `{"type": "mnp"}`:

| key        | default          | meaning                                                                             |
|------------|------------------|-------------------------------------------------------------------------------------|
| `stateDir` | `/run/mnp/state` | where attachments are recorded for the daemon (shared/state.py); absolute path      |
| `logFile`  | none: stderr     | append log lines to this file instead of stderr (stdout is the protocol)            |
| `logLevel` | `info`           | `debug`, `info`, `warning` or `error`                                               |
| `onError`  | `fail`           | `fail`: an ADD that cannot close the interface fails, so the pod never runs open.   |
|            |                  | `ignore`: log and pass prevResult through — the pod then runs with the interface    |
|            |                  | OPEN until the daemon reaches it. Unsafe; only for debugging a broken node.         |
| `nftPath`  | unset            | unset: libnftables.so.1 in-process, or — on a host without it — `nft` from PATH;    |
|            |                  | set: always this nft binary under nsenter (looked up in PATH when not absolute)     |

Unknown keys are ignored (the spec allows plugins to accept extra fields); a known key with the wrong type or
value is code 7. `prevResult` is required on ADD and validated on ADD and CHECK; DEL ignores it — it needs
nothing from it and must not fail a teardown over it.
"""

from __future__ import annotations

from cni import LATEST_VERSION, SUPPORTED_VERSIONS
from cni.errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENV,
    CNIError,
)
from shared import cjson
from shared.state import DEFAULT_STATE_DIR, excerpt, usable_path, valid_name
from shared.value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = ["LATEST_VERSION", "SUPPORTED_VERSIONS", "valid_name"]  # re-exported: they belong to the config's contract

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")

DEFAULT_NFT = "nft"
LOG_LEVELS = ("debug", "info", "warning", "error")
ON_ERROR = ("fail", "ignore")

VALID_ATTACHMENTS = "cni.dev/valid-attachments"
# libcni sends the list under both names: an earlier spec draft misnamed it (containernetworking/cni#1101).
VALID_ATTACHMENTS_OLD = "cni.dev/attachments"


def version_tuple(version: str) -> tuple[int, ...]:
    """`"1.0.0"` → `(1, 0, 0)`; only ever called on members of SUPPORTED_VERSIONS."""
    return tuple(int(part) for part in version.split("."))


# ------------------------------------------------------------------------------------------------ CNI_ARGS


class PodRef(Value):
    """What the runtime said about the pod (Kubernetes runtimes; podman may say nothing)."""

    __slots__ = ("infra_container_id", "name", "namespace", "uid")

    def __init__(self, namespace: str = "", name: str = "", uid: str = "", infra_container_id: str = "") -> None:
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.infra_container_id = infra_container_id

    @property
    def key(self) -> str:
        """`namespace/name`, or "" when the runtime did not say."""
        return f"{self.namespace}/{self.name}" if self.namespace and self.name else ""


def parse_cni_args(text: str) -> dict[str, str]:
    """`IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;…` → a dict. A segment without `=` is code 4 (libcni does the same);
    empty segments are skipped; a value keeps any further `=`."""
    out: dict[str, str] = {}
    for pair in text.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENV, "invalid CNI_ARGS", f"segment {pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def pod_ref(args: Mapping[str, str]) -> PodRef:
    return PodRef(
        namespace=args.get("K8S_POD_NAMESPACE", ""),
        name=args.get("K8S_POD_NAME", ""),
        uid=args.get("K8S_POD_UID", ""),
        infra_container_id=args.get("K8S_POD_INFRA_CONTAINER_ID", ""),
    )


class CmdArgs(Value):
    """The CNI_* environment of one call, already checked by the dispatcher (cni/skel.py)."""

    __slots__ = ("args", "command", "container_id", "ifname", "netns", "path")

    def __init__(
        self,
        command: str,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        path: str = "",
        args: Mapping[str, str] | None = None,
    ) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns  # "" on containerd's repeated DEL, and on GC/STATUS/VERSION
        self.ifname = ifname
        self.path = path
        self.args: Mapping[str, str] = {} if args is None else args

    @property
    def pod(self) -> PodRef:
        return pod_ref(self.args)


# ------------------------------------------------------------------------------------------------ stdin


class PluginConf(Value):
    """The whole validated network config of one call."""

    __slots__ = (
        "cni_version",
        "ips",
        "log_file",
        "log_level",
        "mac",
        "name",
        "nft_path",
        "on_error",
        "prev_result",
        "state_dir",
        "type",
        "valid_attachments",
    )

    def __init__(
        self,
        cni_version: str,
        name: str,
        type: str,
        state_dir: str = DEFAULT_STATE_DIR,
        log_file: str | None = None,
        log_level: str = "info",
        on_error: str = "fail",
        nft_path: str = DEFAULT_NFT,
        prev_result: Mapping[str, Any] | None = None,
        ips: tuple[str, ...] = (),
        mac: str = "",
        valid_attachments: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        self.cni_version = cni_version
        self.name = name
        self.type = type
        self.state_dir = state_dir
        self.log_file = log_file
        self.log_level = log_level
        self.on_error = on_error
        self.nft_path = nft_path
        self.prev_result = prev_result  # as received (validated on ADD/CHECK)
        self.ips = ips  # "addr/len" of CNI_IFNAME, from prevResult
        self.mac = mac  # of CNI_IFNAME, from prevResult
        self.valid_attachments = valid_attachments  # GC: (containerID, ifname)


def _plain_ipv4(text: str) -> bool:
    """Whether `text` is a dotted-quad IPv4 address exactly as `ipaddress` writes it (four decimal octets ≤ 255,
    no leading zeros): then it is its own normal form."""
    octets = text.split(".")
    return len(octets) == 4 and all(_plain_number(octet, 255) for octet in octets)


def _plain_number(text: str, top: int) -> bool:
    return (
        0 < len(text) <= 3
        and text.isascii()
        and text.isdigit()
        and (text == "0" or text[0] != "0")
        and int(text) <= top
    )


def normal_interface(text: str) -> str:
    """`str(ipaddress.ip_interface(text))`; ValueError when it is not an address with a prefix. The common case —
    an IPv4 address with a prefix length, as IPAM writes it — is checked without importing `ipaddress` (→
    functools, collections: the plugin's start-up time); every other form goes through it."""
    address, _, prefix = text.partition("/")
    if _plain_ipv4(address) and _plain_number(prefix, 32):
        return text
    import ipaddress

    return str(ipaddress.ip_interface(text))


def normal_address(text: str) -> str:
    """`str(ipaddress.ip_address(text))`, the IPv4 case without `ipaddress` (see normal_interface)."""
    if _plain_ipv4(text):
        return text
    import ipaddress

    return str(ipaddress.ip_address(text))


def _invalid(msg: str, details: str = "") -> CNIError:
    return CNIError(INVALID_CONFIG, msg, details)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json(stdin: bytes | str) -> Any:
    """stdin → a JSON value; anything that is not UTF-8 JSON is code 6."""
    try:
        text = stdin.decode("utf-8") if isinstance(stdin, bytes) else stdin
        return cjson.loads(text, parse_constant=_reject_constant)
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise CNIError(DECODING_FAILURE, "cannot decode the network configuration", str(exc)[:300]) from exc


def _string(conf: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = conf.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{key} must be a string", f"got {type(value).__name__}")
    return value


def _version(value: object, what: str) -> str:
    if value is None or value == "":
        # libcni reads a missing cniVersion as 0.1.0, which has no chaining at all.
        raise CNIError(INCOMPATIBLE_VERSION, f"{what} has no cniVersion", f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    if not isinstance(value, str):
        raise _invalid(f"{what}: cniVersion must be a string", f"got {type(value).__name__}")
    if value not in SUPPORTED_VERSIONS:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI version {value!r} in {what}",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    return value


def parse_config(stdin: bytes | str, command: str, ifname: str = "") -> PluginConf:
    """Parse and validate stdin for `command`; `ifname` (CNI_IFNAME) selects this interface's IPs and MAC."""
    raw = decode_json(stdin)
    if not isinstance(raw, dict):
        raise CNIError(DECODING_FAILURE, "the network configuration is not a JSON object", f"got {type(raw).__name__}")
    version = _version(raw.get("cniVersion"), "network configuration")
    try:
        return _parse_known_version(raw, version, command, ifname)
    except CNIError as exc:
        exc.cni_version = version  # the error JSON is then written in the config's version
        raise


def _parse_known_version(raw: Mapping[str, Any], version: str, command: str, ifname: str) -> PluginConf:
    if command == "CHECK" and version_tuple(version) < (0, 4, 0):
        raise CNIError(INCOMPATIBLE_VERSION, f"config version {version} does not allow CHECK", "CHECK needs >= 0.4.0")
    if command in ("GC", "STATUS") and version_tuple(version) < (1, 1, 0):
        raise CNIError(INCOMPATIBLE_VERSION, f"config version {version} does not allow {command}", "needs >= 1.1.0")

    name = _string(raw, "name")
    if not name:
        raise _invalid("missing network name")
    if not valid_name(name):
        raise _invalid("invalid characters in network name", name[:100])
    type_ = _string(raw, "type")
    if not type_:
        raise _invalid("missing plugin type")

    state_dir = _string(raw, "stateDir", DEFAULT_STATE_DIR) or ""
    if not state_dir.startswith("/") or not usable_path(state_dir):
        raise _invalid("stateDir must be an absolute path", excerpt(state_dir))
    log_file = _string(raw, "logFile") or None
    if log_file is not None and (not log_file.startswith("/") or not usable_path(log_file)):
        raise _invalid("logFile must be an absolute path", excerpt(log_file))
    log_level = (_string(raw, "logLevel", "info") or "").lower()
    if log_level not in LOG_LEVELS:
        raise _invalid(f"logLevel must be one of {', '.join(LOG_LEVELS)}", log_level[:50])
    on_error = _string(raw, "onError", "fail") or ""
    if on_error not in ON_ERROR:
        raise _invalid("onError must be 'fail' or 'ignore'", on_error[:50])
    nft_path = _string(raw, "nftPath", DEFAULT_NFT) or ""
    if not nft_path or not usable_path(nft_path):
        raise _invalid("nftPath must be a non-empty path", excerpt(nft_path))

    prev: Mapping[str, Any] | None = None
    ips: tuple[str, ...] = ()
    mac = ""
    if command in ("ADD", "CHECK"):
        value = raw.get("prevResult")
        if value is None:
            if command == "ADD":
                raise _invalid("must be called as a chained plugin", "ADD needs prevResult")
        else:
            prev, ips, mac = _parse_prev_result(value, version, ifname)

    attachments = _parse_valid_attachments(raw) if command == "GC" else None
    return PluginConf(
        cni_version=version,
        name=name,
        type=type_,
        state_dir=state_dir.rstrip("/") or "/",
        log_file=log_file,
        log_level=log_level,
        on_error=on_error,
        nft_path=nft_path,
        prev_result=prev,
        ips=ips,
        mac=mac,
        valid_attachments=attachments,
    )


def _list_of_objects(value: object, what: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _invalid(f"prevResult: {what} must be a list of objects")
    return value


def _parse_prev_result(value: object, version: str, ifname: str) -> tuple[Mapping[str, Any], tuple[str, ...], str]:
    """Validate a result (SPEC "Success"); return it with CNI_IFNAME's addresses and MAC.

    An IP without an `interface` index belongs to CNI_IFNAME — the interface this attachment is about; an IP that
    names another interface (a host-side bridge or veth) does not."""
    if not isinstance(value, dict):
        raise _invalid("prevResult must be an object", f"got {type(value).__name__}")
    if "cniVersion" in value:
        _version(value["cniVersion"], "prevResult")
    interfaces = _list_of_objects(value.get("interfaces"), "interfaces")
    ours: set[int] = set()
    mac = ""
    for index, iface in enumerate(interfaces):
        for key in ("name", "mac", "sandbox"):
            if key in iface and not isinstance(iface[key], str):
                raise _invalid(f"prevResult: interfaces[{index}].{key} must be a string")
        if not iface.get("name"):
            raise _invalid(f"prevResult: interfaces[{index}] has no name")
        if iface["name"] == ifname:
            ours.add(index)
            if not mac or iface.get("sandbox"):
                mac = iface.get("mac", "") or mac
    addresses: list[str] = []
    for index, ip in enumerate(_list_of_objects(value.get("ips"), "ips")):
        address = ip.get("address")
        if not isinstance(address, str) or "/" not in address:
            raise _invalid(f"prevResult: ips[{index}].address must be an address with a prefix length")
        try:
            normalised = normal_interface(address)
        except ValueError as exc:
            raise _invalid(f"prevResult: ips[{index}].address is not valid", str(exc)) from exc
        gateway = ip.get("gateway")
        if gateway is not None:
            if not isinstance(gateway, str):
                raise _invalid(f"prevResult: ips[{index}].gateway must be a string")
            try:
                normal_address(gateway)
            except ValueError as exc:
                raise _invalid(f"prevResult: ips[{index}].gateway is not an address", str(exc)) from exc
        which = ip.get("interface")
        if which is not None:
            if not isinstance(which, int) or isinstance(which, bool) or not 0 <= which < len(interfaces):
                raise _invalid(f"prevResult: ips[{index}].interface is not an index into interfaces")
            if which not in ours:
                continue
        addresses.append(normalised)
    _list_of_objects(value.get("routes"), "routes")
    if "dns" in value and not isinstance(value["dns"], dict):
        raise _invalid("prevResult: dns must be an object")
    return value, tuple(addresses), mac


def _parse_valid_attachments(raw: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    value = raw.get(VALID_ATTACHMENTS, raw.get(VALID_ATTACHMENTS_OLD))
    if value is None:
        # Never read a missing list as "nothing is valid": that would drop every attachment on the node.
        raise _invalid(f"GC needs {VALID_ATTACHMENTS}")
    if not isinstance(value, list):
        raise _invalid(f"{VALID_ATTACHMENTS} must be a list")
    out = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _invalid(f"{VALID_ATTACHMENTS}[{index}] must be an object")
        container, ifname = item.get("containerID"), item.get("ifname")
        if not isinstance(container, str) or not isinstance(ifname, str):
            raise _invalid(f"{VALID_ATTACHMENTS}[{index}] needs string containerID and ifname")
        out.append((container, ifname))
    return tuple(out)


def result_for(prev: Mapping[str, Any], version: str) -> dict[str, Any]:
    """prevResult as this plugin's ADD result in the config's `version`: unchanged when it already is in that
    version (the usual case: the runtime gives every plugin of a list the list's version); otherwise only the
    version-dependent parts change — `cniVersion`, and `ips[].version`, which exists before 1.0.0 only."""
    out = dict(prev)
    if out.get("cniVersion", version) == version and "cniVersion" in out:
        return out
    out["cniVersion"] = version
    ips = out.get("ips")
    if isinstance(ips, list):
        converted = []
        for ip in ips:
            ip = dict(ip)
            if version_tuple(version) >= (1, 0, 0):
                ip.pop("version", None)
            elif "version" not in ip:
                ip["version"] = "6" if ":" in str(ip.get("address", "")) else "4"
            converted.append(ip)
        out["ips"] = converted
    return out
