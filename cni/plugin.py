"""What the `mnp` CNI plugin does for each verb, given a validated call (cni/config.py) and its dependencies.

mnp is a chained plugin: the interface plugin before it (macvlan, ipvlan, sriov, bridge …) has put CNI_IFNAME into
the pod's netns; mnp closes it before the runtime starts the pod, and records it for the daemon:

* ADD installs, in ONE nft transaction in the pod netns, the *pending* form of the interface — isolated both
  ways, only neighbour discovery and established flows pass (`render_interface(InterfaceRules.pending(…))`,
  shared/nft/render.py) — then writes the state entry (shared/state.py). If the entry cannot be written, the
  rules are removed again, so a failed ADD leaves nothing (the runtime then DELs the chain and the pod never
  runs). prevResult is printed unchanged.
* DEL removes the interface's objects — or the whole table when no other interface is recorded in that netns,
  whatever its container ID (the containers of a pod share its netns and its one table; an unreadable entry
  counts as one, so the table stays) — and the entry. A missing netns, entry or table is success: DEL is
  idempotent, and containerd's repeated DEL (empty CNI_NETNS, no prevResult) is a no-op but for the entry.
* A CNI_NETNS that exists but is no network namespace the plugin can use — permission denied, another kind of
  namespace (`/proc/self/ns/mnt`), a directory, a FIFO, a file with content — is refused with code 8
  (INVALID_NETNS) by ADD, CHECK and DEL alike, before nft is called and without touching the entry: only a path
  that is certainly gone (ENOENT, or the empty file left of a lost mount) lets DEL drop the entry without rules.
* CHECK verifies that the table has the interface's chains and map entries and that the entry matches the call,
  including the interface's index. ADD and CHECK answer INTERFACE_MISSING (101) when CNI_IFNAME is not in the
  pod's netns: ADD then closes nothing and records nothing.
* GC drops entries of this network that are not in `cni.dev/valid-attachments`, and their rules where the netns
  still exists (and is a pinned path, not a reusable `/proc/PID/ns/net`). STATUS says whether nft runs and the
  state dir is writable.

All of it happens under the state dir's lock (StateStore.lock): "no other interface of this container remains,
so remove the table" must not interleave with an ADD of another interface of the same pod.

Every side effect comes through `Deps` — an nft factory (netns path → Nft), the state store, the clock, the netns
checks — so the unit tests run this very code against `FakeNft` and a temporary directory. On a node, with
`nftPath` not set, ADD's pending table goes as one prebuilt nfnetlink batch on the plugin's own socket, handed to
mnpd afterwards (`NetlinkNft`), and everything else through libnftables in-process (`LibnftNft`) or, where it
cannot be loaded, the nft command under nsenter; with `nftPath` set, always that command (`real_deps`). The ADD log
line says which (`nft=netlink` or `nft=<command>`). The renderer and the nft backend are imported only by the
verbs that need them, and nothing on the ADD path imports json, re, functools, collections or contextlib
(tests/unit/test_cni_plugin.py::test_add_path_stays_light): every import is paid on every pod start.
"""

from __future__ import annotations

import _socket
import time

from cni import __version__
from cni.config import DEFAULT_NFT, CmdArgs, PluginConf, result_for
from cni.errors import (
    CHECK_FAILED,
    INTERFACE_MISSING,
    INTERNAL,
    INVALID_NETNS,
    IO_FAILURE,
    NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    CNIError,
)
from cni.log import Log
from shared.errors import NetnsGone, NetnsUnusable, StateError
from shared.netns import check_netns, identity_if_usable, interface_index_here, is_own_netns
from shared.state import StateEntry, StateStore
from shared.value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from shared.nft.transaction import Transaction

    class Nft(Protocol):
        """What the plugin needs of nft in one netns: `LibnftNft` below, or shared.nft.exec.RealNft."""

        def run(self, tx: Transaction) -> None: ...

        def list_table_json(self, family: str = "inet", table: str = "mnp") -> str: ...


