"""The CNI protocol around the plugin, modelled on containernetworking/cni `pkg/skel`: a `Dispatcher` that is
handed its world — environment, stdin, stdout, stderr, the dependency factory — so tests drive it with a dict and
two StringIOs instead of mutating os.environ.

One call, in this order, nothing touched before the last step:

1. CNI_COMMAND picks the verb (missing or unknown: code 4). VERSION answers at once.
2. The CNI_* variables the verb needs must be set and well-formed (code 4): every CNI_* variable mnp reads must be
   valid UTF-8 (the runtime's bytes reach Python as surrogate escapes; one that is not is refused, never
   re-encoded or passed on); ADD/CHECK need CNI_CONTAINERID,
   CNI_NETNS, CNI_IFNAME and CNI_PATH; DEL the same but CNI_NETNS, which containerd sends empty on its repeated
   DEL; GC and STATUS only CNI_PATH (libcni sends the rest empty). The container ID and interface name follow
   libcni's rules (utils.ValidateContainerID / ValidateInterfaceName); CNI_ARGS must be `K=V;…`.
3. stdin is parsed and validated completely (cni/config.py).
4. ADD, CHECK and DEL refuse a CNI_NETNS that is the plugin's own network namespace (code 8, libcni's
   ErrInvalidNetNS): closing it would cut the node itself off. Unlike libcni's skel, which looks after the
   callback has run, this happens before anything is touched, and there is no CNI_NETNS_OVERRIDE. A path that is
   no network namespace at all is refused with the same code by the verb, before nft (cni/plugin.py). Code 8
   rather than 4: the variable is well-formed, what it names is not a namespace the plugin can use — libcni's
   ErrInvalidNetNS is exactly that.
5. The verb runs (cni/plugin.py); its result goes to stdout as JSON, exit 0.

Any failure is printed as the CNI error JSON on stdout, exit 1 (cni/errors.py has the codes); an unexpected
exception is code 999 with its traceback in the log. Logs go to stderr or the configured logFile — never stdout.
"""

from __future__ import annotations

import os
import time

from cni import LATEST_VERSION, SUPPORTED_VERSIONS, __version__
from cni.errors import INTERNAL, INVALID_ENV, INVALID_NETNS, CNIError
from cni.log import Log
from shared import cjson

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TextIO

    from cni.config import CmdArgs, PluginConf
    from cni.plugin import Deps

# Everything but VERSION is imported when a verb needs it: VERSION, the first call of every runtime, stays at
# the interpreter's start-up cost (docs/benchmarks.md).

REQUIRED: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}


def _env_error(msg: str, details: str = "") -> CNIError:
    return CNIError(INVALID_ENV, msg, details)


def validate_ifname(name: str) -> None:
    """The one interface-name rule (shared.ifname: libcni's ValidateInterfaceName, which is the kernel's, and
    nothing nft's quoting could misread): the daemon checks the state entries it reads by the same rule."""
    from shared.ifname import ifname_problem
    from shared.state import excerpt

    problem = ifname_problem(name)
    if problem is not None:
        raise _env_error("invalid interface name", f"{excerpt(name)}: {problem}")


ENV_VARS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")


def _require_utf8(environ: Mapping[str, str]) -> None:
    from shared.state import excerpt

    for name in ENV_VARS:
        value = environ.get(name, "")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _env_error(f"{name} is not valid UTF-8", excerpt(value)) from None


def cmd_args(environ: Mapping[str, str]) -> CmdArgs:
    """The CNI_* variables of this call, checked for its verb (code 4 for anything missing or malformed)."""
    from cni.config import CmdArgs, parse_cni_args, valid_name
    from shared.state import excerpt, valid_netns_path

    _require_utf8(environ)
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise _env_error("CNI_COMMAND is not set")
    if command not in REQUIRED:
        raise _env_error(f"unknown CNI_COMMAND {excerpt(command)}", f"known: {', '.join(REQUIRED)}")
    missing = [name for name in REQUIRED[command] if not environ.get(name)]
    if missing:
        raise _env_error(f"required environment variables missing for {command}", ", ".join(missing))
    container_id = environ.get("CNI_CONTAINERID", "") if command in ("ADD", "CHECK", "DEL") else ""
    ifname = environ.get("CNI_IFNAME", "") if command in ("ADD", "CHECK", "DEL") else ""
    netns = environ.get("CNI_NETNS", "") if command in ("ADD", "CHECK", "DEL") else ""
    if container_id and not valid_name(container_id):
        raise _env_error("invalid characters in CNI_CONTAINERID", excerpt(container_id))
    if ifname:
        validate_ifname(ifname)
    if netns and not valid_netns_path(netns):
        raise _env_error("CNI_NETNS must be an absolute path", excerpt(netns))
    args = parse_cni_args(environ.get("CNI_ARGS", "")) if command in ("ADD", "CHECK", "DEL") else {}
    return CmdArgs(command, container_id, netns, ifname, environ.get("CNI_PATH", ""), args)


