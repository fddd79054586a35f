"""The node-local state dir: how the CNI plugin tells the daemon which pod interfaces it has closed.

The plugin (cni/) writes one entry per attachment at ADD and removes it at DEL/GC; the daemon (daemon/) watches
the directory (inotify) and reads the entries to learn every guarded interface with its netns path — a pod's
interface is closed from its first packet, and the daemon then opens exactly what the policies allow. Both sides
go through this module only: it is the contract.

Layout — one JSON file per attachment (containerID, ifname):

    <stateDir>/<containerID>_<ifname>.json        default stateDir: /run/mnp/state (tmpfs: gone at reboot,
                                                  exactly like the netns it describes)
    <stateDir>/.<name>.<random>.tmp               a write in progress: watchers ignore dot-files and *.tmp
    <stateDir>/.lock                              flock(2) the plugin holds while it changes tables + entries
    <stateDir>/.nfnl-keeper                       mnpd's unix socket taking the plugin's committed netlink
                                                  sockets (shared.nft.handover)

Name parts are escaped so the name is unambiguous and safe: in the containerID part every character outside
`[A-Za-z0-9.-]` (including `_` — the separator — and `%`) becomes `%XX`, in the ifname part every character
outside `[A-Za-z0-9_.-]`; a leading `.` is escaped too (it would hide the file). Real container IDs (hex) and
interface names (`net1`) come out unchanged. Readers never parse names: the fields are inside.

Schema 1 (every key is always written; readers ignore keys they do not know):

    {
      "schema": 1,                       int; bumped only for an incompatible change (readers skip other values)
      "containerID": "3f69…",            CNI_CONTAINERID (the pod sandbox)
      "ifname": "net1",                  CNI_IFNAME; an entry whose name breaks shared.ifname's rule is refused
      "netns": "/var/run/netns/cni-…",   CNI_NETNS at ADD
      "podNamespace": "ns1",             K8S_POD_NAMESPACE from CNI_ARGS ("" when the runtime gave none: podman)
      "podName": "web-0",                K8S_POD_NAME ("" when not given)
      "podUID": "6b1e…",                 K8S_POD_UID ("" when not given)
      "network": "macvlan-conf",         the CNI network `name` (the NAD's config name)
      "ips": ["10.1.2.3/24"],            this interface's addresses from prevResult ("addr/len")
      "mac": "0a:58:…",                  this interface's MAC from prevResult ("" when not given)
      "ifindex": 3,                      its interface index inside the netns at ADD, which a rename inside the
                                         pod does not change (0: not known — an entry from an older plugin, or
                                         the lookup failed); readers that predate it ignore it, as every reader
                                         ignores keys it does not know, so the schema stays 1
      "created": "2026-05-09T07:35:25Z", RFC 3339, UTC, whole seconds
      "plugin": "0.1.0",                 the version of the plugin that wrote it
      "origin": "cni"                    who wrote it: "cni" (the plugin, at ADD) or "adopted" (mnpd found the
                                         interface of a NAD that does not chain mnp; daemon/sources/adopt.py).
                                         Absent in entries of older plugins: "cni"
    }

Writes are atomic (tmp file in the same dir, fsync, rename over the final name, fsync the dir), so a reader sees
the old entry, the new one, or none — never a partial one; an entry survives a crash once the plugin reported
success. The directory is created 0700: only root (the plugin, mnpd, mnpctl) has anything to do in it.

Reads are tolerant and bounded: a corrupt or foreign entry is skipped and reported (`Problem`), never fatal, and
nothing in the directory can make a reader wait. An entry is read only if it is a regular file (lstat, then
`open(O_NONBLOCK | O_NOFOLLOW)` and fstat of what was opened): a FIFO, socket, device, directory or symlink named
like an entry is a Problem, not a read that blocks for ever or follows a link out of the directory; a regular file
is read up to MAX_ENTRY_BYTES (an entry is ~400 bytes), a larger one is a Problem. Regular files on the local
tmpfs are read without waiting, so size is the bound on time. Messages about a bad entry quote at most a short
excerpt of it (`excerpt`).
"""

from __future__ import annotations

import fcntl
import os
import stat

from shared import cjson
from shared.errors import StateError
from shared.ifname import ifname_problem
from shared.value import Value