class Deps(Value):
    """Everything the verbs do to the node goes through these (the unit tests pass fakes: tests/support/cnifake.py)."""

    __slots__ = ("check_netns", "clock", "ifindex", "nft", "nft_via", "own_netns", "store")

    def __init__(
        self,
        nft: Callable[[str | None], Nft],
        store: Callable[[str], StateStore] = StateStore,
        clock: Callable[[], float] = time.time,
        own_netns: Callable[[str], bool] = is_own_netns,
        check_netns: Callable[[str], None] = check_netns,
        nft_via: str = "nft",
        ifindex: Callable[[str, str], int] = interface_index_here,
    ) -> None:
        self.nft = nft  # netns path (None: the plugin's own netns) → nft acting there
        self.store = store  # state dir → store
        self.clock = clock
        self.own_netns = own_netns
        self.check_netns = check_netns  # raises NetnsGone
        self.nft_via = nft_via  # what `nft` runs, for the log: "libnftables" or the nft command
        self.ifindex = ifindex  # (netns, ifname) → the interface's index there; OSError / NetnsGone


def real_deps(conf: PluginConf, load: Callable[[], object] | None = None) -> Deps:
    """nft as the plugin runs it on a node. With `nftPath` left at its default: `NetlinkNft` — ADD's pending
    table as one prebuilt nfnetlink batch, everything else through libnftables in-process (`LibnftNft`), loaded
    (`load`, injectable for the tests) only when first needed, or the nft command under nsenter where it does not
    load. With `nftPath` set: always the command it names — a host without libnftables, or an operator who chose a
    binary."""
    if conf.nft_path == DEFAULT_NFT:
        fallback = _Fallback(conf, load)
        return Deps(nft=lambda netns: NetlinkNft(netns, fallback, conf.state_dir), nft_via="netlink")
    return _command_deps(conf)


def _command_deps(conf: PluginConf) -> Deps:
    from shared.nft.exec import RealNft

    return Deps(nft=lambda netns: RealNft(netns, nft=conf.nft_path), nft_via=conf.nft_path)


class _Fallback:
    """libnftables (`LibnftNft`) when it loads, else the nft command — chosen once, at the first use."""

    def __init__(self, conf: PluginConf, load: Callable[[], object] | None) -> None:
        self.conf = conf
        self.load = load
        self.chosen: Callable[[str | None], Nft] | None = None

    def __call__(self, netns: str | None) -> Nft:
        if self.chosen is None:
            from shared.nft import libnft

            try:
                (self.load or libnft.library)()
            except libnft.LibnftUnavailable:
                self.chosen = _command_deps(self.conf).nft
            else:
                self.chosen = LibnftNft
        return self.chosen(netns)


# Sockets that committed, kept open until the plugin's exit (NetlinkNft) when no mnpd took them.
KEPT: list[_socket.socket] = []


def release_kept() -> None:
    """Close the kept sockets now: for callers that run the plugin in-process and do not exit (the tests)."""
    while KEPT:
        KEPT.pop().close()


class NetlinkNft:
    """nft of one network namespace (`netns` path; None: the plugin's own) for the plugin's default backend.

    A transaction shared.nft.batch can encode — ADD's pending table — goes as one nfnetlink batch on a
    NETLINK_NETFILTER socket opened inside the namespace (on the plugin's one thread, switched in and back:
    shared.netns.in_netns_here): no libnftables, no text. Anything else (DEL's removals, CHECK's listing), and a
    batch the kernel refuses, goes through `fallback` (libnftables, or the nft command): a refusal is then worded
    by nft, and nft stays the reference for what the batch means (tests/integration/test_nft_batch.py).

    Releasing a NETLINK_NETFILTER socket right after it committed waits for nf_tables' deferred destruction (an
    RCU grace period: docs/benchmarks.md, CNI ADD), so the plugin does not: it hands the socket to mnpd's keeper
    in `state_dir` (shared.nft.handover), or, when none takes it, keeps it (`KEPT`) until its exit — after the
    entry is written and the answer printed, so the grace period runs meanwhile."""

    def __init__(self, netns: str | None, fallback: Callable[[str | None], Nft], state_dir: str | None = None) -> None:
        self.netns = netns
        self.fallback = fallback
        self.state_dir = state_dir

    def run(self, tx: Transaction) -> None:
        """Apply `tx` atomically: all of it or, on any error, none of it."""
        from shared.nft.batch import NotEncodable, encode
        from shared.nft.errors import NftError

        try:
            data, last = encode(tx)
        except NotEncodable:
            self.fallback(self.netns).run(tx)
            return
        try:
            self._commit(data, last)
        except (NftError, OSError):  # refused, or no socket: nft says why (or, if it applies it, so much the better)
            self.fallback(self.netns).run(tx)

    def _commit(self, data: bytes, last: int) -> None:
        from shared.netns import in_netns_here
        from shared.nft.nfnl import exchange, open_socket

        sock = open_socket() if self.netns is None else in_netns_here(self.netns, open_socket)
        try:
            exchange(sock, data, last, "closing the interface")
        except BaseException:
            sock.close()
            raise
        from shared.nft.handover import hand_over

        if self.state_dir and self.netns is not None and hand_over(sock, self.state_dir, self.netns):
            sock.close()  # not the last reference: the datagram in flight holds one
        else:
            KEPT.append(sock)

    def list_table_json(self, family: str = "inet", table: str = "mnp") -> str:
        return self.fallback(self.netns).list_table_json(family, table)