def cmd_version(stdin: bytes | str) -> dict[str, Any]:
    """VERSION's stdin is `{"cniVersion": …}` from libcni, or nothing at all — never an error. The answer is in the
    requested version when mnp speaks it, else in the newest. `mnpVersion` is mnp's own version: an extra key,
    which libcni's PluginInfo decoding ignores (Go's encoding/json skips unknown fields)."""
    try:
        value = cjson.loads(stdin)
    except (ValueError, RecursionError):
        value = None
    requested = value.get("cniVersion") if isinstance(value, dict) else None
    version = requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS), "mnpVersion": __version__}


def _verb(command: str) -> Callable[[CmdArgs, PluginConf, Deps, Log], dict[str, Any] | None]:
    from cni import plugin

    verbs: dict[str, Callable[[CmdArgs, PluginConf, Deps, Log], dict[str, Any] | None]] = {
        "ADD": plugin.cmd_add,
        "DEL": plugin.cmd_del,
        "CHECK": plugin.cmd_check,
        "GC": plugin.cmd_gc,
        "STATUS": plugin.cmd_status,
    }
    return verbs[command]


def _real_deps(conf: PluginConf) -> Deps:
    from cni.plugin import real_deps

    return real_deps(conf)


class Dispatcher:
    """One CNI call: `Dispatcher(os.environ, stdin_bytes, sys.stdout, sys.stderr).run()` → the exit code."""

    def __init__(
        self,
        environ: Mapping[str, str],
        stdin: bytes | str,
        stdout: TextIO,
        stderr: TextIO,
        deps: Callable[[PluginConf], Deps] = _real_deps,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.environ = environ
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.deps = deps
        self.clock = clock

    def run(self) -> int:
        command = self.environ.get("CNI_COMMAND", "")
        log = Log(self.stderr, "info", self.clock, mnp=__version__, cmd=command or "-")
        version = LATEST_VERSION
        log_file: TextIO | None = None
        try:
            if command == "VERSION":
                self._print(cmd_version(self.stdin))
                return 0
            args = cmd_args(self.environ)
            log.bind(container=args.container_id, ifname=args.ifname)
            from cni.config import parse_config

            conf = parse_config(self.stdin, command, args.ifname)
            version = conf.cni_version
            log_file = self._open_log(conf)
            log = Log(log_file or self.stderr, conf.log_level, self.clock, **log.context, network=conf.name)
            deps = self.deps(conf)
            if command in ("ADD", "CHECK", "DEL") and args.netns and deps.own_netns(args.netns):
                raise CNIError(
                    INVALID_NETNS,
                    "refusing to act: CNI_NETNS is the plugin's own network namespace",
                    f"{args.netns} would close the node itself",
                )
            result = _verb(command)(args, conf, deps, log)
            if result is not None:
                self._print(result)
            return 0
        except CNIError as exc:
            log.error(exc.msg, code=exc.code, details=exc.details)
            self._print(exc.to_dict(exc.cni_version or version))
            return 1
        except Exception as exc:  # the contract: whatever happens, the runtime gets the error JSON
            import traceback

            log.error("internal error", error=repr(exc), traceback=traceback.format_exc())
            self._print(CNIError(INTERNAL, "internal error", repr(exc)[:2000]).to_dict(version))
            return 1
        finally:
            if log_file is not None:
                log_file.close()

    def _open_log(self, conf: PluginConf) -> TextIO | None:
        if conf.log_file is None:
            return None
        try:
            os.makedirs(os.path.dirname(conf.log_file) or "/", exist_ok=True)
            return open(conf.log_file, "a", encoding="utf-8")
        except OSError as exc:
            Log(self.stderr, "warning", self.clock).warning(
                "cannot open logFile, logging to stderr", path=conf.log_file, error=exc.strerror or str(exc)
            )
            return None

    def _print(self, value: Mapping[str, Any]) -> None:
        self.stdout.write(cjson.dumps(value) + "\n")
        self.stdout.flush()