DEFAULT_STATE_DIR = "/run/mnp/state"  # the plugin's `stateDir`, mnpd's and mnpctl's `--state-dir` unless set
SCHEMA = 1
ORIGIN_CNI = "cni"
ORIGIN_ADOPTED = "adopted"
SUFFIX = ".json"
TMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"
DIR_MODE = 0o700
FILE_MODE = 0o644
MAX_ENTRY_BYTES = 64 * 1024  # an entry is ~400 bytes; a bigger file is not one of ours
PATH_MAX = 4096
EXCERPT = 80  # characters of a bad value quoted in a message

# libcni's ValidateContainerID (and ValidateNetworkName): the rule CNI_CONTAINERID and the network name follow,
# `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (Go's $: no final newline). Checked without `re`, which the CNI plugin does not
# import (its start-up time: shared.cjson).
_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.-")


def valid_name(text: str) -> bool:
    """Whether `text` is a container ID or network name as libcni accepts them."""
    return bool(text) and text[0] in _NAME_FIRST and all(char in _NAME_REST for char in text)


def usable_path(text: str) -> bool:
    """A path the kernel can take: no NUL, at most PATH_MAX bytes, and valid UTF-8 (a JSON `\\ud800` escape is a
    lone surrogate, which no file name can hold)."""
    try:
        return "\0" not in text and len(text.encode("utf-8")) <= PATH_MAX
    except UnicodeEncodeError:
        return False


def valid_netns_path(text: str) -> bool:
    """Whether `text` can name a network namespace: an absolute usable_path — the one rule for CNI_NETNS
    (cni/skel.py), an entry's `netns` and the path in a keeper datagram (daemon/keeper.py)."""
    return text.startswith("/") and usable_path(text)


_CID_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
_IF_SAFE = _CID_SAFE | {"_"}


def _escape(text: str, safe: frozenset[str]) -> str:
    out = []
    for i, char in enumerate(text):
        if char in safe and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """`repr(value)`, cut to `limit` characters: what a message quotes of a hostile value (a state entry, an
    environment variable) — escaped (no newline, no undecodable byte), and short, so one bad file or variable
    cannot flood or forge a log line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def entry_name(container_id: str, ifname: str) -> str:
    """The file name of an attachment's entry (see the module docstring for the escaping)."""
    return f"{_escape(container_id, _CID_SAFE)}_{_escape(ifname, _IF_SAFE)}{SUFFIX}"


def is_entry_name(name: str) -> bool:
    """Whether a directory entry is an attachment (not a tmp file, the lock or anything else)."""
    return name.endswith(SUFFIX) and not name.startswith(".")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return f"not a regular file (mode {mode:o})"