class LibnftNft:
    """nft of one network namespace (`netns` path; None: the plugin's own) through libnftables, in-process.

    Each call opens a libnftables context inside the namespace — on the plugin's one thread, switched in and
    back (shared.netns.in_netns_here); its netlink socket stays bound to the namespace it was opened in — runs
    one command, the same text with the same typed errors as `nft -f`, and frees it: the plugin makes one or two
    calls and exits. Saves the two execs of
    `nsenter --net=… nft -f -` on every ADD and DEL (docs/benchmarks.md, CNI ADD)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns

    def run(self, tx: Transaction) -> None:
        """Apply `tx` atomically: all of it or, on any error, none of it."""
        if tx.error is not None:
            raise tx.error
        self._command(str(tx))

    def list_table_json(self, family: str = "inet", table: str = "mnp") -> str:
        """As `nft -j list table`: raises NotFoundError when the table does not exist."""
        return self._command(f"list table {family} {table}", as_json=True)

    def _command(self, text: str, as_json: bool = False) -> str:
        from shared.netns import in_netns_here
        from shared.nft.libnft import Context

        context = Context() if self.netns is None else in_netns_here(self.netns, Context)
        try:
            if as_json:
                context.output_json()
            return context.command(text)
        finally:
            context.close()


def rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# ------------------------------------------------------------------------------------------------ helpers


def _unusable(exc: NetnsUnusable) -> CNIError:
    return CNIError(INVALID_NETNS, "CNI_NETNS is not a network namespace the plugin can use", str(exc)[:2000])


def _netns_exists(netns: str, deps: Deps) -> bool:
    """True: a network namespace; False: certainly gone. Anything else (NetnsUnusable) is a CNIError, code 8: it
    is not "gone", so nothing may be dropped because of it."""
    try:
        deps.check_netns(netns)
    except NetnsGone:
        return False
    except NetnsUnusable as exc:
        raise _unusable(exc) from exc
    return True


def require_netns(netns: str, deps: Deps) -> None:
    if not _netns_exists(netns, deps):
        raise CNIError(INVALID_NETNS, "the pod network namespace does not exist", netns[:2000])


def _interface_index(args: CmdArgs, deps: Deps) -> int:
    """CNI_IFNAME's index inside the pod netns. The table dispatches on it: no index, no close. An interface that
    is not there is INTERFACE_MISSING (cni/errors.py says why that code); a netns that vanished or cannot be
    entered meanwhile is code 8, as for the check before."""
    try:
        return deps.ifindex(args.netns, args.ifname)
    except NetnsUnusable as exc:
        raise _unusable(exc) from exc
    except NetnsGone as exc:
        raise CNIError(INVALID_NETNS, "the pod network namespace disappeared", str(exc)[:2000]) from exc
    except OSError as exc:  # _socket.if_nametoindex: "no interface with this name"
        raise CNIError(
            INTERFACE_MISSING,
            f"no interface {args.ifname} (CNI_IFNAME) in the pod network namespace: is mnp chained after the "
            "plugin that creates it?",
            f"{args.netns[:2000]}: {exc}",
        ) from exc


class _locked:  # used as `with _locked(store):`; a class: contextlib is not on the ADD path
    """The state dir's lock; a StateError — taking it, or raised while it is held — is a CNIError, code 5."""

    def __init__(self, store: StateStore) -> None:
        self.lock = store.lock()

    def __enter__(self) -> None:
        try:
            self.lock.__enter__()
        except StateError as exc:
            raise CNIError(IO_FAILURE, "cannot use the state dir", str(exc)) from exc

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.lock.__exit__(kind, exc, tb)
        if isinstance(exc, StateError):
            raise CNIError(IO_FAILURE, "cannot use the state dir", str(exc)) from exc


