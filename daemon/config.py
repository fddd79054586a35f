"""`mnpd`'s settings: command-line flags, each with an `MNP_*` environment variable, validated all at once.

A DaemonSet sets most of these through the environment (`NODE_NAME` from the downward API), a person on a lab
host through flags; a flag wins over its variable, the variable over the default. Validation never stops at the
first mistake: `load()` raises one `ConfigError` listing every problem, so a broken manifest is fixed in one go
(kube-network-policies' `Config.Validate` joins all errors the same way).

Where the cluster comes from (exactly one source of objects, plus the state dir, always):

* `--manifests-dir DIR`: a directory of YAML manifests (the format `mnpctl matrix` reads), watched for
  changes — standalone hosts, the lab and tests. No API server, no Events.
* otherwise the Kubernetes API: `--kubeconfig FILE`, or the in-cluster service account when the pod runs
  inside a cluster (`KUBERNETES_SERVICE_HOST` set). `--node-name` is then required.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from daemon.operator import RuleFile, parse_prefixes
from shared.errors import ConfigError
from shared.rules import EGRESS, INGRESS, IPNetwork
from shared.state import DEFAULT_STATE_DIR
from shared.version import VERSION

STATUS_NAME = "mnpd-status.json"  # the default status file, beside the state dir

DEFAULT_LISTEN = "127.0.0.1:9741"
DEFAULT_NETWORK_PLUGINS = ("macvlan", "ipvlan", "sriov")  # the anchors' usual --network-plugins
DEFAULT_NETNS_DIRS = ("/run/netns", "/var/run/netns")  # containerd's and CRI-O's pod netns files
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", re.ASCII)  # fullmatch: no `$`, which admits a final newline
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True)
class DaemonConfig:
    source: str  # "api" | "manifests"
    kubeconfig: str | None  # None with the API source: in-cluster config
    node_name: str
    state_dir: str
    status_file: str
    manifests_dir: str | None
    listen: str | None  # "host:port" of /metrics, /healthz, /readyz; None = no HTTP server
    accept_icmp: bool
    accept_icmpv6: bool
    flush_conntrack: bool
    resync_period: float
    min_sync_interval: float
    watch_timeout: float
    log_format: str
    log_level: str
    adopt: bool = True
    network_plugins: tuple[str, ...] = DEFAULT_NETWORK_PLUGINS
    netns_dirs: tuple[str, ...] = DEFAULT_NETNS_DIRS
    allow_src_prefixes: tuple[IPNetwork, ...] = ()
    allow_dst_prefixes: tuple[IPNetwork, ...] = ()
    custom_rule_files: tuple[RuleFile, ...] = ()

    def settings(self) -> list[tuple[str, object]]:
        """Every setting as (name, value), for the start-up log."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]

    @property
    def listen_address(self) -> tuple[str, int] | None:
        return parse_listen(self.listen or "")


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
LISTEN_EXAMPLES = "e.g. 127.0.0.1:9741, [fd00::1]:9741, fd00::1:9741, localhost:9741"