def read_entry_file(path: str, limit: int = MAX_ENTRY_BYTES, *, follow: bool = False, what: str = "an entry") -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them, without ever waiting on a writer.

    FileNotFoundError when there is none; StateError (saying why, not where) when it is not a regular file (a
    FIFO, socket, device, directory, symlink — never opened, or, if swapped in between, opened non-blocking and
    refused), is larger than `limit`, or cannot be read. `follow`: a symlink is read as the file it names (the
    manifests directory, whose caller checks where it leads); `what` names the file in the size message."""
    try:
        seen = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StateError(f"cannot read: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(seen.st_mode):
        raise StateError(f"{_kind(seen.st_mode)}, not a regular file: not read")
    if seen.st_size > limit:
        raise StateError(f"{seen.st_size} bytes, more than {what} can have ({limit}): not read")
    try:
        nofollow = 0 if follow else os.O_NOFOLLOW
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | nofollow | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StateError(f"cannot read: {exc.strerror or exc}") from exc
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise StateError(f"{_kind(opened.st_mode)}, not a regular file: not read")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise StateError(f"cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if size > limit:
        raise StateError(f"grew past {limit} bytes while being read: not read")
    return b"".join(chunks)


class StateEntry(Value):
    __slots__ = (
        "container_id",
        "created",
        "ifindex",
        "ifname",
        "ips",
        "mac",
        "netns",
        "network",
        "origin",
        "plugin",
        "pod_name",
        "pod_namespace",
        "pod_uid",
        "schema",
    )

    def __init__(
        self,
        container_id: str,
        ifname: str,
        netns: str,
        pod_namespace: str = "",
        pod_name: str = "",
        pod_uid: str = "",
        network: str = "",
        ips: tuple[str, ...] = (),
        mac: str = "",
        created: str = "",
        plugin: str = "",
        schema: int = SCHEMA,
        ifindex: int = 0,
        origin: str = ORIGIN_CNI,
    ) -> None:
        self.container_id = container_id
        self.ifname = ifname
        self.netns = netns
        self.pod_namespace = pod_namespace
        self.pod_name = pod_name
        self.pod_uid = pod_uid
        self.network = network
        self.ips = ips
        self.mac = mac
        self.created = created
        self.plugin = plugin
        self.schema = schema
        self.ifindex = ifindex
        self.origin = origin

    @property
    def key(self) -> tuple[str, str]:
        return (self.container_id, self.ifname)

    @property
    def adopted(self) -> bool:
        """Written by mnpd for an interface no mnp plugin closed: it was open until mnpd programmed it."""
        return self.origin == ORIGIN_ADOPTED

    @property
    def pod(self) -> str:
        """`namespace/name`, or "" when unknown."""
        return f"{self.pod_namespace}/{self.pod_name}" if self.pod_namespace and self.pod_name else ""

    def to_json(self) -> str:
        return cjson.dumps_flat(
            {
                "schema": self.schema,
                "containerID": self.container_id,
                "ifname": self.ifname,
                "netns": self.netns,
                "podNamespace": self.pod_namespace,
                "podName": self.pod_name,
                "podUID": self.pod_uid,
                "network": self.network,
                "ips": list(self.ips),
                "mac": self.mac,
                "ifindex": self.ifindex,
                "created": self.created,
                "plugin": self.plugin,
                "origin": self.origin,
            },
            indent=1,
        )

    @staticmethod
    def from_json(text: str | bytes) -> StateEntry:
        """Parse an entry; StateError names the first problem. Unknown keys are ignored."""
        try:
            raw = cjson.loads(text)
        except (ValueError, RecursionError) as exc:
            raise StateError(f"not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise StateError("not a JSON object")
        schema = raw.get("schema")
        if schema != SCHEMA or isinstance(schema, bool):
            raise StateError(f"unsupported schema {excerpt(schema)} (this reader knows {SCHEMA})")

        def text_field(key: str, required: bool = False) -> str:
            value = raw.get(key, None if required else "")
            if not isinstance(value, str) or (required and not value):
                raise StateError(f"{key} must be a{' non-empty' if required else ''} string")
            return value

        ifname = text_field("ifname", True)
        problem = ifname_problem(ifname)
        if problem is not None:  # the plugin checks CNI_IFNAME by the same rule: this entry is not its
            raise StateError(f"ifname {ifname[:40]!r} is not a valid interface name: {problem}")
        ips = raw.get("ips", [])
        if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
            raise StateError("ips must be a list of strings")
        ifindex = raw.get("ifindex", 0)
        if not isinstance(ifindex, int) or isinstance(ifindex, bool) or not 0 <= ifindex < 2**31:
            raise StateError("ifindex must be an interface index (a non-negative 32-bit integer)")
        container_id = text_field("containerID", True)
        if not valid_name(container_id):
            raise StateError(f"containerID {excerpt(container_id)} is not a container ID")
        netns = text_field("netns")
        if netns and not valid_netns_path(netns):
            raise StateError(f"netns {excerpt(netns)} is not an absolute path")
        network = text_field("network")
        if network and not valid_name(network):
            raise StateError(f"network {excerpt(network)} is not a network name")
        return StateEntry(
            container_id=container_id,
            ifname=ifname,
            netns=netns,
            pod_namespace=text_field("podNamespace"),
            pod_name=text_field("podName"),
            pod_uid=text_field("podUID"),
            network=network,
            ips=tuple(ips),
            mac=text_field("mac"),
            created=text_field("created"),
            plugin=text_field("plugin"),
            ifindex=ifindex,
            origin=text_field("origin") or ORIGIN_CNI,
        )


class Problem(Value):
    """An entry that could not be read: skipped, and reported so a human can look at it."""

    __slots__ = ("path", "reason")

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason


class StateStore:
    """The state dir. Every method raises StateError (never OSError) when the directory cannot be used."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def path(self, container_id: str, ifname: str) -> str:
        return os.path.join(self.directory, entry_name(container_id, ifname))

    def ensure(self) -> None:
        """Create the directory (and its parents) if needed."""
        try:
            os.makedirs(self.directory, mode=DIR_MODE, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create state dir {self.directory}: {exc.strerror or exc}") from exc

    def check_writable(self) -> None:
        """Prove the directory can take entries: create it if needed, write and remove a tmp file."""
        self.ensure()
        probe = os.path.join(self.directory, f".probe.{os.urandom(4).hex()}{TMP_SUFFIX}")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise StateError(f"cannot write in {self.directory}: {exc.strerror or exc}") from exc

    def lock(self) -> StateLock:
        """`with store.lock():` holds the state dir's exclusive lock (flock on `.lock`; created as needed, never
        removed).

        The plugin holds it from reading the entries until its nft transaction and entry change are done, so
        "no other interface of this container remains, remove the table" cannot race an ADD of another one."""
        return StateLock(self)

    def write(self, entry: StateEntry) -> str:
        """Write (or replace) an entry atomically; returns its path."""
        self.ensure()
        final = self.path(*entry.key)
        tmp = os.path.join(self.directory, f".{os.path.basename(final)}.{os.urandom(4).hex()}{TMP_SUFFIX}")
        data = (entry.to_json() + "\n").encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            self._sync_dir()
        except OSError as exc:
            try:  # noqa: SIM105  # not contextlib.suppress: not on the plugin's path
                os.unlink(tmp)
            except OSError:
                pass
            raise StateError(f"cannot write {final}: {exc.strerror or exc}") from exc
        return final

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, container_id: str, ifname: str) -> StateEntry | None:
        """The entry, or None if there is none. StateError if it exists but cannot be read or parsed."""
        try:
            return self.read_path(self.path(container_id, ifname))
        except FileNotFoundError:
            return None

    def read_path(self, path: str) -> StateEntry:
        """The entry in the file `path` (in this directory), checked against its name. FileNotFoundError when there
        is none; StateError when it cannot be read (see read_entry_file), is not a valid entry, or its name does not
        match its content."""
        try:
            return self.load(path)
        except StateError as exc:
            raise StateError(f"{path}: {exc}") from exc

    @staticmethod
    def load(path: str) -> StateEntry:
        """As read_path, but a StateError says only why (the caller names the file)."""
        entry = StateEntry.from_json(read_entry_file(path))
        if os.path.basename(path) != entry_name(*entry.key):
            raise StateError(f"file name does not match its content ({excerpt(entry.key)})")
        return entry

    def delete(self, container_id: str, ifname: str) -> bool:
        """Remove an entry; False if there was none."""
        path = self.path(container_id, ifname)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateError(f"cannot remove {path}: {exc.strerror or exc}") from exc
        try:  # noqa: SIM105  # not contextlib.suppress: not on the plugin's path
            self._sync_dir()
        except OSError:
            pass
        return True

    def entries(self, container_id: str | None = None) -> tuple[list[StateEntry], list[Problem]]:
        """Every readable entry (of one container, when given; sorted by file name) and every unreadable one.
        A missing directory is empty."""
        # The escaped containerID never contains "_", so "<escaped id>_" prefixes exactly that container's files.
        prefix = "" if container_id is None else entry_name(container_id, "")[: -len(SUFFIX)]
        try:
            names = sorted(n for n in os.listdir(self.directory) if is_entry_name(n) and n.startswith(prefix))
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            raise StateError(f"cannot list {self.directory}: {exc.strerror or exc}") from exc
        found: list[StateEntry] = []
        problems: list[Problem] = []
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                found.append(self.load(path))
            except FileNotFoundError:
                continue  # removed while we listed
            except StateError as exc:
                problems.append(Problem(path, str(exc)))
        return found, problems

    def by_container(self, container_id: str) -> list[StateEntry]:
        """The readable entries of one container (sandbox)."""
        return [e for e in self.entries(container_id)[0] if e.container_id == container_id]


class StateLock:
    """The state dir's lock as a context manager (`StateStore.lock`): a class rather than
    contextlib.contextmanager, which the CNI plugin does not import (contextlib brings collections and functools:
    its start-up time, docs/benchmarks.md)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.fd = -1

    def __enter__(self) -> None:
        self.store.ensure()
        path = os.path.join(self.store.directory, LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise StateError(f"cannot open {path}: {exc.strerror or exc}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StateError(f"{path} is {_kind(os.fstat(fd).st_mode)}, not a regular file: cannot lock")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def __exit__(self, *exc: object) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)  # releases the lock