def _nft_error(exc: Exception, what: str, netns: str | None, deps: Deps) -> CNIError:
    """The CNIError for an nft failure. "No such file or directory" from nsenter, or NetnsGone from libnftables'
    way in (shared.netns.in_netns), may mean the netns vanished under us."""
    from shared.nft.errors import BusyError, NotFoundError

    details = str(exc).strip()[:2000]
    if isinstance(exc, NetnsUnusable):
        return _unusable(exc)
    if netns and isinstance(exc, NotFoundError | NetnsGone) and not _netns_exists(netns, deps):
        return CNIError(INVALID_NETNS, f"{what}: the pod network namespace disappeared", details)
    if isinstance(exc, BusyError):
        return CNIError(TRY_AGAIN_LATER, f"{what}: nft was busy", details)
    return CNIError(INTERNAL, f"{what}: nft refused the transaction", details)


def _run(deps: Deps, netns: str, tx: Transaction, what: str) -> None:
    from shared.nft.errors import NftError
    from shared.nft.transaction import TransactionError

    try:
        deps.nft(netns).run(tx)
    except (NftError, TransactionError, NetnsGone, NetnsUnusable, OSError) as exc:
        raise _nft_error(exc, what, netns, deps) from exc


def _remove_tx(ifname: str, others: bool, ifindex: int, names: list[str] | None = None) -> Transaction:
    """Remove one interface's objects, or — when no other interface is recorded in its netns — the whole table.
    `names`: the chain and set names the table holds, for the interface's port groups (`_listed_names`)."""
    from shared.nft.render import render_remove_interface, render_remove_table

    return render_remove_interface(ifname, ifindex, names or ()) if others else render_remove_table()


def _listed_names(deps: Deps, netns: str, others: bool) -> list[str]:
    """The names of the chains, sets and maps of the table in `netns` when one interface of several goes: its port
    groups are named after its rules (shared/nft/render.py), which the plugin does not know. Nothing to list
    when the whole table goes, or when there is no table. A listing that cannot be read names nothing, as for
    mnpd (shared.nft.backend.remove_interface): the interface's chains, maps and dispatch elements still go, its
    groups stay, referenced by nothing (render_remove_interface) — a DEL is not refused over them."""
    if not others:
        return []
    listing = _list_table(deps, netns)
    if listing is None:
        return []
    # DEL only: the one reader of nft's JSON (shared.nft.trace) is not on ADD's path
    from shared.nft.render import FAMILY, TABLE
    from shared.nft.trace import NftListing, TraceError

    try:
        return NftListing.parse(listing).names(FAMILY, TABLE)
    except TraceError:
        return []


def _recorded_ifindex(store: StateStore, args: CmdArgs, deps: Deps) -> int:
    """The interface's index: as its entry recorded it, else looked up inside the netns (0: unknown)."""
    try:
        entry = store.read(args.container_id, args.ifname)
    except StateError:
        entry = None
    if entry is not None and entry.ifindex:
        return entry.ifindex
    try:
        return deps.ifindex(args.netns, args.ifname)
    except (OSError, NetnsGone, NetnsUnusable):
        return 0