def parse_listen(text: str) -> tuple[str, int] | None:
    """`--listen` → (host, port) to bind, or None for off ("off", "none", "", "0"); ValueError says what is wrong.

    The host is an IPv4 address, a hostname, or an IPv6 address — bracketed (`[fd00::1]:9741`, RFC 3986's form)
    or not: the DaemonSet's `$(HOST_IP):9741` gives `fd00::1:9741` on an IPv6 node, which is split at the last
    colon. An IPv6 address without a port (`fd00::1`) is refused rather than read as host `fd00:`, port 1."""
    text = text.strip()
    if text.lower() in ("off", "none", "", "0"):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port ({LISTEN_EXAMPLES})")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if ":" in host or bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            if _is_ipv6(text):
                raise ValueError(f"{text!r} is an IPv6 address without a port (e.g. [{text}]:9741)") from None
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address ({LISTEN_EXAMPLES})") from None
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{text!r}: {host!r} is not an IPv4 address or a host name ({LISTEN_EXAMPLES})")
    return host, int(port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _Option:
    flag: str
    env: str
    help: str
    default: str | None = None
    metavar: str | None = None
    boolean: bool = False


OPTIONS = (
    _Option(
        "--kubeconfig", "MNP_KUBECONFIG", "kubeconfig file of the API source; unset: in-cluster config", None, "FILE"
    ),
    _Option(
        "--node-name",
        "MNP_NODE_NAME",
        "this node's name (required with the API source; default: $NODE_NAME, set it from the downward API)",
        None,
        "NAME",
    ),
    _Option("--state-dir", "MNP_STATE_DIR", "the CNI plugin's state dir", DEFAULT_STATE_DIR, "DIR"),
    _Option(
        "--status-file",
        "MNP_STATUS_FILE",
        "node-local status of every interface, for `mnpctl` (default: mnpd-status.json beside the state dir)",
        None,
        "FILE",
    ),
    _Option(
        "--manifests-dir",
        "MNP_MANIFESTS_DIR",
        "read Namespaces, Pods, NADs and MultiNetworkPolicies from YAML files here instead of the API",
        None,
        "DIR",
    ),
    _Option(
        "--listen",
        "MNP_LISTEN",
        "address of /metrics, /healthz and /readyz: host:port, or 'off'",
        DEFAULT_LISTEN,
    ),
    _Option("--accept-icmp", "MNP_ACCEPT_ICMP", "accept all ICMP on guarded interfaces", "false", boolean=True),
    _Option("--accept-icmpv6", "MNP_ACCEPT_ICMPV6", "accept all ICMPv6 on guarded interfaces", "false", boolean=True),
    _Option(
        "--flush-conntrack",
        "MNP_FLUSH_CONNTRACK",
        "delete the conntrack entries of flows a policy change no longer admits",
        "true",
        boolean=True,
    ),
    _Option(
        "--resync-period",
        "MNP_RESYNC_PERIOD",
        "full recompute and state-dir rescan at least this often (e.g. 60s, 5m)",
        "60s",
        "DURATION",
    ),
    _Option(
        "--min-sync-interval",
        "MNP_MIN_SYNC_INTERVAL",
        "at most one sync this often; events in between are coalesced",
        "200ms",
        "DURATION",
    ),
    _Option(
        "--watch-timeout",
        "MNP_WATCH_TIMEOUT",
        "server-side timeout of each API watch before it is renewed",
        "5m",
        "DURATION",
    ),
    _Option(
        "--adopt",
        "MNP_ADOPT",
        "guard the interfaces of NADs that do not chain mnp (found by MAC and address in the node's netns); "
        "--adopt=false or --no-adopt: only interfaces the mnp plugin closed",
        "true",
        boolean=True,
    ),
    _Option(
        "--network-plugins",
        "MNP_NETWORK_PLUGINS",
        "CNI types (the NAD's first plugin) whose interfaces are adopted",
        ",".join(DEFAULT_NETWORK_PLUGINS),
        "TYPES",
    ),
    _Option(
        "--netns-dirs",
        "MNP_NETNS_DIRS",
        "directories of the node's network namespace files, scanned for adoption (/proc/<pid>/ns/net too, "
        "where the daemon sees the host's processes)",
        ",".join(DEFAULT_NETNS_DIRS),
        "DIRS",
    ),
    _Option(
        "--allow-src-prefix",
        "MNP_ALLOW_SRC_PREFIX",
        "CIDRs always accepted as source on isolated interfaces, both directions (the telekom fork's flag)",
        None,
        "CIDRS",
    ),
    _Option(
        "--allow-dst-prefix",
        "MNP_ALLOW_DST_PREFIX",
        "CIDRs always accepted as destination on isolated interfaces, both directions",
        None,
        "CIDRS",
    ),
    *(
        _Option(
            f"--custom-v{family}-{direction}-rule-file",
            f"MNP_CUSTOM_V{family}_{direction.upper()}_RULE_FILE",
            f"nft rules (one per line, # comments) for IPv{family} {direction} of isolated interfaces, checked "
            "by the kernel in a dry run at start",
            None,
            "FILE",
        )
        for family in (4, 6)
        for direction in ("ingress", "egress")
    ),
    _Option("--log-format", "MNP_LOG_FORMAT", f"one of {', '.join(LOG_FORMATS)}", "text"),
    _Option("--log-level", "MNP_LOG_LEVEL", f"one of {', '.join(LOG_LEVELS)}", "info"),
)

EPILOG = """\
Where objects come from: with --manifests-dir, from YAML files in that directory (watched; no API server, no
Events); otherwise from the Kubernetes API (list + watch of MultiNetworkPolicies, Pods, Namespaces and
NetworkAttachmentDefinitions) through --kubeconfig or the in-cluster service account. The CNI plugin's state dir
is always watched: only interfaces with a state entry are programmed. Nothing is programmed until every source
has completed its first list; until then a new pod keeps the plugin's closed table.

HTTP (--listen): /metrics (Prometheus), /healthz (alive, sync loop not stuck), /readyz (all sources synced).

Every flag can also be given as the environment variable shown in brackets; a flag wins over its variable.
Booleans accept 1/true/yes/on and 0/false/no/off (`--accept-icmp` alone means true). Durations are a number
with an optional unit ms, s, m or h (default seconds).

mnpd never removes rules on exit: stopping or restarting it leaves every pod exactly as restricted as it was
(see docs/daemon.md for the reasons and the uninstall procedure).
"""


def parse_duration(text: str) -> float:
    """`"250ms"`, `"30s"`, `"5m"`, `"1h"` or `"12.5"` (seconds) → seconds. ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 500ms, 30s, 5m or 1h")
    return float(match[1]) * _UNITS[match[2]]


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (1/true/yes/on or 0/false/no/off)")


def _comma_list(text: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item.strip() for item in (text or "").split(",") if item.strip()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnpd",
        description="The mnp node daemon: programs each local pod's MultiNetworkPolicy rules into its netns.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mnpd {VERSION}")
    for opt in OPTIONS:
        default = f" (default: {opt.default})" if opt.default not in (None, "") else ""
        help_text = f"{opt.help}{default} [{opt.env}]"
        if opt.boolean:
            parser.add_argument(opt.flag, nargs="?", const="true", default=None, metavar="BOOL", help=help_text)
        else:
            parser.add_argument(opt.flag, default=None, metavar=opt.metavar, help=help_text)
    parser.add_argument("--no-adopt", dest="adopt", action="store_const", const="false", help="same as --adopt=false")
    return parser


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> DaemonConfig:
    """Flags + environment → a validated config. argparse exits (2) on unknown flags; everything else that is
    wrong is collected and raised as one ConfigError."""
    env = dict(os.environ if environ is None else environ)
    args = vars(build_parser().parse_args(list(argv) if argv is not None else None))
    raw: dict[str, str | None] = {}
    for opt in OPTIONS:
        dest = opt.flag.lstrip("-").replace("-", "_")
        value = args.get(dest)
        raw[dest] = value if value is not None else env.get(opt.env, opt.default)
    if not raw["node_name"]:
        raw["node_name"] = env.get("NODE_NAME") or None
    return validate(raw, env)


def validate(raw: Mapping[str, str | None], env: Mapping[str, str]) -> DaemonConfig:
    problems: list[str] = []

    def boolean(name: str) -> bool:
        try:
            return parse_bool(raw[name] or "")
        except ValueError as exc:
            problems.append(f"--{name.replace('_', '-')}: {exc}")
            return False

    def duration(name: str, minimum: float) -> float:
        try:
            value = parse_duration(raw[name] or "")
        except ValueError as exc:
            problems.append(f"--{name.replace('_', '-')}: {exc}")
            return minimum
        if value < minimum:
            problems.append(f"--{name.replace('_', '-')}: {raw[name]} is shorter than the minimum {minimum:g}s")
        return value

    def choice(name: str, allowed: Sequence[str]) -> str:
        value = (raw[name] or "").strip().lower()
        if value not in allowed:
            problems.append(f"--{name.replace('_', '-')}: {raw[name]!r} is not one of {', '.join(allowed)}")
            return allowed[0]
        return value

    manifests_dir = raw["manifests_dir"] or None
    kubeconfig = raw["kubeconfig"] or None
    source = "manifests" if manifests_dir else "api"
    node_name = (raw["node_name"] or "").strip()
    if manifests_dir and kubeconfig:
        problems.append("--manifests-dir and --kubeconfig are two sources of objects; give one")
    if manifests_dir and not Path(manifests_dir).is_dir():
        problems.append(f"--manifests-dir: {manifests_dir} is not a directory")
    if source == "api":
        if kubeconfig and not Path(kubeconfig).is_file():
            problems.append(f"--kubeconfig: {kubeconfig} does not exist or is not a file")
        if not kubeconfig and not env.get("KUBERNETES_SERVICE_HOST"):
            problems.append(
                "no source of objects: give --manifests-dir, or --kubeconfig, or run in a cluster "
                "(KUBERNETES_SERVICE_HOST is not set)"
            )
        if not node_name:
            problems.append("--node-name (or NODE_NAME) is required with the API source")
    state_dir = (raw["state_dir"] or "").strip()
    if not state_dir or not os.path.isabs(state_dir):
        problems.append(f"--state-dir: {state_dir!r} must be an absolute path")
    status_file = (raw["status_file"] or "").strip() or str(default_status_file(state_dir))
    if state_dir and os.path.abspath(os.path.dirname(status_file)) == os.path.abspath(state_dir):
        problems.append("--status-file must not be inside the state dir (the state dir holds only interface entries)")
    listen = (raw["listen"] or "").strip()
    listen_value: str | None = None  # off ("off", "none", "", "0"): parse_listen says
    try:
        if parse_listen(listen) is not None:
            listen_value = listen
    except ValueError as exc:
        problems.append(f"--listen: {exc}")
    resync = duration("resync_period", 1.0)
    min_sync = duration("min_sync_interval", 0.0)
    if min_sync > resync:
        problems.append(f"--min-sync-interval ({min_sync:g}s) is longer than --resync-period ({resync:g}s)")
    config = DaemonConfig(
        source=source,
        kubeconfig=kubeconfig,
        node_name=node_name,
        state_dir=state_dir,
        status_file=status_file,
        manifests_dir=manifests_dir,
        listen=listen_value,
        accept_icmp=boolean("accept_icmp"),
        accept_icmpv6=boolean("accept_icmpv6"),
        flush_conntrack=boolean("flush_conntrack"),
        resync_period=resync,
        min_sync_interval=min_sync,
        watch_timeout=duration("watch_timeout", 1.0),
        log_format=choice("log_format", LOG_FORMATS),
        log_level=choice("log_level", LOG_LEVELS),
        adopt=boolean("adopt"),
        network_plugins=_comma_list(raw["network_plugins"]),
        netns_dirs=_comma_list(raw["netns_dirs"]),
    )
    prefixes = {}
    for name in ("allow_src_prefix", "allow_dst_prefix"):
        nets, bad = parse_prefixes(raw[name])
        prefixes[name] = nets
        problems += [f"--{name.replace('_', '-')}: {p}" for p in bad]
    rule_files = []
    for family in (4, 6):
        for direction in (INGRESS, EGRESS):
            flag = f"custom_v{family}_{direction.lower()}_rule_file"
            path = (raw[flag] or "").strip()
            if not path:
                continue
            if not Path(path).is_file():
                problems.append(f"--{flag.replace('_', '-')}: {path} does not exist or is not a file")
            rule_files.append(RuleFile(path, direction, family))
    config = dataclasses.replace(
        config,
        allow_src_prefixes=prefixes["allow_src_prefix"],
        allow_dst_prefixes=prefixes["allow_dst_prefix"],
        custom_rule_files=tuple(rule_files),
    )
    if not all(os.path.isabs(d) for d in config.netns_dirs):
        problems.append(f"--netns-dirs: {', '.join(config.netns_dirs)}: every directory must be an absolute path")
    if config.adopt and not config.network_plugins:
        problems.append("--network-plugins: empty; name the CNI types to adopt, or turn adoption off (--no-adopt)")
    if problems:
        raise ConfigError("invalid mnpd configuration:\n" + "\n".join(f"  - {p}" for p in problems))
    return config


def default_status_file(state_dir: str | None) -> str:
    """mnpd's status file unless `--status-file` says otherwise: `mnpd-status.json` beside the state dir."""
    return str(Path(state_dir or DEFAULT_STATE_DIR).parent / STATUS_NAME)