def shares_table(entry: StateEntry, container_id: str, netns: str, identity: tuple[int, int] | None) -> bool:
    """Whether `entry` is an interface in the same pod table as the interface (container_id, netns) — so that
    table must stay. The containers of a pod share its netns, and so its one `inet mnp` table, whatever their
    container IDs: same path, or another path naming the same namespace (`/proc/PID/ns/net` beside
    `/run/netns/…`). An entry of the same container counts wherever it is recorded."""
    if entry.container_id == container_id or (netns and entry.netns == netns):
        return True
    return identity is not None and bool(entry.netns) and identity_if_usable(entry.netns) == identity


def _others(store: StateStore, container_id: str, ifname: str, netns: str, log: Log) -> bool:
    """Whether another interface is recorded in the table of (container_id, ifname) in `netns` — of any
    container (shares_table). An unreadable entry counts: it may be one."""
    entries, problems = store.entries()
    for problem in problems:
        log.warning("unreadable state entry: keeping the table", path=problem.path, reason=problem.reason)
    identity = identity_if_usable(netns)
    return bool(problems) or any(
        e.key != (container_id, ifname) and shares_table(e, container_id, netns, identity) for e in entries
    )


# ------------------------------------------------------------------------------------------------ verbs


def cmd_add(args: CmdArgs, conf: PluginConf, deps: Deps, log: Log) -> dict[str, Any]:
    assert conf.prev_result is not None  # parse_config requires it for ADD
    try:
        _add(args, conf, deps, log)
    except CNIError as exc:
        if conf.on_error != "ignore":
            raise
        log.error(
            "onError=ignore: passing prevResult through with the interface OPEN until the daemon reaches it",
            code=exc.code,
            error=exc.msg,
            details=exc.details,
        )
    return result_for(conf.prev_result, conf.cni_version)


def _add(args: CmdArgs, conf: PluginConf, deps: Deps, log: Log) -> None:
    from shared.nft.pending import render_pending  # not the renderer: its import is paid on every pod start

    require_netns(args.netns, deps)
    pod = args.pod
    ifindex = _interface_index(args, deps)
    entry = StateEntry(
        container_id=args.container_id,
        ifname=args.ifname,
        netns=args.netns,
        pod_namespace=pod.namespace,
        pod_name=pod.name,
        pod_uid=pod.uid,
        network=conf.name,
        ips=conf.ips,
        mac=conf.mac,
        created=rfc3339(deps.clock()),
        plugin=__version__,
        ifindex=ifindex,
    )
    tx = render_pending(args.ifname, ifindex)
    store = deps.store(conf.state_dir)
    with _locked(store):
        try:
            recorded_before = store.read(args.container_id, args.ifname) is not None
        except StateError:
            recorded_before = True  # something is there: never undo what an earlier ADD may have done
        _run(deps, args.netns, tx, "closing the interface")
        try:
            store.write(entry)
        except StateError as exc:
            undo = _undo_add(args, deps, store, recorded_before, ifindex, log)
            raise CNIError(IO_FAILURE, "cannot record the attachment in the state dir", f"{exc}; {undo}") from exc
    log.info("interface closed (pending)", netns=args.netns, pod=pod.key, ips=",".join(conf.ips), nft=deps.nft_via)


def _undo_add(args: CmdArgs, deps: Deps, store: StateStore, recorded_before: bool, ifindex: int, log: Log) -> str:
    if recorded_before:
        return "rules kept: an earlier ADD had recorded this interface"
    try:
        others = _others(store, args.container_id, args.ifname, args.netns, log)
    except StateError:
        others = True
    try:
        _run(deps, args.netns, _remove_tx(args.ifname, others, ifindex), "undoing ADD")
    except CNIError as exc:
        log.error("could not undo ADD", error=exc.msg, details=exc.details)
        return f"undo failed: {exc}"
    return "rules removed again"


def cmd_del(args: CmdArgs, conf: PluginConf, deps: Deps, log: Log) -> None:
    store = deps.store(conf.state_dir)
    with _locked(store):
        acted = False
        if args.netns and _netns_exists(args.netns, deps):
            try:
                others = _others(store, args.container_id, args.ifname, args.netns, log)
            except StateError as exc:
                raise CNIError(IO_FAILURE, "cannot read the state dir", str(exc)) from exc
            try:
                names = _listed_names(deps, args.netns, others)
                tx = _remove_tx(args.ifname, others, _recorded_ifindex(store, args, deps), names)
                _run(deps, args.netns, tx, "removing the interface's rules")
                acted = True
            except CNIError as exc:
                if exc.code != INVALID_NETNS:  # the netns vanished meanwhile: nothing left to remove
                    raise
        try:
            removed = store.delete(args.container_id, args.ifname)
        except StateError as exc:
            raise CNIError(IO_FAILURE, "cannot remove the state entry", str(exc)) from exc
    log.info("interface released", netns=args.netns or "-", rules_removed=acted, entry_removed=removed)


def cmd_check(args: CmdArgs, conf: PluginConf, deps: Deps, log: Log) -> None:
    require_netns(args.netns, deps)
    ifindex = _interface_index(args, deps)
    store = deps.store(conf.state_dir)
    try:
        entry = store.read(args.container_id, args.ifname)
    except StateError as exc:
        raise CNIError(CHECK_FAILED, "the state entry cannot be read", str(exc)) from exc
    if entry is None:
        raise CNIError(CHECK_FAILED, "no state entry for this attachment", store.path(args.container_id, args.ifname))
    problems = []
    if entry.netns != args.netns:
        problems.append(f"netns {entry.netns!r} recorded, {args.netns!r} given")
    if entry.ifindex and entry.ifindex != ifindex:  # the table guards the index ADD found (0: an older entry)
        problems.append(f"{args.ifname} is interface index {ifindex}, ADD closed index {entry.ifindex}")
    if entry.network != conf.name:
        problems.append(f"network {entry.network!r} recorded, {conf.name!r} given")
    if conf.prev_result is not None:
        if tuple(entry.ips) != conf.ips:
            problems.append(f"ips {list(entry.ips)} recorded, {list(conf.ips)} in prevResult")
        if conf.mac and entry.mac != conf.mac:
            problems.append(f"mac {entry.mac!r} recorded, {conf.mac!r} in prevResult")
    problems += table_problems(_list_table(deps, args.netns), args.ifname)
    if problems:
        raise CNIError(CHECK_FAILED, "the attachment is not as ADD left it", "; ".join(problems))
    log.debug("check passed")


def _list_table(deps: Deps, netns: str) -> str | None:
    """`nft -j list table inet mnp` in `netns` (None: no table there)."""
    from shared.nft.errors import NftError, NotFoundError

    try:
        return deps.nft(netns).list_table_json()
    except NotFoundError as exc:
        if not _netns_exists(netns, deps):
            raise CNIError(INVALID_NETNS, "the pod network namespace disappeared", str(exc)) from exc
        return None
    except (NftError, NetnsGone, NetnsUnusable, OSError) as exc:
        raise _nft_error(exc, "listing the table", netns, deps) from exc


def table_problems(listing: str | None, ifname: str) -> list[str]:
    """What is missing for `ifname` in an `nft -j list table inet mnp` answer (None: no table), read by the one
    reader (shared.nft.trace) and sliced by the one per-interface slice (shared.nft.backend.interface_view,
    dispatch_elements).
    Its dispatch element is found by its comment, the interface's name at ADD: nft prints the key, an index, as
    the name it has in the netns of the thread that listed, which is not the pod's — so no name is mapped back
    to an index here (0: none)."""
    # CHECK only: the reader's imports (dataclasses, typing, the netlink module) are not on ADD's path
    from shared.nft.backend import dispatch_elements, interface_view
    from shared.nft.render import FAMILY, TABLE, chain_name, map_name
    from shared.nft.trace import TraceError, table_from_nft_json
    from shared.rules import EGRESS, INGRESS

    if listing is None:
        return [f"table {FAMILY} {TABLE} does not exist"]
    try:
        view = table_from_nft_json(listing, FAMILY, TABLE, ifindex_of=lambda name: 0)
    except TraceError as exc:
        return [f"table {FAMILY} {TABLE} is not as mnp writes it: {exc}"]
    problems = [f"base chain {base} missing" for base in ("input", "output") if base not in view.chains]
    for direction, (_, _jumps, rules, _sets) in zip((INGRESS, EGRESS), interface_view(view, ifname), strict=True):
        chain = chain_name(direction, ifname)
        if rules is None:
            problems.append(f"chain {chain} missing")
        dispatch = (map_name(direction), ifname, f"jump {chain}")  # by index: the name dispatch is not ADD's
        if dispatch not in dispatch_elements(view, direction):
            problems.append(f"{map_name(direction)} has no jump {chain} for {ifname}")
    return problems


def cmd_gc(args: CmdArgs, conf: PluginConf, deps: Deps, log: Log) -> None:
    assert conf.valid_attachments is not None  # parse_config requires it for GC
    valid = set(conf.valid_attachments)
    store = deps.store(conf.state_dir)
    failures: list[str] = []
    with _locked(store):
        try:
            entries, problems = store.entries()
        except StateError as exc:
            raise CNIError(IO_FAILURE, "cannot list the state dir", str(exc)) from exc
        for problem in problems:
            log.warning("unreadable state entry left in place", path=problem.path, reason=problem.reason)
        present = {e.key: e for e in entries}
        # GC is per network: the entries of other networks (other NADs chaining mnp) are not ours to judge, nor
        # mnpd's adopted ones (a NAD that does not chain mnp may carry the same network name; mnpd removes them).
        stale = [e for e in entries if e.network == conf.name and e.key not in valid and not e.adopted]
        for entry in stale:
            try:
                _collect(entry, present, bool(problems), deps, store, log)
            except CNIError as exc:
                failures.append(f"{entry.container_id}/{entry.ifname}: {exc}")
            else:
                del present[entry.key]
    if failures:
        raise CNIError(
            INTERNAL, f"GC could not remove {len(failures)} of {len(stale)} stale attachments", "; ".join(failures)
        )
    log.info("gc done", removed=len(stale), kept=len(valid))


def _collect(
    entry: StateEntry,
    present: dict[tuple[str, str], StateEntry],
    unreadable: bool,
    deps: Deps,
    store: StateStore,
    log: Log,
) -> None:
    """Drop a stale attachment: its rules where its netns still exists (the table stays while another entry — or
    an unreadable one — may share it), then its entry.

    A recorded `/proc/PID/ns/net` is not acted on: long after ADD, PID may belong to another process — another
    pod — whose interface of the same name must not be opened; only the entry goes. (Runtimes pass pinned
    `/var/run/netns/…` paths, which cannot be reused while they exist.)"""
    netns = entry.netns
    pinned = bool(netns) and not netns.startswith("/proc/")
    if pinned and _netns_exists(netns, deps) and not deps.own_netns(netns):
        identity = identity_if_usable(netns)
        others = unreadable or any(
            key != entry.key and shares_table(e, entry.container_id, netns, identity) for key, e in present.items()
        )
        try:
            tx = _remove_tx(entry.ifname, others, entry.ifindex, _listed_names(deps, netns, others))
            _run(deps, netns, tx, "removing a stale interface's rules")
        except CNIError as exc:
            if exc.code != INVALID_NETNS:
                raise
    try:
        store.delete(entry.container_id, entry.ifname)
    except StateError as exc:
        raise CNIError(IO_FAILURE, "cannot remove the state entry", str(exc)) from exc
    log.info("stale attachment removed", container=entry.container_id, ifname=entry.ifname, netns=netns or "-")


def cmd_status(args: CmdArgs, conf: PluginConf, deps: Deps, log: Log) -> None:
    from shared.nft.errors import NftError, NotFoundError

    try:
        deps.nft(None).list_table_json()  # read-only; "no such table" proves nft runs and may talk to the kernel
    except NotFoundError:
        pass
    except (NftError, OSError) as exc:
        raise CNIError(NOT_AVAILABLE, f"{deps.nft_via} cannot run", str(exc).strip()[:2000]) from exc
    try:
        deps.store(conf.state_dir).check_writable()
    except StateError as exc:
        raise CNIError(NOT_AVAILABLE, "the state dir is not writable", str(exc)) from exc
